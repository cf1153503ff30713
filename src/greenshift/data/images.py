"""Image decoding with Pillow and tensor resizing shared by the readers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from greenshift.errors import DataError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)

# Pillow releases the GIL while decoding and resizing, so a few threads speed up big trees;
# more than this mostly contends for memory bandwidth.
_MAX_WORKERS = 8
_PARALLEL_THRESHOLD = 64
_CHUNK = 256
_RESIZE_CHUNK = 1024


def list_image_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder`` (by extension, hidden files skipped), sorted by name."""
    return sorted(
        entry
        for entry in folder.iterdir()
        if entry.is_file() and not entry.name.startswith(".") and entry.suffix.lower() in IMAGE_EXTENSIONS
    )


def list_class_folders(root: Path) -> list[Path]:
    """Sub-folders of ``root`` (hidden ones skipped), sorted by name."""
    return sorted(entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def load_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """Decode one image to ``uint8`` ``[image_size, image_size, channels]``.

    Any mode (greyscale, palette, CMYK, 16-bit, alpha) is converted to RGB or L; the shorter side is
    resized to ``image_size`` and the centre is cropped.
    """
    try:
        with Image.open(path) as img:
            # For JPEGs, let the decoder downscale by 2/4/8 while staying at least image_size a side.
            img.draft("RGB" if channels == 3 else "L", (image_size, image_size))
            converted = _convert(img, channels)
            resized = _resize_and_centre_crop(converted, image_size)
            array = np.asarray(resized, dtype=np.uint8)
    except Exception as exc:  # Pillow signals broken files with many exception types
        raise DataError(f"{path}: cannot be decoded as an image file ({type(exc).__name__}: {exc})") from None
    return array.reshape(image_size, image_size, channels)


def decode_images(
    paths: Sequence[Path], image_size: int, channels: int, *, workers: int | None = None
) -> torch.Tensor:
    """Decode ``paths`` into one ``uint8`` tensor ``[N, channels, image_size, image_size]``."""
    out = np.empty((len(paths), image_size, image_size, channels), dtype=np.uint8)

    def decode_range(start: int) -> None:
        for i in range(start, min(start + _CHUNK, len(paths))):
            out[i] = load_image(paths[i], image_size, channels)

    starts = range(0, len(paths), _CHUNK)
    workers = workers if workers is not None else min(_MAX_WORKERS, os.cpu_count() or 1)
    if workers > 1 and len(paths) >= _PARALLEL_THRESHOLD:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(decode_range, starts):
                pass  # iterating re-raises the first DataError of any chunk
    else:
        for start in starts:
            decode_range(start)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def resize_images(images: torch.Tensor, image_size: int) -> torch.Tensor:
    """Resize ``[N, C, H, W]`` images (uint8, or float in 0..255) to square ``uint8`` ``image_size``.

    Bilinear with antialiasing, so shrinking does not alias; a no-op for uint8 already at that size.
    """
    n, _, height, width = images.shape
    if images.dtype == torch.uint8 and height == image_size and width == image_size:
        return images
    if height == image_size and width == image_size:
        return images.round().clamp_(0, 255).to(torch.uint8)
    parts = []
    for start in range(0, n, _RESIZE_CHUNK):
        chunk = images[start : start + _RESIZE_CHUNK].to(torch.float32)
        scaled = F.interpolate(
            chunk, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
        parts.append(scaled.round_().clamp_(0, 255).to(torch.uint8))
    if not parts:
        return torch.empty((0, images.shape[1], image_size, image_size), dtype=torch.uint8)
    return torch.cat(parts)


def _convert(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # Wide greyscale: map to 8 bits (16-bit range if it fits, else the image's own maximum).
        wide = np.asarray(img, dtype=np.float64)
        top = float(wide.max()) if wide.size else 0.0
        if top > 255:
            wide = wide * (255.0 / (65535.0 if top <= 65535 else top))
        img = Image.fromarray(np.clip(wide, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")  # palette transparency survives only through RGBA
    target = "RGB" if channels == 3 else "L"
    return img if img.mode == target else img.convert(target)


def _resize_and_centre_crop(img: Image.Image, image_size: int) -> Image.Image:
    width, height = img.size
    if width < 1 or height < 1:
        raise ValueError(f"empty image of size {width}x{height}")
    scale = image_size / min(width, height)
    new_size = (max(image_size, round(width * scale)), max(image_size, round(height * scale)))
    if new_size != (width, height):
        img = img.resize(new_size, Image.Resampling.BILINEAR)
    left = (new_size[0] - image_size) // 2
    top = (new_size[1] - image_size) // 2
    return img.crop((left, top, left + image_size, top + image_size))
