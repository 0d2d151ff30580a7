"""Per-exit pre-logit features in the logit store: what extraction finds, how entries keep
and check them, and that a killed extraction with features resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_store import BATCH, CHUNK, N, TinyDataset, TinyExitModel, batches_for, tiny_identity
from zoo_testing import one_torch_thread  # noqa: F401  (fixture)

from eebench.errors import DataError
from eebench.store import LogitSet, LogitStore, StoreError, extract_logits, identity_key
from eebench.store.extract import CHUNK_PATTERN
from eebench.zoo import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPS32 = float(np.finfo(np.float32).eps)


class ImageSet(torch.utils.data.Dataset):
    def __init__(self, n: int, size: int, classes: int) -> None:
        g = torch.Generator().manual_seed(3)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, classes, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


def zoo_identity(name: str) -> dict:
    return {"model": name, "weights_sha256": "0" * 64, "dataset": "random", "split": "all"}


def assert_linear_reproduces(logits: np.ndarray, feats: np.ndarray, lin: torch.nn.Linear) -> None:
    """logits == feats @ W.T + b up to float32 rounding: a dot product of D terms computed in
    float32 is off by at most about D * eps * sum |terms| (the bound is taken per element)."""
    w = lin.weight.detach().double().numpy()
    b = lin.bias.detach().double().numpy()
    f = feats.astype(np.float64)
    bound = (np.abs(f) @ np.abs(w).T + np.abs(b)) * (f.shape[1] + 1) * EPS32
    err = np.abs(logits.astype(np.float64) - (f @ w.T + b))
    assert (err <= bound).all(), float((err - bound).max())


def msdnet_head(model, k: int) -> torch.nn.Linear:
    return model.classifier[k].linear


def timm_head(model, k: int) -> torch.nn.Linear:
    return model.heads[k].fc if k < len(model.heads) else model.backbone.fc


@pytest.mark.parametrize(
    "name, kw, size, head",
    [
        ("msdnet_cifar10_budget", dict(channels=8, growth_rate=4, num_classes=5), 32, msdnet_head),
        ("timm/resnet10t", dict(num_classes=3, input_size=32), 32, timm_head),  # widths 64..512
    ],
)
def test_features_are_the_inputs_of_each_exits_final_linear(tmp_path, name, kw, size,
                                                           head) -> None:
    torch.manual_seed(0)
    model = create_model(name, **kw).eval()
    data = ImageSet(10, size, model.config.num_classes)
    store = LogitStore(tmp_path)
    key = extract_logits(model, data, store, zoo_identity(name), batch_size=4,
                         chunk_size=6, progress=False, features=True)
    ls = store.get(key)
    assert ls.features is not None and len(ls.features) == model.num_exits
    man = store.show(key)
    for k, feats in enumerate(ls.features):
        assert isinstance(feats, np.memmap) and not feats.flags.writeable
        assert feats.dtype == np.float32
        lin = head(model, k)
        assert feats.shape == (10, lin.in_features)
        assert_linear_reproduces(np.asarray(ls.logits[:, k]), np.asarray(feats), lin)
        assert man["features"][k] == {"file": f"features_{k}.npy",
                                      "shape": [10, lin.in_features], "dtype": "float32"}
        assert len(man["files"][f"features_{k}.npy"]) == 64
    assert man["identity"]["features"] is True
    assert store.verify() == []


class NotALinearExit(TinyExitModel):
    """Its second exit scales the head's output: no nn.Linear produced those logits."""

    def iter_exits(self, x):
        f = x.flatten(1)
        yield 0, self.head1(f)
        yield 1, 2 * self.head2(torch.relu(self.body(f)))


class CopiedExit(TinyExitModel):
    """Returns copies of its heads' outputs: found by equality, not identity."""

    def iter_exits(self, x):
        f = x.flatten(1)
        yield 0, self.head1(f).clone()
        yield 1, self.head2(torch.relu(self.body(f))) + 0


def test_exits_not_made_by_a_linear_are_refused_and_copies_are_found(tmp_path) -> None:
    store = LogitStore(tmp_path)
    bad = NotALinearExit()
    with pytest.raises(StoreError, match=r"exit 1 \(final\) of model tiny: exit 1's logits do "
                       "not come from an nn.Linear; features cannot be stored"):
        extract_logits(bad, TinyDataset(), store, tiny_identity(bad), batch_size=BATCH,
                       chunk_size=CHUNK, progress=False, features=True)
    copied = CopiedExit()
    key = extract_logits(copied, TinyDataset(), store, tiny_identity(copied), batch_size=BATCH,
                         chunk_size=CHUNK, progress=False, features=True)
    ls = store.get(key)
    assert [f.shape for f in ls.features] == [(N, 192), (N, 16)]
    assert_linear_reproduces(np.asarray(ls.logits[:, 1]), np.asarray(ls.features[1]), copied.head2)


def test_identity_has_features_only_when_asked_and_old_keys_stay(tmp_path) -> None:
    store = LogitStore(tmp_path)
    model = TinyExitModel()
    plain = extract_logits(model, TinyDataset(), store, tiny_identity(model), batch_size=BATCH,
                           chunk_size=CHUNK, progress=False)
    with_f = extract_logits(model, TinyDataset(), store, tiny_identity(model), batch_size=BATCH,
                            chunk_size=CHUNK, progress=False, features=True)
    assert plain == identity_key({**tiny_identity(model), "dtype": "float32"})  # as before
    assert with_f == identity_key({**tiny_identity(model), "dtype": "float32", "features": True})
    assert store.get(plain).features is None and "features" not in store.show(plain)
    # the same logits either way (the same computation, batch by batch)
    np.testing.assert_array_equal(np.asarray(store.get(plain).logits),
                                  np.asarray(store.get(with_f).logits))
    with pytest.raises(StoreError, match="identity says features True"):
        extract_logits(model, TinyDataset(), store, {**tiny_identity(model), "features": True},
                       progress=False)


