"""torchvision ResNets as feature extractors (global-average-pooled features)."""

from __future__ import annotations

import torchvision
from torch import nn

from .classifier import Classifier

ARCHS = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 2048),
}
# the last block of each stage, by module path inside the backbone (for feature-map methods)
STAGES = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"}


def create_resnet(arch: str, num_classes: int) -> Classifier:
    builder, _, dim = ARCHS[arch]
    backbone = builder(weights=None)
    backbone.fc = nn.Identity()  # keys stay torchvision's, under "backbone."
    return Classifier(backbone, dim, num_classes, stages=STAGES)
