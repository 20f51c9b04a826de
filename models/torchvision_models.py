"""torchvision's classification models by name, as feature extractors: the classifier is
replaced by the identity, so the backbone returns what the classifier read (a ResNet's pooled
features, a ViT's class token after the final norm, the pooled features before a classifier
MLP)."""

from __future__ import annotations

import torchvision
from torch import nn

from ..core.errors import UserError
from .classifier import Classifier, feature_width

CLASSIFIERS = ("fc", "heads", "classifier", "head")  # the attribute holding the classifier, by family
RESNET_STAGES = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}


def torchvision_names() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def imagenet_weights(name: str):
    """torchvision's ImageNet weights for ``pretrained: imagenet``: the first release
    (``IMAGENET1K_V1``, what ``pretrained=True`` gave and the paper used) where there is one."""
    enum = torchvision.models.get_model_weights(name)
    return getattr(enum, "IMAGENET1K_V1", enum.DEFAULT)


def create_torchvision(name: str, num_classes: int, image_size: int) -> tuple[Classifier, object]:
    """(the model with a new head, torchvision's default weights for ``pretrained: imagenet``)."""
    if name not in torchvision_names():
        raise UserError(f"model.arch: {name!r} is neither a torchvision classification model, timm/<name>, "
                        "nor small_cnn")
    kwargs = {"image_size": image_size} if name.startswith("vit_") else {}
    net = torchvision.models.get_model(name, weights=None, **kwargs)
    attr = next(a for a in CLASSIFIERS if hasattr(net, a))
    classifier = getattr(net, attr)
    linears = [(n, m) for n, m in classifier.named_modules() if isinstance(m, nn.Linear)] \
        if not isinstance(classifier, nn.Linear) else [("", classifier)]
    path, linear = linears[-1]
    setattr(net, attr, nn.Identity())  # keys stay torchvision's, under "backbone."
    dim = feature_width(net, image_size, name)
    stages = RESNET_STAGES if all(hasattr(net, s) for s in RESNET_STAGES) else None
    # the source classifier: the last linear layer, where it reads these features directly
    prefix = (f"{attr}.{path}." if path else f"{attr}.") if linear.in_features == dim else None
    weights = imagenet_weights(name)
    return Classifier(net, dim, num_classes, stages=stages, source_head=prefix), weights
