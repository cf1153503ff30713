"""``cifar10``: the python version of CIFAR-10, as a folder of pickled batches or the original archive."""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from greenshift.data.core import AugmentSpec, ImageSplit, RawDataset
from greenshift.data.images import resize_images
from greenshift.data.registry import register_dataset
from greenshift.errors import ConfigError, DataError

BATCH_DIR = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
REQUIRED = (*TRAIN_BATCHES, TEST_BATCH, META)
LAYOUT = f"a directory holding {BATCH_DIR}/ (data_batch_1..5, test_batch, batches.meta) or {ARCHIVE}"

_SIDE = 32
_PIXELS = 3 * _SIDE * _SIDE
# Real batches are about 30 MB; refusing far larger archive members guards against decompression bombs.
_MAX_MEMBER_BYTES = 256 * 1024 * 1024
_BATCH_FORMAT = "expected a Python pickle of a dict with b'data' uint8 [N, 3072] and b'labels'"


def locate_cifar10(data_dir: Path) -> list[Path]:
    """The batch files (or the archive) that make up CIFAR-10 under ``data_dir``."""
    for folder in (data_dir / BATCH_DIR, data_dir):
        if folder.is_dir() and (folder / TRAIN_BATCHES[0]).is_file():
            missing = [name for name in REQUIRED if not (folder / name).is_file()]
            if missing:
                raise DataError(
                    f"{folder / missing[0]}: file is missing; CIFAR-10 needs {', '.join(REQUIRED)}"
                )
            return [folder / name for name in REQUIRED]
    for archive in (data_dir / ARCHIVE, data_dir):
        if archive.is_file():
            return [archive]
    raise DataError(f"{data_dir}: no CIFAR-10 files found; expected {LAYOUT}")


@register_dataset(
    "cifar10",
    description="CIFAR-10: 60000 32x32 colour images in 10 classes (50000 train, 10000 test)",
    needs_data_dir=True,
    default_image_size=32,
    augment=AugmentSpec(crop_padding=4, horizontal_flip=True),
    layout=LAYOUT,
    locate=locate_cifar10,
)
def read_cifar10(data_dir: Path | None, image_size: int) -> RawDataset:
    """Read the pickled batches (from the folder or straight from the archive) into uint8 tensors."""
    if data_dir is None:
        raise ConfigError(f"cifar10 needs its files: pass --data-dir (data_dir=) pointing to {LAYOUT}")
    sources = locate_cifar10(data_dir)
    if len(sources) == 1:
        blobs = _read_archive(sources[0])
        label = f"{sources[0]}:{BATCH_DIR}/"
    else:
        blobs = {path.name: _read_file(path) for path in sources}
        label = f"{sources[0].parent}/"

    classes = _read_meta(blobs[META], label + META)
    train = [_read_batch(blobs[name], label + name, len(classes)) for name in TRAIN_BATCHES]
    test = _read_batch(blobs[TEST_BATCH], label + TEST_BATCH, len(classes))
    trainval = ImageSplit(
        resize_images(torch.cat([images for images, _ in train]), image_size),
        torch.cat([labels for _, labels in train]),
    )
    return RawDataset(classes, trainval, ImageSplit(resize_images(test[0], image_size), test[1]))


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def _read_archive(archive: Path) -> dict[str, bytes]:
    """The required members of the archive, read in memory (nothing is extracted to disk)."""
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                path = PurePosixPath(member.name)
                if not member.isfile() or path.name not in REQUIRED or path.parent.name != BATCH_DIR:
                    continue
                if member.size > _MAX_MEMBER_BYTES:
                    raise DataError(f"{archive}: member {member.name} is implausibly large for CIFAR-10")
                handle = tar.extractfile(member)
                if handle is not None:
                    blobs[path.name] = handle.read()
    except DataError:
        raise
    except Exception as exc:  # tarfile/gzip/zlib report damage with several exception types
        raise DataError(
            f"{archive}: not a readable CIFAR-10 archive ({type(exc).__name__}: {exc}); expected {ARCHIVE}"
        ) from None
    missing = [name for name in REQUIRED if name not in blobs]
    if missing:
        raise DataError(
            f"{archive}: archive lacks {BATCH_DIR}/{missing[0]}; CIFAR-10 needs {', '.join(REQUIRED)}"
        )
    return blobs


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays and plain containers, never run arbitrary code."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _allowed_globals()
        if (module.split(".")[0], name) in allowed:
            return allowed[(module.split(".")[0], name)]
        if module == "_codecs" and name == "encode":
            return codecs.encode  # protocol-2 pickles written by Python 3 encode bytes this way
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    sample = np.zeros(1, dtype=np.uint8)
    return {
        ("numpy", "_reconstruct"): sample.__reduce__()[0],
        ("numpy", "_frombuffer"): sample.__reduce_ex__(5)[0],
        ("numpy", "scalar"): np.uint8(0).__reduce__()[0],
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


def _unpickle(blob: bytes, label: str) -> dict[Any, Any]:
    try:
        loaded = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except Exception as exc:  # truncated or foreign pickles fail in many ways
        raise DataError(
            f"{label}: not a CIFAR-10 batch ({type(exc).__name__}: {exc}); {_BATCH_FORMAT}"
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(f"{label}: not a CIFAR-10 batch (a {type(loaded).__name__}); {_BATCH_FORMAT}")
    return loaded


def _get(mapping: dict[Any, Any], key: str) -> Any:
    # Batches pickled under Python 2 have bytes keys; re-pickled ones may have str keys.
    if key.encode() in mapping:
        return mapping[key.encode()]
    return mapping.get(key)


def _read_meta(blob: bytes, label: str) -> list[str]:
    names = _get(_unpickle(blob, label), "label_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(
            f"{label}: not CIFAR-10 metadata; expected a pickled dict with b'label_names' (a list)"
        )
    return [n.decode() if isinstance(n, bytes) else n for n in names]


def _read_batch(blob: bytes, label: str, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch = _unpickle(blob, label)
    data, labels = _get(batch, "data"), _get(batch, "labels")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != _PIXELS or labels is None:
        raise DataError(f"{label}: not a CIFAR-10 batch (bad b'data' or no b'labels'); {_BATCH_FORMAT}")
    if data.dtype != np.uint8:
        if not np.issubdtype(data.dtype, np.integer) or data.min(initial=0) < 0 or data.max(initial=0) > 255:
            raise DataError(f"{label}: b'data' holds {data.dtype} values outside 0..255; {_BATCH_FORMAT}")
        data = data.astype(np.uint8)
    try:
        targets = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{label}: b'labels' is not a list of integers; {_BATCH_FORMAT}") from None
    if targets.shape[0] != data.shape[0]:
        raise DataError(f"{label}: {data.shape[0]} images but {targets.shape[0]} labels; {_BATCH_FORMAT}")
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise DataError(f"{label}: labels outside 0..{num_classes - 1}; {_BATCH_FORMAT}")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, each plane row-major.
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, _SIDE, _SIDE).copy())
    return images, torch.from_numpy(targets.copy())
