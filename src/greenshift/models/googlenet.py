"""GoogLeNet (Szegedy et al., 2015) for small images.

The ImageNet stem is replaced by one 3x3 convolution to 192 channels at full resolution; the nine
Inception blocks 3a..5b keep the paper's widths. The 5x5 branch is built from two 3x3 convolutions
(same receptive field, fewer weights). Branches are registered in the order ``forward`` runs them.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from greenshift.models.registry import initialise_weights, register_model


def _conv_bn_relu(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1->3x3; 1x1->3x3->3x3; 3x3 max pool->1x1), concatenated."""

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
    ) -> None:
        super().__init__()
        self.branch1 = _conv_bn_relu(in_channels, ch1x1, 1)
        self.branch2 = nn.Sequential(
            _conv_bn_relu(in_channels, ch3x3_reduce, 1), _conv_bn_relu(ch3x3_reduce, ch3x3, 3)
        )
        self.branch3 = nn.Sequential(
            _conv_bn_relu(in_channels, ch5x5_reduce, 1),
            _conv_bn_relu(ch5x5_reduce, ch5x5, 3),
            _conv_bn_relu(ch5x5, ch5x5, 3),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1), _conv_bn_relu(in_channels, pool_proj, 1)
        )
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenation of the four branches along the channel dimension."""
        # Evaluated one after another so that execution order equals registration order.
        outputs = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(outputs, 1)


# Name -> (ch1x1, ch3x3_reduce, ch3x3, ch5x5_reduce, ch5x5, pool_proj), Table 1 of the paper;
# an empty tuple is a stride-2 max pool between stages.
INCEPTION_PLAN: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("a3", (64, 96, 128, 16, 32, 32)),
    ("b3", (128, 128, 192, 32, 96, 64)),
    ("pool3", ()),
    ("a4", (192, 96, 208, 16, 48, 64)),
    ("b4", (160, 112, 224, 24, 64, 64)),
    ("c4", (128, 128, 256, 24, 64, 64)),
    ("d4", (112, 144, 288, 32, 64, 64)),
    ("e4", (256, 160, 320, 32, 128, 128)),
    ("pool4", ()),
    ("a5", (256, 160, 320, 32, 128, 128)),
    ("b5", (384, 192, 384, 48, 128, 128)),
)


class GoogLeNet(nn.Module):
    """GoogLeNet with a one-convolution stem; no auxiliary classifiers."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, stem_channels: int = 192) -> None:
        super().__init__()
        self.pre_layers = _conv_bn_relu(in_channels, stem_channels, 3)
        stages: OrderedDict[str, nn.Module] = OrderedDict()
        channels = stem_channels
        for name, widths in INCEPTION_PLAN:
            if not widths:
                # Padding 1 keeps every resolution >= 1, so inputs down to a few pixels work.
                stages[name] = nn.MaxPool2d(3, stride=2, padding=1)
                continue
            block = Inception(channels, *widths)
            stages[name] = block
            channels = block.out_channels
        # An OrderedDict keeps readable names ("inception.a3") rather than Sequential's numeric ones.
        self.inception = nn.Sequential(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        initialise_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[N, num_classes]``."""
        out = self.inception(self.pre_layers(x))
        return self.fc(torch.flatten(self.pool(out), 1))


@register_model(
    "googlenet", description="GoogLeNet (Inception v1) for 32x32 images, 3x3 stem, 6.2 M parameters"
)
def googlenet(num_classes: int, in_channels: int) -> nn.Module:
    """GoogLeNet: 64 convolutions (1 stem + 9 Inception blocks x 7) and 1 linear layer."""
    return GoogLeNet(num_classes, in_channels)
