"""The ``eebench`` command: parses arguments, calls the public API, prints.

Every command is a few lines over a function a user can call from a notebook.
Imports happen inside the handlers: this module loads only argparse and json
(and eebench's errors), so ``--help`` of every command starts in about the time
of a bare Python, ``store ls`` loads neither pandas nor tabulate, and commands
that work on cached logits (``sweep``, ``report``, ``store``) never load torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence

from eebench.errors import EebenchError, InputError


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 1,2,3, got {text!r}"
        ) from None


def _json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r} ({exc.msg})"
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object ({{...}}), got {text!r}")
    return value


def _option(text: str) -> tuple[str, object]:
    """NAME=VALUE; VALUE is read as JSON when it parses (numbers, lists, true), else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE such as population=128, got {text!r}")
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def _input_size(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.replace("x", ",").split(",") if x.strip()]
    if len(parts) == 1:
        return (3, parts[0], parts[0])
    if len(parts) == 2:
        return (3, parts[0], parts[1])
    if len(parts) == 3:
        return (parts[0], parts[1], parts[2])
    raise argparse.ArgumentTypeError(f"input size must be S, HxW or CxHxW, got {text!r}")


def _print_frame(df, floatfmt: str = ".4g") -> None:  # noqa: ANN001 (pandas is imported lazily)
    from tabulate import tabulate

    print(tabulate(df, headers="keys", tablefmt="github", showindex=False, floatfmt=floatfmt))


