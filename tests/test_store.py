"""The logit store: identity, round trips, checksums, atomic writes, resumable extraction,
and import/export of other tools' caches."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_data import SHARED_DATA
from torch import nn

from eebench.errors import DataError
from eebench.store import (
    AmbiguousReferenceError,
    EntryExistsError,
    EntryNotFoundError,
    LogitSet,
    LogitStore,
    StoreError,
    default_store_root,
    export_npz,
    extract_logits,
    extraction_identity,
    identity_key,
    import_msdnet_logits,
    import_npz,
    load_npz_logits,
)
from eebench.store import logitstore as logitstore_module
from eebench.store.extract import CHUNK_PATTERN, chunk_spans
from eebench.zoo.base import ModelConfig, MultiExitModel
from eebench.zoo.checkpoint import state_dict_sha256

TESTS_DIR = Path(__file__).resolve().parent

# ---------------------------------------------------------------- fixtures


class TinyExitModel(MultiExitModel):
    """Two exits over a flattened 3x8x8 image; counts its forward calls."""

    def __init__(self, seed: int = 0, delay: float = 0.0, fail_after: int | None = None) -> None:
        super().__init__()
        self.exits = ["early", "final"]
        self.config = ModelConfig(name="tiny", num_classes=4, input_size=(3, 8, 8),
                                  arch={"hidden": 16})
        self.head1 = nn.Linear(192, 4)
        self.body = nn.Linear(192, 16)
        self.head2 = nn.Linear(16, 4)
        rng = np.random.default_rng(seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32)))
        self.calls = 0
        self.delay = delay
        self.fail_after = fail_after

    def iter_exits(self, x: torch.Tensor):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash in the middle of an extraction")
        if self.delay:
            time.sleep(self.delay)
        f = x.flatten(1)
        yield 0, self.head1(f)
        yield 1, self.head2(torch.relu(self.body(f)))


class TinyDataset(torch.utils.data.Dataset):
    """Random images with labels and non-trivial sample ids."""

    def __init__(self, n: int = 50, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.standard_normal((n, 3, 8, 8)).astype(np.float32))
        self.y = rng.integers(0, 4, n)
        self.ids = np.arange(1000, 1000 + n)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


N, CHUNK, BATCH = 50, 8, 4  # 7 chunks (the last holds 2 samples), 13 batches


def tiny_identity(model: TinyExitModel) -> dict:
    return extraction_identity(
        model="tiny",
        model_config=model.config.to_dict(),
        weights_sha256=state_dict_sha256(model),
        dataset="tiny-random",
        dataset_params={"n": N, "seed": 1},
        split="all",
        split_indices=np.arange(N),
        transform="none",
    )


def batches_for(chunks) -> int:
    spans = chunk_spans(N, CHUNK)
    return sum(-(-(spans[i][1] - spans[i][0]) // BATCH) for i in chunks)


def make_set(n: int = 20, k: int = 3, c: int = 5, seed: int = 0, dtype=np.float32) -> LogitSet:
    rng = np.random.default_rng(seed)
    return LogitSet(
        logits=rng.standard_normal((n, k, c)).astype(dtype),
        labels=rng.integers(0, c, n),
        costs=np.arange(1, k + 1) * 10.0,
        exit_names=[f"e{i}" for i in range(k)],
        ids=np.arange(100, 100 + n),
        manifest={"cost_counter": {"counter": "test", "unit": "MACs"}},
    )


def ident(**kw) -> dict:
    base = {"model": "m", "weights_sha256": "a" * 64, "dataset": "d", "split": "val",
            "dtype": "float32"}
    base.update(kw)
    return base


def logits_sha(store: LogitStore, ref: str) -> str:
    return store.show(ref)["files"]["logits.npy"]


# ---------------------------------------------------------------- identity and roots


def test_identity_key_is_canonical_and_sensitive_to_weights() -> None:
    a = {"model": "m", "model_config": {"depth": 2, "width": 3}, "weights_sha256": "a" * 64}
    b = {"weights_sha256": "a" * 64, "model_config": {"width": 3, "depth": 2}, "model": "m"}
    assert identity_key(a) == identity_key(b)
    assert identity_key({**a, "scale": 1}) == identity_key({**a, "scale": 1.0})
    assert identity_key({**a, "idx": np.arange(3)}) == identity_key({**a, "idx": [0, 1, 2]})
    assert identity_key({**a, "weights_sha256": "b" * 64}) != identity_key(a)
    assert len(identity_key(a)) == 64
    with pytest.raises(StoreError, match="finite"):
        identity_key({"x": float("nan")})
    with pytest.raises(StoreError, match="canonical JSON"):
        identity_key({"x": object()})
    with pytest.raises(StoreError, match="non-empty"):
        identity_key({})


def test_extraction_identity_hashes_split_indices() -> None:
    kw = dict(model="m", model_config={}, weights_sha256="w", dataset="d", split="val")
    a = extraction_identity(**kw, split_indices=[0, 1, 2])
    b = extraction_identity(**kw, split_indices=np.array([0, 1, 3]))
    assert a["split_indices_sha256"] != b["split_indices_sha256"]
    assert identity_key(a) != identity_key(b)
    with pytest.raises(StoreError, match="dtype"):
        extraction_identity(**kw, dtype="float64")


def test_default_store_root(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EEBENCH_STORE", str(tmp_path / "env"))
    assert default_store_root(str(tmp_path / "x")) == tmp_path / "x"
    assert default_store_root(None) == tmp_path / "env"
    monkeypatch.delenv("EEBENCH_STORE")
    import platformdirs

    assert default_store_root(None) == Path(platformdirs.user_cache_dir("eebench")) / "store"


# ---------------------------------------------------------------- put / get / ls / show / rm


def test_round_trip_put_get_ls_show_rm(tmp_path) -> None:
    store = LogitStore(tmp_path / "store")
    assert store.ls().empty and not (tmp_path / "store").exists()  # reading creates nothing
    ls = make_set()
    key = store.put(ls, ident(), name="val-run")
    assert key == identity_key(ident()) and store.has_key(key)

    got = store.get("val-run")
    assert isinstance(got.logits, np.memmap) and got.logits.mode == "r"  # lazy
    with pytest.raises(ValueError):
        got.logits[0, 0, 0] = 1.0  # read-only
    np.testing.assert_array_equal(np.asarray(got.logits), ls.logits)
    np.testing.assert_array_equal(got.labels, ls.labels)
    np.testing.assert_array_equal(got.ids, ls.ids)
    np.testing.assert_array_equal(got.costs, ls.costs)
    assert got.exit_names == ["e0", "e1", "e2"] and got.kind == "logits"

    man = store.show(key[:8])
    assert man["key"] == key and man["name"] == "val-run"
    assert man["shape"] == [20, 3, 5] and man["dtype"] == "float32"
    assert man["model"] == "m" and man["weights_sha256"] == "a" * 64 and man["split"] == "val"
    assert man["cost_counter"] == {"counter": "test", "unit": "MACs"}
    assert man["costs"] == [10.0, 20.0, 30.0]
    assert set(man["files"]) == {"logits.npy", "labels.npy", "ids.npy", "costs.npy"}
    assert {"eebench", "numpy", "python"} <= set(man["versions"])
    assert man["identity"] == ident()

    df = store.ls()
    assert list(df.columns) == ["key", "name", "model", "dataset", "split", "N", "K", "C",
                                "dtype", "kind", "created"]
    row = df.iloc[0]
    assert (row["key"], row["name"], row["N"], row["K"], row["C"]) == (key[:12], "val-run", 20, 3, 5)
    assert store.verify() == []

    half = store.put(make_set(seed=1), ident(split="test"), dtype="float16")
    assert store.get(half).logits.dtype == np.float16
    assert store.rm("val-run") == key
    assert not store.has_key(key) and store.keys() == [half]
    assert os.listdir(store.partial_dir) == []


def test_existing_key_is_kept_unless_overwrite(tmp_path) -> None:
    store = LogitStore(tmp_path)
    key = store.put(make_set(seed=0), ident())
    with pytest.raises(EntryExistsError, match="already exists"):
        store.put(make_set(seed=1), ident())
    np.testing.assert_array_equal(np.asarray(store.get(key).logits), make_set(seed=0).logits)
    assert store.put(make_set(seed=1), ident(), overwrite=True) == key
    np.testing.assert_array_equal(np.asarray(store.get(key).logits), make_set(seed=1).logits)
    assert store.verify() == [] and os.listdir(store.partial_dir) == []


def test_names_prefixes_and_reference_errors(tmp_path, monkeypatch) -> None:
    store = LogitStore(tmp_path)
    a = store.put(make_set(), ident(), name="cifar-val")
    b = store.put(make_set(), ident(split="test"))
    assert store.resolve(a) == a and store.resolve(a[:6]) == a and store.resolve("cifar-val") == a
    assert "cifar-val" in store and "nope" not in store

    with pytest.raises(EntryNotFoundError) as err:
        store.get("cifar-vall")
    assert isinstance(err.value, KeyError)
    assert "'cifar-val'" in str(err.value) and b[:12] in str(err.value)  # close match, entries
    with pytest.raises(AmbiguousReferenceError, match="at least 6"):
        store.get(a[:3])
    with pytest.raises(EntryExistsError, match="already names"):
        store.put(make_set(), ident(split="train"), name="cifar-val")
    with pytest.raises(StoreError, match="invalid entry name"):
        store.put(make_set(), ident(split="train"), name="has space")
    with pytest.raises(StoreError, match="looks like a key prefix"):
        store.put(make_set(), ident(split="train"), name="deadbeef")

    # two keys sharing an 8-character prefix: the prefix is ambiguous and both are listed
    twin = a[:8] + ("f" if a[8] != "f" else "e") * 56
    monkeypatch.setattr(logitstore_module, "identity_key", lambda identity: twin)
    store.put(make_set(), {"anything": 1}, name="twin")
    with pytest.raises(AmbiguousReferenceError) as err:
        store.get(a[:8])
    assert a[:12] in str(err.value) and twin[:12] in str(err.value) and "cifar-val" in str(err.value)
    assert store.resolve(a[:9]) == a

    assert store.rename(a, "cifar-validation") == a and store.resolve("cifar-validation") == a
    with pytest.raises(EntryNotFoundError):
        store.resolve("cifar-val")


# ---------------------------------------------------------------- verify


def test_verify_names_entry_and_file_for_flipped_byte_and_missing_file(tmp_path) -> None:
    store = LogitStore(tmp_path)
    a = store.put(make_set(seed=0), ident(), name="first")
    b = store.put(make_set(seed=1), ident(split="test"), name="second")
    path = store.entry_dir(a) / "logits.npy"
    with open(path, "rb") as f:
        np.lib.format.read_magic(f)
        np.lib.format.read_array_header_1_0(f)
        data_start = f.tell()
    raw = bytearray(path.read_bytes())
    pos = data_start + (len(raw) - data_start) // 2
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match=r"logits.npy differs .*checksum"):
        store.get(a)  # the header is intact, yet the next read catches the change

    problems = store.verify()
    assert len(problems) == 1
    p = problems[0]
    assert (p.key, p.name, p.file) == (a, "first", "logits.npy") and "checksum" in p.problem
    assert a[:12] in str(p) and "first" in str(p) and "logits.npy" in str(p)
    with pytest.raises(StoreError, match="checksum"):
        store.get(a, verify=True)

    (store.entry_dir(b) / "labels.npy").unlink()
    problems = store.verify("second")
    assert [(q.key, q.file, q.problem) for q in problems] == [(b, "labels.npy", "missing")]
    assert len(store.verify()) == 2
    with pytest.raises(StoreError, match="missing labels.npy"):
        store.get(b)


# ---------------------------------------------------------------- atomicity


def test_crash_during_put_leaves_no_entry(tmp_path, monkeypatch) -> None:
    store = LogitStore(tmp_path)
    store.put(make_set(seed=5), ident(split="other"))
    real_rename = os.rename

    def crash(src, dst):
        raise OSError("simulated power cut at the final rename")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="power cut"):
        store.put(make_set(), ident(), name="crashed")
    monkeypatch.setattr(os, "rename", real_rename)

    key = identity_key(ident())
    assert not store.has_key(key) and not store.entry_dir(key).exists()
    assert "crashed" not in store and len(store.ls()) == 1
    assert store.verify() == []

    # a real crash (no cleanup) leaves a finished-looking folder in .partial: still invisible
    ghost = store.partial_dir / f"{key}-deadbeef0000"
    shutil.copytree(store.entry_dir(store.keys()[0]), ghost)
    assert len(store.ls()) == 1 and store.verify() == []
    assert store.put(make_set(), ident(), name="crashed") == key and store.verify() == []


def test_crash_during_overwrite_keeps_the_old_entry(tmp_path, monkeypatch) -> None:
    store = LogitStore(tmp_path)
    key = store.put(make_set(seed=0), ident())

    def crash(a, b):
        raise OSError("simulated crash while swapping entries")

    monkeypatch.setattr(logitstore_module, "exchange_paths", crash)
    with pytest.raises(OSError, match="swapping"):
        store.put(make_set(seed=1), ident(), overwrite=True)
    np.testing.assert_array_equal(np.asarray(store.get(key).logits), make_set(seed=0).logits)
    assert store.verify() == []


# ---------------------------------------------------------------- extraction


def test_extract_stores_model_outputs_and_reruns_do_not_touch_the_model(tmp_path) -> None:
    store = LogitStore(tmp_path)
    model, data = TinyExitModel(), TinyDataset()
    key = extract_logits(model, data, store, tiny_identity(model), name="tiny-all",
                         costs=[3, 7], cost_counter={"counter": "fvcore", "unit": "MACs"},
                         batch_size=BATCH, chunk_size=CHUNK, progress=False)
    assert model.calls == batches_for(range(7))
    ls = store.get("tiny-all")
    # The same computation as the extraction: batches of BATCH inside each chunk. A single
    # full-batch forward would be a different float32 computation (other kernels, other
    # summation order), equal only to ~1e-5 and differently on every CPU.
    with torch.no_grad():
        expected = np.concatenate([
            torch.stack(model(data.x[b : min(b + BATCH, e)]), dim=1).numpy()
            for s, e in chunk_spans(N, CHUNK) for b in range(s, e, BATCH)
        ])
    np.testing.assert_array_equal(np.asarray(ls.logits), expected)
    np.testing.assert_array_equal(ls.labels, data.y)
    np.testing.assert_array_equal(ls.ids, data.ids)
    assert ls.exit_names == ["early", "final"] and ls.costs.tolist() == [3.0, 7.0]
    man = store.show(key)
    assert man["cost_counter"] == {"counter": "fvcore", "unit": "MACs"}
    assert man["model"] == "tiny" and man["identity"]["dtype"] == "float32"
    assert not (store.partial_dir / key).exists() and store.verify() == []

    model.calls = 0
    assert extract_logits(model, data, store, tiny_identity(model), batch_size=BATCH,
                          chunk_size=CHUNK, progress=False) == key
    assert model.calls == 0

    other = TinyExitModel(seed=1)  # changed weights: a new entry, never the old logits
    assert extract_logits(other, data, store, tiny_identity(other), batch_size=BATCH,
                          chunk_size=CHUNK, progress=False) != key
    with pytest.raises(StoreError, match="3 costs"):
        extract_logits(TinyExitModel(seed=2), data, store, tiny_identity(TinyExitModel(seed=2)),
                       costs=[1, 2, 3], progress=False)


def test_extract_resumes_in_process_and_recomputes_a_corrupt_chunk(tmp_path) -> None:
    ref_store = LogitStore(tmp_path / "ref")
    ref_key = extract_logits(TinyExitModel(), TinyDataset(), ref_store,
                             tiny_identity(TinyExitModel()), costs=[1, 2], batch_size=BATCH,
                             chunk_size=CHUNK, progress=False)

    store = LogitStore(tmp_path / "s")
    failing = TinyExitModel(fail_after=5)  # chunks 0 and 1 finish, chunk 2 dies mid-way
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_logits(failing, TinyDataset(), store, tiny_identity(failing), costs=[1, 2],
                       batch_size=BATCH, chunk_size=CHUNK, progress=False)
    work = store.partial_dir / ref_key
    assert sorted(p.name for p in work.glob("chunk_*.npz")) == [
        CHUNK_PATTERN.format(0), CHUNK_PATTERN.format(1)]
    assert store.keys() == []

    # truncate chunk 1: it must be found broken and recomputed
    c1 = work / CHUNK_PATTERN.format(1)
    c1.write_bytes(c1.read_bytes()[: c1.stat().st_size // 2])
    model = TinyExitModel()
    key = extract_logits(model, TinyDataset(), store, tiny_identity(model), costs=[1, 2],
                         batch_size=BATCH, chunk_size=CHUNK, progress=False)
    assert key == ref_key
    assert model.calls == batches_for(range(1, 7))  # only chunk 0 was reused
    assert logits_sha(store, key) == logits_sha(ref_store, ref_key)
    assert not work.exists() and store.verify() == []


RESUME_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_store import BATCH, CHUNK, TinyDataset, TinyExitModel, tiny_identity
from eebench.store import LogitStore, extract_logits

model = TinyExitModel(delay=0.2)
extract_logits(model, TinyDataset(), LogitStore({root!r}), tiny_identity(model), costs=[1, 2],
               batch_size=BATCH, chunk_size=CHUNK, progress=False)
print("FINISHED")
"""


