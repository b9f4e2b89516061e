"""Model definitions, picked from a registry by name (timm style).

Every model takes (B, 1, 48, 48) normalised grayscale faces and returns (B, num_classes) logits.
``create_model(name, num_classes=7)`` is the one builder used by training, export and tests.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .labels import EMOTIONS


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int = len(EMOTIONS), **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class Classifier(nn.Module):
    """``features`` (B, C, h, w) then ``head`` (B, num_classes): the split timm calls forward_features/forward_head."""

    features: nn.Module
    head: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SeedCNN(Classifier):
    """The original report's Keras CNN, layer for layer.

    Keras ``Conv2D(n, 3, activation='relu', padding='same')`` + ``BatchNormalization()`` per block,
    three blocks of two convs (32, 64, 128) each closed by 2x2 max-pooling, then Flatten,
    Dropout(0.3), Dense(128, relu) and the softmax classifier (here: logits; softmax is applied by
    the loss and at inference).
    """

    def __init__(self, num_classes: int = 7, dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in (32, 64, 128):
            for _ in range(2):
                layers += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(width)]
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)  # (B, 128, 6, 6)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(128 * 6 * 6, 128), nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )


class VGG(Classifier):
    """VGG-style net: stages of ``depth`` 3x3 conv-BN-ReLU, 2x2 max-pool after each stage.

    At 48 px the four stages see 48, 24, 12 and 6 px; the head is global average pooling,
    dropout and one linear layer, which keeps the parameter count in the convolutions.
    """

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (64, 128, 256, 512), depth: int = 2,
                 dropout: float = 0.4):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 1
        for width in widths:
            for _ in range(depth):
                layers.append(conv_bn(cin, width))
                cin = width
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = (
            nn.Identity() if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(Classifier):
    """ResNet with basic blocks, a 3x3 stem at full resolution (48 px faces are too small to stride early)."""

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (64, 128, 256, 512),
                 blocks: tuple[int, ...] = (2, 2, 2, 2), stem_stride: int = 1, dropout: float = 0.3):
        super().__init__()
        stages: list[nn.Module] = [conv_bn(1, widths[0], stem_stride)]
        cin = widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                stages.append(BasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))


def dw_separable(cin: int, cout: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 (MobileNet): most of a conv's reach at a fraction of its cost."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class MobileNet(Classifier):
    """A full-resolution 3x3 stem, then per stage: 2x2 max-pool, depthwise-separable blocks."""

    def __init__(self, num_classes: int = 7, widths: tuple[int, ...] = (32, 64, 128, 256, 512),
                 extra: tuple[int, ...] = (1, 2, 2, 1), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(1, widths[0])]  # (B, 32, 48, 48)
        cin = widths[0]
        for width, n in zip(widths[1:], extra):
            layers += [nn.MaxPool2d(2), dw_separable(cin, width)] + [dw_separable(width, width) for _ in range(n)]
            cin = width
        self.features = nn.Sequential(*layers)  # (B, 512, 3, 3)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(cin, num_classes))


class FastWide(Classifier):
    """fastnet's four stages with a second conv in the last two (the module of ``fastnet_wide``).

    ``last``: the last stage's width, which works at 6 px and so costs the least per channel.
    """

    def __init__(self, num_classes: int = 7, last: int = 256, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 32), nn.MaxPool2d(2),                          # (B, 32, 24, 24)
            conv_bn(32, 64), nn.MaxPool2d(2),                         # (B, 64, 12, 12)
            conv_bn(64, 128), conv_bn(128, 128), nn.MaxPool2d(2),     # (B, 128, 6, 6)
            conv_bn(128, last), conv_bn(last, last), nn.MaxPool2d(2),  # (B, last, 3, 3)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(last, num_classes))


@register_model
def seed_cnn(num_classes: int = 7, **kw) -> nn.Module:
    """The report's baseline CNN (~0.9M parameters)."""
    return SeedCNN(num_classes, **kw)


@register_model
def vgg(num_classes: int = 7, **kw) -> nn.Module:
    """VGG-style, 4 stages of 2 convs, 64-512 channels (~4.7M parameters)."""
    return VGG(num_classes, **kw)


@register_model
def vgg_deep(num_classes: int = 7, **kw) -> nn.Module:
    """vgg with three convs per stage (~7.8M parameters), ~1.7x its compute: capacity for FER+'s cleaner labels."""
    return VGG(num_classes, depth=3, **kw)


@register_model
def resnet18(num_classes: int = 7, **kw) -> nn.Module:
    """ResNet-18 layout at 48 px with 48-384 channels (~6.2M parameters)."""
    return ResNet(num_classes, widths=(48, 96, 192, 384), **kw)


@register_model
def fastnet(num_classes: int = 7, **kw) -> nn.Module:
    """Small, fast VGG (~0.4M parameters) for CPU inference; the shipped default, distilled from a VGG."""
    return VGG(num_classes, widths=(32, 64, 128, 256), depth=1, dropout=0.2, **kw)


@register_model
def mobile(num_classes: int = 7, **kw) -> nn.Module:
    """Depthwise-separable net (~0.6M parameters), as fast as fastnet on a CPU but twice as deep."""
    return MobileNet(num_classes, **kw)


@register_model
def mobile_deep(num_classes: int = 7, **kw) -> nn.Module:
    """mobile with twice the blocks in the middle stages (~1.0M parameters), at fastnet's CPU cost."""
    return MobileNet(num_classes, extra=(1, 3, 3, 2), **kw)


@register_model
def fastnet_wide(num_classes: int = 7, **kw) -> nn.Module:
    """fastnet with two convs in the last two stages (~1.1M parameters): slower, more accurate."""
    return FastWide(num_classes, **kw)


@register_model
def fastnet_wider(num_classes: int = 7, **kw) -> nn.Module:
    """fastnet_wide with 320 channels in the last stage (~1.5M parameters): in int8 0.93x fastnet's fp32 cost."""
    return FastWide(num_classes, last=320, **kw)
