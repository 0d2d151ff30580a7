"""Data set objects that know who they are: sample ids, split, and preprocessing.

A cached logit is only reusable if we can say exactly which images, in which
order, under which transform produced it. Every data set here therefore
carries stable sample ``ids`` (positions in the full data set, kept through
splits), its ``labels`` as one array (so evaluation never iterates images to
learn them), and ``describe()``: a plain dict of name, parameters, split,
hash of the index list and transform description that enters the logit
store's identity.

A loader returns the *full* data set; :func:`split_dataset` cuts the named
splits from it as views that share the loaded images but each carry their own
transform (train augmentation for one, evaluation preprocessing for another).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Self, overload

import numpy as np
import torch
from torch.utils.data import Dataset

from eebench.data.splits import (
    DEFAULT_FRACTIONS,
    DEFAULT_VAL_SIZE,
    SplitError,
    index_sha256,
    make_split_indices,
)
from eebench.data.transforms import TensorTransform, eval_transform, train_transform
from eebench.errors import InputError, InputTypeError


class NamedTransform:
    """Any callable transform with the description it should be known by in identities."""

    def __init__(self, fn: Callable[[Any], torch.Tensor], description: Mapping[str, Any]) -> None:
        self.fn = fn
        self.description = dict(description)

    def __call__(self, img: Any) -> torch.Tensor:
        return self.fn(img)

    def describe(self) -> dict[str, Any]:
        return dict(self.description)


def _check_transform(transform: Any) -> Any:
    if not callable(transform) or not callable(getattr(transform, "describe", None)):
        raise InputTypeError(
            f"a data set transform must be callable and have describe() -> dict (it enters the "
            f"logit store's identity); got {transform!r}. Use eebench.data.eval_transform(config), "
            "train_transform(config), or wrap your function: NamedTransform(fn, {'kind': ...})"
        )
    return transform


class _Described(Dataset):
    """What full data sets and split views share: transforms, labels, ids and describe()."""

    name: str
    params: dict[str, Any]
    split: str
    labels: np.ndarray
    ids: np.ndarray
    classes: list[str]
    source: str
    flip_invariant: bool
    _transform: Any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def transform(self) -> Any:
        return self._transform

    @transform.setter
    def transform(self, value: Any) -> None:
        self._transform = _check_transform(value)

    def load_raw(self, i: int) -> Any:
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = int(i) % len(self)
        return self._transform(self.load_raw(i)), int(self.labels[i])

    def with_transform(self, transform: Any) -> Self:
        """A shallow copy (sharing the loaded images) with another transform."""
        out = copy.copy(self)
        out.transform = transform
        return out

    def with_eval_transform(self, config: Any) -> Self:
        """This data set preprocessed the way the model's config asks for evaluation."""
        return self.with_transform(eval_transform(config, source=self.source))

    def with_train_transform(
        self, config: Any, *, flip: bool | None = None, pad: int | None = None
    ) -> Self:
        """Random crop (and flip where the data set is mirror-symmetric) for training.

        Only in-memory (tensor) data sets support it: photos need an augmentation of
        their own (``with_transform(NamedTransform(...))``).
        """
        if self.source != "tensor":
            raise InputError(
                f"train_transform works on in-memory images; {self.name} reads image files. "
                "Give a transform of your own with with_transform(NamedTransform(fn, {...}))"
            )
        flip = self.flip_invariant if flip is None else flip
        return self.with_transform(train_transform(config, flip=flip, pad=pad))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": dict(self.params),
            "split": self.split,
            "num_samples": len(self),
            "index_sha256": index_sha256(self.ids),
            "transform": self._transform.describe(),
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
            f"classes={self.num_classes})"
        )


