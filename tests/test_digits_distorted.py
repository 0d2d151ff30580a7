"""The distorted digits: pinned bits, splits by source digit, and the warp's geometry."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from eebench.data import create_dataset, list_datasets, split_dataset
from eebench.data.digits_distorted import (
    DIGITS_DISTORTED_MEAN,
    DIGITS_DISTORTED_STD,
    _render,
    digits_distorted,
    render_digits_distorted,
    source_split,
    splitmix64,
)
from eebench.errors import InputError
from eebench.zoo.base import ModelConfig

#: sha256 of the default data set's (4792, 32, 32) uint8 images: the same bits everywhere.
DEFAULT_SHA256 = "d29072a3e271027296cf6b3fc6a11f8ad7184067ffdccf20f903509388b26b02"
_MASK = (1 << 64) - 1


@pytest.fixture(scope="module")
def ds():
    return create_dataset("digits_distorted")


def _splitmix64_reference(x: int) -> int:
    """SplitMix64's output function in Python integers, independent of numpy's wrapping."""
    z = (x + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def test_splitmix64_matches_the_reference_generator() -> None:
    # Seeded with 0, SplitMix64's first outputs are mix(golden) and mix(2 * golden).
    golden = 0x9E3779B97F4A7C15
    out = splitmix64(np.array([0, golden], dtype=np.uint64))
    assert [int(v) for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    xs = [1, 2, 12345, 2**63 + 17, _MASK]
    assert [int(v) for v in splitmix64(np.array(xs, dtype=np.uint64))] == [
        _splitmix64_reference(x) for x in xs
    ]


def test_registered_shapes_labels_and_pinned_bits(ds) -> None:
    from sklearn.datasets import load_digits

    assert "digits_distorted" in list_datasets()
    assert len(ds) == 1198 + 599 * 6 and ds.num_classes == 10
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (4792, 3, 32, 32)
    assert torch.equal(ds.images[:, 0], ds.images[:, 2])  # grey, repeated to 3 channels
    assert np.array_equal(ds.labels, load_digits().target[ds.source_index])
    assert np.array_equal(ds.ids, np.arange(len(ds)))
    gray = np.ascontiguousarray(ds.images[:, 0].numpy())
    assert hashlib.sha256(gray.tobytes()).hexdigest() == DEFAULT_SHA256
    x = gray.astype(np.float64) / 255
    assert abs(x.mean() - DIGITS_DISTORTED_MEAN[0]) < 5e-4
    assert abs(x.std() - DIGITS_DISTORTED_STD[0]) < 5e-4
    img, label = ds[10]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32 and label == ds.labels[10]


def test_splits_never_share_a_source_digit(ds) -> None:
    views = split_dataset(ds, seed=0)
    assert {k: len(v) for k, v in views.items()} == {"train": 798, "val": 400, "test": 3594}
    src = {k: ds.source_index[v.ids] for k, v in views.items()}
    assert np.bincount(src["test"]).max() == 6
    assert set(np.unique(np.bincount(src["test"]))) <= {0, 6}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert np.intersect1d(src[a], src[b]).size == 0
    assert np.unique(src["train"]).size == 798 and np.unique(src["val"]).size == 400
    assert np.bincount(ds.labels[views["test"].ids], minlength=10).min() >= 250
    other = split_dataset(ds, seed=1)
    assert np.array_equal(other["test"].ids, views["test"].ids)  # the test split is the data's
    assert not np.array_equal(other["val"].ids, views["val"].ids)


def test_same_arguments_same_images_other_seed_other_images(ds) -> None:
    again = digits_distorted()
    assert torch.equal(again.images, ds.images) and again.describe() == ds.describe()
    again.images[0].zero_()  # a caller's edit must not reach the next data set built
    assert torch.equal(digits_distorted().images, ds.images)
    small = digits_distorted(copies=2, seed=1, val_size=100)
    assert len(small) == 1198 + 599 * 2
    assert not np.array_equal(
        source_split(1797, 1 / 3, 0), source_split(1797, 1 / 3, 1)
    )
    assert small.describe()["params"] == {
        "copies": 2, "test_fraction": 1 / 3, "val_size": 100, "seed": 1,
    }


def test_render_depends_only_on_the_source_and_the_counter() -> None:
    from sklearn.datasets import load_digits

    source = np.rint(load_digits().images).astype(np.int64)
    idx = np.array([5, 5, 17, 900])
    a = render_digits_distorted(source, idx, seed=3)
    b = render_digits_distorted(source, np.array([5, 5, 17, 900, 4]), seed=3)
    assert a.dtype == np.uint8 and a.shape == (4, 32, 32)
    assert np.array_equal(a, b[:4])
    assert not np.array_equal(a[0], a[1])  # two copies of one digit differ


def test_identity_warp_is_bilinear_upsampling() -> None:
    # With the identity matrix, no shift and scale 1 the warp must reproduce torch's
    # bilinear upsampling (align_corners=False) of the 8x8 digit to 32x32, up to rounding
    # to 1/255; the border differs (torch replicates the edge, the warp pads with zeros).
    from sklearn.datasets import load_digits

    source = np.rint(load_digits().images[:20]).astype(np.int64)
    n = len(source)
    q, zero = np.full(n, 4096, dtype=np.int64), np.zeros(n, dtype=np.int64)
    ours = _render(source, (q, zero, zero, q, zero, zero)).astype(np.float64)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(source / 16.0)[:, None], size=(32, 32), mode="bilinear",
        align_corners=False,
    )[:, 0].double().numpy() * 255
    assert np.abs(ours - ref)[:, 2:-2, 2:-2].max() <= 0.5 + 1e-6


def test_training_and_evaluation_transforms_apply(ds) -> None:
    cfg = ModelConfig(name="m", num_classes=10, input_size=(3, 32, 32),
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    train = split_dataset(ds)["train"].with_train_transform(cfg)
    assert train.transform.describe()["flip"] is False  # a mirrored digit is not a digit
    x, _ = train[0]
    assert x.shape == (3, 32, 32) and torch.isfinite(x).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"copies": 0}, "copies"),
        ({"copies": 2.5}, "copies"),
        ({"seed": -1}, "seed"),
        ({"val_size": 0}, "val_size"),
        ({"val_size": 1198}, "training digits"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"test_fraction": "half"}, "test_fraction"),
    ],
)
def test_bad_arguments_fail_with_one_clear_line(kwargs, match) -> None:
    with pytest.raises(InputError, match=match):
        digits_distorted(**kwargs)
