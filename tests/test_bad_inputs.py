"""Bad input, faults and misuse, tried as a user would: through the ``eebench`` command.

Every case must end either in a correct result or in a non-zero exit with one clear line
on stderr (no traceback) that names what was wrong; nothing stored may be lost or
corrupted on the way. Most cases call ``eebench.cli.main`` in-process (an uncaught
exception would fail the test just as a traceback would); the cases that need real
processes (concurrent writers, a closed pipe) run the installed command.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eebench.cli import main
from eebench.store import LogitStore

EEBENCH = str(Path(sys.executable).parent / "eebench")
COSTS = "1,2,3"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse: usage line(s), then one "error:" line
        code = int(exc.code or 0)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def fails_clearly(result: tuple[int, str, str], *needles: str) -> str:
    """Non-zero exit, no traceback, and a last stderr line that names the problem."""
    code, _out, err = result
    assert code != 0, err
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no message"
    last = lines[-1]
    # argparse adds usage lines before its one error line; our own errors are one line
    assert len(lines) == 1 or last.startswith(("eebench", "usage")) or "error:" in last
    assert "error" in last
    for n in needles:
        assert n in last, f"{n!r} not in {last!r}"
    return last


def save_npz(path: Path, logits: np.ndarray, labels: np.ndarray, **extra: np.ndarray) -> Path:
    np.savez(path, logits=logits, labels=labels, **extra)
    return path


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 120, 5)).astype(np.float32), rng.integers(0, 5, 120)


@pytest.fixture
def good(tmp_path: Path, data) -> Path:
    return save_npz(tmp_path / "good.npz", *data)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


# ---------------------------------------------------------------- non-finite or impossible data


@pytest.mark.parametrize(("value", "where"), [(np.nan, (1, 17, 2)), (np.inf, (2, 0, 4)), (-np.inf, (0, 119, 0))])
def test_non_finite_logits_are_refused_naming_file_sample_exit(capsys, tmp_path, data, store,
                                                                value, where) -> None:
    logits, labels = data
    logits = logits.copy()
    logits[where] = value
    bad = save_npz(tmp_path / "bad.npz", logits, labels)
    e, s, c = where
    for argv in (("store", "import", bad, "--costs", COSTS, "--store", store),
                 ("sweep", bad, "--costs", COSTS, "--store", store)):
        line = fails_clearly(run(capsys, *argv), "bad.npz", f"sample {s}, exit {e}, class {c}")
        assert str(value) in line or "inf" in line
    assert LogitStore(store).keys() == []


def test_all_nan_logits_never_give_a_curve(capsys, tmp_path, data, store) -> None:
    logits, labels = data
    bad = save_npz(tmp_path / "allnan.npz", np.full_like(logits, np.nan), labels)
    fails_clearly(run(capsys, "sweep", bad, "--costs", COSTS, "--store", store), "non-finite")


def test_probabilities_outside_unit_interval(capsys, tmp_path, data, store) -> None:
    logits, labels = data
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs[0, 3, 1] = 1.5
    bad = tmp_path / "p.npz"
    np.savez(bad, probabilities=probs, labels=labels)
    fails_clearly(run(capsys, "store", "import", bad, "--costs", COSTS, "--store", store),
                  "sample 3, exit 0, class 1", "not a probability")


def test_probabilities_that_do_not_sum_to_one(capsys, tmp_path, data, store) -> None:
    logits, labels = data
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    probs[2, 50] *= 0.5
    bad = tmp_path / "p.npz"
    np.savez(bad, probabilities=probs, labels=labels)
    fails_clearly(run(capsys, "sweep", bad, "--costs", COSTS, "--store", store),
                  "sample 50 at exit 2", "sum to 0.5")


@pytest.mark.parametrize(("costs", "needle"), [
    ("1,-2,3", "cost of exit 1 is -2"),
    ("0,0,0", "cost of exit 0 is 0"),
    ("3,2,1", "cost decreases from exit 0"),
    ("nan,1,2", "cost of exit 0 is nan"),
    ("1,2", "2 costs for 3 exits"),
])
def test_impossible_costs_are_refused(capsys, good, store, costs, needle) -> None:
    fails_clearly(run(capsys, "store", "import", good, "--costs", costs, "--store", store), needle)
    fails_clearly(run(capsys, "sweep", good, "--costs", costs, "--store", store), needle)


def test_costs_stored_in_the_file_are_checked_too(capsys, tmp_path, data, store) -> None:
    bad = save_npz(tmp_path / "c.npz", *data, costs=np.array([1.0, 3.0, 2.0]))
    fails_clearly(run(capsys, "sweep", bad, "--store", store), "c.npz: costs", "decreases")


@pytest.mark.parametrize(("budgets", "needle"), [("nan", "budget 0 is nan"), ("1.5,-1", "budget 1 is -1"),
                                                 ("", "empty")])
def test_bad_budgets(capsys, good, store, budgets, needle) -> None:
    fails_clearly(run(capsys, "sweep", good, "--costs", COSTS, "--budgets", budgets,
                      "--store", store), needle)


def test_empty_logits(capsys, tmp_path, store) -> None:
    empty = save_npz(tmp_path / "e.npz", np.zeros((3, 0, 5), np.float32), np.zeros(0, np.int64))
    fails_clearly(run(capsys, "sweep", empty, "--costs", COSTS, "--store", store))


def test_val_fraction_outside_zero_one(capsys, good, store) -> None:
    fails_clearly(run(capsys, "sweep", good, "--costs", COSTS, "--val-fraction", "1.5",
                      "--store", store), "val_fraction")


# ---------------------------------------------------------------- the store returns what it stored


def _import(capsys, path: Path, store: Path, name: str | None = None) -> str:
    argv = ["store", "import", path, "--costs", COSTS, "--store", store]
    code, out, err = run(capsys, *argv, *(["--name", name] if name else []))
    assert code == 0, err
    return out.split(" as ")[1].split()[0]


def _flip_byte(path: Path, offset_from_end: int = 7) -> None:
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x10
    path.write_bytes(bytes(raw))


def test_a_changed_byte_is_caught_on_the_next_read(capsys, good, store) -> None:
    key = _import(capsys, good, store, "g")
    assert run(capsys, "sweep", "g", "--store", store)[0] == 0  # read once: verdict cached
    _flip_byte(Path(store) / key / "logits.npy")
    fails_clearly(run(capsys, "sweep", "g", "--store", store), "logits.npy differs", "store rm")
    fails_clearly(run(capsys, "store", "export", "g", Path(store).parent / "x.npz", "--store", store),
                  "checksum")


def test_a_replaced_costs_file_is_caught(capsys, good, store) -> None:
    key = _import(capsys, good, store, "g")
    np.save(Path(store) / key / "costs.npy", np.array([1.0, 1.5, 9.0]))
    fails_clearly(run(capsys, "sweep", "g", "--store", store), "costs.npy differs")


def test_costs_that_disagree_with_the_manifest_are_caught(capsys, good, store) -> None:
    key = _import(capsys, good, store, "g")
    d = Path(store) / key
    np.save(d / "costs.npy", np.array([1.0, 1.5, 9.0]))
    man = json.loads((d / "manifest.json").read_text())
    from eebench.store.logitstore import file_sha256

    man["files"]["costs.npy"] = file_sha256(d / "costs.npy")  # a careful forger
    (d / "manifest.json").write_text(json.dumps(man))
    fails_clearly(run(capsys, "sweep", "g", "--store", store), "the manifest says")


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("shape", "abc", "field 'shape'"), ("costs", "x", "field 'costs'"), ("files", [1], "field 'files'"),
    ("name", 5, "field 'name'"),
])
def test_manifest_field_of_the_wrong_type(capsys, good, store, field, value, needle) -> None:
    key = _import(capsys, good, store, "g")
    path = Path(store) / key / "manifest.json"
    man = json.loads(path.read_text())
    man[field] = value
    path.write_text(json.dumps(man))
    code, out, err = run(capsys, "store", "ls", "--store", store)
    assert code == 0 and f"broken entry {key[:12]}" in out and needle in out
    fails_clearly(run(capsys, "store", "show", key[:12], "--store", store))
    assert run(capsys, "store", "verify", "--store", store)[0] == 1
    assert run(capsys, "store", "rm", key[:12], "--store", store)[0] == 0  # repairable
    assert LogitStore(store).verify() == []


def test_an_entry_without_manifest_is_listed_and_removable(capsys, good, store) -> None:
    key = _import(capsys, good, store, "g")
    (Path(store) / key / "manifest.json").unlink()
    code, out, _ = run(capsys, "store", "ls", "--store", store)
    assert code == 0 and "broken entry" in out and "no manifest.json" in out
    assert run(capsys, "store", "rm", key, "--store", store)[0] == 0
    assert not (Path(store) / key).exists()


def test_leftover_partial_data_is_reported_and_collected(capsys, good, store) -> None:
    _import(capsys, good, store, "g")
    s = LogitStore(store)
    ghost = s.partial_dir / ("f" * 64 + "-deadbeef0000")
    ghost.mkdir(parents=True)
    (ghost / "logits.npy").write_bytes(b"x" * 200_000)
    with s.scratch("busy") as live:  # a writer that is still running keeps its folder
        (live / "logits.npy").write_bytes(b"y" * 100)
        code, out, _ = run(capsys, "store", "ls", "--store", store)
        assert code == 0 and "1 leftover" in out and "1 in use" in out and "store gc" in out
        code, out, _ = run(capsys, "store", "gc", "--store", store)
        assert code == 0 and "removed 1 unfinished folder" in out
        assert not ghost.exists() and live.exists()
    code, out, _ = run(capsys, "store", "ls", "--store", store)
    assert "unfinished" not in out
    assert run(capsys, "sweep", "g", "--store", store)[0] == 0  # the entry is untouched


def test_a_name_that_is_also_a_file_is_never_guessed(capsys, tmp_path, good, store, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    _import(capsys, good, store, "mine")
    shutil.copy(good, tmp_path / "mine")
    fails_clearly(run(capsys, "sweep", "mine", "--store", store), "both a path", "store:mine")
    assert run(capsys, "sweep", "store:mine", "--store", store)[0] == 0


def test_entry_names_that_look_like_files_are_refused(capsys, good, store) -> None:
    fails_clearly(run(capsys, "store", "import", good, "--costs", COSTS, "--name", "x.npz",
                      "--store", store), "ends like a file name")


def test_reimport_under_another_name_keeps_the_first(capsys, good, store) -> None:
    key = _import(capsys, good, store, "first")
    fails_clearly(run(capsys, "store", "import", good, "--costs", COSTS, "--name", "second",
                      "--store", store), "named 'first'", "store rename")
    assert LogitStore(store).names() == {"first": key}
    assert run(capsys, "store", "rename", "first", "second", "--store", store)[0] == 0
    assert LogitStore(store).names() == {"second": key}


# ---------------------------------------------------------------- concurrent writers


def _spawn(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([EEBENCH, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_concurrent_imports_of_one_name_leave_one_entry(tmp_path, data, store) -> None:
    logits, labels = data
    files = [save_npz(tmp_path / f"f{i}.npz", logits + i, labels) for i in range(3)]
    procs = [_spawn("store", "import", str(f), "--costs", COSTS, "--name", "same", "--store", str(store))
             for f in files]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    assert len(ok) == 1, results
    for code, _out, err in results:
        assert "Traceback" not in err
        if code:
            assert code == 2 and "name 'same' already names entry" in err.strip().splitlines()[-1]
    s = LogitStore(store)
    assert len(s.keys()) == 1 and list(s.names()) == ["same"] and s.verify() == []
    assert s.partial_items() == []


def test_concurrent_reimports_under_four_names(tmp_path, good, store) -> None:
    procs = [_spawn("store", "import", str(good), "--costs", COSTS, "--name", f"n{i}", "--store", str(store))
             for i in range(4)]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert sum(r[0] == 0 for r in results) == 1, results
    for code, _out, err in results:
        assert "Traceback" not in err
        if code:
            assert "already in" in err and "store rename" in err
    s = LogitStore(store)
    (winner,) = [f"n{i}" for i, r in enumerate(results) if r[0] == 0]
    assert len(s.keys()) == 1 and list(s.names()) == [winner] and s.verify() == []


# ---------------------------------------------------------------- outputs go where they are told


def _suite(tmp_path: Path, good: Path, name: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(
        f'[suite]\nname = "{name}"\n\n[[logits]]\nlabel = "m"\nsource = "{good}"\n'
        f"costs = [1, 2, 3]\n\n[[policies]]\nscore = \"confidence\"\nsolver = \"geometric\"\n"
    )
    return path


def test_a_suite_name_cannot_escape_the_results_folder(capsys, tmp_path, good, store) -> None:
    suite = _suite(tmp_path, good, "../../escape")
    results, reports = tmp_path / "a" / "results", tmp_path / "a" / "reports"
    fails_clearly(run(capsys, "run", suite, "--results", results, "--reports", reports,
                      "--store", store), "suite.name", "'..'")
    assert not (tmp_path / "escape").exists() and not results.exists()


@pytest.fixture
def results(capsys, tmp_path, good, store) -> Path:
    suite = _suite(tmp_path, good, "tiny")
    code, _out, err = run(capsys, "run", suite, "--results", tmp_path / "results",
                          "--reports", tmp_path / "reports", "--store", store)
    assert code == 0, err
    return tmp_path / "results" / "tiny"


def test_a_truncated_results_file_is_refused_by_report(capsys, tmp_path, results) -> None:
    curves = results / "curves.csv"
    curves.write_bytes(curves.read_bytes()[: curves.stat().st_size // 2])
    fails_clearly(run(capsys, "report", results, "--out", tmp_path / "r2"), "curves.csv",
                  "checksum differs")
    meta = json.loads((results / "meta.json").read_text())
    del meta["files"]  # a folder written before checksums existed: the rows are checked
    (results / "meta.json").write_text(json.dumps(meta))
    fails_clearly(run(capsys, "report", results, "--out", tmp_path / "r2"), "truncated or damaged")
    assert not (tmp_path / "r2" / "index.md").exists()


def test_report_out_that_is_a_file(capsys, tmp_path, results) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    fails_clearly(run(capsys, "report", results, "--out", f), "is a file")


def test_results_root_that_is_a_file(capsys, tmp_path, good, store) -> None:
    f = tmp_path / "results"
    f.write_text("x")
    fails_clearly(run(capsys, "run", _suite(tmp_path, good, "t"), "--results", f,
                      "--reports", tmp_path / "rep", "--store", store), "--results", "is a file")


# ---------------------------------------------------------------- reports never mislead


def test_published_overlay_of_several_data_sets_is_refused(capsys, tmp_path, results) -> None:
    fails_clearly(run(capsys, "report", results, "--published", "dvt", "--out", tmp_path / "r"),
                  "3 data sets", "--published-dataset")


def test_misspelled_published_data_set(capsys, tmp_path, results) -> None:
    fails_clearly(run(capsys, "report", results, "--published", "dvt", "--published-dataset",
                      "imagnet", "--out", tmp_path / "r"), "unknown data set 'imagnet'", "imagenet")


def test_published_data_set_that_contradicts_the_results(capsys, tmp_path, results) -> None:
    meta = json.loads((results / "suite.resolved.json").read_text())
    meta["data"] = {"dataset": "cifar10"}
    (results / "suite.resolved.json").write_text(json.dumps(meta))
    m = json.loads((results / "meta.json").read_text())
    m.pop("files")
    (results / "meta.json").write_text(json.dumps(m))
    fails_clearly(run(capsys, "report", results, "--published", "dvt", "--published-dataset",
                      "imagenet", "--out", tmp_path / "r"), "results are on cifar10")
    assert run(capsys, "report", results, "--published", "dvt", "--out", tmp_path / "r")[0] == 0


def test_unreachable_budgets_are_said_and_never_duplicated(capsys, tmp_path, good, store) -> None:
    out = tmp_path / "c.csv"
    code, stdout, err = run(capsys, "sweep", good, "--costs", COSTS, "--solver", "ga", "--budgets",
                            "1.5,2.8,2.9,3", "--option", "generations=3", "--out", out,
                            "--store", store)
    assert code == 0, err
    import pandas as pd

    curve = pd.read_csv(out, keep_default_na=False)
    assert curve["thresholds"].is_unique
    assert "not reached" in stdout and (curve["note"] != "").any()


# ---------------------------------------------------------------- OS faults and misuse


def test_store_path_that_is_a_file(capsys, tmp_path, good) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    fails_clearly(run(capsys, "store", "import", good, "--costs", COSTS, "--store", f), "is a file")
    fails_clearly(run(capsys, "store", "import", good, "--costs", COSTS, "--store", f / "sub"),
                  "lies under")


def test_read_only_store(capsys, good, store, monkeypatch) -> None:
    store.mkdir()
    real_mkdir = Path.mkdir

    def deny(self, *a, **k):  # what a read-only mount or a foreign folder does
        if str(self).startswith(str(store)):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", deny)
    fails_clearly(run(capsys, "store", "import", good, "--costs", COSTS, "--store", store),
                  "cannot", "Permission denied")


def test_sweep_out_is_checked_before_any_work(capsys, tmp_path, good, store, monkeypatch) -> None:
    import eebench.evaluate

    monkeypatch.setattr(eebench.evaluate, "run_sweep", lambda *a, **k: pytest.fail("computed"))
    fails_clearly(run(capsys, "sweep", good, "--costs", COSTS, "--out", tmp_path), "is a folder")
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    fails_clearly(run(capsys, "sweep", good, "--costs", COSTS, "--out", blocker / "c.csv"),
                  "lies under")


def test_export_to_a_folder(capsys, tmp_path, good, store) -> None:
    _import(capsys, good, store, "g")
    fails_clearly(run(capsys, "store", "export", "g", tmp_path, "--store", store), "is a folder")


@pytest.fixture
def checkpoints(tmp_path: Path) -> dict[str, Path]:
    import torch

    full = tmp_path / "full.pth"
    torch.save({"w": torch.zeros(1000)}, full)
    out = {"empty": tmp_path / "empty.pth", "truncated": tmp_path / "trunc.pth",
           "not torch": tmp_path / "text.pth", "pickled code": tmp_path / "evil.pth",
           "folder": tmp_path}
    out["empty"].write_bytes(b"")
    out["truncated"].write_bytes(full.read_bytes()[:700])
    out["not torch"].write_text("hello, I am not a checkpoint\n")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'PWNED'}",))

    out["pickled code"].write_bytes(pickle.dumps(Evil()))
    return out


@pytest.mark.parametrize("kind", ["empty", "truncated", "not torch", "pickled code", "folder"])
def test_bad_checkpoints_are_refused_in_one_line(capsys, checkpoints, kind) -> None:
    path = checkpoints[kind]
    fails_clearly(run(capsys, "verify", "checkpoint", "msdnet_cifar100_budget", path), str(path))
    assert not (path.parent / "PWNED").exists() and not (checkpoints["folder"] / "PWNED").exists()


@pytest.mark.parametrize(("option", "needle"), [
    ("population=10000000", "population must be an integer in [2, 100000]"),
    ("tournament=0", "tournament must be an integer"),
    ("eta_cx=-1", "eta_cx"),
    ("eta_mut=nan", "eta_mut"),
    ("cx_prob=2", "cx_prob must be a probability"),
    ("bogus=1", "has no option 'bogus'"),
])
def test_absurd_solver_options(capsys, good, store, option, needle) -> None:
    fails_clearly(run(capsys, "sweep", good, "--costs", COSTS, "--solver", "ga", "--option", option,
                      "--store", store), needle)


def test_bad_json_overrides(capsys) -> None:
    fails_clearly(run(capsys, "costs", "msdnet_cifar100_budget", "--overrides", "{bad"), "JSON object")


def test_unknown_model(capsys) -> None:
    fails_clearly(run(capsys, "costs", "msdnet_cifar100_budgt"), "unknown model")


def test_closed_pipe_is_quiet(tmp_path) -> None:
    proc = subprocess.run(f"'{EEBENCH}' zoo list | head -n 1", shell=True, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.strip() and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def test_a_suite_report_says_which_budgets_were_not_reached(capsys, tmp_path, good, store) -> None:
    suite = _suite(tmp_path, good, "budgets")
    suite.write_text(suite.read_text() + (
        '\n[[policies]]\nscore = "confidence"\nsolver = "ga"\nbudgets = [1.5, 2.9, 3.0, 3.5]\n'
        "generations = 2\npopulation = 8\n"
    ))
    code, _out, err = run(capsys, "run", suite, "--results", tmp_path / "results",
                          "--reports", tmp_path / "reports", "--store", store)
    assert code == 0, err
    import pandas as pd

    curves = pd.read_csv(tmp_path / "results" / "budgets" / "curves.csv", keep_default_na=False)
    ga = curves[curves["policy"] == "confidence/ga"]
    assert len(ga) < 4 and ga["note"].str.contains("not reached").any()
    index = (tmp_path / "reports" / "budgets" / "index.md").read_text()
    assert "Notes on operating points" in index and "not reached" in index
