"""The command line starts fast: help, version and ``store ls`` load no numeric library.

Nothing here is timed (``benchmarks/bench_startup.py`` times the starts): the tests
check what each start imports, in a fresh interpreter, both the way ``python -m
eebench`` starts (``-X importtime`` names every module imported) and the way the
console script does (``from eebench.cli import main``), and that ``store ls`` prints
the same table as before it stopped going through pandas and tabulate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eebench.cli import _print_frame, build_parser, main
from eebench.store import LogitSet, LogitStore, extraction_identity, import_npz
from eebench.store.logitstore import LS_COLUMNS

HEAVY = ("numpy", "pandas", "torch", "scipy", "matplotlib")


def _imported_by(args: list[str], cwd: Path) -> tuple[str, set[str]]:
    """stdout of ``python -X importtime -m eebench ARGS`` and the top-level packages it imported."""
    env = {k: v for k, v in os.environ.items() if k != "EEBENCH_STORE"}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "eebench", *args],
                         capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    names = {ln.rsplit("|", 1)[1].strip().split(".")[0]
             for ln in res.stderr.splitlines() if ln.startswith("import time:") and "|" in ln}
    assert "eebench" in names  # the lines were read
    return res.stdout, names


def _make_store(root: Path) -> LogitStore:
    """Three entries (two imported, one put with an identity; one source file name not in ASCII)
    and one key folder without a manifest."""
    store = LogitStore(root)
    rng = np.random.default_rng(0)
    for i, stem in enumerate(["small", "données"]):
        path = root.parent / f"{stem}.npz"
        np.savez(path, logits=rng.normal(size=(3, 12 + i, 4)).astype(np.float32),
                 labels=rng.integers(0, 4, 12 + i))
        import_npz(store, path, costs=[0.25, 0.5, 1.0], name=f"imp{i}" if i == 0 else None)
    ls = LogitSet(rng.normal(size=(20, 2, 10)).astype(np.float32), rng.integers(0, 10, 20),
                  np.array([1.5e9, 3e9]))
    ident = extraction_identity(model="timm/resnet18", model_config=None, weights_sha256=None,
                                dataset="cifar10", split="test")
    store.put(ls, ident, name="r18-test", dtype="float16")
    (root / ("f" * 64)).mkdir()
    return store


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["sweep", "--help"], ["report", "--help"], ["store", "--help"],
    ["store", "ls", "--help"],
])
def test_help_and_version_import_no_numeric_library(args, tmp_path) -> None:
    out, names = _imported_by(args, tmp_path)
    assert out.strip()
    assert not names & set(HEAVY), sorted(names & set(HEAVY))


def test_every_help_through_the_console_entry_imports_no_numeric_library(tmp_path) -> None:
    """``--help`` of every command and sub-command, as the ``eebench`` script starts them."""
    code = (
        "import argparse, contextlib, io, json, sys\n"
        "from eebench.cli import build_parser, main\n"
        "def paths(parser, prefix):\n"
        "    for action in parser._actions:\n"
        "        if isinstance(action, argparse._SubParsersAction):\n"
        "            for name, sub in action.choices.items():\n"
        "                yield [*prefix, name]\n"
        "                yield from paths(sub, [*prefix, name])\n"
        "done = []\n"
        "for argv in [[], *paths(build_parser(), [])]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "        try:\n"
        "            main([*argv, '--help'])\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, argv\n"
        "    assert 'usage: eebench' in out.getvalue(), argv\n"
        "    done.append(' '.join(argv))\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'helps': done, 'heavy': heavy}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"", "sweep", "report", "store", "store ls", "verify costs"} <= set(got["helps"])
    assert len(got["helps"]) > 25
    assert got["heavy"] == []


def test_store_ls_imports_no_pandas_torch_scipy_or_plotting(tmp_path) -> None:
    _make_store(tmp_path / "store")
    out, names = _imported_by(["store", "ls", "--store", str(tmp_path / "store")], tmp_path)
    assert "r18-test" in out and "broken entry ffffffffffff" in out
    assert not names & {"pandas", "torch", "scipy", "matplotlib", "tabulate"}, names


def test_store_ls_imports_no_numpy(tmp_path) -> None:
    store = _make_store(tmp_path / "store")
    assert store.partial_dir.is_dir() and not any(store.partial_dir.iterdir())
    out, names = _imported_by(["store", "ls", "--store", str(store.root)], tmp_path)
    assert "imp0" in out and "broken entry ffffffffffff" in out
    # an empty .partial/ holds nothing to report: the file-lock library is not loaded either
    assert not names & {"numpy", "filelock"}, names
    (store.partial_dir / "leftover-0123").mkdir()
    out, names = _imported_by(["store", "ls", "--store", str(store.root)], tmp_path)
    assert "1 leftover" in out and "filelock" in names and "numpy" not in names


def test_store_ls_prints_the_table_pandas_and_tabulate_printed(tmp_path, capsys) -> None:
    store = _make_store(tmp_path / "store")
    partial = store.partial_dir / "leftover-0123"
    partial.mkdir(parents=True)
    (partial / "logits.npy").write_bytes(b"x" * 3000)
    frame = store.ls()
    assert list(frame.columns) == list(LS_COLUMNS) and len(frame) == 3
    assert frame.to_dict("records") == store.ls_rows()
    assert "npz:données.npz" in set(frame["model"])
    _print_frame(frame)  # how `store ls` printed its table before
    table = capsys.readouterr().out

    assert main(["store", "ls", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "\n".join(out[:5]) + "\n" == table
    assert out[5] == (f"broken entry {'f' * 12}: no manifest.json (an interrupted write or a "
                      f"manual change); remove it with `eebench store rm {'f' * 12}`")
    assert out[6].startswith(f"unfinished work in {store.partial_dir}: 1 leftover (0.0 MB)")
    assert len(out) == 7


def test_store_ls_reports_every_broken_entry_and_all_unfinished_work(tmp_path, capsys) -> None:
    """The numpy-free listing names each kind of damage with its repair, as before, and
    ``store verify`` prints the same lines."""
    store = _make_store(tmp_path / "store")
    first = store.keys()[0]
    (store.root / ("a" * 64)).mkdir()
    (store.root / ("a" * 64) / "manifest.json").write_text("{")
    man = json.loads((store.root / first / "manifest.json").read_text())
    del man["kind"]
    (store.root / ("b" * 64)).mkdir()
    (store.root / ("b" * 64) / "manifest.json").write_text(json.dumps(man))
    (store.partial_dir / ("c" * 64)).mkdir()
    (store.partial_dir / ("c" * 64) / "job.json").write_text("{}")
    (store.partial_dir / "leftover-0123").mkdir()
    (store.partial_dir / "leftover-0123" / "logits.npy").write_bytes(b"x" * 260_000)
    health = [  # after aaaa...'s line, which quotes the JSON parser's own words
        f"broken entry {'b' * 12}: entry {'b' * 12}: manifest.json has no field 'kind'; the entry "
        f"cannot be trusted: remove it (`eebench store rm {'b' * 12}`) and recreate it; remove it "
        f"with `eebench store rm {'b' * 12}`",
        f"broken entry {'f' * 12}: no manifest.json (an interrupted write or a manual change); "
        f"remove it with `eebench store rm {'f' * 12}`",
        f"unfinished work in {store.partial_dir}: 1 extraction, 1 leftover, 1 in use by a running "
        "process (0.3 MB); `eebench store gc` removes leftovers, `--resumable` also the chunks of "
        "interrupted extractions",
    ]
    with store.scratch("busy"):
        assert main(["store", "ls", "--store", str(store.root)]) == 0
        out = capsys.readouterr().out.splitlines()
        assert len(out) == 5 + 4 and out[6:] == health
        assert out[5].startswith(f"broken entry {'a' * 12}: entry {'a' * 64}: manifest.json "
                                 "cannot be read (") and out[5].endswith(f"`eebench store rm {'a' * 12}`")
        assert main(["store", "verify", "--store", str(store.root)]) == 1
        verified = capsys.readouterr().out.splitlines()
        assert verified[-5:-1] == out[5:]
        folders = [p for p in store.root.iterdir() if len(p.name) == 64]
        assert verified[-1].startswith(f"FAILED: {len(folders)} entries checked")  # each once
    assert [(i.path.name, i.kind, i.active) for i in store.partial_items()] == [
        ("c" * 64, "extraction", False), ("leftover-0123", "leftover", False)]
    for key in ("a" * 12, "b" * 12, "f" * 12):
        assert main(["store", "rm", key, "--store", str(store.root)]) == 0
    assert main(["store", "gc", "--store", str(store.root)]) == 0
    capsys.readouterr()
    assert main(["store", "ls", "--store", str(store.root)]) == 0
    assert capsys.readouterr().out.splitlines()[5:] == [
        f"unfinished work in {store.partial_dir}: 1 extraction (0.0 MB); `eebench store gc` "
        "removes leftovers, `--resumable` also the chunks of interrupted extractions"]


def test_store_ls_of_an_empty_or_missing_store(tmp_path, capsys) -> None:
    root = tmp_path / "nothing"
    assert main(["store", "ls", "--store", str(root)]) == 0
    assert capsys.readouterr().out == f"store {root} is empty\n"
    assert not root.exists()  # listing never creates the store
    assert LogitStore(root).ls().empty and list(LogitStore(root).ls().columns) == list(LS_COLUMNS)


def test_the_parser_still_has_every_command() -> None:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"zoo", "costs", "speed", "store", "data", "train", "sweep", "run", "extract",
            "report", "import-curve", "ablation", "verify"} <= set(sub.choices)