def test_extract_resumes_after_sigkill(tmp_path) -> None:
    root = tmp_path / "store"
    script = tmp_path / "extract_slowly.py"
    script.write_text(textwrap.dedent(RESUME_SCRIPT.format(tests=str(TESTS_DIR), root=str(root))))
    key = identity_key({**tiny_identity(TinyExitModel()), "dtype": "float32"})
    work = root / ".partial" / key
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if len(list(work.glob("chunk_*.npz"))) >= 2:
                break
            time.sleep(0.02)
        alive = proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        out, err = proc.communicate(timeout=30)
    assert alive, f"the extraction ended before it could be killed: {out!r} {err!r}"
    assert proc.returncode == -signal.SIGKILL

    store = LogitStore(root)
    assert store.keys() == []  # nothing half-finished is visible
    done = sorted(int(p.stem.split("_")[1]) for p in work.glob("chunk_*.npz"))
    assert 2 <= len(done) < 7 and done == list(range(len(done)))

    model = TinyExitModel()
    assert extract_logits(model, TinyDataset(), store, tiny_identity(model), costs=[1, 2],
                          batch_size=BATCH, chunk_size=CHUNK, progress=False) == key
    assert model.calls == batches_for(set(range(7)) - set(done))

    ref = LogitStore(tmp_path / "ref")
    extract_logits(TinyExitModel(), TinyDataset(), ref, tiny_identity(TinyExitModel()),
                   costs=[1, 2], batch_size=BATCH, chunk_size=CHUNK, progress=False)
    assert logits_sha(store, key) == logits_sha(ref, key)
    assert store.show(key)["files"] == ref.show(key)["files"]
    assert store.verify() == [] and not work.exists()


