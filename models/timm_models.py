"""Any timm model as ``timm/<name>`` (with a pretrained tag: ``timm/vit_base_patch16_clip_224.openai``).

A classification model is created without its classifier (``num_classes=0``): g(x) is its
pooled pre-logits features. A CLIP image tower (a name with ``clip``) keeps its head, which is
the projection to the shared embedding: g(x) is the image embedding the encoder outputs (RN-50:
attention-pooled, 1,024-d; ViT: the class token projected, 512-d), as the paper uses it. A model
with a settable input size (timm's ViTs) is set to ``data.image_size``.
"""

from __future__ import annotations

from ..core.errors import UserError
from .classifier import Classifier, feature_width


def create_timm(name: str, num_classes: int, image_size: int, from_hub: bool) -> Classifier:
    import timm  # loaded when a timm model is built (a second or more of start-up for the others)

    if not timm.is_model(name):
        raise UserError(f"model.arch: timm/{name}: timm {timm.__version__} has no such model")
    embedding = "clip" in name
    try:
        net = timm.create_model(name, pretrained=from_hub, **({} if embedding else {"num_classes": 0}))
    except (OSError, RuntimeError) as e:  # a download that failed (offline, no cached file)
        if not from_hub:
            raise
        reason = f"{e.__class__.__name__}: {e}".splitlines()[0]
        raise UserError(f"model.pretrained: hub: could not get timm's weights for {name} ({reason}); "
                        "set model.pretrained to a local weights file") from None
    if hasattr(net, "set_input_size") and net.pretrained_cfg.get("input_size", (0, 0, 0))[-1] != image_size:
        net.set_input_size(img_size=(image_size, image_size))
    dim = feature_width(net, image_size, f"timm/{name}")
    classifier = net.pretrained_cfg.get("classifier", "head")
    return Classifier(net, dim, num_classes, stages=None, source_head=None if embedding else f"{classifier}.")
