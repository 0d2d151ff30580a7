"""Time the streaming .npz import and export of the logit store against a plain file copy.

Setting: an ImageNet-sized cache (50,000 samples, 5 exits, 1,000 classes, float16, about
500 MB; synthetic, seeded), saved as published caches are, (exits, samples, classes) in
an ``np.savez`` archive (``--layout nkc``, ``--compressed`` for the others). The file is
written block by block, so this process stays small. The script times
``shutil.copyfile`` of the file, an import into a fresh store and an export back to .npz
(each the best of ``--repeats``), and measures the peak memory of each in a subprocess:
``ru_maxrss`` of the children (``resource.getrusage(RUSAGE_CHILDREN)``, read after the first
import) and each child's own peak (``VmHWM``; ``ru_maxrss`` of a child also counts the
process that spawned it) against its memory before the call, the array and the block
size. The in-memory path (``load_npz_logits`` then ``put``) is timed too, for comparison
(``--skip-in-memory`` leaves it out). Targets: import within 3x of the copy; peak memory
within about one block plus fixed buffers.

    python benchmarks/bench_store.py                    # full size (~1.5 GB of disk; a quiet machine)
    python benchmarks/bench_store.py --samples 5000     # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from memory import max_rss

from eebench.store.formats import BLOCK_BYTES

MB = 1 << 20

CHILD = r"""
import json, os, sys, time

sys.path.insert(0, sys.argv[6])
from memory import max_rss, memory_now

def peak():
    _, hwm, source = memory_now()
    return hwm if source == "VmHWM" else None

from eebench.store import LogitStore
from eebench.store.formats import export_npz, import_npz, load_npz_logits
from eebench.store.logitstore import file_sha256

what, src, root, out, block = sys.argv[1:6]
store = LogitStore(root)
before = peak()
t0 = time.perf_counter()
if what == "import":
    key = import_npz(store, src, block_bytes=int(block))
elif what == "export":
    export_npz(store, store.keys()[0], out, block_bytes=int(block))
else:  # the in-memory path: load everything, then put
    ls = load_npz_logits(src)
    identity = {"source_format": "npz", "source_sha256": file_sha256(src),
                "costs": ls.costs.tolist(), "layout": ls.manifest["layout"]}
    store.put(ls, identity)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "before": before, "peak": peak(), "maxrss": max_rss()}))
