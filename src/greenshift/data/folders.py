"""Image-tree data sets decoded with Pillow: ``caltech101``, ``tiny_imagenet`` and the generic ``folder``."""

from __future__ import annotations

from pathlib import Path

import torch

from greenshift.data.core import AugmentSpec, ImageSplit, RawDataset, hold_out_test
from greenshift.data.images import IMAGE_EXTENSIONS, decode_images, list_class_folders, list_image_files
from greenshift.data.registry import register_dataset
from greenshift.errors import ConfigError, DataError

CALTECH_DIR = "101_ObjectCategories"
CALTECH_BACKGROUND = "BACKGROUND_Google"
CALTECH_LAYOUT = f"a directory holding {CALTECH_DIR}/<class>/*.jpg"
TINY_DIR = "tiny-imagenet-200"
TINY_LAYOUT = (
    f"a directory holding {TINY_DIR}/ with wnids.txt, train/<wnid>/images/*.JPEG and "
    "val/images plus val/val_annotations.txt"
)
FOLDER_LAYOUT = "a directory of class folders, data_dir/<class>/<image>"
_EXTENSIONS = ", ".join(sorted(IMAGE_EXTENSIONS))


def scan_class_tree(
    root: Path, *, skip: frozenset[str] = frozenset()
) -> tuple[list[str], list[Path], torch.Tensor]:
    """Class names (sorted folder names), image paths and int64 labels of a ``root/<class>/<image>`` tree.

    An empty class folder is a :class:`DataError`, since it would silently shift every label.
    """
    folders = [f for f in list_class_folders(root) if f.name not in skip]
    if not folders:
        # Images right inside root: the user pointed at one class folder, one level too deep.
        deep = (
            f"; {root} holds images itself, so pass its parent {root.parent}"
            if list_image_files(root)
            else ""
        )
        raise DataError(f"{root}: no class folders found; expected {root}/<class>/<image>{deep}")
    if len(folders) == 1:
        # One class trains to accuracy 1.0 and means nothing: most likely the folder one level too high.
        raise DataError(
            f"{root}: only one class folder ({folders[0].name}); a classifier needs at least two "
            f"(if {folders[0]} holds the class folders, pass it instead)"
        )
    paths: list[Path] = []
    labels: list[int] = []
    for index, folder in enumerate(folders):
        images = list_image_files(folder)
        if not images:
            raise DataError(
                f"{folder}: class folder holds no images (expected files ending in {_EXTENSIONS})"
            )
        paths.extend(images)
        labels.extend([index] * len(images))
    return [f.name for f in folders], paths, torch.tensor(labels, dtype=torch.int64)


def locate_caltech101(data_dir: Path) -> list[Path]:
    """The ``101_ObjectCategories`` folder under ``data_dir`` (or ``data_dir`` itself)."""
    for candidate in (data_dir / CALTECH_DIR, data_dir / "caltech101" / CALTECH_DIR):
        if candidate.is_dir():
            return [candidate]
    if data_dir.name == CALTECH_DIR and data_dir.is_dir():
        return [data_dir]
    raise DataError(f"{data_dir}: no {CALTECH_DIR} folder found; expected {CALTECH_LAYOUT}")


@register_dataset(
    "caltech101",
    description="Caltech-101: about 8700 colour images of 101 object classes, varied sizes",
    needs_data_dir=True,
    default_image_size=64,
    augment=AugmentSpec(crop_padding=8, horizontal_flip=True),
    layout=CALTECH_LAYOUT,
    locate=locate_caltech101,
)
def read_caltech101(data_dir: Path | None, image_size: int) -> RawDataset:
    """Decode every image as RGB (shorter side resized, centre crop); hold out a seeded stratified 20% test."""
    root = locate_caltech101(_required(data_dir, "caltech101", CALTECH_LAYOUT))[0]
    # The background class is clutter, not an object category.
    classes, paths, labels = scan_class_tree(root, skip=frozenset({CALTECH_BACKGROUND}))
    return hold_out_test(classes, decode_images(paths, image_size, 3), labels)


