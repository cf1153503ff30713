"""Readers against tiny files written in each real on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greenshift.data import load_dataset
from greenshift.data.cifar import read_cifar10
from greenshift.data.folders import read_caltech101, read_folder, read_tiny_imagenet
from greenshift.data.images import decode_images
from greenshift.data.mnist import read_mnist
from greenshift.errors import ConfigError, DataError

# A distinct colour per class lets tests check that every image kept its label.
COLOURS = [(230, 20, 20), (20, 200, 20), (20, 20, 220), (220, 220, 20)]


# ---------------------------------------------------------------- CIFAR-10


class _RunsCode:
    """Unpickling this would call os.system: the reader must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


def _cifar_batch(n: int, offset: int, rng: np.random.Generator) -> dict[bytes, object]:
    labels = [(offset + i) % 10 for i in range(n)]
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": labels, b"batch_label": b"x"}


def write_cifar(root: Path, per_batch: int = 4) -> dict[str, dict[bytes, object]]:
    """Write cifar-10-batches-py/ with protocol-2 pickles and bytes keys, like the original files."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(per_batch, i, rng) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(5, 0, rng)
    meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
    for name, content in [*batches.items(), ("batches.meta", meta)]:
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return batches


def test_cifar_folder_is_read_in_batch_order_with_exact_pixels(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    raw = read_cifar10(tmp_path, 32)
    assert raw.classes == [f"class{i}" for i in range(10)]
    assert raw.trainval.images.shape == (20, 3, 32, 32) and raw.trainval.images.dtype == torch.uint8
    first = batches["data_batch_1"]
    assert np.array_equal(raw.trainval.images[:4].numpy(), first[b"data"].reshape(4, 3, 32, 32))
    # Channel planes: the first 1024 values are red, row-major.
    assert raw.trainval.images[0, 0, 0, 5] == first[b"data"][0, 5]
    assert raw.trainval.images[0, 1, 2, 3] == first[b"data"][0, 1024 + 2 * 32 + 3]
    expected_labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]
    assert raw.trainval.labels.tolist() == expected_labels
    assert raw.test is not None and raw.test.labels.tolist() == batches["test_batch"][b"labels"]


def test_cifar_archive_is_read_without_extracting(tmp_path: Path, cache_dir: Path) -> None:
    write_cifar(tmp_path / "src")
    archive_dir = tmp_path / "archive"
    archive_dir.mkdir()
    with tarfile.open(archive_dir / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_archive = read_cifar10(archive_dir, 16)
    from_folder = read_cifar10(tmp_path / "src", 16)
    assert sorted(p.name for p in archive_dir.iterdir()) == ["cifar-10-python.tar.gz"]
    assert from_archive.trainval.images.shape == (20, 3, 16, 16)
    assert torch.equal(from_archive.trainval.images, from_folder.trainval.images)
    data = load_dataset("cifar10", data_dir=archive_dir, image_size=16)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 16)
    assert len(data.train) + len(data.val) == 20 and len(data.test) == 5
    assert data.augment.crop_padding == 2 and data.augment.horizontal_flip  # 4 pixels at 32, scaled to 16


def test_cifar_truncated_batch_names_the_file(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_3: not a CIFAR-10 batch"):
        read_cifar10(tmp_path, 32)


def test_cifar_wrong_shape_and_code_carrying_pickles_are_rejected(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, protocol=2)
    )
    with pytest.raises(DataError, match=r"data_batch_2.*\[N, 3072\]"):
        read_cifar10(tmp_path, 32)
    write_cifar(tmp_path / "evil")
    (tmp_path / "evil" / "cifar-10-batches-py" / "test_batch").write_bytes(
        pickle.dumps({b"data": _RunsCode()})
    )
    with pytest.raises(DataError, match=r"test_batch.*posix.system is not allowed"):
        read_cifar10(tmp_path / "evil", 32)


def test_cifar_missing_file_and_broken_archive_are_data_errors(tmp_path: Path) -> None:
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError, match=r"test_batch: file is missing"):
        read_cifar10(tmp_path, 32)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"not a tar archive" * 100)[:60])
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz: not a readable CIFAR-10 archive"):
        read_cifar10(broken, 32)
    with pytest.raises(DataError, match="no CIFAR-10 files found"):
        read_cifar10(_empty(tmp_path), 32)


def _empty(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------- MNIST


def _idx(magic: int, array: np.ndarray) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, *, gz: bool, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Write the four IDX files (optionally gzipped) and return their arrays."""
    rng = np.random.default_rng(1)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    root.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        blob = _idx(2051 if "images" in name else 2049, array)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (root / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "plain"])