def test_feature_files_are_checksummed_like_logits(tmp_path) -> None:
    store = LogitStore(tmp_path)
    model = TinyExitModel()
    key = extract_logits(model, TinyDataset(), store, tiny_identity(model), batch_size=BATCH,
                         chunk_size=CHUNK, progress=False, features=True)
    store.get(key)  # verdict cached
    path = store.entry_dir(key) / "features_1.npy"
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="features_1.npy differs from what was stored"):
        LogitStore(tmp_path).get(key)
    problems = store.verify(key)
    assert [(p.file, p.problem.split(" (")[0]) for p in problems] == [
        ("features_1.npy", "checksum mismatch")]
    path.unlink()
    with pytest.raises(StoreError, match="missing features_1.npy"):
        store.get(key)
    assert [(p.file, p.problem) for p in store.verify(key)] == [("features_1.npy", "missing")]


def test_put_get_and_subset_carry_features(tmp_path) -> None:
    rng = np.random.default_rng(0)
    n = 12
    feats = [rng.standard_normal((n, 7)), rng.standard_normal((n, 3)).astype(np.float32)]
    ls = LogitSet(rng.standard_normal((n, 2, 4)).astype(np.float32), rng.integers(0, 4, n),
                  [1.0, 2.0], features=feats)
    store = LogitStore(tmp_path)
    key = store.put(ls, {"model": "m", "split": "val", "features": True})
    back = store.get(key, mmap=False)
    assert [f.dtype for f in back.features] == [np.float32, np.float32]
    for a, b in zip(back.features, feats, strict=True):
        np.testing.assert_array_equal(a, b.astype(np.float32))
    assert store.verify() == []
    sub = back.subset(np.array([5, 0, 11]))
    np.testing.assert_array_equal(sub.features[0], feats[0][[5, 0, 11]].astype(np.float32))
    assert sub.features[1].shape == (3, 3)
    with pytest.raises(DataError, match=r"features of exit 1 must be \(12 samples"):
        LogitSet(ls.logits, ls.labels, ls.costs, features=[feats[0], feats[1][:5]])
    with pytest.raises(DataError, match="1 feature arrays for 2 exits"):
        LogitSet(ls.logits, ls.labels, ls.costs, features=[feats[0]])
    bad = [feats[0].copy(), feats[1]]
    bad[0][3, 2] = np.nan
    with pytest.raises(DataError, match="exit-0 features to store: nan at sample 3, feature 2"):
        store.put(LogitSet(ls.logits, ls.labels, ls.costs, features=bad), {"model": "other"})


def test_a_killed_extraction_with_features_resumes(tmp_path) -> None:
    ref = LogitStore(tmp_path / "ref")
    ref_key = extract_logits(TinyExitModel(), TinyDataset(), ref, tiny_identity(TinyExitModel()),
                             costs=[1, 2], batch_size=BATCH, chunk_size=CHUNK, progress=False,
                             features=True)
    store = LogitStore(tmp_path / "s")
    failing = TinyExitModel(fail_after=7)  # chunks 0..2 finish, chunk 3 dies mid-way
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_logits(failing, TinyDataset(), store, tiny_identity(failing), costs=[1, 2],
                       batch_size=BATCH, chunk_size=CHUNK, progress=False, features=True)
    work = store.partial_dir / ref_key
    assert sorted(p.name for p in work.glob("chunk_*.npz")) == [
        CHUNK_PATTERN.format(i) for i in range(3)]
    # a chunk that lost its features (as an extraction without them would write) is redone
    c1 = work / CHUNK_PATTERN.format(1)
    with np.load(c1) as z:
        kept = {k: z[k] for k in ("logits", "labels", "span")}
    np.savez(c1, **kept)
    model = TinyExitModel()
    key = extract_logits(model, TinyDataset(), store, tiny_identity(model), costs=[1, 2],
                         batch_size=BATCH, chunk_size=CHUNK, progress=False, features=True)
    assert key == ref_key
    assert model.calls == batches_for({1, 3, 4, 5, 6})
    assert store.show(key)["files"] == ref.show(key)["files"]
    assert store.verify() == [] and not work.exists()


SUITE = """
[suite]
name = "feats"
features = true
[data]
dataset = "digits"
splits = { val = 0.1, test = 0.1 }
batch_size = 64
[costs]
cross_check = false
[[models]]
name = "msdnet_cifar10_budget"
overrides = { channels = 8, growth_rate = 4 }
[[policies]]
score = "confidence"
"""


def test_a_suite_with_features_true_extracts_them(tmp_path) -> None:
    from eebench.runner import extract_models
    from eebench.suite import load_suite

    path = tmp_path / "s.toml"
    path.write_text(SUITE)
    suite = load_suite(path)
    assert suite["suite"]["features"] is True
    store = LogitStore(tmp_path / "store")
    (em,) = extract_models(suite, path, store, progress=False)
    for split in ("val", "test"):
        ls = em.sets[split]
        assert ls.manifest["identity"]["features"] is True
        assert [f.shape[1] for f in ls.features] == [128] * 5
    # the caller's override wins over the suite (what a command-line flag passes)
    (plain,) = extract_models(suite, path, store, progress=False, features=False)
    assert plain.sets["val"].features is None
    path.write_text(SUITE.replace("features = true", 'features = "yes"'))
    with pytest.raises(Exception, match="'suite.features' must be true/false"):
        load_suite(path)
