"""greenshift.data: data set registry and readers, uint8 tensor-resident splits, batched on-device augmentation.

Built-in data sets: ``digits`` (offline), ``cifar10``, ``mnist``, ``caltech101``, ``tiny_imagenet`` and the
generic class-per-folder ``folder``. Importing this package registers them.
"""

from __future__ import annotations

from greenshift.data import cifar, digits, folders, mnist  # noqa: F401  (imported to register the readers)
from greenshift.data.cache import CACHE_ENV, resolve_cache_dir
from greenshift.data.core import (
    AugmentSpec,
    Dataset,
    ImageSplit,
    RawDataset,
    augment_batch,
    channel_stats,
    hold_out_test,
    iterate_batches,
    stratified_split,
)
from greenshift.data.registry import DatasetInfo, list_datasets, load_dataset, register_dataset

__all__ = [
    "CACHE_ENV",
    "AugmentSpec",
    "Dataset",
    "DatasetInfo",
    "ImageSplit",
    "RawDataset",
    "augment_batch",
    "channel_stats",
    "hold_out_test",
    "iterate_batches",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "resolve_cache_dir",
    "stratified_split",
]
