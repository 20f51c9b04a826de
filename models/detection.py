"""Mask R-CNN (Faster R-CNN without masks) on a pretrained classification backbone, with the
image-level feature g(x) of AdaRand taken from the same forward pass.

    g(x_i) = mean of C5(x_i) over the positions of image i's own extent

C5 is the backbone's last stage; the detector's batching pads images to a common size, so the
mean leaves each image's padding out. g(x) of an image then depends on its batch only a little:
the deeper layers' receptive fields reach from the padding into the image's edge (beside an image
twice as tall, the demo's g moves by about 4 % of its largest entry, where a mean over the
padding would move it by 90 %; ``tests/test_gradients.py`` bounds it).

The network splits as a ``models.classifier.Classifier`` does: ``backbone`` is the
pretrained part (the detector's resizing and normalisation, and the classification network's
stages, ``backbone(images) -> g``), ``head`` every new part (FPN, RPN, box and mask heads). So the
methods that read ``net.backbone`` (the prior pass, L2-SP's starting point) and the optimizer's
backbone / head groups work unchanged.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..core.config import DetectionConfig
from ..core.errors import UserError
from .classifier import Classifier


def masked_mean_pool(c5: torch.Tensor, image_sizes: list[tuple[int, int]], padded: tuple[int, int]) -> torch.Tensor:
    """g_i = (1 / |V_i|) sum_{(u, v) in V_i} C5_i[:, u, v], V_i the positions of C5 that image i
    covers: the first ceil(h_i / s) rows and ceil(w_i / s) columns, s = padded size / C5 size.
    ``c5``: (B, C, h, w); ``image_sizes``: each image's (height, width) before padding to ``padded``."""
    b, _, h, w = c5.shape
    rows = torch.tensor([-(-hi * h // padded[0]) for hi, _ in image_sizes], device=c5.device)  # ceil(h_i / s)
    cols = torch.tensor([-(-wi * w // padded[1]) for _, wi in image_sizes], device=c5.device)
    inside = (torch.arange(h, device=c5.device)[None, :, None] < rows[:, None, None]) & \
             (torch.arange(w, device=c5.device)[None, None, :] < cols[:, None, None])  # (B, h, w)
    inside = inside.unsqueeze(1).to(c5.dtype)
    return (c5 * inside).sum((2, 3)) / inside.sum((2, 3))


class GradientProbe:
    """The squared norm of the gradient that the detection losses send into C5, per image, scaled
    by the batch size (the detector's losses are batch means): (1/B) sum_i ||B dL/dC5_i||^2.
    Read during the backward pass by a hook on the tensor the FPN reads, so the regularizers'
    gradient (through g) is not counted; ``value`` is None until the backward pass has run."""

    def __init__(self):
        self.value: torch.Tensor | None = None

    def __call__(self, grad: torch.Tensor) -> None:
        b = grad.shape[0]
        self.value = (grad.detach().float() * b).pow(2).sum((1, 2, 3)).mean()


class ImageFeatures(nn.Module):
    """The pretrained part: the detector's input transform and the backbone's stages.
    ``forward(images) -> g`` (B x d), as the prior pass calls it; ``stages`` gives the inner maps."""

    def __init__(self, transform: nn.Module, body: nn.Module):
        super().__init__()
        self.transform = transform
        self.body = body

    def stages(self, images: list[torch.Tensor], targets=None):
        """(the batched ImageList, its targets resized alike, the stage outputs, g)."""
        batch, targets = self.transform(images, targets)
        maps = self.body(batch.tensors)
        c5 = next(reversed(maps.values()))
        g = masked_mean_pool(c5, batch.image_sizes, tuple(batch.tensors.shape[-2:]))
        return batch, targets, maps, g

    def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
        return self.stages(list(images))[3]


class Detector(nn.Module):
    """``forward(images, targets)``: in training mode ``(losses, g, probe)`` (Mask R-CNN's losses by
    name, g as above, a ``GradientProbe``); in eval mode ``(detections, g)``, detections in
    the input images' coordinates. Labels in targets and detections are 1-based (0 is the
    background), as torchvision's detectors count them."""

    def __init__(self, backbone: ImageFeatures, fpn: nn.Module, rpn: nn.Module, roi_heads: nn.Module,
                 feature_dim: int, num_classes: int, source_head: str | None, stages: dict[str, str]):
        super().__init__()
        self.backbone = backbone
        self.head = nn.ModuleDict({"fpn": fpn, "rpn": rpn, "roi_heads": roi_heads})
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.source_head = source_head
        self.stages = stages

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        sizes = [tuple(img.shape[-2:]) for img in images]
        batch, targets, maps, g = self.backbone.stages(images, targets)
        probe = None
        if self.training:  # the FPN reads its own view of C5, whose gradient the probe records
            last = next(reversed(maps))
            maps[last] = maps[last].view_as(maps[last])
            probe = GradientProbe()
            maps[last].register_hook(probe)
        pyramid = self.head["fpn"](maps)
        proposals, rpn_losses = self.head["rpn"](batch, pyramid, targets)
        detections, roi_losses = self.head["roi_heads"](pyramid, proposals, batch.image_sizes, targets)
        if self.training:
            return {**rpn_losses, **roi_losses}, g, probe
        return self.backbone.transform.postprocess(detections, batch.image_sizes, sizes), g


def freeze_batch_norm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d of ``module`` replaced by a FrozenBatchNorm2d with its statistics and
    affine parameters (the detector's small per-image batches cannot estimate statistics)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight)
                frozen.bias.copy_(child.bias)
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batch_norm(child)
    return module


@torch.no_grad()
def stage_shapes(net: nn.Module, paths: list[str], size: int = 64) -> list[tuple[int, int]]:
    """(channels, stride) of each stage ``paths`` of ``net``, from one image of ``size`` pixels."""
    shapes = {}
    hooks = [getattr(net, p).register_forward_hook(lambda m, i, o, p=p: shapes.__setitem__(p, o.shape)) for p in paths]
    was_training = net.training
    net.eval()
    try:
        net(torch.zeros(1, 3, size, size))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return [(int(shapes[p][1]), size // int(shapes[p][-1])) for p in paths]


def build_detector(classifier: Classifier, arch: str, num_classes: int, cfg: DetectionConfig,
                   mean: list[float], std: list[float]) -> Detector:
    """The detector on ``classifier``'s backbone (its pretrained weights already loaded): the
    backbone's stages (``Classifier.stages``) feed an FPN; torchvision's Mask R-CNN (Faster R-CNN
    with ``masks: false``) supplies RPN and heads for ``num_classes`` classes plus background."""
    net = freeze_batch_norm(classifier.backbone)
    paths = list(classifier.stages.values())
    children = [name for name, _ in net.named_children()]
    if not paths or any(p not in children for p in paths):
        raise UserError(f"model.arch: {arch}: the detector needs a backbone whose stages are its direct children "
                        "(a torchvision ResNet or small_cnn)")
    frozen = len(paths) - cfg.trainable_stages  # the stem and the stages before the trainable ones
    if frozen > 0:
        for name in children[:children.index(paths[frozen])]:
            getattr(net, name).requires_grad_(False)
    shapes = stage_shapes(net, paths)
    fpn_backbone = BackboneWithFPN(net, {p: str(i) for i, p in enumerate(paths)}, [c for c, _ in shapes],
                                   cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
    strides = [s for _, s in shapes] + [2 * shapes[-1][1]]  # the FPN's extra max-pooled level
    sizes = cfg.anchor_sizes or [8 * s for s in strides]
    if len(sizes) != len(strides):
        raise UserError(f"detection.anchor_sizes: expected {len(strides)} sizes (one per FPN level), got {sizes}")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    c, k = cfg.fpn_channels, num_classes + 1
    parts = dict(box_head=TwoMLPHead(c * 7 * 7, cfg.box_head_width),
                 box_predictor=FastRCNNPredictor(cfg.box_head_width, k))
    if cfg.masks:
        parts.update(mask_head=MaskRCNNHeads(c, [cfg.mask_head_width] * 4, 1),
                     mask_predictor=MaskRCNNPredictor(cfg.mask_head_width, cfg.mask_head_width, k))
    model = (MaskRCNN if cfg.masks else FasterRCNN)(
        fpn_backbone, min_size=cfg.min_size, max_size=cfg.max_size, image_mean=list(mean), image_std=list(std),
        rpn_anchor_generator=anchors, box_detections_per_img=cfg.detections_per_image, **parts)
    backbone = ImageFeatures(model.transform, fpn_backbone.body)
    return Detector(backbone, fpn_backbone.fpn, model.rpn, model.roi_heads, shapes[-1][0], num_classes,
                    classifier.source_head, dict(classifier.stages))