class ImageDataset(_Described):
    """A full data set: subclasses implement ``load_raw(i)`` (a CHW tensor or a PIL image).

    ``official_splits`` maps ``train``/``test`` to index arrays where the data set
    has an official split (CIFAR); ``default_val_size`` is how many training
    samples validation takes then. ``source`` is ``"tensor"`` for in-memory data and
    ``"file"`` for photos read from disk; it chooses the evaluation transform.
    """

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any],
        labels: np.ndarray,
        classes: Sequence[str],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        ids: np.ndarray | None = None,
        transform: Any = None,
        source: str = "tensor",
        flip_invariant: bool = True,
        official_splits: Mapping[str, np.ndarray] | None = None,
        default_val_size: int | float | None = None,
    ) -> None:
        self.name = name
        self.params = dict(params)
        self.split = "all"
        self.labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        self.classes = [str(c) for c in classes]
        n = self.labels.shape[0]
        if n and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise InputError(
                f"{name}: labels lie in [{self.labels.min()}, {self.labels.max()}] but there are "
                f"{len(self.classes)} classes"
            )
        self.ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64)
        if self.ids.shape != (n,) or np.unique(self.ids).size != n:
            raise InputError(
                f"{name}: ids must be {n} distinct integers, got shape {self.ids.shape}"
            )
        self.mean, self.std = [float(m) for m in mean], [float(s) for s in std]
        self.source = source
        self.flip_invariant = flip_invariant
        self.official_splits = (
            {k: np.asarray(v, dtype=np.int64) for k, v in official_splits.items()}
            if official_splits is not None
            else None
        )
        self.default_val_size = default_val_size
        self.transform = transform if transform is not None else self.default_transform()

    def default_transform(self) -> Any:
        """Native size, normalised with the data set's own mean and std."""
        if self.source == "file":
            return eval_transform(
                {"input_size": (3, 224, 224), "mean": self.mean, "std": self.std}, source="file"
            )
        return TensorTransform(None, self.mean, self.std)


class InMemoryImageDataset(ImageDataset):
    """Images held as one (N, C, H, W) tensor: uint8 (0..255) or float (0..1)."""

    def __init__(
        self,
        name: str,
        params: Mapping[str, Any],
        images: torch.Tensor,
        labels: np.ndarray,
        classes: Sequence[str],
        **kwargs: Any,
    ) -> None:
        if images.ndim != 4:
            raise InputError(
                f"{name}: images must be (N, C, H, W), got shape {tuple(images.shape)}"
            )
        if images.dtype not in (torch.uint8, torch.float32):
            images = images.float()
        if images.shape[0] != np.asarray(labels).reshape(-1).shape[0]:
            raise InputError(
                f"{name}: {images.shape[0]} images but {np.asarray(labels).size} labels"
            )
        self.images = images
        super().__init__(name, params, labels, classes, **kwargs)

    def load_raw(self, i: int) -> torch.Tensor:
        return self.images[i]


class SplitView(_Described):
    """The samples of one split of a full data set, keeping their ids."""

    def __init__(
        self,
        base: ImageDataset,
        indices: np.ndarray,
        split: str,
        rule: Mapping[str, Any] | None = None,
        transform: Any = None,
    ) -> None:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(base)):
            raise IndexError(f"split indices outside [0, {len(base) - 1}]")
        self.base = base
        self.indices = idx
        self.name, self.params, self.classes = base.name, base.params, base.classes
        self.source, self.flip_invariant = base.source, base.flip_invariant
        self.split = split
        self.rule = dict(rule or {})
        self.labels = base.labels[idx]
        self.ids = base.ids[idx]
        self.transform = transform if transform is not None else base.transform

    def load_raw(self, i: int) -> Any:
        return self.base.load_raw(int(self.indices[i]))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["split_rule"] = dict(self.rule)
        return d


