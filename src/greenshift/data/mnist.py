"""``mnist``: the four standard IDX files, gzipped or not."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from greenshift.data.core import AugmentSpec, ImageSplit, RawDataset
from greenshift.data.images import resize_images
from greenshift.data.registry import register_dataset
from greenshift.errors import ConfigError, DataError

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
LAYOUT = "a directory holding train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (each optionally .gz)"
IMAGE_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension
_GZIP_SIGNATURE = b"\x1f\x8b"
_NUM_CLASSES = 10
# Folders other tools (torchvision) download MNIST into, tried after data_dir itself.
_SUBFOLDERS = (".", "MNIST/raw", "mnist")


def _candidates(stem: str) -> list[str]:
    # Some mirrors spell the files "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [stem, stem + ".gz", dotted, dotted + ".gz"]


def locate_mnist(data_dir: Path) -> list[Path]:
    """The four IDX files under ``data_dir`` (or its ``MNIST/raw`` folder), in :data:`FILES` order."""
    for sub in _SUBFOLDERS:
        folder = data_dir / sub
        found = [
            next((folder / c for c in _candidates(stem) if (folder / c).is_file()), None) for stem in FILES
        ]
        if any(path is not None for path in found):
            missing = [stem for stem, path in zip(FILES, found, strict=True) if path is None]
            if missing:
                raise DataError(f"{folder / missing[0]}[.gz]: file is missing; expected {LAYOUT}")
            return [path for path in found if path is not None]
    raise DataError(f"{data_dir}: no MNIST files found; expected {LAYOUT}")


@register_dataset(
    "mnist",
    description="MNIST: 70000 28x28 greyscale handwritten digits (60000 train, 10000 test)",
    needs_data_dir=True,
    default_image_size=28,
    augment=AugmentSpec(crop_padding=2),  # digits are not mirror-invariant: no flip
    layout=LAYOUT,
    locate=locate_mnist,
)
def read_mnist(data_dir: Path | None, image_size: int) -> RawDataset:
    """Read and validate the IDX files; resize if ``image_size`` differs from the files' 28."""
    if data_dir is None:
        raise ConfigError(f"mnist needs its files: pass --data-dir (data_dir=) pointing to {LAYOUT}")
    train_images, train_labels, test_images, test_labels = locate_mnist(data_dir)
    return RawDataset(
        classes=[str(d) for d in range(_NUM_CLASSES)],
        trainval=_read_pair(train_images, train_labels, image_size),
        test=_read_pair(test_images, test_labels, image_size),
    )


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one IDX file of unsigned bytes (gzip detected by content), checking magic number and size."""
    kind = "image" if magic == IMAGE_MAGIC else "label"
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_SIGNATURE:
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{path}: not a readable (gzipped) IDX {kind} file ({type(exc).__name__}: {exc})"
        ) from None
    if len(raw) < 4:
        raise DataError(f"{path}: not an IDX {kind} file (only {len(raw)} bytes, magic {magic} expected)")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DataError(f"{path}: not an IDX {kind} file (magic {magic} expected, found {found})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX {kind} file (header needs {header} bytes, found {len(raw)})")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "oversized"
        raise DataError(
            f"{path}: {problem} IDX {kind} file ({len(raw)} bytes, {expected} expected for shape {list(dims)})"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read_pair(images_path: Path, labels_path: Path, image_size: int) -> ImageSplit:
    images = read_idx(images_path, IMAGE_MAGIC)
    labels = read_idx(labels_path, LABEL_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels for the {images.shape[0]} images of {images_path.name}"
        )
    if labels.size and int(labels.max()) >= _NUM_CLASSES:
        raise DataError(f"{labels_path}: label {int(labels.max())} is not a digit 0..9")
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)
    return ImageSplit(resize_images(pixels, image_size), torch.from_numpy(labels.astype(np.int64)))
