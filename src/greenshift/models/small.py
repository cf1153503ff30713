"""Small plain CNNs: ``small_cnn`` for quick real runs, ``tiny_cnn`` for tests."""

from __future__ import annotations

import torch
from torch import nn

from greenshift.models.registry import initialise_weights, register_model


class SmallCNN(nn.Module):
    """conv-bn-relu layers with a 2x2 max pool between them, global average pool, one linear layer."""

    def __init__(self, widths: tuple[int, ...], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            if index > 0:
                # ceil_mode keeps odd sizes (e.g. 7x7 from 28x28 MNIST) from shrinking to nothing.
                layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        initialise_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``[N, num_classes]``."""
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@register_model(
    "small_cnn", description="3-convolution CNN (16/32/64 channels), 24 k parameters, for quick runs"
)
def small_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """Small CNN: 3 convolutions and 1 linear layer."""
    return SmallCNN((16, 32, 64), num_classes, in_channels)


@register_model("tiny_cnn", description="2-convolution CNN with 8 channels, for tests only", tiny=True)
def tiny_cnn(num_classes: int, in_channels: int) -> nn.Module:
    """Tiny CNN: 2 convolutions and 1 linear layer."""
    return SmallCNN((8, 8), num_classes, in_channels)