def _print_rows(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Print plain rows as ``_print_frame`` prints a frame of text and integers (a GitHub
    table: numbers right-aligned, text left-aligned, columns at least their header plus
    two wide), without loading pandas or tabulate; every text value is printed as it is."""
    cells = [[str(r[c]).strip() for c in columns] for r in rows]
    numeric = [bool(rows) and all(isinstance(r[c], int) and not isinstance(r[c], bool)
                                  for r in rows) for c in columns]
    widths = [max([len(c) + 2] + [len(row[i]) for row in cells])
              for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        padded = [" " * (w - len(v)) + v if num else v + " " * (w - len(v))
                  for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(padded) + " |"

    print("\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                     *(line(row) for row in cells)]))


def _write_csv(frame, path: str) -> None:  # noqa: ANN001 (pandas is imported lazily)
    """Write a table atomically (readers never see half a file)."""
    from eebench.outputs import atomic_file, prepare_output_file

    out = prepare_output_file(path, "--out")
    with atomic_file(out, "w") as f:
        frame.to_csv(f, index=False)


# ---------------------------------------------------------------- zoo / costs


def cmd_zoo_list(args: argparse.Namespace) -> int:
    import pandas as pd

    from eebench.zoo import list_families, list_models, model_table

    if any(args.pattern.startswith(f) for f in list_families()):
        for name in list_models(args.pattern):
            print(name)
        return 0
    rows = model_table(args.pattern)
    if rows:
        df = pd.DataFrame(rows).drop(columns=["exit_names"] if not args.exit_names else [])
        _print_frame(df, floatfmt=".2f")
    for fam in list_families():
        print(
            f"\n{fam}<name>: any timm model (CNN, ViT, Swin, hybrid) with heads after its stages "
            f"or blocks "
            f"(exits=[...]); list them with `eebench zoo list '{fam}resnet*'`"
        )
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    from eebench.costs import CONVENTIONS, count_costs, format_costs_table
    from eebench.outputs import prepare_output_file
    from eebench.zoo import create_model

    overrides = args.overrides or {}
    if args.list_conventions:
        for name, convention in CONVENTIONS.items():
            print(f"{name}: {convention.description}\n")
        return 0
    if args.csv:
        prepare_output_file(args.csv, "--csv")
    if args.all:
        return _costs_all(args)
    if not args.name:
        print("eebench costs: give a model name or --all (see `eebench zoo list`)", file=sys.stderr)
        return 2
    model = create_model(args.name, **overrides)
    costs = count_costs(
        model, input_size=args.input_size, convention=args.convention, cross_check=not args.no_check
    )
    if args.json:
        print(json.dumps(costs.to_dict(), indent=2))
    else:
        print(format_costs_table(costs))
    return 0


def _costs_all(args: argparse.Namespace) -> int:
    from eebench.costs.zoo_table import zoo_cost_table

    table = zoo_cost_table(convention=args.convention)
    if args.csv:
        _write_csv(table, args.csv)
    if args.json:
        print(table.to_json(orient="records", indent=2))
    else:
        _print_frame(table.drop(columns=["overrides"]), floatfmt=".4f")
    if args.csv:
        print(f"{len(table)} rows written to {args.csv}")
    return 0


def cmd_speed(args: argparse.Namespace) -> int:
    from eebench.costs.speed import speed_of_model
    from eebench.outputs import prepare_output_file

    if args.out:
        prepare_output_file(args.out, "--out")
    report = speed_of_model(
        args.name, checkpoint=args.checkpoint, overrides=args.overrides,
        thresholds=args.thresholds, exit_fractions=args.exit_fractions, results=args.results,
        policy=args.policy, point=args.point, results_model=args.results_model, score=args.score,
        convention=args.convention, samples=args.samples, data=args.data,
        data_params=args.data_params, seed=args.seed, batch_sizes=args.batch_size,
        device=args.device, threads=args.threads, warmup=args.warmup, repeats=args.repeats,
        compile=args.compile, channels_last=args.channels_last,
        progress=not args.json,
    )
    frame = report.to_frame()
    if args.out:
        _write_csv(frame, args.out)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        cols = ["batch_size", "predicted_speedup", "measured_speedup", "realised",
                "exit_agreement", "throughput", "full_throughput", "latency_p50_ms",
                "latency_p95_ms", "latency_p99_ms", "runner_overhead"]
        _print_frame(frame[cols], floatfmt=".3f")
        lat = ", ".join(f"{n} {ms:.2f}" for n, ms in zip(report.exit_names, report.exit_latency_ms))
        print(f"cumulative latency per exit at batch 1 (ms): {lat}")
        print(f"exit fractions: {frame['exit_fractions'].iloc[0]}; hardware: {report.hardware}")
    if not args.json:
        from eebench.costs.speed import published_throughput

        for r in published_throughput(args.name).to_dict("records"):
            print(f"published: {r['model']} {r.get('point') or ''} {r['throughput']:g} images/s "
                  f"({r['citation']}; {r.get('note', '')})")
    for d in report.disagreements:
        print(f"note: sample {d['sample']} (batch {d['batch_size']}) left at exit "
              f"{d['real_exit']} for real but {d['simulated_exit']} simulated (score "
              f"{d['score']:.9g} vs threshold {d['threshold']:.9g})", file=sys.stderr)
    if args.out:
        print(f"written to {args.out}")
    return 0


# ---------------------------------------------------------------- verify


def cmd_verify_costs(args: argparse.Namespace) -> int:
    from eebench.outputs import prepare_output_file
    from eebench.verify import COST_TOLERANCES, DEFAULT_COST_TOLERANCE, verify_costs

    if args.csv:
        prepare_output_file(args.csv, "--csv")
    result = verify_costs(
        sources=args.source or None, models=args.model or None, tolerance=args.tolerance,
        root=args.published_dir,
    )
    shown = result.drop(columns=["citation"]).copy()
    shown["rel_diff"] = [f"{100 * v:+.2f}%" if v == v else "—" for v in result["rel_diff"]]
    shown["tolerance"] = [f"{100 * v:g}%" for v in result["tolerance"]]
    _print_frame(shown, floatfmt=".4f")
    if args.tolerance is None:
        tols = ", ".join(f"{k} {100 * v:g}%" for k, v in COST_TOLERANCES.items())
        print(f"tolerances (relative): {tols}; other sources {100 * DEFAULT_COST_TOLERANCE:g}%")
    if args.csv:
        _write_csv(result, args.csv)
        print(f"written to {args.csv}")
    failed = result[result["status"] != "pass"]
    if len(failed):
        print(f"\n{len(failed)} of {len(result)} published costs FAILED:", file=sys.stderr)
        for r in failed.itertuples():
            print(f"  {r.source}: {r.zoo_model} {r.overrides} exit {r.exit:g} {r.quantity}: "
                  f"published {r.published:g}, ours {r.ours:.4g} ({r.status}); {r.citation}",
                  file=sys.stderr)
        return 1
    print(f"all {len(result)} published costs reproduced within tolerance")
    return 0


def cmd_verify_checkpoint(args: argparse.Namespace) -> int:
    from eebench.verify import verify_checkpoint
    from eebench.zoo.checkpoint import CheckpointMismatchError

    overrides = args.overrides or {}
    try:
        info = verify_checkpoint(args.name, args.path, overrides)
    except CheckpointMismatchError as exc:
        print(f"eebench verify checkpoint: FAILED: {exc}", file=sys.stderr)
        return 1
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


def cmd_verify_accuracy(args: argparse.Namespace) -> int:
    from eebench.verify import MissingInputsError, verify_accuracy

    checkpoints = dict(_key_value(kv) for kv in args.checkpoint or [])
    try:
        result = verify_accuracy(
            args.suite, data_root=args.data_root, checkpoints=checkpoints,
            tolerance=args.tolerance, store_root=args.store,
        )
    except MissingInputsError as exc:
        print(f"eebench verify accuracy: {exc}", file=sys.stderr)
        return 3
    _print_frame(result.drop(columns=["citation"]), floatfmt=".2f")
    failed = result[result["status"] != "pass"]
    if len(failed):
        print(f"{len(failed)} of {len(result)} published accuracies not reproduced within "
              f"{args.tolerance:g} points", file=sys.stderr)
        return 1
    print(f"all {len(result)} published accuracies reproduced within {args.tolerance:g} points")
    return 0


def _key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise InputError(f"expected NAME=PATH, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


# ---------------------------------------------------------------- store


def _store(args: argparse.Namespace):  # noqa: ANN202
    from eebench.store import LogitStore, default_store_root

    return LogitStore(default_store_root(args.store))


def cmd_store_ls(args: argparse.Namespace) -> int:
    # reads manifests only, through the numpy-free module: listing starts like a bare Python
    from eebench.store.manifest import LS_COLUMNS, default_store_root, ls_rows

    root = default_store_root(args.store)
    rows = ls_rows(root)
    if not rows:
        print(f"store {root} is empty")
    else:
        _print_rows(rows, LS_COLUMNS)
    _print_store_health(root)
    return 0


def _print_store_health(root) -> None:  # noqa: ANN001 (a pathlib.Path)
    """Broken entries and unfinished work of the store at ``root``: never silent, each with the
    command that repairs it (numpy-free; the file-lock library loads only if ``.partial/``
    holds something)."""
    from eebench.store.manifest import PARTIAL, broken_entries, partial_items

    for key, problem in broken_entries(root):
        print(f"broken entry {key[:12]}: {problem}; remove it with `eebench store rm {key[:12]}`")
    items = partial_items(root)  # (path, kind, bytes, active)
    if items:
        mb = sum(size for _, _, size, _ in items) / 1e6
        kinds = {k: sum(1 for _, kind, _, active in items if kind == k and not active)
                 for k in ("extraction", "leftover")}
        active = sum(1 for *_, busy in items if busy)
        parts = [f"{n} {k}{'s' if n != 1 else ''}" for k, n in kinds.items() if n]
        if active:
            parts.append(f"{active} in use by a running process")
        print(f"unfinished work in {root / PARTIAL}: {', '.join(parts)} ({mb:.1f} MB); "
              "`eebench store gc` removes leftovers, `--resumable` also the chunks of "
              "interrupted extractions")


def cmd_store_show(args: argparse.Namespace) -> int:
    print(json.dumps(_store(args).show(args.ref), indent=2, default=str))
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    store = _store(args)
    problems = store.verify(args.ref)
    for p in problems:
        print(f"{p}; remove it with `eebench store rm {p.key[:12]}` and recreate it")
    n = len(set(store.keys()) | {k for k, _ in store.broken()}) if args.ref is None else 1
    if args.ref is None:
        _print_store_health(store.root)
    print(f"{'FAILED' if problems else 'OK'}: {n} entr{'y' if n == 1 else 'ies'} checked in {store.root}")
    return 1 if problems else 0


def cmd_store_gc(args: argparse.Namespace) -> int:
    store = _store(args)
    removed = store.gc(resumable=args.resumable)
    mb = sum(i.bytes for i in removed) / 1e6
    print(f"removed {len(removed)} unfinished folder{'s' if len(removed) != 1 else ''} "
          f"({mb:.1f} MB) from {store.partial_dir}")
    left = store.partial_items()
    if left:
        print(f"kept {len(left)}: " + ", ".join(
            f"{i.path.name} ({'in use' if i.active else i.kind})" for i in left))
    return 0


def cmd_store_rename(args: argparse.Namespace) -> int:
    store = _store(args)
    key = store.rename(args.ref, args.name or None)
    print(f"entry {key[:12]} is now {'named ' + repr(args.name) if args.name else 'unnamed'}")
    return 0


def cmd_store_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eebench.store.formats import import_msdnet_logits, import_npz

    store = _store(args)
    path = Path(args.path)
    if path.suffix in (".pth", ".pt"):
        keys = import_msdnet_logits(store, path, costs=args.costs, name=args.name)
        for k in keys:
            print(f"imported {path} as {k} (probabilities) into {store.root}")
    else:
        key = import_npz(store, path, costs=args.costs, name=args.name, layout=args.layout)
        print(f"imported {path} as {key} into {store.root}")
    return 0


def cmd_store_export(args: argparse.Namespace) -> int:
    from eebench.outputs import prepare_output_file
    from eebench.store.formats import export_npz

    prepare_output_file(args.out, "output")
    out = export_npz(_store(args), args.ref, args.out)
    print(f"exported {args.ref} to {out}")
    return 0


def cmd_store_rm(args: argparse.Namespace) -> int:
    store = _store(args)
    key = store.rm(args.ref)
    print(f"removed {key} from {store.root}")
    return 0


# ---------------------------------------------------------------- data / train


def cmd_data_list(args: argparse.Namespace) -> int:
    from eebench.data import list_datasets

    for name in list_datasets():
        print(name)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from eebench.outputs import prepare_output_file
    from eebench.train import train_on_dataset

    prepare_output_file(args.out, "--out")
    overrides = args.overrides or {}
    result = train_on_dataset(
        args.model,
        dataset=args.dataset,
        model_overrides=overrides,
        epochs=args.epochs,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        distill_alpha=args.distill_alpha,
        seed=args.seed,
        checkpoint_path=args.out,
    )
    assert result.test_accuracy is not None  # train_on_dataset always evaluates its test split
    accs = " / ".join(f"{a * 100:.1f}" for a in result.test_accuracy)
    print(f"test top-1 per exit (%): {accs}")
    print(f"weights: {result.checkpoint_path}")
    return 0


# ---------------------------------------------------------------- policies / suites / reports


def cmd_sweep(args: argparse.Namespace) -> int:
    from eebench.evaluate import run_sweep
    from eebench.outputs import prepare_output_file

    if args.out:
        prepare_output_file(args.out, "--out")
    options = dict(args.option or [])
    for name in ("epsilon", "delta", "bound"):  # risk control
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.fit_source:
        options["fit_source"] = args.fit_source
    if args.tune_on_test:
        options["tune_on_test"] = True
    curve = run_sweep(
        args.source,
        costs=args.costs,
        val_fraction=args.val_fraction,
        seed=args.seed,
        val_index=args.val_index,
        score=args.score,
        solver=args.solver,
        grid=args.grid,
        budgets=args.budgets,
        calibration=args.calibration,
        store_root=args.store,
        **options,
    )
    cols = [c for c in ("param", "val_acc", "val_cost", "test_acc", "test_cost") if c in curve]
    _print_frame(curve[cols])
    for param, note in zip(curve["param"], curve.get("note", [])):
        if note:
            print(f"note: at {param:g}: {note}")
    if args.out:
        _write_csv(curve, args.out)
        print(f"{len(curve)} operating points written to {args.out}")
    return 0


FEATURES_HELP = ("also store each exit's pre-logit features (what the laplace calibration "
                 "needs); the same as features = true in the suite's [suite] table")


def cmd_run(args: argparse.Namespace) -> int:
    from eebench.runner import current_command, run_suite

    out = run_suite(
        args.suite, store_root=args.store, results_root=args.results,
        reports_root=args.reports, command=current_command(),
        features=True if args.features else None,
    )
    if out.report_index is None:  # a rank other than 0 under torchrun
        print(f"rank {os.environ.get('RANK')}: extraction done; rank 0 writes {out.results_dir}")
        return 0
    print(f"results: {out.results_dir}")
    print(f"report:  {out.report_index}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from eebench.compare import compare
    from eebench.runner import current_command

    out = compare(
        args.source, args.policies, costs=args.costs, out=args.out, cost_unit=args.cost_unit,
        val_fraction=args.val_fraction, seed=args.seed, val_index=args.val_index,
        fit_source=args.fit_source, tune_on_test=args.tune_on_test, budgets=args.budgets,
        n_boot=args.n_boot, store_root=args.store, command=current_command(),
    )
    print(f"results: {out.results_dir}")
    print(f"report:  {out.report_index}")
    return 0


def cmd_policies(args: argparse.Namespace) -> int:
    from eebench.policies.factory import policy_catalog

    rows = policy_catalog()
    width = max(len(r["kind"]) for r in rows), max(len(r["name"]) for r in rows)
    for r in rows:
        line = f"{r['kind']:<{width[0]}}  {r['name']:<{width[1]}}  {r['options']}"
        print(line.rstrip())
    return 0


def cmd_suite_schema(args: argparse.Namespace) -> int:
    from eebench.suite import format_schema

    print(format_schema(markdown=args.markdown))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from eebench.parallel import current
    from eebench.runner import extract_models
    from eebench.store import LogitStore, default_store_root
    from eebench.suite import load_suite

    suite = load_suite(args.suite)
    store = LogitStore(default_store_root(args.store))
    world = current()
    done = extract_models(suite, args.suite, store, progress=True, world=world,
                          features=True if args.features else None)
    if world.is_main:
        for em in done:
            print(f"{em.label}: val {em.provenance['val_entry'][:12]}, "
                  f"test {em.provenance['test_entry'][:12]}")
        print(f"store: {store.root} ({len(done)} models; `eebench run {args.suite}` reuses them)")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from eebench.outputs import prepare_output_dir
    from eebench.report import build_report

    if args.out:
        prepare_output_dir(args.out, "--out")
    published = None
    if args.published:
        from eebench.report.index import results_dataset
        from eebench.report.published import published_overlay

        published = published_overlay(args.published, dataset=args.published_dataset,
                                      results_dataset=results_dataset(args.results_dir))
    index = build_report(args.results_dir, args.out, published=published)
    print(f"report: {index}")
    return 0


def cmd_import_curve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from eebench.outputs import prepare_output_file
    from eebench.report.imported import import_curve, write_imported

    prepare_output_file(args.out, "--out")
    frame = import_curve(
        args.path, args.format, cost_unit=args.cost_unit, source=args.source or Path(args.out).stem,
        model=args.model, dataset=args.dataset, flops_path=args.flops,
    )
    out = write_imported(frame, args.out)
    counts = ", ".join(f"{n} {s}" for s, n in frame["setting"].value_counts().items())
    print(f"{len(frame)} rows ({counts}) written to {out}")
    print(f"draw them beside a suite's results: eebench report results/SUITE --published {out}")
    return 0


def cmd_ablation(args: argparse.Namespace) -> int:
    from eebench.outputs import check_path_name, prepare_output_dir
    from eebench.report.ablation import (
        ablation_from_curves,
        ablation_from_published,
        ablation_table,
    )

    check_path_name(args.stem, "--stem")
    prepare_output_dir(args.out, "--out")
    variants = args.variants.split(",") if args.variants else None
    if args.published:
        from eebench.report.published import load_published

        values = ablation_from_published(load_published([args.published]), args.published,
                                         dataset=args.dataset)
        title = f"Ablation published in {args.published}"
    else:
        from eebench.report import cost_scale, load_results

        res = load_results(args.results)
        if not args.budgets:
            raise InputError("give --budgets (costs in the results' unit, e.g. 1e9,2e9) with --results")
        scale = cost_scale(res.meta["cost_unit"], res.curves["test_cost"])
        values = ablation_from_curves(res.curves, args.budgets, scale, policy=args.policy,
                                      variants=variants)
        title = f"Ablation ({args.policy}), {res.meta.get('suite', '')}"
    table = ablation_table(values, args.reference, variants=variants, title=title, stem=args.stem)
    print(table.to_markdown())
    md, tex = table.save(args.out)
    print(f"written: {md} and {tex}")
    return 0


# ---------------------------------------------------------------- parser


def _either(names: Iterable[str]) -> str:
    """Registered names for a help text: "a, b or c"."""
    names = list(names)
    return " or ".join(filter(None, [", ".join(names[:-1]), names[-1]])) if names else "none"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eebench",
        description="Benchmark dynamic early-exit image classifiers: zoo, costs, cached logits, "
        "exit policies, reports.",
    )
    from eebench import __version__
    from eebench.costs.conventions import CONVENTIONS
    from eebench.data.registry import DATASETS
    from eebench.registry import normalize_name
    from eebench.report.imported import COST_UNITS, FORMATS
    from eebench.report.published import DATASETS as PUBLISHED_DATASETS

    p.add_argument("--version", action="version", version=f"eebench {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_: str, fn: Callable[[argparse.Namespace], int], parent=sub):  # noqa: ANN001, ANN202
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    def store_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--store",
            metavar="DIR",
            help="logit store folder (default: $EEBENCH_STORE, else a folder in the user cache)",
        )

    zoo = sub.add_parser("zoo", help="list the models of the zoo", description="Model zoo.")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True, metavar="SUBCOMMAND")
    sp = add("list", "list registered models with their exits", cmd_zoo_list, zsub)
    sp.add_argument("pattern", nargs="?", default="*", help="shell pattern, e.g. 'msdnet*' or 'timm/resnet*'")
    sp.add_argument("--exit-names", action="store_true", help="also print every exit's name")

    sp = add("costs", "per-exit cumulative MACs and parameters of a model", cmd_costs)
    sp.add_argument("name", nargs="?", help="registered model name (eebench zoo list)")
    sp.add_argument("--input-size", type=_input_size, help="S, HxW or CxHxW (default: the model's)")
    sp.add_argument(
        "--convention",
        default=None,
        help=f"counting convention: {_either(CONVENTIONS)} (default: the one the model's "
        "paper used; --list-conventions describes them)",
    )
    sp.add_argument("--overrides", type=_json_object,
                    help='model overrides as JSON, e.g. \'{"num_classes": 10}\'')
    sp.add_argument("--no-check", action="store_true", help="skip the ptflops cross-check")
    sp.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sp.add_argument("--list-conventions", action="store_true", help="describe the counting conventions")
    sp.add_argument("--all", action="store_true", help="every zoo model, one row per exit")
    sp.add_argument("--csv", help="with --all: also write the table as CSV")

    sp = add("speed", "measure real early exit: latency and throughput beside the MACs-predicted "
             "speed-up, batch 1 and batched", cmd_speed)
    sp.add_argument("name", help="registered model name (eebench zoo list)")
    sp.add_argument("--checkpoint", help="weights to load (default: the model's random init)")
    sp.add_argument("--overrides", type=_json_object, help="model overrides as JSON")
    point = sp.add_mutually_exclusive_group(required=True)
    point.add_argument("--exit-fractions", type=_floats, metavar="F1,F2,...",
                       help="fraction of samples leaving at each exit (sums to 1); confidence "
                       "thresholds are chosen on the same inputs")
    point.add_argument("--thresholds", type=_floats, metavar="T1,T2,...",
                       help="one threshold per exit but the last, on --score")
    point.add_argument("--results", metavar="DIR", help="a results folder with a fitted policy")
    sp.add_argument("--policy", help="with --results: the policy label, e.g. confidence/geometric")
    sp.add_argument("--point", type=float, help="with --results: the param of the curve row")
    sp.add_argument("--results-model", help="with --results: the model label when it has several")
    sp.add_argument("--score", default="confidence", help="score of --thresholds")
    sp.add_argument("--batch-size", type=lambda s: [int(v) for v in _floats(s)], default=[1, 64],
                    help="batch sizes, e.g. 1,64 (default)")
    sp.add_argument("--samples", type=int, default=64, help="images timed (the same for every run)")
    sp.add_argument("--data", help="data set whose test images are used (default: seeded random "
                    "images of the model's input size)")
    sp.add_argument("--data-params", type=_json_object, help='data set arguments, e.g. \'{"root": "..."}\'')
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--convention", default="fvcore",
                    help=f"cost convention of the prediction: {_either(CONVENTIONS)}")
    sp.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    sp.add_argument("--threads", type=int, help="torch CPU threads (recorded either way)")
    sp.add_argument("--warmup", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is kept")
    sp.add_argument("--compile", action="store_true", help="torch.compile the model's modules")
    sp.add_argument("--channels-last", action="store_true")
    sp.add_argument("--json", action="store_true", help="print the full report as JSON")
    sp.add_argument("--out", help="also write the rows as CSV")

    store = sub.add_parser("store", help="inspect, verify, import and export cached logits",
                           description="The cached-logit store.")
    ssub = store.add_subparsers(dest="store_command", required=True, metavar="SUBCOMMAND")
    sp = add("ls", "list stored logit sets", cmd_store_ls, ssub)
    store_opt(sp)
    sp = add("show", "print an entry's manifest", cmd_store_show, ssub)
    sp.add_argument("ref", help="entry name, key or key prefix")
    store_opt(sp)
    sp = add("verify", "recompute checksums; name every changed or missing file", cmd_store_verify, ssub)
    sp.add_argument("ref", nargs="?", help="one entry (default: all)")
    store_opt(sp)
    sp = add("import", "import an .npz of logits or MSDNet's logits_single.pth", cmd_store_import, ssub)
    sp.add_argument("path", help=".npz with logits (K,N,C) or (N,K,C) and labels; or a .pth")
    sp.add_argument("--costs", type=_floats, required=True, help="cumulative cost per exit, e.g. 1,2,3")
    sp.add_argument("--name", help="a name to address the entry by")
    sp.add_argument("--layout", default="auto", choices=["auto", "knc", "nkc"], help="axis order of logits")
    store_opt(sp)
    sp = add("export", "write an entry as .npz", cmd_store_export, ssub)
    sp.add_argument("ref")
    sp.add_argument("out", help="output .npz path")
    store_opt(sp)
    sp = add("rm", "remove an entry (also a broken one, by its key)", cmd_store_rm, ssub)
    sp.add_argument("ref")
    store_opt(sp)
    sp = add("rename", "give an entry a new name (an empty name removes it)", cmd_store_rename, ssub)
    sp.add_argument("ref", help="entry name, key or key prefix")
    sp.add_argument("name", help="the new name ('' for none)")
    store_opt(sp)
    sp = add("gc", "remove what interrupted writes left in the store's .partial/ folder",
             cmd_store_gc, ssub)
    sp.add_argument("--resumable", action="store_true",
                    help="also remove the chunks of interrupted extractions (they cannot resume then)")
    store_opt(sp)

    data = sub.add_parser("data", help="list data sets", description="Data sets.")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    add("list", "list registered data sets", cmd_data_list, dsub)

    sp = add("train", "train a multi-exit model on a small data set (CPU is fine)", cmd_train)
    sp.add_argument("model", help="registered model name")
    sp.add_argument("--dataset", default="digits", help=f"data set: {_either(DATASETS)}")
    sp.add_argument("--overrides", type=_json_object,
                    help='model overrides as JSON, e.g. \'{"num_classes": 10}\'')
    sp.add_argument("--epochs", type=int, default=10)
    sp.add_argument("--lr", type=float, default=0.1)
    sp.add_argument("--optimizer", default="sgd", choices=["sgd", "adamw"])
    sp.add_argument("--weight-decay", type=float, default=1e-4)
    sp.add_argument("--batch-size", type=int, default=64)
    sp.add_argument("--distill-alpha", type=float, default=None)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", required=True, help="checkpoint path to write")

    sp = add("sweep", "fit an exit policy on validation logits and evaluate it on test logits", cmd_sweep)
    sp.add_argument("source", help="an .npz file (logits + labels) or a store entry name/key")
    sp.add_argument("--costs", type=_floats, help="cumulative cost per exit (required for .npz without costs)")
    sp.add_argument("--val-fraction", type=float, help="fraction of samples for the validation split")
    sp.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    sp.add_argument("--val-index", help=".npy of validation sample indices (the rest is test)")
    sp.add_argument("--score", default="confidence",
                    help="exit score (default confidence; `eebench policies` lists every one)")
    sp.add_argument("--solver", default="geometric",
                    help="threshold solver, or a policy that thresholds no score (default "
                    "geometric; `eebench policies` lists them with their options)")
    sp.add_argument("--grid", default=None,
                    help="q grid name or values; sweep: thresholds, 'last' = every sample to "
                    "the last exit")
    sp.add_argument("--budgets", type=_floats, help="target mean costs, in the unit of --costs")
    sp.add_argument("--calibration", default=None,
                    help="calibration of the scores (laplace needs a store entry extracted with "
                    "features)")
    sp.add_argument("--epsilon", type=_floats,
                    help="risk: bound(s) on the accuracy drop against the last exit, e.g. 0.01,0.05")
    sp.add_argument("--delta", type=float,
                    help="risk: allowed probability that the drop exceeds epsilon (default 0.1)")
    sp.add_argument("--bound",
                    help="risk: p-value of the test (default binomial)")
    sp.add_argument("--fit-source",
                    help="fit the thresholds on another .npz or store entry (e.g. training-image "
                    "outputs, as DVT and Dynamic Perceiver do); the whole SOURCE is then the test set")
    sp.add_argument("--tune-on-test", action="store_true",
                    help="fit and evaluate on the whole SOURCE, no held-out split (CF-ViT's "
                    "protocol); the curve is marked as tuned on the test set")
    sp.add_argument("--option", action="append", type=_option, metavar="NAME=VALUE",
                    help="a solver option, repeatable, e.g. --option population=128 "
                    "--option generations=60 (ga); an unknown name lists the accepted ones")
    sp.add_argument("--out", help="write the curve as CSV")
    store_opt(sp)

    add("policies", "every registered score, calibration, q grid, solver and policy, with "
        "the options each solver and policy takes", cmd_policies)

    sp = add("run", "run a benchmark suite end to end (train, count, extract, evaluate, report)", cmd_run)
    sp.add_argument("suite", help="suite TOML file, e.g. suites/quickstart.toml")
    sp.add_argument("--results", default="results", help="results root (default: results/)")
    sp.add_argument("--reports", default="reports", help="reports root (default: reports/)")
    sp.add_argument("--features", action="store_true", help=FEATURES_HELP)
    store_opt(sp)

    sp = add("compare", "compare exit policies on one logit source without a suite file "
             "(the same results and report as a suite)", cmd_compare)
    sp.add_argument("source", help="an .npz file (logits + labels) or a store entry name/key")
    sp.add_argument("--policies", action="append", required=True, metavar="SPEC,SPEC,...",
                    help="policy specs [score[+calibration]/]solver[(name=value,...)], e.g. "
                    "confidence/geometric,entropy+temperature/geometric(grid=msdnet),"
                    "confidence/ga(population=128,generations=60),eenet(budgets=[2,3,4]),oracle,"
                    "random (repeatable)")
    sp.add_argument("--costs", type=_floats,
                    help="cumulative cost per exit (required for .npz without costs)")
    sp.add_argument("--cost-unit", default="MACs",
                    help="unit of --costs: MACs (default), MMACs, GMACs (converted to MACs) or "
                    "any other unit such as ms, kept and labelled as given")
    sp.add_argument("--val-fraction", type=float, default=0.5,
                    help="share of the samples that fit the thresholds (default 0.5)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the validation split")
    protocol = sp.add_mutually_exclusive_group()
    protocol.add_argument("--val-index", help=".npy of validation sample indices (the rest is test)")
    protocol.add_argument("--fit-source",
                          help="fit the thresholds on another .npz or store entry; the whole "
                          "SOURCE is then the test set")
    protocol.add_argument("--tune-on-test", action="store_true",
                          help="fit and evaluate on the whole SOURCE (CF-ViT's protocol; marked)")
    sp.add_argument("--budgets", type=_floats,
                    help="costs the summary tables are read at, in the unit of --costs")
    sp.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    sp.add_argument("--out", required=True, metavar="DIR",
                    help="writes DIR/results/ and DIR/report/index.md")
    store_opt(sp)

    suite = sub.add_parser("suite", help="describe suite files", description="Suite files.")
    susub = suite.add_subparsers(dest="suite_command", required=True, metavar="SUBCOMMAND")
    sp = add("schema", "every key a suite file accepts, with its type, default and meaning",
             cmd_suite_schema, susub)
    sp.add_argument("--markdown", action="store_true", help="print a Markdown table")

    sp = add("extract", "train or reuse every model of a suite and fill the store with its "
             "logits, without evaluating (works under torchrun)", cmd_extract)
    sp.add_argument("suite", help="suite TOML file")
    sp.add_argument("--features", action="store_true", help=FEATURES_HELP)
    store_opt(sp)

    sp = add("report", "rebuild a report from saved results (no model, no store)", cmd_report)
    sp.add_argument("results_dir", help="results/<suite>")
    sp.add_argument("--out", help="report folder (default: reports/<suite>)")
    sp.add_argument("--published", type=lambda t: t.split(","),
                    help="overlay these papers' numbers (keys of results/published, e.g. dvt,cfvit)")
    sp.add_argument("--published-dataset", help="only published rows of this data set (e.g. imagenet)")

    sp = add("import-curve", "import another tool's curve (dynamic.txt, L2W, calibrated-dnn, DVT/CF-ViT "
             "checkpoint) as published-numbers CSV", cmd_import_curve)
    sp.add_argument("path", help="the file to import")
    sp.add_argument("--out", required=True, help="CSV to write, e.g. results/published-local/mynet.csv")
    sp.add_argument("--dataset", required=True, choices=PUBLISHED_DATASETS)
    sp.add_argument("--format", choices=FORMATS.names(), type=normalize_name,
                    help="default: detected from the file")
    sp.add_argument("--cost-unit", choices=list(COST_UNITS),
                    help="unit of the file's costs (required for dynamic.txt: MSDNet/RANet/IMTA/L2W write "
                    "MACs, Dynamic Perceiver GMACs)")
    sp.add_argument("--flops", help="L2W: flops.txt when it is not next to the CSV")
    sp.add_argument("--model", help="model name for the legend (default: the source)")
    sp.add_argument("--source", help="source key (default: the stem of --out)")

    sp = add("ablation", "an ablation table (variants x budgets, deltas to a reference row)", cmd_ablation)
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--results", help="results/<suite> whose models are the variants")
    src.add_argument("--published", help="a paper key of results/published with ablation rows")
    sp.add_argument("--reference", required=True, help="the variant the others are compared with")
    sp.add_argument("--variants", help="comma-separated variants, in order (default: all)")
    sp.add_argument("--policy", default="confidence/geometric", help="policy whose curves are read")
    sp.add_argument("--budgets", type=_floats, help="costs to read the curves at (results' unit)")
    sp.add_argument("--dataset", help="published: rows of this data set only")
    sp.add_argument("--stem", default="ablation", help="file name of the table (without suffix)")
    sp.add_argument("--out", default=".", help="folder for the .md and .tex files")

    vp = sub.add_parser("verify", help="check our numbers against the published ones",
                        description="check our numbers against the published ones")
    vsub = vp.add_subparsers(dest="what", required=True, metavar="WHAT")
    sp = add("costs", "count every published per-exit cost and compare (no data, no weights)",
             cmd_verify_costs, vsub)
    sp.add_argument("--source", action="append", help="only this paper key (repeatable)")
    sp.add_argument("--model", action="append", help="only this zoo model (repeatable)")
    sp.add_argument("--tolerance", type=float, help="relative tolerance for every row (e.g. 0.02)")
    sp.add_argument("--published-dir", help="folder of published CSVs (default: results/published)")
    sp.add_argument("--csv", help="also write the comparison as CSV")
    sp = add("checkpoint", "strict-load an official checkpoint into a zoo model", cmd_verify_checkpoint, vsub)
    sp.add_argument("name", help="zoo model name")
    sp.add_argument("path", help="checkpoint file")
    sp.add_argument("--overrides", type=_json_object, help="model overrides as JSON")
    sp = add("accuracy", "reproduce published per-exit top-1 with official checkpoints",
             cmd_verify_accuracy, vsub)
    sp.add_argument("suite", help="accuracy suite, e.g. suites/verify_imagenet.toml")
    sp.add_argument("--data-root", help="data set folder (overrides the suite's data.params.root)")
    sp.add_argument("--checkpoint", action="append", metavar="NAME=PATH",
                    help="checkpoint of a suite model (repeatable)")
    sp.add_argument("--tolerance", type=float, default=0.5, help="allowed |difference|, top-1 points")
    store_opt(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a user's mistake (an :class:`EebenchError`) or an OS fault ends in one
    line on stderr and exit status 2 (``EEBENCH_DEBUG=1`` shows the traceback instead); any
    other exception is a bug and shows its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a traceback at exit
        return status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) has gone: stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (EebenchError, OSError) as exc:
        # anything else is a bug in eebench: its traceback is what a maintainer needs
        if os.environ.get("EEBENCH_DEBUG"):
            raise
        print(f"eebench {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; OS errors say which file and what happened."""
    if isinstance(exc, OSError) and not isinstance(exc, EebenchError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        msg = f"{where}{exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


if __name__ == "__main__":
    sys.exit(main())
