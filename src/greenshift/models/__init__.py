"""Backbone registry: ``get_model(name, num_classes, in_channels)`` and ``list_models(pattern)``.

Every backbone registers its modules in the order its forward pass runs them, so the last
``nn.Conv2d``/``nn.Linear`` in ``named_modules()`` is the layer nearest the output (see
"Counting convention for shift_depth" in docs/architecture.md).
"""

from __future__ import annotations

# Importing each model module registers its factories; that is its only import-time effect.
from greenshift.models.googlenet import GoogLeNet
from greenshift.models.mobilenetv2 import MobileNetV2
from greenshift.models.registry import (
    ModelFactory,
    ModelInfo,
    get_model,
    initialise_weights,
    list_models,
    model_info,
    register_model,
)
from greenshift.models.resnet import CifarResNet
from greenshift.models.small import SmallCNN
from greenshift.models.vgg import VGG

__all__ = [
    "VGG",
    "CifarResNet",
    "GoogLeNet",
    "MobileNetV2",
    "ModelFactory",
    "ModelInfo",
    "SmallCNN",
    "get_model",
    "initialise_weights",
    "list_models",
    "model_info",
    "register_model",
]
