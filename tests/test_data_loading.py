"""load_dataset: registry, errors, the decode-once cache, train/val splitting and the offline digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from greenshift.data import list_datasets, load_dataset, register_dataset, registry
from greenshift.data.cache import resolve_cache_dir
from greenshift.data.core import AugmentSpec, ImageSplit, RawDataset, channel_stats
from greenshift.errors import ConfigError, DataError


def _write_tree(root: Path, classes: int = 3, per_class: int = 10) -> Path:
    rng = np.random.default_rng(0)
    for cls in range(classes):
        folder = root / f"class_{cls}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(folder / f"{i}.png")
    return root


def _cache_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.pt"))


def test_list_datasets_names_all_builtins() -> None:
    infos = {info.name: info for info in list_datasets()}
    assert set(infos) >= {"digits", "cifar10", "mnist", "caltech101", "tiny_imagenet", "folder"}
    assert not infos["digits"].needs_data_dir and infos["cifar10"].needs_data_dir
    assert infos["digits"].default_image_size == 8 and infos["caltech101"].default_image_size == 64


def test_unknown_name_suggests_a_close_match() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown data set 'cifar'.*did you mean 'cifar10'.*available: caltech101"
    ):
        load_dataset("cifar")


def test_missing_data_dir_names_the_flag_and_layout(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--data-dir.*cifar-10-batches-py"):
        load_dataset("cifar10")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "image_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"split_seed": 1.5}, "split_seed"),
    ],
)
def test_bad_arguments_are_config_errors(kwargs: dict[str, object], match: str, cache_dir: Path) -> None:
    with pytest.raises(ConfigError, match=match):
        load_dataset("digits", **kwargs)  # type: ignore[arg-type]


def test_digits_load_offline(cache_dir: Path) -> None:
    data = load_dataset("digits")
    assert data.test is not None
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert (len(data.test), len(data.val)) == (359, 288)
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 1, 8)
    assert data.classes == [str(d) for d in range(10)]
    assert data.augment == AugmentSpec()  # centred, size-normalised digits: no random crops
    assert int(data.train.images.max()) == 255 and int(data.train.images.min()) == 0
    assert torch.bincount(data.test.labels).min() >= 35  # stratified: about 36 per class
    native = load_dataset("digits", image_size=8)
    allowed = {round(k * 255 / 16) for k in range(17)}
    assert set(native.train.images.unique().tolist()) <= allowed


def test_mean_and_std_come_from_the_train_split(cache_dir: Path) -> None:
    data = load_dataset("digits")
    assert data.mean == pytest.approx(channel_stats(data.train.images)[0])
    assert data.std == pytest.approx(channel_stats(data.train.images)[1])
    assert data.mean != pytest.approx(channel_stats(data.val.images)[0])
    x = torch.cat([b for b, _ in data.batches("train", 512, shuffle=False)])
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-4) and float(x.std()) == pytest.approx(1.0, abs=1e-3)


def test_train_val_split_is_deterministic_stratified_and_disjoint(tmp_path: Path, cache_dir: Path) -> None:
    root = _write_tree(tmp_path / "tree", classes=3, per_class=10)
    first = load_dataset("folder", data_dir=root, image_size=6, split_seed=1)
    again = load_dataset("folder", data_dir=root, image_size=6, split_seed=1)
    other = load_dataset("folder", data_dir=root, image_size=6, split_seed=2)
    assert torch.equal(first.train.images, again.train.images) and torch.equal(
        first.val.labels, again.val.labels
    )
    assert not torch.equal(first.val.images, other.val.images)
    assert first.test is not None and other.test is not None
    assert torch.equal(first.test.images, other.test.images)  # the test split never depends on split_seed
    assert (len(first.train), len(first.val), len(first.test)) == (19, 5, 6)
    assert torch.bincount(first.test.labels).tolist() == [2, 2, 2]
    # Every pixel pattern is random, so whole images identify samples across splits.
    keys = [
        {bytes(img.flatten().tolist()) for img in split.images}
        for split in (first.train, first.val, first.test)
    ]
    assert sum(len(k) for k in keys) == 30 and len(keys[0] | keys[1] | keys[2]) == 30
    half = load_dataset("folder", data_dir=root, image_size=6, val_fraction=0.5)
    assert (len(half.train), len(half.val)) == (12, 12)


def test_cache_is_used_then_invalidated_by_touching_a_source(tmp_path: Path, cache_dir: Path) -> None:
    root = _write_tree(tmp_path / "tree")
    original = load_dataset("folder", data_dir=root, image_size=6)
    files = _cache_files(cache_dir)
    assert len(files) == 1 and not list(cache_dir.glob("*.tmp")) and not list(cache_dir.glob(".*"))

    # Doctor the cache entry: a hit must return the doctored content instead of decoding again.
    payload = torch.load(files[0], weights_only=True)
    payload["classes"] = ["from", "the", "cache"]
    torch.save(payload, files[0])
    assert load_dataset("folder", data_dir=root, image_size=6).classes == ["from", "the", "cache"]

    source = root / "class_1" / "3.png"
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    rebuilt = load_dataset("folder", data_dir=root, image_size=6)
    assert rebuilt.classes == ["class_0", "class_1", "class_2"]
    assert torch.equal(rebuilt.train.images, original.train.images)
    assert len(_cache_files(cache_dir)) == 2
    load_dataset("folder", data_dir=root, image_size=4)  # another size is another entry
    assert len(_cache_files(cache_dir)) == 3


def test_corrupt_cache_file_is_ignored_and_rebuilt(tmp_path: Path, cache_dir: Path) -> None:
    root = _write_tree(tmp_path / "tree")
    original = load_dataset("folder", data_dir=root, image_size=6)
    (entry,) = _cache_files(cache_dir)
    entry.write_bytes(entry.read_bytes()[:200])
    rebuilt = load_dataset("folder", data_dir=root, image_size=6)
    assert torch.equal(rebuilt.train.images, original.train.images)
    assert torch.load(entry, weights_only=True)["classes"] == ["class_0", "class_1", "class_2"]


def test_cache_directory_precedence(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_cache_dir() == cache_dir  # the fixture sets GREENSHIFT_CACHE
    assert resolve_cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    load_dataset("digits", image_size=4, cache_dir=tmp_path / "explicit")
    assert len(_cache_files(tmp_path / "explicit")) == 1 and not cache_dir.exists()
    monkeypatch.delenv("GREENSHIFT_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "greenshift"


def test_register_dataset_with_a_custom_reader(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    calls: list[int] = []

    @register_dataset("Toy-Set", description="toy", needs_data_dir=False, default_image_size=3,
                      augment=AugmentSpec(horizontal_flip=True))  # fmt: skip
    def read_toy(data_dir: Path | None, image_size: int) -> RawDataset:
        calls.append(image_size)
        images = torch.arange(20 * image_size * image_size, dtype=torch.int64).remainder(256).to(torch.uint8)
        split = ImageSplit(images.view(20, 1, image_size, image_size), torch.arange(20) % 2)
        return RawDataset(["even", "odd"], split, None)

    assert "toy_set" in {info.name for info in list_datasets()}
    data = load_dataset("toy_set")
    assert data.test is None and data.augment.horizontal_flip and (len(data.train), len(data.val)) == (16, 4)
    load_dataset("TOY-SET")
    assert calls == [3]  # the second load came from the cache
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("toy_set", description="again", needs_data_dir=False, default_image_size=3)(read_toy)


def test_too_few_images_for_a_validation_split(tmp_path: Path, cache_dir: Path) -> None:
    root = _write_tree(tmp_path / "tiny", classes=2, per_class=1)
    with pytest.raises(DataError, match="too few"):
        load_dataset("folder", data_dir=root, image_size=6)
