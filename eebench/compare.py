"""Compare many exit policies on one set of logits without writing a suite file.

``compare`` turns a logit source and a list of policy specs (``confidence/geometric``,
``eenet(budgets=[2,3,4])``, ...; see eebench.policies.spec) into the suite a file would
hold (one [[logits]] table, one [[policies]] table per spec, an [evaluate] table), checks
it with the same validator and runs it with the same runner as ``eebench run``. So its
results folder and report are exactly those of the equivalent suite file, which
``results/suite.resolved.json`` spells out.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from eebench.errors import InputError
from eebench.policies.spec import POLICY, check_policy_table, normalize_policy_table, policy_label
from eebench.runner import SuiteOutput, run_suite
from eebench.schema import SuiteError, validate_table
from eebench.store.sources import STORE_PREFIX
from eebench.suite import COST_UNITS, validate_suite


def source_name(source: str | Path) -> str:
    """A suite name from a source: the file's stem (``cnn6exit-cifar10.npz`` gives
    ``cnn6exit-cifar10``) or the store entry's name, made safe as a folder name."""
    text = str(source)
    text = text[len(STORE_PREFIX):] if text.startswith(STORE_PREFIX) else text
    stem = Path(text).name
    stem = stem[:-4] if stem.lower().endswith(".npz") else stem
    safe = re.sub(r"[^A-Za-z0-9._+=@-]+", "-", stem).replace("..", ".").strip("-.")[:128]
    return safe if safe and safe[0].isalnum() else "compare"


