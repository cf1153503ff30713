"""Decode-once cache of data sets as ``uint8`` tensor files.

A cache entry is keyed by the data set name, the absolute source paths, a size/mtime fingerprint of
every source file and the image size, so editing, adding or touching a source file invalidates it.
Entries are written atomically (temporary file + ``os.replace``): concurrent workers either see a
complete file or none. An unreadable or inconsistent entry is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from greenshift.data.core import ImageSplit, RawDataset
from greenshift.fileio import atomic_torch_save

CACHE_ENV = "GREENSHIFT_CACHE"
# Bump when a reader's output changes for the same source files, so old entries stop matching.
CACHE_FORMAT = 1

_log = logging.getLogger(__name__)


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir`` if given, else ``$GREENSHIFT_CACHE``, else ``~/.cache/greenshift``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "greenshift"


def source_fingerprint(paths: Sequence[Path]) -> str:
    """SHA-256 over the relative path, size and mtime of every file under ``paths`` (files or folders)."""
    digest = hashlib.sha256()
    for root in paths:
        root = Path(root).resolve()
        digest.update(f"root\t{root}\n".encode())
        if root.is_file():
            stat = root.stat()
            digest.update(f".\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
            continue
        for folder, dirs, files in os.walk(root):
            dirs.sort()  # os.walk order is file-system dependent; sorting makes the hash stable
            relative = os.path.relpath(folder, root)
            for name in sorted(files):
                try:
                    stat = os.stat(os.path.join(folder, name))
                except OSError:
                    continue  # a dangling link is not part of the data
                digest.update(f"{relative}/{name}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def cache_key(name: str, sources: Sequence[Path], image_size: int) -> str:
    """The hex digest identifying one decoded data set."""
    description = {
        "format": CACHE_FORMAT,
        "name": name,
        "sources": [str(Path(p).resolve()) for p in sources],
        "fingerprint": source_fingerprint(sources),
        "image_size": image_size,
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, name: str, image_size: int, key: str) -> Path:
    """Where the entry for ``key`` lives inside ``cache_dir``."""
    return cache_dir / f"{name}-{image_size}px-{key[:24]}.pt"


def load_cached(path: Path, key: str) -> RawDataset | None:
    """The cached data set at ``path`` if it exists, is intact and belongs to ``key``; else ``None``."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return _from_payload(payload, key)
    except Exception as exc:  # any damage (truncation, foreign file, old format) means: rebuild
        _log.info("ignoring unusable cache file %s: %s", path, exc)
        return None


def save_cached(path: Path, key: str, raw: RawDataset) -> None:
    """Write ``raw`` to ``path`` atomically; a cache that cannot be written only costs a warning."""
    try:
        atomic_torch_save(_to_payload(raw, key), path)
    except OSError as exc:
        warnings.warn(f"could not write data-set cache {path}: {exc}", RuntimeWarning, stacklevel=3)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    # torch.save writes a view's whole storage; copy views so the file holds only their own bytes.
    if (
        tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size()
        or not tensor.is_contiguous()
    ):
        return tensor.contiguous().clone()
    return tensor


def _to_payload(raw: RawDataset, key: str) -> dict[str, Any]:
    test = raw.test
    return {
        "format": CACHE_FORMAT,
        "key": key,
        "classes": list(raw.classes),
        "trainval_images": _compact(raw.trainval.images.cpu()),
        "trainval_labels": _compact(raw.trainval.labels.cpu()),
        "test_images": None if test is None else _compact(test.images.cpu()),
        "test_labels": None if test is None else _compact(test.labels.cpu()),
    }


def _from_payload(payload: Any, key: str) -> RawDataset:
    if not isinstance(payload, dict) or payload.get("format") != CACHE_FORMAT or payload.get("key") != key:
        raise ValueError("not a cache entry of this data set and format")
    classes = payload["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError("class names are not a list of strings")
    test = None
    if payload["test_images"] is not None:
        test = ImageSplit(payload["test_images"], payload["test_labels"])
    trainval = ImageSplit(payload["trainval_images"], payload["trainval_labels"])
    return RawDataset(classes=classes, trainval=trainval, test=test)
