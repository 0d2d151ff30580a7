"""Extraction under torchrun: the same entries whatever the world size, and resumable across
world sizes. The torchrun test starts two real processes (gloo on the CPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_store import (
    BATCH,
    CHUNK,
    TinyDataset,
    TinyExitModel,
    batches_for,
    logits_sha,
    tiny_identity,
)

from eebench.parallel import World, current
from eebench.store import LogitStore, extract_logits
from eebench.store.extract import CHUNK_PATTERN

TORCHRUN = Path(sys.executable).parent / "torchrun"


class LoneRank(World):
    """One rank of a larger world whose partners never show up: barriers return at once."""

    def barrier(self) -> None:
        pass


def test_the_world_comes_from_torchrun_variables(monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert current() == World(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    w = current()
    assert (w.rank, w.size, w.local_rank, w.is_main) == (3, 4, 1, False)
    assert [i for i in range(10) if w.owns(i)] == [3, 7]
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(Exception, match="outside a WORLD_SIZE of 4"):
        current()


def test_a_killed_sharded_extraction_resumes_in_another_world_size(tmp_path) -> None:
    ref_store = LogitStore(tmp_path / "ref")
    ref_key = extract_logits(TinyExitModel(), TinyDataset(), ref_store, tiny_identity(TinyExitModel()),
                             costs=[1, 2], batch_size=BATCH, chunk_size=CHUNK, progress=False)

    store = LogitStore(tmp_path / "s")
    # a world of 2 killed half way: rank 0 (chunks 0, 2, 4, 6) dies in chunk 2 after 3 batches,
    # rank 1 (chunks 1, 3, 5) in chunk 5 after 5
    for rank, fail_after in ((0, 3), (1, 5)):
        with pytest.raises(RuntimeError, match="simulated crash"):
            extract_logits(TinyExitModel(fail_after=fail_after), TinyDataset(), store,
                           tiny_identity(TinyExitModel()), costs=[1, 2], batch_size=BATCH,
                           chunk_size=CHUNK, progress=False, world=LoneRank(rank, 2))
    work = store.partial_dir / ref_key
    assert sorted(p.name for p in work.glob("chunk_*.npz")) == [
        CHUNK_PATTERN.format(i) for i in (0, 1, 3)]
    assert store.keys() == []

    # one process finishes the job: it computes only the chunks nobody wrote
    model = TinyExitModel()
    key = extract_logits(model, TinyDataset(), store, tiny_identity(model), costs=[1, 2],
                         batch_size=BATCH, chunk_size=CHUNK, progress=False, world=World(0, 1))
    assert key == ref_key
    assert model.calls == batches_for([2, 4, 5, 6])
    assert logits_sha(store, key) == logits_sha(ref_store, ref_key)
    assert not work.exists()


def test_a_sharded_extraction_with_features_resumes_and_matches_one_process(tmp_path) -> None:
    kw = dict(costs=[1, 2], batch_size=BATCH, chunk_size=CHUNK, progress=False, features=True)
    ref_store = LogitStore(tmp_path / "ref")
    ref_key = extract_logits(TinyExitModel(), TinyDataset(), ref_store,
                             tiny_identity(TinyExitModel()), **kw)
    store = LogitStore(tmp_path / "s")
    for rank, fail_after in ((0, 3), (1, 5)):  # as above: chunks 0, 1 and 3 survive
        with pytest.raises(RuntimeError, match="simulated crash"):
            extract_logits(TinyExitModel(fail_after=fail_after), TinyDataset(), store,
                           tiny_identity(TinyExitModel()), world=LoneRank(rank, 2), **kw)
    model = TinyExitModel()
    key = extract_logits(model, TinyDataset(), store, tiny_identity(model), world=World(0, 1), **kw)
    assert key == ref_key and model.calls == batches_for([2, 4, 5, 6])
    files = store.show(key)["files"]
    assert files == ref_store.show(ref_key)["files"]
    assert {"features_0.npy", "features_1.npy"} <= set(files)


def test_rank_zero_refuses_to_commit_missing_chunks(tmp_path) -> None:
    store = LogitStore(tmp_path)
    with pytest.raises(Exception, match="chunk 1 .* vanished or broke"):
        extract_logits(TinyExitModel(), TinyDataset(), store, tiny_identity(TinyExitModel()),
                       costs=[1, 2], batch_size=BATCH, chunk_size=CHUNK, progress=False,
                       world=LoneRank(0, 2))
    assert store.keys() == []


SUITE = """
[suite]
name = "sharded"
[data]
dataset = "digits"
splits = {{ train = 0.25, val = 0.35, test = 0.35 }}
batch_size = 16
chunk_size = 48
[[models]]
name = "msdnet_cifar10_budget"
label = "m"
overrides = {{ {overrides} }}
[models.train]
epochs = 1
lr = 0.003
optimizer = "adamw"
batch_size = 64
[[policies]]
score = "confidence"
"""


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun is not installed beside this Python")
def test_torchrun_with_two_processes_gives_the_entries_of_one(tmp_path) -> None:
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(overrides=""))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EEBENCH_BACKEND": "gloo"}
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    one = subprocess.run([sys.executable, "-m", "eebench", "extract", str(suite), "--store",
                          str(tmp_path / "one")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "eebench",
                          "extract", str(suite), "--store", str(tmp_path / "two")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = LogitStore(tmp_path / "one"), LogitStore(tmp_path / "two")
    assert a.keys() == b.keys() and len(a.keys()) == 2
    for key in a.keys():
        for f in ("logits.npy", "labels.npy", "ids.npy", "costs.npy"):
            assert a.show(key)["files"][f] == b.show(key)["files"][f], (key, f)
        assert b.show(key)["extraction"]["world_size"] == 2
    assert b.partial_items() == [] and b.verify() == []
    # rank 0 trained once; rank 1 loaded the weights it saved
    assert len(list((tmp_path / "two" / "weights").glob("*.pth"))) == 1
    np.testing.assert_array_equal(np.asarray(a.get(a.keys()[0]).logits),
                                  np.asarray(b.get(a.keys()[0]).logits))


def test_extract_fills_the_store_and_run_reuses_it(tmp_path, capsys) -> None:
    from eebench.cli import main

    suite = tmp_path / "s.toml"
    suite.write_text(SUITE.format(overrides="").replace("epochs = 1", "epochs = 1\nseed = 3"))
    store = tmp_path / "store"
    assert main(["extract", str(suite), "--store", str(store)]) == 0
    s = LogitStore(store)
    before = {k: s.show(k)["created"] for k in s.keys()}
    weights = sorted((store / "weights").glob("*.pth"))
    assert len(before) == 2 and len(weights) == 1
    assert not (tmp_path / "results").exists()  # nothing evaluated
    out = capsys.readouterr().out
    assert "eebench run" in out and str(store) in out

    import eebench.train

    def no_training(*a, **k):
        raise AssertionError("run trained again")

    real = eebench.train.train_multi_exit
    eebench.train.train_multi_exit = no_training
    try:
        assert main(["run", str(suite), "--store", str(store), "--results", str(tmp_path / "results"),
                     "--reports", str(tmp_path / "reports")]) == 0
    finally:
        eebench.train.train_multi_exit = real
    assert {k: s.show(k)["created"] for k in s.keys()} == before
    assert sorted((store / "weights").glob("*.pth")) == weights
    assert (tmp_path / "results" / "sharded" / "curves.csv").is_file()
