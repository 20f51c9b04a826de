"""A small convolutional extractor for the offline demo (grayscale digits, 16 x 16 input)."""

from __future__ import annotations

from torch import nn

from .classifier import Classifier


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def create_small_cnn(num_classes: int, in_channels: int = 1, width: int = 32) -> Classifier:
    w = width
    backbone = nn.Sequential(
        *_block(in_channels, w), *_block(w, w), nn.MaxPool2d(2),
        *_block(w, 2 * w), *_block(2 * w, 2 * w), nn.MaxPool2d(2),
        *_block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )
    return Classifier(backbone, 4 * w, num_classes, stages={"stage1": "5", "stage2": "12", "stage3": "16"})
