"""Backbone registry: ``get_model(name, num_classes, in_channels)`` and ``list_models(pattern)``.

Every backbone registers its modules in the order its forward pass runs them, so the last
``nn.Conv2d``/``nn.Linear`` in ``named_modules()`` is the layer nearest the output (see
"Counting convention for shift_depth" in docs/architecture.md).
"""

from __future__ import annotations

from greenshift.models import googlenet, mobilenetv2, resnet, small, vgg  # noqa: F401  (imported to register them)
from greenshift.models.registry import get_model, list_models, model_info, register_model

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "get_model",
    "list_models",
    "model_info",
    "register_model",
]
