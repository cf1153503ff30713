"""greenshift.data: data set registry and readers, uint8 tensor-resident splits, batched on-device augmentation.

Built-in data sets: ``digits`` (offline), ``cifar10``, ``mnist``, ``caltech101``, ``tiny_imagenet`` and the
generic class-per-folder ``folder``. Importing this package registers them.
"""

from __future__ import annotations

from greenshift.data import cifar, digits, folders, mnist  # noqa: F401  (imported to register the readers)
from greenshift.data.core import Dataset
from greenshift.data.registry import list_datasets, load_dataset, register_dataset

# What users need (docs/api.md); everything else is imported from its module.
__all__ = [
    "Dataset",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
