"""CIFAR ResNets (He et al., 2016, section 4.2): depth 6n+2 with parameter-free shortcuts.

Three stages of ``n`` basic blocks each; the first block of stages 2 and 3 halves the resolution
and doubles the width. Shortcuts that change shape use "option A": spatial subsampling and zero
padding of the new channels, so they add no layers and no parameters. ResNet20 therefore has
1 + 6*3 = 19 convolutions and one linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from greenshift.errors import ConfigError
from greenshift.models.registry import initialise_weights, register_model


class PadShortcut(nn.Module):
    """Option-A shortcut: keep every ``stride``-th pixel and zero-pad channels up to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ConfigError(f"a padding shortcut cannot shrink {in_channels} to {out_channels} channels")
        self.stride = stride
        extra = out_channels - in_channels
        # Split the padding over both sides so the identity channels sit in the middle.
        self.pad_front = extra // 2
        self.pad_back = extra - self.pad_front

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Subsample spatially, then pad the channel dimension with zeros."""
        if self.stride > 1:
            # [::s] keeps ceil(size / s) pixels, the same size as a padded stride-s 3x3 convolution.
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_front, self.pad_back))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = PadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv-bn-relu-conv-bn, add the shortcut, relu."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6n+2`` for small images; ``widths`` are the channels of the three stages."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ConfigError(f"CIFAR ResNet depth must be 6n+2 with n >= 1, got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._stage(widths[0], widths[0], blocks_per_stage, stride=1)
        self.layer2 = self._stage(widths[0], widths[1], blocks_per_stage, stride=2)
        self.layer3 = self._stage(widths[1], widths[2], blocks_per_stage, stride=2)
        # Adaptive pooling makes the classifier independent of the input resolution.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)
        initialise_weights(self)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[N, num_classes]``."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("resnet20", description="CIFAR ResNet-20 (He et al.), option-A shortcuts, 0.27 M parameters")
def resnet20(num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-20: 19 convolutions and 1 linear layer."""
    return CifarResNet(20, num_classes, in_channels)


@register_model("resnet32", description="CIFAR ResNet-32 (He et al.), option-A shortcuts, 0.46 M parameters")
def resnet32(num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-32: 31 convolutions and 1 linear layer."""
    return CifarResNet(32, num_classes, in_channels)


@register_model("resnet44", description="CIFAR ResNet-44 (He et al.), option-A shortcuts, 0.66 M parameters")
def resnet44(num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-44: 43 convolutions and 1 linear layer."""
    return CifarResNet(44, num_classes, in_channels)


@register_model("resnet56", description="CIFAR ResNet-56 (He et al.), option-A shortcuts, 0.85 M parameters")
def resnet56(num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-56: 55 convolutions and 1 linear layer."""
    return CifarResNet(56, num_classes, in_channels)


@register_model("tiny_resnet", description="ResNet-8 with 4/8/16 channels, for tests only", tiny=True)
def tiny_resnet(num_classes: int, in_channels: int) -> nn.Module:
    """ResNet-8 with 4/8/16 channels: 7 convolutions and 1 linear layer."""
    return CifarResNet(8, num_classes, in_channels, widths=(4, 8, 16))
