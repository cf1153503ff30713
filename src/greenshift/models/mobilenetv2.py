"""MobileNetV2 (Sandler et al., 2018) adapted to small images.

The layer plan is the paper's (inverted residual blocks, depthwise 3x3 convolutions, widths 32 to
1280) with two strides reduced to 1, the stem and the first 24-channel block, so that 32x32 inputs
end at 4x4 rather than 1x1. A residual connection exists only where a block keeps both resolution
and width, as in the paper. Blocks with expansion 1 have no expanding 1x1 convolution.
"""

from __future__ import annotations

import torch
from torch import nn

from greenshift.models.registry import initialise_weights, register_model

# (expansion t, output channels c, repeats n, stride of the first repeat s); strides for 32x32 inputs.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(
            in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class InvertedResidual(nn.Module):
    """Expand (1x1), filter depthwise (3x3), project linearly (1x1); add the input when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += _conv_bn_relu(in_channels, hidden, 1)
        layers += _conv_bn_relu(hidden, hidden, 3, stride=stride, groups=hidden)
        # The projection has no activation: the paper's "linear bottleneck".
        layers += [nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output, plus its input where shapes allow."""
        out = self.body(x)
        return out + x if self.residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for small images, classifier on globally averaged 1280-channel features."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        settings: tuple[tuple[int, int, int, int], ...] = CIFAR_SETTINGS,
        stem_channels: int = 32,
        last_channels: int = 1280,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, stem_channels, 3, stride=1))
        blocks: list[nn.Module] = []
        channels = stem_channels
        for expansion, out_channels, repeats, stride in settings:
            for index in range(repeats):
                blocks.append(
                    InvertedResidual(channels, out_channels, stride if index == 0 else 1, expansion)
                )
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*_conv_bn_relu(channels, last_channels, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last_channels, num_classes)
        initialise_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[N, num_classes]``."""
        out = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model("mobilenetv2", description="MobileNetV2 for 32x32 images (stride-1 stem), 2.24 M parameters")
def mobilenetv2(num_classes: int, in_channels: int) -> nn.Module:
    """MobileNetV2: 52 convolutions (17 of them depthwise) and 1 linear layer."""
    return MobileNetV2(num_classes, in_channels)
