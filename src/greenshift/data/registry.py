"""The data set registry and :func:`load_dataset`, which ties readers, the cache and splitting together."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from greenshift.data.cache import cache_key, cache_path, load_cached, resolve_cache_dir, save_cached
from greenshift.data.core import AugmentSpec, Dataset, RawDataset, channel_stats, stratified_split
from greenshift.errors import ConfigError, DataError

Reader = Callable[[Path | None, int], RawDataset]
"""A reader decodes a data set: ``reader(data_dir, image_size) -> RawDataset``."""

Locator = Callable[[Path], list[Path]]
"""A locator lists a data set's source files/folders under ``data_dir`` (raising DataError if absent)."""

_MAX_IMAGE_SIZE = 4096


@dataclass(frozen=True)
class DatasetInfo:
    """What :func:`list_datasets` reports about one registered data set."""

    name: str
    description: str
    needs_data_dir: bool
    default_image_size: int


@dataclass(frozen=True)
class _Entry:
    info: DatasetInfo
    reader: Reader
    augment: AugmentSpec
    layout: str
    locate: Locator | None


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(
    name: str,
    *,
    description: str,
    needs_data_dir: bool,
    default_image_size: int,
    augment: AugmentSpec | None = None,
    layout: str = "",
    locate: Locator | None = None,
) -> Callable[[Reader], Reader]:
    """Decorator registering ``reader(data_dir, image_size) -> RawDataset`` under ``name``.

    ``augment`` is the data set's default training augmentation (none if omitted), ``layout`` a short
    description of the expected files for error messages, and ``locate(data_dir)`` lists the source
    files or folders whose sizes and mtimes key the cache (default: all of ``data_dir``).
    """
    key = _normalise(name)

    def decorate(reader: Reader) -> Reader:
        if key in _REGISTRY:
            raise ValueError(f"data set {key!r} is already registered")
        info = DatasetInfo(key, description, needs_data_dir, default_image_size)
        _REGISTRY[key] = _Entry(info, reader, augment or AugmentSpec(), layout, locate)
        return reader

    return decorate


def list_datasets() -> list[DatasetInfo]:
    """All registered data sets, sorted by name."""
    return [_REGISTRY[name].info for name in sorted(_REGISTRY)]


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    image_size: int | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    cache_dir: str | Path | None = None,
) -> Dataset:
    """Load data set ``name`` as CPU-resident ``uint8`` splits, decoding through the cache.

    The decoded images (test split included) are cached; the stratified train/validation split
    (``val_fraction``, ``split_seed``) is made afterwards and is deterministic. ``mean``/``std``
    come from the train split.
    """
    entry = _lookup(name)
    info = entry.info
    size = info.default_image_size if image_size is None else image_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= _MAX_IMAGE_SIZE:
        raise ConfigError(f"image_size={image_size!r} must be an integer in [1, {_MAX_IMAGE_SIZE}]")
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, (int, float))
        or not 0 < val_fraction < 1
    ):
        raise ConfigError(f"val_fraction={val_fraction!r} must be a number strictly between 0 and 1")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ConfigError(f"split_seed={split_seed!r} must be an integer")

    root = _resolve_data_dir(entry, data_dir)
    if root is None:
        sources: list[Path] = []
    elif entry.locate is not None:
        sources = entry.locate(root)
    else:
        sources = [root]

    key = cache_key(info.name, sources, size)
    path = cache_path(resolve_cache_dir(cache_dir), info.name, size, key)
    raw = load_cached(path, key)
    if raw is None:
        raw = entry.reader(root, size)
        save_cached(path, key, raw)
    augment = entry.augment.resized(size, info.default_image_size)
    return _assemble(info.name, augment, raw, float(val_fraction), split_seed, root)


def _assemble(
    name: str, augment: AugmentSpec, raw: RawDataset, val_fraction: float, split_seed: int, root: Path | None
) -> Dataset:
    where = f"{root}" if root is not None else name
    trainval = raw.trainval
    labels = trainval.labels
    if len(trainval) and (int(labels.min()) < 0 or int(labels.max()) >= len(raw.classes)):
        raise DataError(f"{where}: labels fall outside the {len(raw.classes)} classes of data set {name!r}")
    kept, held = stratified_split(labels, val_fraction, split_seed)
    if kept.numel() == 0 or held.numel() == 0:
        raise DataError(
            f"{where}: {len(trainval)} training images are too few to hold out a validation fraction of {val_fraction}"
        )
    train = trainval.subset(kept)
    mean, std = channel_stats(train.images)
    return Dataset(
        name=name,
        classes=list(raw.classes),
        train=train,
        val=trainval.subset(held),
        test=raw.test,
        mean=mean,
        std=std,
        augment=augment,
    )


def _resolve_data_dir(entry: _Entry, data_dir: str | Path | None) -> Path | None:
    info = entry.info
    if not info.needs_data_dir:
        if data_dir is not None:
            raise ConfigError(
                f"data set {info.name!r} reads no files ({entry.layout}): drop --data-dir (data_dir=)"
            )
        return None
    if data_dir is None:
        raise ConfigError(
            f"data set {info.name!r} needs its files: pass --data-dir (data_dir=) pointing to {entry.layout}"
        )
    root = Path(data_dir).expanduser().resolve()
    if not root.exists():
        raise DataError(f"{root}: data directory does not exist; expected {entry.layout}")
    return root


def _lookup(name: str) -> _Entry:
    key = _normalise(name) if isinstance(name, str) else ""
    if key in _REGISTRY:
        return _REGISTRY[key]
    available = sorted(_REGISTRY)
    close = difflib.get_close_matches(key, available, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown data set {name!r}{hint}; available: {', '.join(available)}")


def _normalise(name: str) -> str:
    # Accept "Tiny-ImageNet" for "tiny_imagenet": names are case- and dash-insensitive.
    return name.strip().lower().replace("-", "_")