def policy_tables(policies: str | Sequence[str | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Validated [[policies]] tables from specs: one comma-separated string, or a list of
    specs and/or tables (a table is taken as a suite file would give it)."""
    from eebench.policies.spec import parse_policy_spec, split_policy_specs

    items: list[str | Mapping[str, Any]] = (
        list(split_policy_specs(policies)) if isinstance(policies, str) else list(policies))
    if not items:
        raise InputError("no policies given; name at least one, e.g. confidence/geometric")
    tables: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            tables.extend(parse_policy_spec(s) for s in split_policy_specs(item))
        elif isinstance(item, Mapping):
            given = {k: v for k, v in item.items() if v is not None}
            try:
                table = validate_table(given, POLICY, f"policy table {given}", "")
                normalize_policy_table(table)
                check_policy_table(table, f"policy table {given}", "")
                tables.append(table)
            except SuiteError as exc:
                raise InputError(str(exc)) from None
        else:
            raise InputError(f"a policy is a spec string or a table, got {item!r}")
    return tables


def compare(
    source: str | Path,
    policies: str | Sequence[str | Mapping[str, Any]],
    *,
    costs: Sequence[float] | None = None,
    out: str | Path,
    cost_unit: str = "MACs",
    val_fraction: float = 0.5,
    seed: int = 0,
    val_index: str | Path | None = None,
    fit_source: str | Path | None = None,
    tune_on_test: bool = False,
    budgets: Sequence[float] | None = None,
    n_boot: int = 200,
    store_root: str | Path | None = None,
    name: str | None = None,
    label: str | None = None,
    command: str | None = None,
) -> SuiteOutput:
    """Fit and evaluate every policy on one source (an ``.npz`` or a store entry) and write
    ``out/results/`` (curves, summary, anytime, reliability, costs, meta.json, results.json,
    suite.resolved.json) and ``out/report/index.md``, as a suite run writes them.

    ``seed`` seeds the validation split (a policy's own seed is its spec's ``seed=``);
    ``val_index``, ``fit_source`` and ``tune_on_test`` replace the split as in a [[logits]]
    table. ``budgets`` are the costs the summary tables are read at; they and the policies'
    ``budgets=`` options are in the unit of ``costs`` (``cost_unit``: MACs, MMACs and GMACs
    are converted to MACs as a suite converts them). ``name`` and ``label`` (default: the
    source's stem) name the suite and the model in the report. ``command`` is recorded in
    meta.json (default: the equivalent ``eebench compare`` command line).
    """
    from eebench.outputs import prepare_output_dir

    tables = policy_tables(policies)
    labels = [policy_label(t) for t in tables]
    for i, lab in enumerate(labels):
        if labels.index(lab) != i:
            raise InputError(f"two policies go by the label {lab!r}; tell them apart with "
                             f"(label=...) in one spec, e.g. {lab}(...,label={lab}-2)")
    factor = COST_UNITS.get(cost_unit, 1.0)  # budgets in the unit of costs; results in MACs

    def in_results_unit(values: Sequence[float] | None) -> list[float] | None:
        return None if values is None else [v * factor if factor != 1.0 else v for v in values]

    raw_policies = []
    for t in tables:
        t = {**t, "budgets": in_results_unit(t.get("budgets"))}
        raw_policies.append({k: v for k, v in t.items() if v is not None})
    name = name or source_name(source)
    logits = {
        "label": label or name, "source": str(source),
        "costs": list(costs) if costs is not None else None, "cost_unit": cost_unit,
        "val_fraction": val_fraction, "seed": seed,
        "val_index": str(val_index) if val_index is not None else None,
        "fit_source": str(fit_source) if fit_source is not None else None,
        "tune_on_test": tune_on_test,
    }
    evaluate: dict[str, Any] = {"n_boot": n_boot}
    if budgets is not None:
        evaluate["budgets"] = in_results_unit(budgets)
    raw = {
        "suite": {"name": name, "description": f"Exit policies compared on {source}"},
        "logits": [{k: v for k, v in logits.items() if v is not None}],
        "policies": raw_policies,
        "evaluate": evaluate,
    }
    suite = validate_suite(raw, "eebench compare", name=name)
    out = prepare_output_dir(out, "--out")
    if command is None and any(t.get("calibration_options") for t in tables):
        command = "eebench.compare.compare(...) from Python (calibration options have no spec)"
    if command is None:
        command = compare_command(source, tables, costs=costs, out=out, cost_unit=cost_unit,
                                  val_fraction=val_fraction, seed=seed, val_index=val_index,
                                  fit_source=fit_source, tune_on_test=tune_on_test,
                                  budgets=budgets, n_boot=n_boot, store_root=store_root)
    return run_suite(
        suite, store_root=store_root, progress=False, command=command,
        results_dir=out / "results", reports_dir=out / "report",
        suite_file=str(out / "results" / "suite.resolved.json"),
    )


def compare_command(source: str | Path, tables: Sequence[Mapping[str, Any]], *,
                    out: str | Path, costs: Sequence[float] | None = None,
                    cost_unit: str = "MACs", val_fraction: float = 0.5, seed: int = 0,
                    val_index: str | Path | None = None, fit_source: str | Path | None = None,
                    tune_on_test: bool = False, budgets: Sequence[float] | None = None,
                    n_boot: int = 200, store_root: str | Path | None = None) -> str:
    """The ``eebench compare`` command line that runs the same comparison."""
    from eebench.policies.spec import format_policy_spec

    def numbers(values: Sequence[float]) -> str:
        return ",".join(f"{v:g}" if float(v) == float(f"{v:g}") else repr(float(v))
                        for v in values)

    argv = ["eebench", "compare", str(source)]
    if costs is not None:
        argv += ["--costs", numbers(costs)]
    if cost_unit != "MACs":
        argv += ["--cost-unit", cost_unit]
    argv += ["--val-fraction", f"{val_fraction:g}", "--seed", str(seed)]
    argv += ["--policies", ",".join(format_policy_spec(t) for t in tables)]
    for flag, value in (("--val-index", val_index), ("--fit-source", fit_source)):
        if value is not None:
            argv += [flag, str(value)]
    if tune_on_test:
        argv.append("--tune-on-test")
    if budgets is not None:
        argv += ["--budgets", numbers(budgets)]
    if n_boot != 200:
        argv += ["--n-boot", str(n_boot)]
    if store_root is not None:
        argv += ["--store", str(store_root)]
    argv += ["--out", str(out)]
    return " ".join(shlex.quote(a) for a in argv)
