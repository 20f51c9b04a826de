"""``adarand-export``: a run's selected model as an ONNX or TorchScript file for deployment.

    adarand-export RUN [--format onnx|pt2|torchscript] [--output FILE]

The exported graph takes images resized and centre-cropped to the run's input size and scaled to
[0, 1] (N x C x H x W, float32; C = 1 for a grey run) and returns the logits (N x K): the run's
normalisation, (x - mean) / std, is inside the graph. The batch size is dynamic in ONNX.
``--format pt2`` writes ``torch.export``'s program (``torch.export.load`` reads it); TorchScript,
which torch deprecates, is kept for runtimes that still need it.

A detection run exports to ONNX only, through torch's TorchScript-based ONNX exporter (torch's
newer exporter cannot follow the detector's data-dependent shapes): one image in (C x H x W,
float32 in [0, 1], any height and width; the detector resizes and normalises inside), ``boxes``
(N x 4, the input's pixels), ``labels`` (N, 1-based), ``scores`` (N) and, for Mask R-CNN,
``masks`` (N x 1 x H x W probabilities) out.

The ONNX file is checked with ONNX Runtime against PyTorch before the command reports success
(``max |difference|`` printed; a difference over 1e-3 fails); the class names go beside every
file as ``<file>.classes.txt``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..core.errors import UserError
from ..core.files import write_text_atomic
from ..engine.trained import TrainedModel, load_model

FORMATS = {"onnx": ".onnx", "pt2": ".pt2", "torchscript": ".pt"}
TOLERANCE = 1e-3


class NormalizedLogits(nn.Module):
    """x in [0, 1] -> logits of model((x - mean) / std): the preprocessing's normalisation in the graph."""

    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)[0]


class DetectionOutputs(nn.Module):
    """One image (C x H x W in [0, 1]) -> (boxes, labels, scores[, masks]) of the detector."""

    def __init__(self, detector: nn.Module, masks: bool):
        super().__init__()
        self.detector, self.masks = detector, masks

    def forward(self, image: torch.Tensor):
        detections = self.detector([image])[0][0]
        keys = ("boxes", "labels", "scores", "masks") if self.masks else ("boxes", "labels", "scores")
        return tuple(detections[k] for k in keys)


def deployable(trained: TrainedModel) -> tuple[nn.Module, torch.Tensor]:
    """The module that is exported, in eval mode, and an example input (classification: 2 random
    images; detection: one image of the run's size)."""
    cfg = trained.config
    g = torch.Generator().manual_seed(0)
    if cfg.task == "detection":
        size = cfg.data.image_size
        return DetectionOutputs(trained.model, cfg.detection.masks).eval(), torch.rand(3, size, size, generator=g)
    channels = 1 if cfg.data.grayscale else 3
    module = NormalizedLogits(trained.model, cfg.data.mean, cfg.data.std).eval()
    return module, torch.rand(2, channels, cfg.data.image_size, cfg.data.image_size, generator=g)


def needs(*modules: str) -> None:
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise UserError(f"--format onnx needs {name}, not installed: pip install 'adarand[export]'")


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    if isinstance(module, DetectionOutputs):
        needs("onnx", "onnxruntime")
        names = ["boxes", "labels", "scores", "masks"][:4 if module.masks else 3]
        # the tracer's notices (its use of Python values, the legacy exporter's deprecation) are not
        # printed: what they warn of is checked instead, on images of other sizes (onnx_difference)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (example,), str(path), dynamo=False, opset_version=17, input_names=["image"],
                              output_names=names, dynamic_axes={"image": {1: "height", 2: "width"},
                                                                **{n: {0: "detections"} for n in names}})
        return
    needs("onnx", "onnxscript", "onnxruntime")
    program = torch.onnx.export(module, (example,), dynamo=True, input_names=["images"], output_names=["logits"],
                                dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, verbose=False)
    program.save(str(path))


def export_pt2(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    program = torch.export.export(module, (example,), dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}})
    torch.export.save(program, str(path))


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated.*", category=FutureWarning)  # torch's own notice
        traced = torch.jit.trace(module, example)
    traced.save(str(path))


def onnx_outputs(path: Path, x: torch.Tensor) -> list:
    import onnxruntime as ort  # an optional dependency (the export extra), checked by needs()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def onnx_difference(module: nn.Module, path: Path, example: torch.Tensor) -> float:
    """max |ONNX Runtime - PyTorch| over the outputs: for a classifier, the logits of 3 random
    images; for a detector, its detections on two images of other sizes than the example's."""
    g = torch.Generator().manual_seed(1)
    if isinstance(module, DetectionOutputs):
        size = int(module.detector.backbone.transform.min_size[0])
        inputs = [torch.rand(3, size, size + 16, generator=g), torch.rand(3, size + 8, size, generator=g)]
    else:
        inputs = [torch.rand(3, *example.shape[1:], generator=g)]
    worst = 0.0
    for x in inputs:
        got = onnx_outputs(path, x)
        with torch.no_grad():
            want = module(x)
        want = [want] if isinstance(want, torch.Tensor) else list(want)
        if [tuple(w.shape) for w in want] != [tuple(o.shape) for o in got]:
            return float("inf")
        worst = max([worst] + [float(abs(o - w.numpy()).max()) for o, w in zip(got, want, strict=True) if w.numel()])
    return worst


def export(run: str | Path, fmt: str = "onnx", output: str | Path | None = None) -> tuple[Path, float | None]:
    """Export ``run``'s selected model; returns (the file, the ONNX check's max difference or None)."""
    trained = load_model(run)
    module, example = deployable(trained)
    if trained.config.task == "detection" and fmt != "onnx":
        raise UserError(f"--format {fmt}: a detection run exports to onnx only")
    run_dir = trained.checkpoint.parent.parent
    path = Path(output) if output else run_dir / f"model{FORMATS[fmt]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        {"onnx": export_onnx, "pt2": export_pt2, "torchscript": export_torchscript}[fmt](module, example, tmp)
        difference = onnx_difference(module, tmp, example) if fmt == "onnx" else None
        if difference is not None and not difference <= TOLERANCE:
            raise UserError(f"{path}: ONNX Runtime's outputs differ from PyTorch's by {difference:.3g} (> {TOLERANCE:g}); "
                            "nothing written")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    write_text_atomic(path.with_name(path.name + ".classes.txt"), "\n".join(trained.classes) + "\n")
    return path, difference


def build_parser() -> argparse.ArgumentParser:
    """adarand-export's options (the command-line reference is generated from them)."""
    p = argparse.ArgumentParser(prog="adarand-export", description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder, or a checkpoint file in one")
    p.add_argument("--format", choices=sorted(FORMATS), default="onnx")
    p.add_argument("--output", help="the file to write (default: RUN/model.onnx, RUN/model.pt2 or RUN/model.pt)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        path, difference = export(args.run, args.format, args.output)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    check = f"; ONNX Runtime vs PyTorch: max |difference| {difference:.2g}" if difference is not None else ""
    print(f"{args.format}: {path}{check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