def test_mnist_idx_files_are_read_exactly(tmp_path: Path, gz: bool) -> None:
    arrays = write_mnist(tmp_path, gz=gz)
    raw = read_mnist(tmp_path, 28)
    assert raw.classes == [str(d) for d in range(10)]
    assert raw.trainval.images.shape == (20, 1, 28, 28)
    assert np.array_equal(raw.trainval.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert raw.trainval.labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert raw.test is not None
    assert np.array_equal(raw.test.images[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])
    assert raw.test.labels.dtype == torch.int64


def test_mnist_resize_and_torchvision_layout(tmp_path: Path, cache_dir: Path) -> None:
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    data = load_dataset("mnist", data_dir=tmp_path, image_size=14)
    assert data.train.images.shape[1:] == (1, 14, 14)
    assert (data.num_classes, data.in_channels) == (10, 1)
    assert data.augment.crop_padding == 1 and not data.augment.horizontal_flip  # 2 pixels at 28, scaled to 14


def test_mnist_wrong_magic_names_the_file_and_both_numbers(tmp_path: Path) -> None:
    write_mnist(tmp_path, gz=True)
    target = tmp_path / "train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(_idx(1234, np.zeros((2, 28, 28), np.uint8))))
    with pytest.raises(
        DataError,
        match=r"train-images-idx3-ubyte.gz: not an IDX image file \(magic 2051 expected, found 1234\)",
    ):
        read_mnist(tmp_path, 28)


def test_mnist_truncated_plain_and_gzip_files_are_data_errors(tmp_path: Path) -> None:
    write_mnist(tmp_path / "plain", gz=False)
    labels = tmp_path / "plain" / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: truncated IDX label file"):
        read_mnist(tmp_path / "plain", 28)
    write_mnist(tmp_path / "gz", gz=True)
    images = tmp_path / "gz" / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:100])
    with pytest.raises(
        DataError, match=r"train-images-idx3-ubyte.gz: not a readable \(gzipped\) IDX image file"
    ):
        read_mnist(tmp_path / "gz", 28)


