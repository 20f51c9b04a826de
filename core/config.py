"""Run configuration: YAML files that extend a base file, command-line overrides, typed objects.

A config file may name a base with ``extends: base/cars_resnet50.yaml`` (relative to the file);
the file's mappings are merged into the base's, key by key. Overrides ``a.b=value`` from the
command line are applied last; the value is parsed as YAML (``train.epochs=3``,
``optim.milestones=[2,4]``). Every error names the file (or "command line") and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError, short_repr
from .files import write_text_atomic
from .schema import build, to_plain

COMMAND_LINE = "command line"


# ImageNet's: torchvision's classification weights (ResNet-50 IMAGENET1K_V1) use these
STANDARD_PREPROCESSING = {"image_size": 224, "resize_size": 256, "mean": [0.485, 0.456, 0.406],
                          "std": [0.229, 0.224, 0.225], "interpolation": "bilinear"}


@dataclass(kw_only=True)
class ExtraTestConfig:
    """A further test set, evaluated with the selected model (e.g. ImageNet-V2, -R, -A, -Sketch)."""

    name: str  # the set's name in results.json and the tables
    # root/<class>/<image>, the class folders named as the training classes; a set with some of
    # the classes (ImageNet-R and -A have 200 of 1,000) is scored over the logits of its classes
    root: str


@dataclass(kw_only=True)
class DataConfig:
    # folder ... sklearn_digits: classification; coco, voc_instances: detection (task: detection);
    # synthetic_shapes: the detection demo's shapes (COCO format), or with shapes_task: source the
    # classification task its extractor was pretrained on
    name: Literal["folder", "list", "stanford_cars", "aircraft", "birds", "dtd", "flowers", "pets",
                  "sklearn_digits", "coco", "voc_instances", "synthetic_shapes"] = "folder"
    root: str | None = None  # dataset folder (``~`` is expanded, relative paths are taken from the working dir)
    # name: list: files of "path,label" lines (datasets/list_file.py); val_list is optional
    train_list: str | None = None
    test_list: str | None = None  # name: list: the test split's file of path,label lines
    val_list: str | None = None  # name: list: a validation split's file (else carved out of train by val_ratio)
    # a validation set given as root/<class>/<image> instead of carved out of train (name: folder and the
    # named datasets); val_ratio is then unused
    val_root: str | None = None
    val_ratio: float = 0.1  # share of the training set held out for validation (stratified)
    split_seed: int = 0  # seed of the train/val split and of ``use_ratio``; independent of the run seed
    use_ratio: float = 1.0  # keep this fraction of the training data (stratified, before the split)
    # the preprocessing: null takes the backbone's (timm's pretrained config, torchvision's weights),
    # or else STANDARD_PREPROCESSING
    image_size: int | None = field(default=None, metadata={"range": ">= 1"})
    resize_size: int | None = field(default=None, metadata={"range": ">= 1"})  # eval: Resize, then CenterCrop(image_size)
    mean: list[float] | None = None  # normalisation mean per channel (null: the backbone's)
    # normalisation standard deviation per channel (null: the backbone's)
    std: list[float] | None = field(default=None, metadata={"range": "> 0"})
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = None  # resizing interpolation (null: the backbone's)
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])  # RandomResizedCrop scale
    hflip: bool = True  # random horizontal flips in training
    grayscale: bool = False  # read the images as one channel
    batch_size: int = field(default=64, metadata={"range": ">= 1"})  # training images per batch, per process
    eval_batch_size: int | None = field(default=None, metadata={"range": ">= 1"})  # default: batch_size
    num_workers: int = field(default=4, metadata={"range": ">= 0"})  # DataLoader worker processes per run process
    digits_task: Literal["source", "target"] = "target"  # only for name: sklearn_digits
    shapes_task: Literal["source", "target"] = "target"  # only for name: synthetic_shapes
    extra_test: list[ExtraTestConfig] = field(default_factory=list)  # further test sets, each scored with the selected model
    skip_bad_images: bool = False  # leave unreadable images out (with a warning) instead of stopping
    # torchcodec: JPEG and PNG by TorchCodec (other formats, or no TorchCodec: PIL) and transforms v2
    # on uint8 tensors; torchvision: JPEG by torchvision.io (deprecated by torchvision 0.29), then the
    # same; pil: PIL decoding and transforms (the published code's pipeline)
    decoder: Literal["torchcodec", "torchvision", "pil"] = "torchcodec"
    # resized: every image decoded once and kept resized (shorter side cache_short_side, default
    # 1.15 x resize_size) as uint8 in a memory-mapped file under cache_dir (datasets/resized_cache.py)
    cache: Literal["none", "resized"] = "none"
    # the resized cache's shorter side (null: 1.15 x resize_size)
    cache_short_side: int | None = field(default=None, metadata={"range": ">= 1"})

    def with_preprocessing(self, defaults: dict) -> DataConfig:
        """A copy whose unset preprocessing fields (None) take ``defaults``' values."""
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    @property
    def eval_batch(self) -> int:
        """The batch size of evaluation and of passes without gradients."""
        return self.eval_batch_size or self.batch_size

    def check(self):
        if self.name == "list":
            for key in ("train_list", "test_list"):
                if not getattr(self, key):
                    return key, "required with name: list (a file of path,label lines)"
            if self.val_root:
                return "val_root", "name: list takes its validation set as val_list"
        elif not self.root:
            return "root", "required (the dataset folder; or name: list with train_list and test_list)"
        elif self.train_list or self.test_list or self.val_list:
            key = "train_list" if self.train_list else "test_list" if self.test_list else "val_list"
            return key, f"only used with name: list (name is {self.name})"
        if not 0.0 <= self.val_ratio < 1.0:
            return "val_ratio", f"expected a number in [0, 1), got {self.val_ratio}"
        if not 0.0 < self.use_ratio <= 1.0:
            return "use_ratio", f"expected a number in (0, 1], got {self.use_ratio}"
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            return "crop_scale", f"expected [low, high] with 0 < low <= high <= 1, got {self.crop_scale}"
        channels = 1 if self.grayscale else 3
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is None and self.grayscale:
                return key, "grayscale images need their own mean and std (one value each)"
            if values is not None and len(values) != channels:
                return key, f"expected {channels} values (grayscale: {self.grayscale}), got {values}"
        for key in ("image_size", "resize_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                return key, "expected a positive number of pixels"
        if self.batch_size < 1:
            return "batch_size", "expected a positive integer"
        return None


@dataclass(kw_only=True)
class ModelConfig:
    # a torchvision model by name (resnet50, vit_b_16, ...), timm/<name> for any timm model
    # (timm/vit_base_patch16_clip_224.openai, ...), or small_cnn (the demo's)
    arch: str
    # imagenet (torchvision's weights) | hub (timm's weights) | a weights file | package:<file> | null
    pretrained: str | None = None
    pretrained_strict: bool = True  # every backbone tensor must load from a weights file
    width: int = field(default=32, metadata={"range": ">= 1"})  # small_cnn only: channels of the first stage


@dataclass(kw_only=True)
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # the optimizer
    lr: float = field(default=0.01, metadata={"range": "> 0"})  # the backbone's learning rate (the new head's: lr x head_lr_mult)
    momentum: float = field(default=0.9, metadata={"range": "[0, 1)"})  # SGD's momentum
    nesterov: bool = True  # SGD: Nesterov momentum
    weight_decay: float = field(default=0.0, metadata={"range": ">= 0"})  # weight decay (AdamW: decoupled)
    head_lr_mult: float = field(default=1.0, metadata={"range": "> 0"})  # the new head's lr = lr * head_lr_mult
    # ViTs: transformer block i of L at lr * layer_decay^(L - i), the embeddings at layer_decay^(L + 1)
    layer_decay: float | None = field(default=None, metadata={"range": "(0, 1]"})
    # published: linear warm-up over warmup_iterations, then lr * cos(7 pi / 16 * p) (ends near 0.195 lr)
    scheduler: Literal["multistep", "cosine", "constant", "published"] = "multistep"
    # epochs (multistep), increasing; one past the run's end is never reached (no decay)
    milestones: list[int] = field(default_factory=lambda: [60, 120, 160], metadata={"range": ">= 1"})
    gamma: float = field(default=0.1, metadata={"range": "> 0"})  # multistep: the learning rate's factor at each milestone
    warmup_iterations: int = field(default=30, metadata={"range": ">= 0"})  # scheduler: published: the warm-up iterations

    def check(self):
        if any(b <= a for a, b in zip(self.milestones, self.milestones[1:], strict=False)):
            return "milestones", f"expected increasing epochs, got {self.milestones}"
        return None


@dataclass(kw_only=True)
class TrainConfig:
    epochs: int = 200  # epochs to train
    log_every: int = 10  # iterations between per-iteration TensorBoard points (one host sync each)
    # stop after this epoch (as if interrupted); resume with --resume
    stop_after: int | None = field(default=None, metadata={"range": ">= 1"})
    progress: bool = True  # progress bars (shown on a terminal only)
    epoch_lines: bool = True  # one plain line per epoch: losses, val accuracy and loss, best so far, time
    amp: Literal["off", "bf16", "fp16"] = "off"  # mixed precision of the network's forward pass
    channels_last: bool = False  # channels-last memory format for model and inputs
    sync_bn: bool = False  # multi-process: BatchNorm statistics over the global batch (SyncBatchNorm)
    # torch.compile the model (training and evaluation forward passes); the regularizers still see
    # (logits, features), checkpoints hold the plain model's weights
    compile: bool = False
    compile_backend: str = "inductor"  # torch.compile's backend (aot_eager: traced, without code generation)
    # where the run computes: auto (each process its GPU, else the CPU) | cpu | cuda | cuda:N (one process)
    device: str = "auto"
    # CPU threads of each process (torch.set_num_threads); null: torch's default (OMP_NUM_THREADS, else the cores)
    threads: int | None = field(default=None, metadata={"range": ">= 1"})

    def check(self):
        if self.epochs < 1:
            return "epochs", "expected a positive integer"
        if self.log_every < 1:
            return "log_every", "expected a positive integer"
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            return "device", f"expected auto, cpu, cuda or cuda:N, got {short_repr(self.device)}"
        return None


@dataclass(kw_only=True)
class DiagnosticsConfig:
    enabled: bool = True  # log feature norm, gradient norm, entropy and mutual information
    max_samples: int = field(default=2000, metadata={"range": ">= 2"})  # training features kept per epoch for entropy / MI
    chunk_size: int = field(default=512, metadata={"range": ">= 1"})  # block size of the pairwise distances (memory ~ chunk^2)
    # the selected model's features g(x) of up to this many test images (evenly spaced over the test
    # split), kept as float16 in the run folder's test_features.pt for Figure 3 (adarand-plot); 0: none
    test_features: int = field(default=1024, metadata={"range": ">= 0"})


TRACKER_PACKAGES = {"mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}  # tracker: (module, extra)


@dataclass(kw_only=True)
class LoggingConfig:
    # where the run's scalars and settings go, each on rank 0: tensorboard (the run folder's events),
    # mlflow, wandb (through Ignite's MLflowLogger and WandBLogger)
    trackers: list[Literal["tensorboard", "mlflow", "wandb"]] = field(default_factory=lambda: ["tensorboard"])
    # MLflow's tracking URI; null: $MLFLOW_TRACKING_URI, else the SQLite store <output_root>/mlflow.db
    mlflow_uri: str | None = None
    experiment: str = "adarand"  # the MLflow experiment and the W&B project
    # W&B: offline (the run folder's wandb/, uploaded later by `wandb sync`) | online
    wandb_mode: Literal["offline", "online"] = "offline"

    def check(self):
        if len(set(self.trackers)) != len(self.trackers):
            return "trackers", f"a tracker is named twice in {self.trackers}"
        for tracker in self.trackers:
            module, extra = TRACKER_PACKAGES.get(tracker, (None, None))
            if module is not None and importlib.util.find_spec(module) is None:
                return "trackers", (f"{tracker} needs the package {module}, which is not installed: "
                                    f"pip install 'adarand[{extra}]'")
        if not self.experiment:
            return "experiment", "expected a name"
        return None


@dataclass(kw_only=True)
class DetectionConfig:
    """``task: detection``: the detector on the backbone, and the image-level label y of each
    training image that the regularizers' class-conditional priors use (SPEC §8b)."""

    masks: bool = True  # Mask R-CNN; false: Faster R-CNN (boxes only, no mask AP)
    # y of an image: the class of its largest instance by mask area, or the class with most instances
    # (ties: the larger total area, then the lower class index)
    image_label: Literal["largest", "majority"] = "largest"
    single_class_only: bool = False  # train and validate on the images whose instances share one class
    min_size: int = field(default=800, metadata={"range": ">= 1"})  # the detector's resizing (shorter side)
    max_size: int = field(default=1333, metadata={"range": ">= 1"})  # (longer side at most)
    trainable_stages: int = field(default=3, metadata={"range": ">= 0"})  # the last stages trained; the rest frozen
    fpn_channels: int = field(default=256, metadata={"range": ">= 1"})  # the FPN's channels
    box_head_width: int = field(default=1024, metadata={"range": ">= 1"})  # the box head's hidden width
    mask_head_width: int = field(default=256, metadata={"range": ">= 1"})  # the mask head's channels
    # one anchor size per FPN level (pixels); null: 8 x the level's stride (32 ... 512 on a ResNet)
    anchor_sizes: list[int] | None = field(default=None, metadata={"range": ">= 1"})
    detections_per_image: int = field(default=100, metadata={"range": ">= 1"})  # detections kept per image


@dataclass(kw_only=True)
class MethodConfig:
    name: str = "finetune"  # the method (adarand-run --list names them)
    # the method's parameters: the mapping the files give, until the method's own dataclass is
    # built from it where the method is resolved (``handlers.registry.build_params``)
    params: Any = None
    fixed: tuple[str, ...] = field(default=(), init=False)  # keys the method's name fixes (a preset)


@dataclass(kw_only=True)
class Config:
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diagnostics: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    # classification: (logits, features) models, accuracy; detection: Mask R-CNN, bbox and mask AP
    task: Literal["classification", "detection"] = "classification"
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    seed: int = 0  # the run seed: the data order, the augmentations and the methods' random draws
    output_root: str = "runs"  # run folders go to output_root/<config name>-seed<seed>-<time>
    cache_dir: str = "~/.cache/adarand"  # prior statistics and demo data
    # set by read_config, not by the file:
    source: str = field(default="", init=False)  # the config file(s), as given
    name: str = field(default="", init=False)  # the run's name, from the config file names
    provenance: dict[str, str] = field(default_factory=dict, init=False, repr=False)  # key -> file that set it

    def where(self, key: str) -> str:
        """The file (or "command line") that set ``key`` or the mapping holding it."""
        parts = re.sub(r"\[\d+\]", "", key).split(".")  # optim.milestones[0]: where optim.milestones was set
        for n in range(len(parts), 0, -1):
            hit = self.provenance.get(".".join(parts[:n]))
            if hit:
                return hit
        return self.provenance.get("", "")  # the last file given

    def to_dict(self) -> dict:
        out = to_plain(self)
        params = self.method.params if isinstance(self.method.params, dict) else to_plain(self.method.params)
        out["method"] = {"name": self.method.name, **{k: v for k, v in params.items() if k not in self.method.fixed}}
        return out


MAX_NODES = 10_000  # far more than any config; YAML aliases can make a few bytes expand without bound


def check_size(data, source: str, key: str | None) -> None:
    """Refuse a loaded value of more than MAX_NODES values (counted with aliases expanded, as the
    config would use them), before anything validates or prints it."""
    count, stack = 0, [data]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(source, key, f"more than {MAX_NODES:,} values once its YAML aliases are expanded; "
                                           "a config is far smaller (an alias bomb?)")
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class _StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> tuple[dict, dict[str, str]]:
    """Read ``path`` and its ``extends`` chain; return the merged dict and per-key provenance."""
    shown = str(path)
    if path.resolve() in chain:
        raise ConfigError(shown, "extends", "circular extends: " + " -> ".join(str(p) for p in chain + (path,)))
    if not path.is_file():
        raise ConfigError(shown, None, "no such config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(shown, None, f"not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(shown, None, f"malformed YAML{at}: {problem}") from None
    if data is None:
        data = {}
    check_size(data, shown, None)
    if not isinstance(data, dict):
        raise ConfigError(shown, None, f"expected a mapping at the top level, got {type(data).__name__}")
    base, prov = {}, {}
    parents = data.pop("extends", None)
    if parents is not None:
        if isinstance(parents, str):
            parents = [parents]
        if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
            raise ConfigError(shown, "extends", f"expected a file name or a list of them, got {short_repr(parents)}")
        for parent in parents:  # later files override earlier ones
            found = extended_file(path, parent)
            if found is None:
                raise ConfigError(shown, "extends", f"no such config file: {path.parent / parent}, nor a packaged "
                                                    f"config {parent!r} (adarand-run --list lists them)")
            layer, layer_prov = _read_yaml(found, chain + (path.resolve(),))
            _merge_layer(base, prov, layer, layer_prov)
    _merge(base, data, prov, shown, "")
    return base, prov


def extended_file(path: Path, parent: str) -> Path | None:
    """What ``extends: parent`` in ``path`` names: a file relative to ``path`` first, then a packaged
    config of that name (``base/digits_small_cnn``), as on the command line."""
    for local in (path.parent / parent, path.parent / f"{parent}.yaml"):
        if local.is_file():
            return local
    packaged = CONFIG_DIR / f"{parent.removesuffix('.yaml')}.yaml"
    return packaged if not Path(parent).is_absolute() and packaged.is_file() else None


def _merge_layer(base: dict, prov: dict[str, str], layer: dict, layer_prov: dict[str, str]) -> None:
    """Merge an already-read file (with its own provenance) into ``base``."""
    _merge(base, layer, prov, "", "")
    prov.update(layer_prov)


def _merge(base: dict, update: dict, prov: dict[str, str], source: str, prefix: str) -> None:
    for k, v in update.items():
        if not isinstance(k, str):
            raise ConfigError(source, f"{prefix}{k}", "keys must be strings")
        key = f"{prefix}{k}"
        if isinstance(v, dict) and isinstance(base.get(k), dict) and not (k == "method" and "name" in v and
                                                                           v.get("name") != base[k].get("name")):
            _merge(base[k], v, prov, source, key + ".")
        else:
            base[k] = copy.deepcopy(v)
            for p in [p for p in prov if p == key or p.startswith(key + ".")]:
                del prov[p]
        prov[key] = source


def _apply_override(data: dict, prov: dict[str, str], item: str) -> None:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(COMMAND_LINE, None, f"override {short_repr(item)}: expected key.path=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ConfigError(COMMAND_LINE, key, f"cannot parse value {short_repr(text)}") from None
    check_size(value, COMMAND_LINE, key)
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        sub = node.get(part)
        if sub is None:
            sub = node[part] = {}
        if not isinstance(sub, dict):
            raise ConfigError(COMMAND_LINE, key, f"'{'.'.join(parts[:i + 1])}' is not a mapping")
        node = sub
    node[parts[-1]] = value
    prov[key] = COMMAND_LINE


CONFIG_DIR = Path(__file__).resolve().parent.parent / "yaml"  # the configs that ship with the package


def resolve_config(item: str | Path) -> Path:
    """A config file: ``item`` itself if it is a file, else the packaged config of that name
    (``demo``, ``cars_adarand``, ``methods/fnp``, with or without ``.yaml``)."""
    path = Path(item)
    if path.is_file():
        return path
    name = str(item).removesuffix(".yaml")
    packaged = CONFIG_DIR / f"{name}.yaml"
    if not path.is_absolute() and packaged.is_file():
        return packaged
    raise ConfigError(str(item), None, "no such config file, nor a packaged config of that name "
                                       "(adarand-run --list lists them)")


def expand_packaged(item: str) -> list[str]:
    """A name with ``*`` or ``?`` (``methods/*``) as the packaged configs it matches, by name, sorted;
    any other item as it is. A pattern that matches no packaged config is refused."""
    if not any(c in item for c in "*?[") or Path(item).is_file():
        return [item]
    names = sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.rglob("*.yaml"))
    found = fnmatch.filter(names, item.removesuffix(".yaml"))
    if not found:
        raise ConfigError(item, None, "matches no packaged config (adarand-run --list lists them)")
    return found


def first_sentence(text: str) -> str:
    """The text up to the end of its first sentence (a '.' before a space or the end, not inside
    brackets: "e.g. (Table 5: 91.17 +- .13)." stays whole)."""
    depth = 0
    for i, ch in enumerate(text):
        depth += ch in "([" and 1 or ch in ")]" and -1 or 0
        if ch == "." and depth <= 0 and (i + 1 == len(text) or text[i + 1] == " ") and not text[:i].endswith(("e.g", "i.e")):
            return text[:i + 1]
    return text


# the entry-point group through which other installed packages add methods (``method.name``)
PLUGIN_GROUP = "adarand.regularizers"


def packaged_configs() -> list[tuple[str, str]]:
    """(name, the first sentence of its leading comment) for every config shipped with the package."""
    out = []
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        lines = path.read_text(encoding="utf-8").splitlines()
        block = []
        for line in lines:
            if not line.startswith("#"):
                break
            text = line.lstrip("#").strip()
            if line.startswith("#  ") or not text:  # an indented example command ends the prose
                break
            block.append(text)
        out.append((path.relative_to(CONFIG_DIR).with_suffix("").as_posix(), first_sentence(" ".join(block))))
    return out


def config_name(paths: list[str | Path]) -> str:
    """A run's name from its config files: ``cars_adarand``, or ``cars_resnet50-fnp`` when composed.
    The name becomes a folder name, so it holds no ``+``: TensorBoard's projector does not escape a
    ``+`` in a run's name and cannot load that run's embedding."""
    return "-".join(Path(p).stem for p in paths)


def merged_files(path: str | Path | list) -> dict:
    """The config files merged in order (their ``extends`` chains included), before overrides and
    before validation: what the files say, e.g. which method they select."""
    data: dict = {}
    for p in (path if isinstance(path, (list, tuple)) else [path]):
        layer, layer_prov = _read_yaml(resolve_config(p), ())
        _merge_layer(data, {}, layer, layer_prov)
    return data


def read_config(path: str | Path | list, overrides: list[str] = (), seed: int | None = None) -> Config:
    """Load, merge, override and validate a config, all but the method's own parameters (kept as a
    mapping in ``cfg.method.params``, with where each came from in ``cfg.provenance``). Raises
    ConfigError with a one-line message.

    ``path`` may be a list of files, merged in order (as if one file extended them all)."""
    paths = [resolve_config(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    data, prov = {}, {}
    for p in paths:
        layer, layer_prov = _read_yaml(p, ())
        _merge_layer(data, prov, layer, layer_prov)
    for item in overrides:
        _apply_override(data, prov, item)
    if seed is not None:
        data["seed"] = seed
        prov["seed"] = COMMAND_LINE
    top = str(paths[-1])

    def where(key: str) -> str:
        parts = re.sub(r"\[\d+\]", "", key).split(".")
        for n in range(len(parts), 0, -1):
            hit = prov.get(".".join(parts[:n]))
            if hit:
                return hit
        return top

    method_raw = data.pop("method", None) or {}
    if not isinstance(method_raw, dict):
        raise ConfigError(where("method"), "method", f"expected a mapping, got {short_repr(method_raw)}")
    method_raw = dict(method_raw)
    name = method_raw.pop("name", "finetune")
    if not isinstance(name, str):
        raise ConfigError(where("method.name"), "method.name", f"expected a string, got {short_repr(name)}")
    cfg = build(Config, data, "", where)
    cfg.method = MethodConfig(name=name, params=method_raw)
    cfg.source = " ".join(str(p) for p in paths)
    cfg.name = config_name(paths)
    cfg.provenance = {**prov, "": top}
    return cfg


def save_config(cfg: Config, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))