# ---------------------------------------------------------------- formats


def test_import_cnn6exit_npz_and_export_round_trip(tmp_path) -> None:
    path = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    store = LogitStore(tmp_path / "s")
    costs = [1, 2, 3, 4, 5, 6]
    key = import_npz(store, path, costs=costs, name="cnn6")
    ls = store.get("cnn6")
    assert ls.logits.shape == (10000, 6, 10) and ls.num_exits == 6
    top1 = (np.asarray(ls.logits).argmax(-1) == ls.labels[:, None]).mean(0)
    assert [round(float(a), 3) for a in top1] == [0.592, 0.681, 0.702, 0.728, 0.757, 0.774]
    man = store.show(key)
    assert man["identity"]["layout"] == "knc" and man["source_format"] == "npz"
    assert man["costs"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]

    assert import_npz(store, path, costs=costs, layout="knc") == key  # same identity
    assert import_npz(store, path, costs=[2, 4, 6, 8, 10, 12]) != key
    with pytest.raises(StoreError, match="try layout 'knc'"):
        load_npz_logits(path, costs=costs, layout="nkc")
    with pytest.raises(ValueError, match="6 costs for 6 exits|5 costs for 6 exits"):
        load_npz_logits(path, costs=[1, 2, 3, 4, 5])

    out = export_npz(store, "cnn6", tmp_path / "out" / "cnn6.npz")
    with np.load(out) as z, np.load(path) as orig:
        np.testing.assert_array_equal(z["logits"], orig["logits"])  # (K, N, C) again
        np.testing.assert_array_equal(z["labels"], orig["labels"])
        assert z["costs"].tolist() == [1.0, 2, 3, 4, 5, 6] and str(z["kind"]) == "logits"
    back = load_npz_logits(out)  # costs, ids and exit names come from the file
    np.testing.assert_array_equal(back.logits, np.asarray(ls.logits))
    assert back.exit_names == ls.exit_names and back.costs.tolist() == ls.costs.tolist()