def split_dataset(
    dataset: ImageDataset,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    index_files: Mapping[str, str | Path] | None = None,
    val_size: int | float | None = None,
) -> dict[str, SplitView]:
    """Every named split of a full data set as views (see ``make_split_indices`` for the rules).

    Data sets with an official train/test split (CIFAR) keep it; validation is
    carved from the official train set. Others are split by ``fractions``
    (default train 0.6 / val 0.2 / test 0.2) from ``seed``, or take some splits
    from ``index_files``. Validation and test never share a sample.
    """
    if not isinstance(dataset, ImageDataset):
        raise InputTypeError(
            f"split_dataset needs a full data set (ImageDataset), got {type(dataset).__name__}; "
            "split the full data set once and use its views"
        )
    official = dataset.official_splits
    indices = make_split_indices(
        len(dataset),
        seed=seed,
        fractions=fractions,
        index_files=index_files,
        official=official,
        val_size=val_size if val_size is not None else dataset.default_val_size,
    )
    rule: dict[str, Any] = {"seed": int(seed)}
    if official is not None:
        rule["official"] = True
        if not (index_files and "val" in index_files):
            size = val_size if val_size is not None else dataset.default_val_size
            rule["val_size"] = DEFAULT_VAL_SIZE if size is None else size
    else:
        rule["fractions"] = {k: float(v) for k, v in (fractions or DEFAULT_FRACTIONS).items()}
    if index_files:
        rule["index_files"] = {k: Path(v).name for k, v in index_files.items()}
    return {name: SplitView(dataset, idx, name, rule) for name, idx in indices.items()}


# No split (or "all"): the full data set; a split name: its view.
@overload
def create_dataset(
    name: str,
    split: Literal["all"] | None = None,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    index_files: Mapping[str, str | Path] | None = None,
    val_size: int | float | None = None,
    transform: Any = None,
    config: Any = None,
    flip: bool | None = None,
    **params: Any,
) -> ImageDataset: ...


@overload
def create_dataset(
    name: str,
    split: str,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    index_files: Mapping[str, str | Path] | None = None,
    val_size: int | float | None = None,
    transform: Any = None,
    config: Any = None,
    flip: bool | None = None,
    **params: Any,
) -> ImageDataset | SplitView: ...


def create_dataset(
    name: str,
    split: str | None = None,
    *,
    seed: int = 0,
    fractions: Mapping[str, float] | None = None,
    index_files: Mapping[str, str | Path] | None = None,
    val_size: int | float | None = None,
    transform: Any = None,
    config: Any = None,
    flip: bool | None = None,
    **params: Any,
) -> ImageDataset | SplitView:
    """Build a registered data set, optionally one split of it, with its transform.

    ``split`` is ``None``/``"all"`` (the full data set) or a split name
    (``train``, ``val``, ``test``; see :func:`split_dataset` for the rules and the
    ``seed``/``fractions``/``index_files``/``val_size`` arguments). ``transform`` is
    ``None`` (``"eval"`` when a model ``config`` is given, else native size with the
    data set's own normalisation), ``"eval"`` / ``"train"`` (built from ``config``;
    ``flip`` overrides whether training flips), or a transform object with
    ``describe()``. ``params`` go to the loader (``root=...``).
    """
    from eebench.data.registry import get_dataset_fn

    full = get_dataset_fn(name)(**params)
    if not isinstance(full, ImageDataset):
        raise InputTypeError(
            f"data set loader {name!r} returned {type(full).__name__}, not ImageDataset"
        )
    if split in (None, "all"):
        ds: ImageDataset | SplitView = full
    else:
        views = split_dataset(
            full, seed=seed, fractions=fractions, index_files=index_files, val_size=val_size
        )
        if split not in views:
            raise SplitError(
                f"{name} has no split {split!r} under this rule; splits: {', '.join(views)}, all"
            )
        ds = views[split]
    if transform is None and config is not None:
        transform = "eval"
    if isinstance(transform, str):
        if config is None:
            raise InputError(f"transform={transform!r} needs the model's config (config=...)")
        if transform == "eval":
            return ds.with_eval_transform(config)
        if transform == "train":
            return ds.with_train_transform(config, flip=flip)
        raise InputError(
            f"transform must be 'eval', 'train' or a transform object, got {transform!r}"
        )
    if transform is not None:
        return ds.with_transform(transform)
    return ds
