"""VGG (Simonyan and Zisserman, 2015) with batch norm, in the usual small-image form.

Convolutions are 3x3 with batch norm and ReLU; the three large fully connected layers of the
ImageNet model are replaced by a single linear layer on the 512 globally pooled features.
"""

from __future__ import annotations

import torch
from torch import nn

from greenshift.models.registry import initialise_weights, register_model

POOL = "M"

# Output channels of each convolution; POOL marks a 2x2 max pool. Configuration "E" of the paper.
VGG19_PLAN: tuple[int | str, ...] = (
    64, 64, POOL,
    128, 128, POOL,
    256, 256, 256, 256, POOL,
    512, 512, 512, 512, POOL,
    512, 512, 512, 512, POOL,
)  # fmt: skip


class VGG(nn.Module):
    """Plain stack of 3x3 conv-bn-relu layers and max pools, then one linear classifier."""

    def __init__(self, plan: tuple[int | str, ...], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == POOL:
                # ceil_mode lets a 1x1 map pass through, so five pools work on inputs smaller than 32.
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
                continue
            out_channels = int(item)
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        initialise_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[N, num_classes]``."""
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    "vgg19", description="VGG-19 with batch norm for 32x32 images, one linear classifier, 20 M parameters"
)
def vgg19(num_classes: int, in_channels: int) -> nn.Module:
    """VGG-19: 16 convolutions and 1 linear layer."""
    return VGG(VGG19_PLAN, num_classes, in_channels)