"""


def write_npz(path: Path, n: int, k: int, c: int, seed: int, layout: str, compressed: bool) -> int:
    """A synthetic float16 cache, written a block of rows at a time; returns the array bytes."""
    rng = np.random.default_rng(seed)
    shape = (k, n, c) if layout == "knc" else (n, k, c)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
              "fortran_order": False, "shape": shape}
    mode = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
    row = (c if layout == "knc" else k * c) * 2  # bytes of one (exit's) sample row
    rows = max(1, MB // row)  # this process stays small: the measured ones are its children
    with zipfile.ZipFile(path, "w", compression=mode, allowZip64=True) as zf:
        with zf.open("logits.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            for _ in range(k if layout == "knc" else 1):
                for s in range(0, n, rows):
                    r = min(rows, n - s)
                    block = rng.standard_normal((r, c) if layout == "knc" else (r, k, c),
                                                dtype=np.float32)
                    block *= 3
                    f.write(block.astype(np.float16).reshape(-1))
        for name, arr in (("labels", rng.integers(0, c, n)),
                          ("costs", np.arange(1, k + 1, dtype=np.float64))):
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr)
    fd = os.open(path, os.O_RDONLY)
    try:  # on disk before anything is timed, still in the page cache for every reader
        os.fsync(fd)
    finally:
        os.close(fd)
    return n * k * c * 2


def run_child(what: str, src: Path, root: Path, out: Path, block: int) -> dict:
    res = subprocess.run([sys.executable, "-c", CHILD, what, str(src), str(root), str(out),
                          str(block), str(Path(__file__).parent)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{what} failed:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def time_copy(src: Path, dst: Path, sync: bool) -> float:
    t0 = time.perf_counter()
    shutil.copyfile(src, dst)
    if sync:
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - t0
    dst.unlink()
    return seconds


def mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x / MB:8.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50_000, help="samples (default 50,000)")
    ap.add_argument("--exits", type=int, default=5)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--layout", choices=("knc", "nkc"), default="knc")
    ap.add_argument("--compressed", action="store_true", help="np.savez_compressed-style file")
    ap.add_argument("--block-mb", type=float, default=BLOCK_BYTES / MB,
                    help=f"import/export block in MiB (default {BLOCK_BYTES / MB:g})")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-in-memory", action="store_true",
                    help="do not time the in-memory path (it holds the array twice)")
    ap.add_argument("--tmp", default=None, help="folder for the temporary files")
    args = ap.parse_args(argv)
    n, k, c = args.samples, args.exits, args.classes
    block = max(1, int(args.block_mb * MB))

    with tempfile.TemporaryDirectory(prefix="eebench-bench-store-", dir=args.tmp) as tmpdir:
        tmp = Path(tmpdir)
        src = tmp / "cache.npz"
        t0 = time.perf_counter()
        array_bytes = write_npz(src, n, k, c, args.seed, args.layout, args.compressed)
        t_write = time.perf_counter() - t0
        file_bytes = src.stat().st_size

        # the import first: RUSAGE_CHILDREN is a maximum over every child so far
        imports = []
        for i in range(args.repeats):
            root = tmp / f"store-{i}"
            imports.append(run_child("import", src, root, tmp / "unused", block))
            if i == 0:
                children_maxrss = max_rss(resource.RUSAGE_CHILDREN)
            if i < args.repeats - 1:
                shutil.rmtree(root)
        keep = tmp / f"store-{args.repeats - 1}"
        copies = [time_copy(src, tmp / "copy.npz", sync=False) for _ in range(args.repeats)]
        synced = [time_copy(src, tmp / "copy.npz", sync=True) for _ in range(args.repeats)]
        exports = []
        for _ in range(args.repeats):
            exports.append(run_child("export", src, keep, tmp / "export.npz", block))
            (tmp / "export.npz").unlink()
        shutil.rmtree(keep)
        in_memory = None
        if not args.skip_in_memory:
            in_memory = run_child("in-memory", src, tmp / "store-in-memory", tmp / "unused", block)

    t_copy, t_sync = min(copies), min(synced)
    t_import = min(r["seconds"] for r in imports)
    t_export = min(r["seconds"] for r in exports)
    first, exp = imports[0], exports[0]

    def grew(r: dict) -> float | None:
        return None if r["peak"] is None else r["peak"] - r["before"]

    print(f"cache: {n} samples x {k} exits x {c} classes float16, {args.layout}, "
          f"{'compressed' if args.compressed else 'stored'}; array {mib(array_bytes)}, "
          f"file {mib(file_bytes)} (written in {t_write:.2f} s); block {mib(block)}; "
          f"best of {args.repeats}")
    print(f"copy (shutil.copyfile)        {t_copy:8.3f} s")
    print(f"copy + fsync                  {t_sync:8.3f} s")
    print(f"import (streaming)            {t_import:8.3f} s   {t_import / t_copy:6.2f} x copy   "
          f"{t_import / t_sync:6.2f} x copy+fsync   (target <= 3 x copy)")
    print(f"export (streaming)            {t_export:8.3f} s   {t_export / t_copy:6.2f} x copy")
    if in_memory is not None:
        print(f"import (in memory, old path)  {in_memory['seconds']:8.3f} s   "
              f"{in_memory['seconds'] / t_copy:6.2f} x copy")
    own = max_rss()
    print(f"peak memory, import: ru_maxrss of children {mib(children_maxrss)} "
          f"(this process's own peak {mib(own)})")
    for label, r in (("import", first), ("export", exp), ("in-memory import", in_memory)):
        if r is None:
            continue
        g = grew(r)
        extra = "" if g is None else (
            f"; grew by {mib(g)} = {g / array_bytes:5.2f} x array, {g / block:5.2f} x block")
        print(f"  {label:17s} child peak {mib(r['peak'])} (ru_maxrss {mib(r['maxrss'])}), "
              f"before the call {mib(r['before'])}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
