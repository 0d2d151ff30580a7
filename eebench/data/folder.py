"""Image folders laid out by class (``root/<class>/<image>``), as ImageNet's val set is
usually arranged.

Files are found with torchvision's ``find_classes`` / ``make_dataset`` (class
folders sorted by name, files sorted within each), so sample ids, the
positions in that order, are the same on every machine that holds the same
folder. Images are opened with PIL and converted to RGB; preprocessing is the
model's (timm's evaluation pipeline), chosen when a model config is given.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from eebench.data.base import ImageDataset
from eebench.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # as eebench.zoo.base.IMAGENET_MEAN / IMAGENET_STD
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFolderDataset(ImageDataset):
    """Photos read from disk on demand, one class per sub-folder."""

    def __init__(
        self,
        name: str,
        root: Path,
        samples: list[tuple[str, int]],
        classes: list[str],
        transform: Any = None,
    ) -> None:
        self.root = root
        self.paths = [p for p, _ in samples]
        listing = "\n".join(f"{Path(p).relative_to(root).as_posix()}\t{c}" for p, c in samples)
        super().__init__(
            name,
            # the file list's hash tells two folders with the same name and count apart
            {
                "root": str(root.resolve()),
                "files_sha256": hashlib.sha256(listing.encode()).hexdigest(),
            },
            np.array([c for _, c in samples], dtype=np.int64),
            classes,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            transform=transform,
            source="file",
        )

    def load_raw(self, i: int) -> Any:
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            return img.convert("RGB")


def _scan(root: str | Path, extensions: tuple[str, ...] | None) -> tuple[Path, list, list[str]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"image folder {root} does not exist; expected root/<class name>/<image files>"
        )
    exts = tuple(e.lower() for e in extensions) if extensions else IMG_EXTENSIONS
    try:
        classes, class_to_idx = find_classes(str(root))
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{root} has no class sub-folders; expected root/<class name>/<image files> "
            f"(e.g. ImageNet val arranged as val/n01440764/*.JPEG)"
        ) from err
    try:
        samples = make_dataset(str(root), class_to_idx, extensions=exts)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{root}: some class folders hold no image files with extensions {exts}: {err}"
        ) from err
    return root, samples, classes


def image_folder(
    root: str | Path, *, extensions: tuple[str, ...] | None = None, transform: Any = None
) -> ImageFolderDataset:
    """Every image under ``root/<class>/`` (extensions: torchvision's image list by default)."""
    root, samples, classes = _scan(root, extensions)
    return ImageFolderDataset("image_folder", root, samples, classes, transform)


def imagenet(
    root: str | Path, *, extensions: tuple[str, ...] | None = None, transform: Any = None
) -> ImageFolderDataset:
    """ImageNet-1k arranged by class (e.g. ``val/n01440764/*.JPEG``); checks the 1000 classes."""
    root, samples, classes = _scan(root, extensions)
    if len(classes) != 1000:
        raise InputError(
            f"{root} has {len(classes)} class folders, not ImageNet-1k's 1000; for other "
            "folders use the 'image_folder' data set"
        )
    return ImageFolderDataset("imagenet", root, samples, classes, transform)