def test_mnist_missing_file_and_label_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path / "a", gz=False)
    (tmp_path / "a" / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\[\.gz\]: file is missing"):
        read_mnist(tmp_path / "a", 28)
    write_mnist(tmp_path / "b", gz=False)
    (tmp_path / "b" / "train-labels-idx1-ubyte").write_bytes(_idx(2049, np.zeros(7, np.uint8)))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: 7 labels for the 20 images"):
        read_mnist(tmp_path / "b", 28)


# ---------------------------------------------------------------- image trees


def _save(path: Path, colour: tuple[int, int, int], size: tuple[int, int], mode: str) -> None:
    """Save a solid image of ``colour`` in ``mode`` (format from the extension)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode == "L":
        image = image.convert("L")
    elif mode == "P":
        image = image.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    elif mode == "CMYK":
        image = image.convert("CMYK")
    image.save(path, quality=95) if path.suffix.lower() in {".jpg", ".jpeg"} else image.save(path)


def write_caltech(root: Path) -> None:
    """101_ObjectCategories with 3 classes of 5 images of varied sizes and modes, plus the background class."""
    top = root / "101_ObjectCategories"
    variants = [("jpg", "RGB", (40, 30)), ("jpg", "L", (20, 50)), ("png", "P", (33, 33)), ("jpg", "CMYK", (64, 48)),
                ("jpg", "RGB", (17, 90))]  # fmt: skip
    for cls, name in enumerate(["Faces", "airplanes", "leopards"]):  # sorted: cls is the label
        for i, (ext, mode, size) in enumerate(variants):
            colour = COLOURS[cls] if mode != "L" else (40 + 80 * cls,) * 3
            _save(top / name / f"image_{i:04d}.{ext}", colour, size, mode)
    _save(top / "BACKGROUND_Google" / "image_0001.jpg", (0, 0, 0), (30, 30), "RGB")


def test_decode_images_converts_modes_and_centre_crops(tmp_path: Path) -> None:
    _save(tmp_path / "grey.png", (90, 90, 90), (30, 12), "L")
    _save(tmp_path / "palette.gif", (20, 200, 20), (12, 12), "P")
    _save(tmp_path / "cmyk.jpg", (230, 20, 20), (50, 20), "CMYK")
    stripes = Image.new("RGB", (40, 20), (0, 0, 255))
    stripes.paste((0, 255, 0), (10, 0, 30, 20))  # the middle half is green
    stripes.save(tmp_path / "stripes.png")
    paths = [tmp_path / n for n in ("grey.png", "palette.gif", "cmyk.jpg", "stripes.png")]
    images = decode_images(paths, 8, 3)
    assert images.shape == (4, 3, 8, 8) and images.dtype == torch.uint8
    assert torch.all(images[0] == 90)
    assert images[1, :, 0, 0].tolist() == [20, 200, 20]
    assert (images[2].float().mean(dim=(1, 2)) - torch.tensor([230.0, 20, 20])).abs().max() < 8
    assert torch.all(images[3, 1, :, 1:-1] == 255) and torch.all(images[3, 2, :, 1:-1] == 0)
    grey = decode_images(paths[:1], 5, 1)
    assert grey.shape == (1, 1, 5, 5) and torch.all(grey == 90)


def _assert_colours_match_labels(images: torch.Tensor, labels: torch.Tensor) -> None:
    for image, label in zip(images, labels, strict=True):
        mean = image.float().mean(dim=(1, 2))
        if float(mean.max() - mean.min()) < 5:  # greyscale samples carry their class in brightness
            assert abs(float(mean[0]) - (40 + 80 * int(label))) < 6
        else:
            assert (mean - torch.tensor(COLOURS[int(label)], dtype=torch.float)).abs().max() < 12


def test_caltech_tree_skips_background_and_keeps_labels(tmp_path: Path, cache_dir: Path) -> None:
    write_caltech(tmp_path)
    raw = read_caltech101(tmp_path, 16)
    assert raw.classes == ["Faces", "airplanes", "leopards"]  # sorted folder names, background skipped
    assert raw.test is not None
    assert len(raw.trainval) + len(raw.test) == 15 and len(raw.test) == 3
    assert torch.bincount(raw.test.labels).tolist() == [1, 1, 1]
    assert raw.trainval.images.shape[1:] == (3, 16, 16)
    _assert_colours_match_labels(raw.trainval.images, raw.trainval.labels)
    _assert_colours_match_labels(raw.test.images, raw.test.labels)
    data = load_dataset("caltech101", data_dir=tmp_path)
    assert data.image_size == 64 and data.num_classes == 3


def test_unreadable_and_truncated_images_name_the_file(tmp_path: Path) -> None:
    write_caltech(tmp_path)
    broken = tmp_path / "101_ObjectCategories" / "Faces" / "image_9999.jpg"
    broken.write_bytes(b"this is not a JPEG")
    with pytest.raises(DataError, match=r"image_9999\.jpg: cannot be decoded as an image file"):
        read_caltech101(tmp_path, 16)
    good = tmp_path / "101_ObjectCategories" / "Faces" / "image_0000.jpg"
    broken.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"image_9999\.jpg: cannot be decoded"):
        read_caltech101(tmp_path, 16)


def test_empty_class_folder_is_named(tmp_path: Path) -> None:
    write_caltech(tmp_path)
    (tmp_path / "101_ObjectCategories" / "empty_class").mkdir()
    (tmp_path / "101_ObjectCategories" / "empty_class" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty_class: class folder holds no images"):
        read_caltech101(tmp_path, 16)
    with pytest.raises(DataError, match=r"no 101_ObjectCategories folder found"):
        read_caltech101(_empty(tmp_path), 16)


def write_tiny_imagenet(root: Path, per_class: int = 3) -> list[str]:
    """tiny-imagenet-200 with 3 classes: train/<wnid>/images, val/images + annotations, wnids and words."""
    top = root / "tiny-imagenet-200"
    wnids = ["n02000002", "n01000001", "n03000003"]
    top.mkdir(parents=True)
    (top / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (top / "words.txt").write_text(
        "n01000001\tgoldfish, Carassius auratus\nn02000002\tcrane\nn03000003\tcrane\nn09999999\tunused\n"
    )
    sorted_ids = sorted(wnids)
    lines = []
    for cls, wnid in enumerate(sorted_ids):
        for i in range(per_class):
            _save(top / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", COLOURS[cls], (64, 64), "RGB")
        name = f"val_{cls}.JPEG"
        _save(top / "val" / "images" / name, COLOURS[cls], (64, 64), "RGB")
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    _save(top / "val" / "images" / "val_grey.JPEG", (120, 120, 120), (64, 64), "L")
    lines.append(f"val_grey.JPEG\t{sorted_ids[1]}\t0\t0\t63\t63")
    (top / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return sorted_ids


def test_tiny_imagenet_uses_val_as_labelled_test_split(tmp_path: Path, cache_dir: Path) -> None:
    write_tiny_imagenet(tmp_path)
    raw = read_tiny_imagenet(tmp_path, 64)
    assert raw.classes == ["goldfish", "crane (n02000002)", "crane (n03000003)"]
    assert raw.trainval.images.shape == (9, 3, 64, 64)
    assert raw.trainval.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    _assert_colours_match_labels(raw.trainval.images, raw.trainval.labels)
    assert raw.test is not None and raw.test.labels.tolist() == [0, 1, 2, 1]
    _assert_colours_match_labels(raw.test.images[:3], raw.test.labels[:3])
    assert torch.all(raw.test.images[3].float().sub(120).abs() < 4)  # greyscale JPEG became RGB
    data = load_dataset("tiny-imagenet", data_dir=tmp_path / "tiny-imagenet-200", image_size=32)
    assert (
        data.image_size == 32 and data.augment.crop_padding == 4 and data.augment.horizontal_flip
    )  # 8 at 64


def test_tiny_imagenet_bad_annotations_and_missing_class_folder(tmp_path: Path) -> None:
    write_tiny_imagenet(tmp_path)
    annotations = tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    annotations.write_text("val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(DataError, match=r"val_annotations.txt: line 1"):
        read_tiny_imagenet(tmp_path, 64)
    annotations.unlink()
    with pytest.raises(DataError, match=r"val_annotations.txt: file is missing"):
        read_tiny_imagenet(tmp_path, 64)
    with (tmp_path / "tiny-imagenet-200" / "wnids.txt").open("a") as handle:
        handle.write("n04000004\n")
    with pytest.raises(DataError, match=r"n04000004/images: holds no images"):
        read_tiny_imagenet(tmp_path, 64)


def test_generic_folder_greyscale_tree_has_one_channel(tmp_path: Path) -> None:
    for cls in range(2):
        for i in range(5):
            _save(tmp_path / f"class_{cls}" / f"{i}.png", (40 + 80 * cls,) * 3, (10 + i, 12), "L")
    (tmp_path / ".hidden").mkdir()
    raw = read_folder(tmp_path, 8)
    assert raw.classes == ["class_0", "class_1"]
    assert raw.trainval.images.shape[1:] == (1, 8, 8)
    assert raw.test is not None and len(raw.test) == 2
    for images, labels in ((raw.trainval.images, raw.trainval.labels), (raw.test.images, raw.test.labels)):
        assert torch.equal(images.float().mean(dim=(1, 2, 3)).round(), (40 + 80 * labels).float())


def test_generic_folder_colour_tree_defaults(tmp_path: Path, cache_dir: Path) -> None:
    for cls in range(3):
        for i in range(5):
            _save(tmp_path / "tree" / f"c{cls}" / f"{i}.jpg", COLOURS[cls], (20 + 3 * i, 20), "RGB")
    data = load_dataset("folder", data_dir=tmp_path / "tree")
    assert (data.image_size, data.in_channels, data.num_classes) == (32, 3, 3)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 3)
    _assert_colours_match_labels(data.train.images, data.train.labels)
    with pytest.raises(DataError, match="no class folders found"):
        load_dataset("folder", data_dir=_empty(tmp_path))


def test_reader_without_data_dir_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--data-dir"):
        read_folder(None, 8)
