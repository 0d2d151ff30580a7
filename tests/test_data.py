"""Data sets, splits and transforms: what enters a logit cache's identity must be exact."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_cifar import cifar_image, write_cifar10
from shared_data import SHARED_DATA

from eebench.data import (
    DEFAULT_FRACTIONS,
    NamedTransform,
    SplitError,
    UnknownDatasetError,
    check_disjoint,
    create_dataset,
    eval_transform,
    list_datasets,
    load_index_file,
    make_split_indices,
    register_dataset,
    split_dataset,
    train_transform,
)
from eebench.data.base import InMemoryImageDataset
from eebench.errors import EebenchError
from eebench.zoo.base import ModelConfig

CIFAR_NPZ = SHARED_DATA / "cifar10-test-jpeg.npz"


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits")


def _config(size: int = 32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), **kw) -> ModelConfig:
    return ModelConfig(
        name="m", num_classes=10, input_size=(3, size, size), mean=mean, std=std, **kw
    )


# ---------------------------------------------------------------- package weight


def test_importing_eebench_data_does_not_import_torch() -> None:
    code = (
        "import sys, eebench.data, eebench.data.splits, eebench.data.registry; "
        "names = eebench.data.list_datasets(); "
        "print('torch' in sys.modules, ','.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, names = out.stdout.strip().split()
    assert loaded == "False"
    assert {"digits", "cifar10", "cifar100", "image_folder", "arrays"} <= set(names.split(","))


# ---------------------------------------------------------------- digits


def test_digits_shape_range_and_labels(digits) -> None:
    assert len(digits) == 1797 and digits.num_classes == 10
    assert digits.classes == [str(i) for i in range(10)]
    assert digits.labels.dtype == np.int64 and digits.ids.dtype == np.int64
    assert np.array_equal(digits.ids, np.arange(1797))
    assert np.bincount(digits.labels).min() >= 170  # about 180 per class
    raw = digits.images
    assert raw.shape == (1797, 3, 32, 32) and raw.dtype == torch.float32
    assert float(raw.min()) == 0.0 and float(raw.max()) == 1.0
    assert torch.equal(raw[:, 0], raw[:, 2])  # grey repeated to three channels
    x, y = digits[5]
    assert x.shape == (3, 32, 32) and isinstance(y, int) and y == int(digits.labels[5])
    # default transform: the data set's own normalisation (about zero mean, unit std)
    batch = torch.stack([digits[i][0] for i in range(0, 1797, 7)])
    assert abs(float(batch.mean())) < 0.1 and 0.85 < float(batch.std()) < 1.15


def test_digits_are_deterministic_and_match_sklearn(digits) -> None:
    from sklearn.datasets import load_digits

    again = create_dataset("digits")
    assert torch.equal(again.images, digits.images)
    assert again.describe() == digits.describe()
    # bilinear upsampling with half-pixel centres (align_corners=False), written out by hand
    raw = load_digits().images[7] / 16.0
    src = np.clip((np.arange(32) + 0.5) / 4 - 0.5, 0, 7)
    lo = np.floor(src).astype(int)
    hi, w = np.minimum(lo + 1, 7), src - np.floor(src)
    rows = raw[lo] * (1 - w)[:, None] + raw[hi] * w[:, None]
    expected = rows[:, lo] * (1 - w) + rows[:, hi] * w
    assert np.abs(digits.images[7, 1].numpy() - expected).max() < 1e-6
    assert np.array_equal(digits.labels, load_digits().target)


# ---------------------------------------------------------------- splits


def test_default_splits_are_disjoint_deterministic_and_cover_everything(digits) -> None:
    a = split_dataset(digits, seed=0)
    b = split_dataset(digits, seed=0)
    c = split_dataset(digits, seed=1)
    assert list(a) == ["train", "val", "test"]
    assert [len(a[s]) for s in a] == [1078, 359, 360]  # 0.6 / 0.2 / 0.2 of 1797
    check_disjoint({k: v.ids for k, v in a.items()})
    assert np.array_equal(np.sort(np.concatenate([v.ids for v in a.values()])), np.arange(1797))
    for s in a:
        assert np.array_equal(a[s].ids, b[s].ids)
        assert not np.array_equal(a[s].ids, c[s].ids)
    assert a["test"].describe() == b["test"].describe()
    assert a["test"].describe()["index_sha256"] != c["test"].describe()["index_sha256"]
    assert a["test"].describe()["split_rule"] == {"seed": 0, "fractions": DEFAULT_FRACTIONS}


def test_split_view_keeps_ids_labels_and_images(digits) -> None:
    test = create_dataset("digits", split="test", seed=3)
    assert test.split == "test" and test.num_classes == 10
    assert np.array_equal(test.labels, digits.labels[test.ids])
    x, y = test[4]
    x0, y0 = digits[int(test.ids[4])]
    assert torch.equal(x, x0) and y == y0
    d = test.describe()
    assert d["split"] == "test" and d["num_samples"] == len(test) == 360
    json.dumps(d)  # plain types only


def test_named_fractions_and_bad_fractions() -> None:
    out = make_split_indices(100, seed=0, fractions={"val": 0.5, "test": 0.5})
    assert [v.size for v in out.values()] == [50, 50]
    with pytest.raises(SplitError, match="sum to at most 1"):
        make_split_indices(100, seed=0, fractions={"val": 0.7, "test": 0.7})
    with pytest.raises(SplitError, match="has no split 'calib'"):
        create_dataset("digits", split="calib")


def test_index_file_splits(tmp_path: Path, digits) -> None:
    val = np.arange(0, 1797, 3)
    test = np.arange(1, 1797, 3)
    np.save(tmp_path / "val.npy", val)
    np.savetxt(tmp_path / "test.txt", test[::-1], fmt="%d")  # order in the file does not matter
    views = split_dataset(
        digits, index_files={"val": tmp_path / "val.npy", "test": tmp_path / "test.txt"}
    )
    assert np.array_equal(views["val"].ids, val)
    assert np.array_equal(views["test"].ids, test)
    assert np.array_equal(views["train"].ids, np.arange(2, 1797, 3))  # train takes the rest
    assert views["val"].describe()["split_rule"]["index_files"] == {
        "val": "val.npy",
        "test": "test.txt",
    }
    # only a validation file: the remaining samples are divided by the named fractions
    views = split_dataset(
        digits, fractions={"val": 0.5, "test": 0.5}, index_files={"val": tmp_path / "val.npy"}
    )
    assert np.array_equal(views["test"].ids, np.setdiff1d(np.arange(1797), val))
    # a .pt index tensor (the format of MSDNet's index.pth)
    torch.save(torch.tensor([5, 3, 9]), tmp_path / "idx.pt")
    assert load_index_file(tmp_path / "idx.pt", 10).tolist() == [3, 5, 9]


def test_index_files_that_overlap_or_overflow_fail(tmp_path: Path, digits) -> None:
    np.save(tmp_path / "val.npy", np.arange(0, 100))
    np.save(tmp_path / "test.npy", np.arange(50, 150))
    with pytest.raises(SplitError, match="share 50 samples"):
        split_dataset(
            digits, index_files={"val": tmp_path / "val.npy", "test": tmp_path / "test.npy"}
        )
    np.save(tmp_path / "big.npy", np.array([0, 5000]))
    with pytest.raises(SplitError, match="outside the 1797 samples"):
        split_dataset(digits, index_files={"val": tmp_path / "big.npy"})


# ---------------------------------------------------------------- CIFAR pickles


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    return write_cifar10(tmp_path)


def test_cifar10_pickle_folder_is_read_exactly(cifar10_root: Path) -> None:
    ds = create_dataset("cifar10", root=cifar10_root)
    assert len(ds) == 23 and ds.classes[0] == "airplane" and ds.num_classes == 10
    assert ds.labels.tolist() == [i % 10 for i in range(20)] + [7, 8, 9]
    for pos, img_id in [(0, 0), (13, 13), (21, 101)]:
        raw = ds.load_raw(pos)  # uint8 CHW
        assert raw.dtype == torch.uint8
        assert np.array_equal(raw.permute(1, 2, 0).numpy(), cifar_image(img_id))
    # the root may also be the batches folder itself
    assert len(create_dataset("cifar10", root=cifar10_root / "cifar-10-batches-py")) == 23


def test_cifar_official_split_and_seeded_validation(cifar10_root: Path) -> None:
    full = create_dataset("cifar10", root=cifar10_root)
    views = split_dataset(full, seed=0, val_size=5)
    assert views["test"].ids.tolist() == [20, 21, 22]  # the official test set, untouched
    perm = np.random.default_rng(0).permutation(20)
    assert views["val"].ids.tolist() == sorted(perm[-5:].tolist())  # MSDNet: last of a permutation
    assert views["train"].ids.tolist() == sorted(perm[:-5].tolist())
    check_disjoint({k: v.ids for k, v in views.items()})
    other = split_dataset(full, seed=1, val_size=5)
    assert not np.array_equal(other["val"].ids, views["val"].ids)
    assert views["val"].describe()["split_rule"] == {"seed": 0, "official": True, "val_size": 5}
    with pytest.raises(SplitError, match="fractions do not apply"):
        split_dataset(full, fractions={"val": 0.5, "test": 0.5})
    with pytest.raises(SplitError, match="val_size 5000"):
        split_dataset(full)  # the default 5000 does not fit 20 training images


def test_cifar_validation_index_file_must_come_from_train(
    cifar10_root: Path, tmp_path: Path
) -> None:
    full = create_dataset("cifar10", root=cifar10_root)
    np.save(tmp_path / "val.npy", np.array([1, 2, 3]))
    views = split_dataset(full, index_files={"val": tmp_path / "val.npy"})
    assert views["val"].ids.tolist() == [1, 2, 3] and len(views["train"]) == 17
    np.save(tmp_path / "bad.npy", np.array([1, 21]))
    with pytest.raises(SplitError, match="outside the official train set"):
        split_dataset(full, index_files={"val": tmp_path / "bad.npy"})


def test_cifar100_fine_and_coarse_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, ids in [("train", [0, 1, 2, 3]), ("test", [4, 5])]:
        data = np.stack([cifar_image(i).transpose(2, 0, 1).reshape(-1) for i in ids])
        batch = {b"data": data, b"fine_labels": [i * 10 for i in ids],
                 b"coarse_labels": [i for i in ids]}  # fmt: skip
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}  # fmt: skip
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    fine = create_dataset("cifar100", root=tmp_path)
    assert fine.num_classes == 100 and fine.labels.tolist() == [0, 10, 20, 30, 40, 50]
    assert fine.classes[10] == "f10"
    coarse = create_dataset("cifar100", root=tmp_path, label_mode="coarse")
    assert coarse.num_classes == 20 and coarse.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert np.array_equal(coarse.load_raw(5).permute(1, 2, 0).numpy(), cifar_image(5))


def test_missing_cifar_folder_explains_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py/data_batch_1"):
        create_dataset("cifar10", root=tmp_path)


def test_cifar_pickle_with_code_is_refused(cifar10_root: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    with open(cifar10_root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [1]}, f)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        create_dataset("cifar10", root=cifar10_root)


# ---------------------------------------------------------------- arrays


@pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason=f"shared data {CIFAR_NPZ} is absent")
def test_npz_cifar10_test_jpeg() -> None:
    ds = create_dataset("arrays", path=CIFAR_NPZ)
    assert len(ds) == 10000 and ds.num_classes == 10
    assert ds.classes[:3] == ["airplane", "automobile", "bird"]
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    with np.load(CIFAR_NPZ) as z:
        first = z["images"][1234]
    assert np.array_equal(ds.load_raw(1234).permute(1, 2, 0).numpy(), first)
    d = ds.describe()
    assert d["params"]["file"] == "cifar10-test-jpeg.npz" and len(d["params"]["sha256"]) == 64
    # CIFAR-like statistics, computed from the images for the default normalisation
    assert all(0.4 < m < 0.55 for m in ds.mean) and all(0.2 < s < 0.3 for s in ds.std)
    views = split_dataset(ds, seed=0, fractions={"val": 0.5, "test": 0.5})
    assert len(views["val"]) == len(views["test"]) == 5000
    x, _ = views["test"].with_eval_transform(_config(size=48))[0]
    assert x.shape == (3, 48, 48)


def test_arrays_in_memory_layouts_agree() -> None:
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2])
    a = create_dataset("arrays", images=hwc, labels=labels, classes=["a", "b", "c"])
    b = create_dataset(
        "arrays", images=hwc.transpose(0, 3, 1, 2).astype(np.float32) / 255, labels=labels
    )
    assert a.classes == ["a", "b", "c"] and b.classes == ["0", "1", "2"]
    assert torch.allclose(a.load_raw(3).float() / 255, b.load_raw(3))
    assert a.describe()["params"]["sha256"] != b.describe()["params"]["sha256"]
    with pytest.raises(ValueError, match=r"float images must lie in \[0, 1\]"):
        create_dataset("arrays", images=hwc.astype(np.float32), labels=labels)
    with pytest.raises(ValueError, match="6 images but 5 labels"):
        create_dataset("arrays", images=hwc, labels=labels[:5])


# ---------------------------------------------------------------- image folders


@pytest.fixture
def png_folder(tmp_path: Path) -> Path:
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls, n in [("zebra", 2), ("apple", 3)]:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, size=(20 + 4 * i, 30, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    (root / "apple" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_reads_pngs_in_a_stable_order(png_folder: Path) -> None:
    ds = create_dataset("image_folder", root=png_folder)
    assert ds.classes == ["apple", "zebra"] and ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.source == "file" and len(ds) == 5
    assert ds.load_raw(2).size == (30, 28)  # PIL (width, height) of apple/2.png
    cfg = _config(size=16, interpolation="bicubic", crop_pct=1.0)
    x, y = create_dataset("image_folder", root=png_folder, config=cfg)[3]
    assert x.shape == (3, 16, 16) and y == 1
    d = create_dataset("image_folder", root=png_folder, config=cfg).describe()
    assert d["transform"]["kind"] == "timm_eval" and d["transform"]["crop_pct"] == 1.0
    assert len(d["params"]["files_sha256"]) == 64
    with pytest.raises(ValueError, match="not ImageNet-1k's 1000"):
        create_dataset("imagenet", root=png_folder)
    with pytest.raises(FileNotFoundError, match="root/<class name>/<image files>"):
        create_dataset("image_folder", root=png_folder / "missing")


# ---------------------------------------------------------------- registry and transforms


def test_unknown_dataset_name_lists_close_matches() -> None:
    with pytest.raises(UnknownDatasetError, match="Did you mean 'digits'"):
        create_dataset("digts")
    assert "digits" in list_datasets()


def test_register_a_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    from eebench.data import DATASETS

    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # undone after the test
    def tiny_squares() -> InMemoryImageDataset:
        images = torch.zeros(4, 3, 8, 8)
        images[2:, :, 2:6, 2:6] = 1.0
        return InMemoryImageDataset(
            "tiny_squares", {}, images, np.array([0, 0, 1, 1]), ["empty", "square"],
            mean=(0.5,) * 3, std=(0.5,) * 3,
        )  # fmt: skip

    register_dataset(tiny_squares)
    assert "tiny_squares" in list_datasets()
    ds = create_dataset("tiny_squares")
    assert ds[3][0].max() == 1.0 and ds[3][1] == 1
    with pytest.raises(EebenchError, match="already registered"):
        register_dataset(lambda: None, name="digits")


def test_eval_transform_resizes_and_normalises(digits) -> None:
    cfg = _config(size=64, mean=(0.3, 0.4, 0.5), std=(0.1, 0.2, 0.5))
    t = eval_transform(cfg)
    x = t(digits.images[0])
    assert x.shape == (3, 64, 64)
    const = t(torch.tensor([0.3, 0.4, 0.5]).view(3, 1, 1).expand(3, 8, 8))
    assert torch.allclose(const, torch.zeros(3, 64, 64), atol=1e-6)
    assert t.describe() == {
        "kind": "tensor_eval", "input_size": [3, 64, 64], "mean": [0.3, 0.4, 0.5],
        "std": [0.1, 0.2, 0.5], "interpolation": "bilinear",
    }  # fmt: skip
    assert eval_transform(cfg.to_dict()).describe() == t.describe()
    # same size: no resampling at all, only normalisation
    same = eval_transform(_config(size=32))(digits.images[0])
    assert torch.allclose(same, (digits.images[0] - 0.5) / 0.25)
    with pytest.raises(ValueError, match="one value per channel"):
        eval_transform({"input_size": (3, 32, 32), "mean": [0.5], "std": [0.5, 0.5, 0.5]})


def test_train_transform_crops_flips_on_request_and_is_seeded(digits) -> None:
    cfg = _config(size=32)
    view = digits.with_train_transform(cfg)
    assert view.transform.describe() == {
        **eval_transform(cfg).describe(),
        "kind": "tensor_train",
        "pad": 4,
        "flip": False,
    }  # fmt: skip — digits are not mirror-symmetric: no flip unless asked for
    assert digits.with_train_transform(cfg, flip=True).transform.flip
    torch.manual_seed(0)
    a = torch.stack([view[0][0] for _ in range(8)])
    torch.manual_seed(0)
    b = torch.stack([view[0][0] for _ in range(8)])
    assert torch.equal(a, b) and a.shape == (8, 3, 32, 32)
    assert len({tuple(v.flatten().tolist()) for v in a}) > 1  # the crops differ
    # every crop is the zero-padded image shifted by at most 4 pixels
    padded = torch.nn.functional.pad(digits.images[0], (4, 4, 4, 4))
    shifts = [(padded[:, i : i + 32, j : j + 32] - 0.5) / 0.25 for i in range(9) for j in range(9)]
    assert all(any(torch.allclose(v, s) for s in shifts) for v in a)
    base = eval_transform(cfg)(digits.images[0])
    flipper = train_transform(cfg, pad=0, flip=True)
    outs = {tuple(flipper(digits.images[0]).flatten().tolist()) for _ in range(20)}
    assert outs == {tuple(base.flatten().tolist()), tuple(base.flip(-1).flatten().tolist())}


def test_transforms_need_a_description(digits) -> None:
    with pytest.raises(TypeError, match="describe"):
        digits.with_transform(lambda img: img)
    named = digits.with_transform(NamedTransform(lambda img: img * 2, {"kind": "double"}))
    assert named.describe()["transform"] == {"kind": "double"}
    assert torch.equal(named[0][0], digits.images[0] * 2)
    assert digits.describe()["transform"]["kind"] == "tensor_eval"  # the original is unchanged