def test_npz_layouts_and_errors(tmp_path) -> None:
    rng = np.random.default_rng(0)
    nkc = rng.standard_normal((7, 3, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 7)
    p = tmp_path / "nkc.npz"
    np.savez(p, logits=nkc, labels=labels, costs=np.array([1.0, 2, 3]),
             exit_names=np.array(["a", "b", "c"]))
    ls = load_npz_logits(p)
    np.testing.assert_array_equal(ls.logits, nkc)
    assert ls.exit_names == ["a", "b", "c"] and ls.manifest["layout"] == "nkc"
    np.testing.assert_array_equal(load_npz_logits(p, costs=[5, 6, 7]).costs, [5, 6, 7])
    np.testing.assert_array_equal(load_npz_logits(p, layout="nkc").logits, nkc)

    square = tmp_path / "square.npz"  # as many exits as samples
    sq = rng.standard_normal((3, 3, 4)).astype(np.float32)
    np.savez(square, logits=sq, labels=np.array([0, 1, 2]))
    with pytest.raises(StoreError, match="cannot tell the axis order"):
        load_npz_logits(square, costs=[1, 2, 3])
    np.testing.assert_array_equal(load_npz_logits(square, [1, 2, 3], layout="knc").logits,
                                  sq.swapaxes(0, 1))

    bad = tmp_path / "bad.npz"
    np.savez(bad, logits=nkc, labels=labels + 4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\]"):
        load_npz_logits(bad, costs=[1, 2, 3])
    np.savez(bad, logits=nkc, labels=labels)
    with pytest.raises(StoreError, match="no 'costs' array"):
        load_npz_logits(bad)
    with pytest.raises(ValueError, match="2 costs for 3 exits"):
        load_npz_logits(bad, costs=[1, 2])
    np.savez(bad, logits=nkc[:, :, 0], labels=labels)
    with pytest.raises(StoreError, match="must be 3-D"):
        load_npz_logits(bad, costs=[1, 2, 3])
    np.savez(bad, scores=nkc, labels=labels)
    with pytest.raises(StoreError, match="no 'logits' array"):
        load_npz_logits(bad, costs=[1, 2, 3])
    np.savez(bad, logits=nkc, labels=labels[:5])
    with pytest.raises(StoreError, match="do not match 5 labels"):
        load_npz_logits(bad, costs=[1, 2, 3])
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_npz_logits(tmp_path / "absent.npz", costs=[1, 2, 3])

    store = LogitStore(tmp_path / "s")
    with pytest.raises(ValueError):
        import_npz(store, bad, costs=[1, 2, 3])
    assert store.keys() == [] and store.verify() == []  # a failed import leaves nothing


def test_msdnet_logits_single_import(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    k, c = 3, 5
    val_probs = torch.softmax(torch.randn(k, 12, c, generator=g), dim=-1)
    val_targets = torch.randint(0, c, (12,), generator=g).float()  # old MSDNet saves floats
    test_probs = [torch.softmax(torch.randn(9, c, generator=g), dim=-1) for _ in range(k)]
    test_targets = torch.randint(0, c, (9,), generator=g)
    path = tmp_path / "logits_single.pth"
    torch.save((val_probs, val_targets, test_probs, test_targets), path)

    store = LogitStore(tmp_path / "s")
    val_key, test_key = import_msdnet_logits(store, path, costs=[10, 20, 30], name="msd")
    assert val_key != test_key
    val, test = store.get("msd-val"), store.get("msd-test")
    assert val.kind == test.kind == "probabilities"
    assert val.logits.shape == (12, k, c) and test.logits.shape == (9, k, c)
    np.testing.assert_array_equal(np.asarray(val.logits), val_probs.numpy().swapaxes(0, 1))
    np.testing.assert_array_equal(np.asarray(test.logits)[:, 1], test_probs[1].numpy())
    np.testing.assert_array_equal(val.labels, val_targets.long().numpy())
    man = store.show(val_key)
    assert man["kind"] == "probabilities" and man["split"] == "val" and "kind_note" in man
    assert set(store.ls()["kind"]) == {"probabilities"}
    assert import_msdnet_logits(store, path, costs=[10, 20, 30], name="msd") == (val_key, test_key)

    logits_path = tmp_path / "raw.pth"
    torch.save((val_probs.log() * 3, val_targets, test_probs, test_targets), logits_path)
    with pytest.raises(DataError, match="not a probability"):
        import_msdnet_logits(store, logits_path, costs=[10, 20, 30])
    with pytest.raises(ValueError, match="2 costs for 3 exits"):
        import_msdnet_logits(store, path, costs=[10, 20])
    assert len(store.keys()) == 2 and store.verify() == []


def test_store_modules_do_not_import_torch(tmp_path) -> None:
    code = (
        "import sys\n"
        "import eebench.store, eebench.store.formats, eebench.store.extract\n"
        "from eebench.store import LogitStore\n"
        f"LogitStore({str(tmp_path)!r}).ls()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_float16_overflow_is_refused(tmp_path) -> None:
    ls = make_set()
    ls.logits[0, 0, 0] = 1e6
    store = LogitStore(tmp_path)
    with pytest.raises(StoreError, match="overflow float16"):
        store.put(ls, ident(), dtype="float16")
    assert store.keys() == [] and os.listdir(store.partial_dir) == []