def locate_tiny_imagenet(data_dir: Path) -> list[Path]:
    """The ``tiny-imagenet-200`` folder under ``data_dir`` (or ``data_dir`` itself)."""
    for candidate in (data_dir / TINY_DIR, data_dir):
        if (candidate / "wnids.txt").is_file():
            return [candidate]
    raise DataError(f"{data_dir / TINY_DIR / 'wnids.txt'}: file is missing; expected {TINY_LAYOUT}")


@register_dataset(
    "tiny_imagenet",
    description="Tiny ImageNet: 200 classes of 64x64 colour images (100000 train, 10000 labelled val as test)",
    needs_data_dir=True,
    default_image_size=64,
    augment=AugmentSpec(crop_padding=8, horizontal_flip=True),
    layout=TINY_LAYOUT,
    locate=locate_tiny_imagenet,
)
def read_tiny_imagenet(data_dir: Path | None, image_size: int) -> RawDataset:
    """Decode ``train/`` as the training pool and the labelled ``val/`` as the test split."""
    root = locate_tiny_imagenet(_required(data_dir, "tiny_imagenet", TINY_LAYOUT))[0]
    wnids = sorted(set(_read_lines(root / "wnids.txt")))
    if not wnids:
        raise DataError(
            f"{root / 'wnids.txt'}: lists no class ids; expected one WordNet id (e.g. n01443537) per line"
        )
    index = {wnid: i for i, wnid in enumerate(wnids)}

    train_paths: list[Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        folder = root / "train" / wnid / "images"
        images = list_image_files(folder) if folder.is_dir() else []
        if not images:
            raise DataError(
                f"{folder}: holds no images; expected train/<wnid>/images/*.JPEG for every id in wnids.txt"
            )
        train_paths.extend(images)
        train_labels.extend([index[wnid]] * len(images))

    annotations = root / "val" / "val_annotations.txt"
    test_paths: list[Path] = []
    test_labels: list[int] = []
    for number, line in enumerate(_read_lines(annotations), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise DataError(
                f"{annotations}: line {number} is not '<file>\\t<wnid>...' with a wnid from wnids.txt"
            )
        test_paths.append(root / "val" / "images" / fields[0])
        test_labels.append(index[fields[1]])

    return RawDataset(
        classes=_class_names(root / "words.txt", wnids),
        trainval=ImageSplit(
            decode_images(train_paths, image_size, 3), torch.tensor(train_labels, dtype=torch.int64)
        ),
        test=ImageSplit(
            decode_images(test_paths, image_size, 3), torch.tensor(test_labels, dtype=torch.int64)
        ),
    )


@register_dataset(
    "folder",
    description="any class-per-folder image tree (data_dir/<class>/<image>), 20% held out as test",
    needs_data_dir=True,
    default_image_size=32,
    augment=AugmentSpec(crop_padding=4, horizontal_flip=True),
    layout=FOLDER_LAYOUT,
)
def read_folder(data_dir: Path | None, image_size: int) -> RawDataset:
    """Decode a generic tree; one channel if every image is greyscale, else RGB."""
    root = _required(data_dir, "folder", FOLDER_LAYOUT)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; expected {FOLDER_LAYOUT}")
    classes, paths, labels = scan_class_tree(root)
    images = decode_images(paths, image_size, 3)
    if torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 1], images[:, 2]):
        images = images[:, :1].contiguous()  # a greyscale tree keeps a single channel
    return hold_out_test(classes, images, labels)


def _required(data_dir: Path | None, name: str, layout: str) -> Path:
    if data_dir is None:
        raise ConfigError(
            f"data set {name!r} needs its files: pass --data-dir (data_dir=) pointing to {layout}"
        )
    return data_dir


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file is missing; expected {TINY_LAYOUT}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _class_names(words: Path, wnids: list[str]) -> list[str]:
    """Human-readable names from ``words.txt`` (first synonym), falling back to the wnid."""
    names = {wnid: wnid for wnid in wnids}
    if words.is_file():
        for line in _read_lines(words):
            wnid, _, synonyms = line.partition("\t")
            if wnid in names and synonyms.strip():
                names[wnid] = synonyms.split(",")[0].strip()
    chosen = [names[wnid] for wnid in wnids]
    # Distinct wnids can share a first synonym ("crane"); keep names unique.
    return [
        f"{name} ({wnid})" if chosen.count(name) > 1 else name
        for name, wnid in zip(chosen, wnids, strict=True)
    ]
