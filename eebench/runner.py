"""Run a benchmark suite: walk the whole flow of DESIGN.md over a validated suite.

The runner is idempotent: trained weights and extracted logits are found again by
identity, so a second run only re-fits policies and redraws the report. A suite built in
code (``eebench compare``) goes through the same validator (eebench.suite) and this
runner, so its results are those of the equivalent file.

A run has three jobs, one function each: extraction (``extract_models``: weights, costs
and logits of every [[models]] table), evaluation (``_evaluate``: anytime, reliability and
every policy's curve of one model's fitting and test outputs, gathered in ``_Frames``),
and writing the results folder (``_write_results``), after which the report is drawn.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eebench.errors import DataError
from eebench.outputs import atomic_dir, prepare_output_dir
from eebench.parallel import World
from eebench.parallel import current as current_world
from eebench.schema import SuiteError
from eebench.suite import (
    COST_UNITS,
    _policies_for,
    load_suite,
    model_label,
    published_rows,
    results_cost_unit,
    suite_cost_unit,
    suite_dataset,
)

if TYPE_CHECKING:
    import pandas as pd

    from eebench.costs import ExitCosts
    from eebench.store import LogitSet, LogitStore
    from eebench.suite_types import LogitsTable, ModelTable, Suite
    from eebench.zoo.base import MultiExitModel


@dataclass
class SuiteOutput:
    results_dir: Path
    report_index: Path | None  # None on the ranks other than 0 under torchrun


@dataclass
class ExtractedModel:
    """One [[models]] table after extraction: the model with its weights, its costs, and its
    validation and test logits in the store."""

    label: str
    model: Any
    costs: Any
    sets: dict[str, Any]
    test_view: Any
    provenance: dict[str, Any]


def extract_models(suite: Suite, path: str | Path, store: Any, *, progress: bool = True,
                   world: Any = None, features: bool | None = None) -> list[ExtractedModel]:
    """Train or reuse every model's weights, count its costs and fill the store with its
    validation and test logits (entries already there are reused, never recomputed).
    ``features`` (default: the suite's ``[suite] features``) stores pre-logit features too.

    Under torchrun, rank 0 trains (the others wait, then load the weights it saved), every
    rank extracts its share of the chunks, and rank 0 commits the entries.
    """
    from eebench.parallel import device_for
    from eebench.zoo.checkpoint import state_dict_sha256

    world = world or current_world()
    if not suite["models"]:
        return []
    num_classes, views = _split_views(suite, path)
    device = device_for(suite["suite"]["device"], world)
    out = []
    for m in suite["models"]:
        label = model_label(m)
        if not world.is_main:
            world.barrier()  # rank 0 trains (or finds) the weights first
        model, weights = _prepare_model(m, suite, views, num_classes, store.root,
                                        progress and world.is_main)
        if world.is_main:
            world.barrier()
        model.eval()
        costs = _count_costs(model, suite, path, label)
        weights_sha = state_dict_sha256(model)
        sets = _extract_sets(model, m["name"], views, store, suite, costs=costs,
                             weights_sha256=weights_sha, device=device, progress=progress,
                             world=world, features=features)
        prov = {**weights, "model": m["name"], "weights_sha256": weights_sha,
                "cost_convention": costs.convention,
                "val_entry": sets["val"].manifest.get("key"),
                "test_entry": sets["test"].manifest.get("key")}
        out.append(ExtractedModel(label, model, costs, sets, views["test"], prov))
    return out


def _split_views(suite: Suite, path: str | Path) -> tuple[int, dict[str, Any]]:
    """The suite's data set split into views (train, val, test as its rule gives them), and
    its number of classes; refuses a rule without the splits the suite needs."""
    from eebench.data import ImageDataset, create_dataset, split_dataset

    d = suite["data"]
    assert d is not None  # the validator requires [data] with [[models]]
    full: ImageDataset = create_dataset(d["dataset"], **d["params"])  # no split: the full set
    index_files = {k: v for k, v in (("val", d["val_index"]), ("test", d["test_index"])) if v}
    views = split_dataset(full, seed=d["seed"], fractions=d["splits"] if not full.official_splits else None,
                          index_files=index_files or None)
    for split in ("val", "test"):
        if split not in views:
            raise SuiteError(f"{path}: the data rule gives splits {list(views)}; val and test are needed")
    trained = [m for m in suite["models"] if m["train"]]
    if suite["evaluate"]["fit_split"] == "train" and "train" not in views:
        raise SuiteError(f"{path}: evaluate.fit_split = \"train\" needs a train split in [data]")
    if trained and "train" not in views:
        raise SuiteError(f"{path}: models {[model_label(m) for m in trained]} need a train split")
    return full.num_classes, views


def _count_costs(model: MultiExitModel, suite: Suite, path: str | Path,
                 label: str) -> ExitCosts:
    """The model's per-exit costs under the suite's convention, checked to be cumulative."""
    from eebench.costs import count_costs
    from eebench.store.validate import check_costs

    costs = count_costs(model, convention=suite["costs"]["convention"],
                        cross_check=suite["costs"]["cross_check"])
    try:
        check_costs(costs.macs, "costs")
    except DataError as exc:  # a convention that is not cumulative cannot price exits
        raise SuiteError(
            f"{path}: models[{label}]: {exc} under the {costs.convention!r} counting "
            "convention; set [costs] convention = \"fvcore\" to count cumulative work"
        ) from None
    return costs


def _extract_sets(model: MultiExitModel, name: str, views: dict[str, Any], store: Any,
                  suite: Suite, *, costs: ExitCosts, weights_sha256: str, device: str,
                  progress: bool, world: World, features: bool | None) -> dict[str, Any]:
    """The model's LogitSets of the validation and test views (and of the training view when
    it fits the thresholds), extracted into the store or found there."""
    from eebench.store.extract import extract_view_logits

    d = suite["data"]
    assert d is not None  # the validator requires [data] with [[models]]
    sets = {}
    fit_split = suite["evaluate"]["fit_split"]
    for split in ("val", "test", *(["train"] if fit_split == "train" else [])):
        key = extract_view_logits(
            model, name, views[split], split, store, costs=costs, weights_sha256=weights_sha256,
            batch_size=d["batch_size"], device=device, progress=progress,
            autocast=suite["suite"]["autocast"], num_workers=d["workers"], world=world,
            chunk_size=d["chunk_size"],
            features=suite["suite"]["features"] if features is None else features,
        )
        sets[split] = store.get(key)
    return sets


def _recipe_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _weights_path(store_root: Path, model: ModelTable, overrides: dict[str, Any],
                  data_identity: dict[str, Any]) -> Path:
    """Where a suite's trained weights live: named by everything that determines them, so
    a changed recipe, model or split trains anew and an unchanged one is reused."""
    recipe = {
        "model": model["name"],
        "overrides": overrides,
        "train": model["train"],
        "data": data_identity,
    }
    safe = model["name"].replace("/", "-")
    return store_root / "weights" / f"{safe}-{_recipe_hash(recipe)}.pth"


def _seeded_model(name: str, overrides: dict[str, Any], seed: int) -> MultiExitModel:
    """``create_model(name, **overrides)`` initialised under ``seed``, leaving the caller's
    random generator as it was."""
    import torch

    from eebench.zoo import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return create_model(name, **overrides)


def _prepare_model(m: ModelTable, suite: Suite, views: dict[str, Any],
                   num_classes: int, store_root: Path,
                   progress: bool) -> tuple[MultiExitModel, dict[str, Any]]:
    """Create the model and give it weights: a checkpoint, cached training, or training now.
    Returns the model and what meta.json says about its weights."""
    from eebench.train import load_trained
    from eebench.zoo import load_checkpoint

    overrides = dict(m["overrides"])
    overrides.setdefault("num_classes", num_classes)
    seed = m["train"]["seed"] if m["train"] else suite["suite"]["seed"]
    if m["train"] is None:
        model = _seeded_model(m["name"], overrides, seed)
        if m["checkpoint"]:
            load_checkpoint(model, m["checkpoint"])
            return model, {"weights": "checkpoint", "path": m["checkpoint"]}
        return model, {"weights": "random initialisation (no checkpoint, no train recipe)"}
    train_desc = views["train"].describe()
    data_identity = {k: train_desc[k] for k in ("name", "params", "index_sha256")}
    path = _weights_path(store_root, m, overrides, data_identity)
    if path.is_file():
        return load_trained(path), {"weights": "trained (cached)", "path": str(path)}
    model = _seeded_model(m["name"], overrides, seed)
    seconds = _train(model, m, suite, views, overrides, seed, path, progress)
    return model.eval(), {"weights": "trained", "path": str(path), "seconds": seconds}


def _train(model: MultiExitModel, m: ModelTable, suite: Suite,
           views: dict[str, Any], overrides: dict[str, Any], seed: int, path: Path,
           progress: bool) -> float:
    """Train ``model`` by its [[models]] table's recipe and save it at ``path`` (whole or
    not at all); returns the training seconds."""
    import os

    from eebench.train import train_multi_exit

    cfg = model.config
    t = m["train"]
    assert t is not None  # only a [[models]] table with a train recipe trains
    train_view = (
        views["train"].with_train_transform(cfg) if t["augment"] else views["train"].with_eval_transform(cfg)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    print(f"training {model_label(m)} ({m['name']}) for {t['epochs']} epochs on {len(train_view)} images")
    result = train_multi_exit(
        model,
        train_view,
        views["val"].with_eval_transform(cfg),
        epochs=t["epochs"],
        lr=t["lr"],
        batch_size=t["batch_size"],
        optimizer=t["optimizer"],
        weight_decay=t["weight_decay"],
        momentum=t["momentum"],
        distill_alpha=t["distill_alpha"],
        distill_temperature=t["distill_temperature"],
        seed=seed,
        device=suite["suite"]["device"],
        progress=progress,
        checkpoint_path=tmp,
        model_name=m["name"],
        model_overrides=overrides,
    )
    os.replace(tmp, path)  # a crash mid-training never leaves a checkpoint that looks finished
    return result.seconds


@dataclass
class _Evaluation:
    """What one model's (or one [[logits]] source's) evaluation adds to the results: its
    anytime table, reliability tables (the raw one first, then each calibrated policy's),
    all its curves (the static baseline last), its summary, the fitted policies, and each
    curve's policy kind by policy label."""

    anytime: pd.DataFrame
    reliability: list[pd.DataFrame]
    curve: pd.DataFrame
    summary: pd.DataFrame
    fitted: dict[str, Any]
    kinds: dict[str, str]


@dataclass
class _Frames:
    """The rows of a results folder, gathered source by source in suite order (models
    first, then [[logits]]); each source's provenance for meta.json and data set (the
    dataset column); each policy label's kind (the policy_kind column)."""

    anytime: list[pd.DataFrame] = field(default_factory=list)
    curves: list[pd.DataFrame] = field(default_factory=list)
    summary: list[pd.DataFrame] = field(default_factory=list)
    reliability: list[pd.DataFrame] = field(default_factory=list)
    costs: list[pd.DataFrame] = field(default_factory=list)
    speed: list[pd.DataFrame] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    datasets: dict[str, str | None] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)

    def add(self, ev: _Evaluation) -> None:
        self.anytime.append(ev.anytime)
        self.reliability.extend(ev.reliability)
        self.kinds.update(ev.kinds)
        self.curves.append(ev.curve)
        self.summary.append(ev.summary)


def _evaluate(suite: Suite, label: str, val: LogitSet, test: LogitSet,
              fit_on: str) -> _Evaluation:
    """Anytime, reliability, every policy's curve and the summaries of one model;
    ``fit_on`` says in the curves which outputs fit the thresholds."""
    import pandas as pd

    from eebench.evaluate import anytime_table, budgeted_curve, summarize
    from eebench.report import reliability_table
    from eebench.report.reliability import calibrated_reliability_tables

    opts = suite["evaluate"]
    anytime = anytime_table(test, ece_bins=opts["ece_bins"])
    anytime.insert(0, "model", label)
    reliability = [reliability_table(test, model=label, n_bins=opts["ece_bins"])]
    curves, fitted = [], {}
    for plabel, policy in _policies_for(suite):
        # with test_acc_low/high bands
        curve = budgeted_curve(policy, val, test, n_boot=opts["n_boot"], seed=opts["seed"])
        curve["policy"] = plabel
        curves.append(curve)
        fitted[plabel] = policy
    # after the raw rows: each calibrated policy's bins (policy and calibration columns)
    reliability.extend(calibrated_reliability_tables(fitted, test, label, n_bins=opts["ece_bins"]))
    static_policy = _static_policy()
    static = budgeted_curve(static_policy, val, test, n_boot=opts["n_boot"], seed=opts["seed"])
    static["policy"] = "static"
    kinds = {plabel: policy.kind for plabel, policy in fitted.items()}
    kinds["static"] = static_policy.kind
    curve = pd.concat([*curves, static], ignore_index=True)
    learned = pd.concat(curves, ignore_index=True)
    summary = summarize(
        learned, anytime, n_boot=opts["n_boot"], seed=opts["seed"],
        test=test, points=fitted, at_costs=opts["budgets"],
    )
    curve.insert(0, "model", label)
    curve["fit_on"] = fit_on
    summary.insert(0, "model", label)
    return _Evaluation(anytime, reliability, curve, summary, fitted, kinds)


def _static_policy():  # noqa: ANN202
    from eebench.policies import make_policy

    return make_policy(solver="static")


def run_suite(
    suite: str | Path | Suite,
    *,
    store_root: str | Path | None = None,
    results_root: str | Path = "results",
    reports_root: str | Path = "reports",
    progress: bool = True,
    command: str | None = None,
    features: bool | None = None,
    results_dir: str | Path | None = None,
    reports_dir: str | Path | None = None,
    suite_file: str | None = None,
) -> SuiteOutput:
    """Walk the whole flow for one suite and write ``results/<suite>/`` and
    ``reports/<suite>/``. Returns where they are.

    ``suite`` is a suite file, or a suite already checked by ``validate_suite`` (what
    ``eebench compare`` builds); both go through the same runner. ``results_dir`` and
    ``reports_dir`` replace ``<root>/<suite name>``; ``suite_file`` is what meta.json records
    as the suite's origin (default: the file). ``features`` overrides the suite's
    ``[suite] features`` (store each exit's pre-logit features)."""
    from eebench.report import build_report
    from eebench.store import LogitStore, default_store_root

    t0 = time.time()
    if isinstance(suite, Mapping):
        path = None
        where = f"suite {suite['suite']['name']}"
    else:
        path = suite
        suite = load_suite(path)
        where = str(path)
    name = suite["suite"]["name"]
    results_dir = Path(results_dir) if results_dir is not None else Path(results_root) / name
    reports_dir = Path(reports_dir) if reports_dir is not None else Path(reports_root) / name
    prepare_output_dir(results_dir.parent, "--results")  # before minutes of work, not after
    prepare_output_dir(reports_dir.parent, "--reports")
    store = LogitStore(default_store_root(str(store_root) if store_root else None))

    frames = _Frames()
    world = current_world()
    _run_models(suite, where, store, frames, world=world, progress=progress, features=features)
    if not world.is_main:
        return SuiteOutput(results_dir=results_dir, report_index=None)
    _run_logits(suite, store, frames)

    if path is not None:
        suite_file = suite_file or str(path)
        command = command or " ".join(shlex.quote(a) for a in ["eebench", "run", str(path)])
    _write_results(results_dir, suite, frames, suite_file=suite_file, command=command,
                   store=store, t0=t0)
    index = build_report(results_dir, reports_dir)
    return SuiteOutput(results_dir=results_dir, report_index=Path(index))


def _run_models(suite: Suite, where: str, store: LogitStore, frames: _Frames, *,
                world: World, progress: bool, features: bool | None) -> None:
    """Extract every [[models]] table (all ranks), then, on rank 0, evaluate each on its
    fitting and test outputs and time its real exits when the suite asks."""
    from eebench.evaluate.sweep import FIT_ON

    for em in extract_models(suite, where, store, progress=progress, world=world,
                             features=features):
        cf = em.costs.to_frame()
        cf.insert(0, "model", em.label)
        cf["cost"], cf["cost_unit"] = cf["gmacs"] * 1e9, "MACs"
        frames.costs.append(cf)
        frames.provenance[em.label] = em.provenance
        frames.datasets[em.label] = suite_dataset(suite)
        if not world.is_main:
            continue  # the other ranks helped extract; rank 0 evaluates and reports
        fit_split = suite["evaluate"]["fit_split"]
        em.provenance["fit_on"] = FIT_ON[fit_split]
        ev = _evaluate(suite, em.label, em.sets[fit_split], em.sets["test"], FIT_ON[fit_split])
        frames.add(ev)
        if suite["speed"] is not None:
            frames.speed.append(_measure_speed(suite, em.label, em.model, em.test_view,
                                               em.costs.macs, ev.fitted))


def _run_logits(suite: Suite, store: LogitStore, frames: _Frames) -> None:
    """Load, split and evaluate every [[logits]] table."""
    import pandas as pd

    from eebench.evaluate.sweep import FIT_ON

    for lg in suite["logits"]:
        ls, val, test = load_suite_logits(lg, store_root=store.root)
        in_macs = results_cost_unit(lg["cost_unit"]) == "MACs"
        frames.costs.append(pd.DataFrame({
            "model": lg["label"], "exit": range(ls.num_exits), "exit_name": list(ls.exit_names),
            "gmacs": ls.costs / 1e9 if in_macs else float("nan"),
            "cost": ls.costs, "cost_unit": results_cost_unit(lg["cost_unit"]),
        }))
        fit_on = (FIT_ON["test"] if lg["tune_on_test"] else
                  f"another source: {lg['fit_source']}" if lg["fit_source"] else FIT_ON["val"])
        frames.provenance[lg["label"]] = {"logits": lg["source"], "val_samples": val.num_samples,
                                          "test_samples": test.num_samples, "seed": lg["seed"],
                                          "costs_given_in": lg["cost_unit"], "fit_on": fit_on}
        frames.datasets[lg["label"]] = ls.manifest.get("dataset") or None  # a store entry's; .npz: none
        frames.add(_evaluate(suite, lg["label"], val, test, fit_on))


def _write_results(results_dir: Path, suite: Suite, frames: _Frames, *,
                   suite_file: str | None, command: str | None, store: LogitStore,
                   t0: float) -> None:
    """Write the results folder: the CSV tables, the published rows, the resolved suite,
    results.json and meta.json."""
    import pandas as pd

    from eebench.evaluate.curves import append_result_columns
    from eebench.outputs import write_table
    from eebench.report.frames import (
        ANYTIME_COLUMNS,
        CURVE_COLUMNS,
        RELIABILITY_REQUIRED,
        SUMMARY_COLUMNS,
    )
    from eebench.store.logitstore import file_sha256

    # The folder is built aside and swapped in whole: a killed run leaves the previous
    # results, never a mixture; meta.json (written last) holds every file's checksum, so
    # `eebench report` refuses a folder changed or truncated afterwards.
    with atomic_dir(results_dir) as out_dir:
        for rows, file, cols in (
            (frames.anytime, "anytime.csv", ANYTIME_COLUMNS),
            (frames.curves, "curves.csv", CURVE_COLUMNS),
            (frames.summary, "summary.csv", SUMMARY_COLUMNS),
            (frames.reliability, "reliability.csv", RELIABILITY_REQUIRED),
            (frames.costs, "costs.csv", ("model", "exit", "exit_name", "gmacs")),
        ):
            frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(cols))
            if file in ("anytime.csv", "curves.csv", "summary.csv"):  # after their own columns
                frame = append_result_columns(frame, kinds=frames.kinds, datasets=frames.datasets,
                                              cost_unit=suite_cost_unit(suite))
            write_table(frame, out_dir / file)  # and the same table as Parquet beside it
        if frames.speed:
            write_table(pd.concat(frames.speed, ignore_index=True), out_dir / "speed.csv")
        published = published_rows(suite)
        if published is not None:
            write_table(published, out_dir / "published.csv")
        (out_dir / "suite.resolved.json").write_text(json.dumps(suite, indent=2, default=str))
        files = {f.name: file_sha256(f) for f in sorted(out_dir.iterdir()) if f.is_file()}
        _write_results_json(out_dir, suite, files)
        files = {f.name: file_sha256(f) for f in sorted(out_dir.iterdir()) if f.is_file()}
        _write_meta(out_dir, suite, suite_file, command, frames.provenance, store, t0, files)


def _measure_speed(suite: Suite, label: str, model: Any, view: Any, costs: Any,
                   fitted: dict[str, Any]) -> Any:
    """Real early exit of one model at operating points of one fitted policy, on the first
    test images (with the model's evaluation transform)."""
    import torch

    from eebench.costs.speed import speed_of_policy, timing_problem

    s = suite["speed"]
    assert s is not None  # timed only when the suite has a [speed] table
    timeable = [lab for lab, p in fitted.items() if timing_problem(p) is None]
    name = s["policy"] or (timeable[0] if timeable else None)
    if name in fitted and name not in timeable:
        raise SuiteError(f"speed.policy: {timing_problem(fitted[name])}")
    if name not in timeable:
        raise SuiteError(f"speed.policy must name a threshold policy of the suite that real exits "
                         f"can run ({', '.join(timeable) or 'none'}), got {name!r}")
    view = view.with_eval_transform(model.config)
    n = min(s["samples"], len(view))
    x = torch.stack([view[i][0] for i in range(n)])
    print(f"timing real exits of {label} ({name}, {s['points']} points, batch sizes "
          f"{s['batch_sizes']}, {n} images)", file=sys.stderr)
    df = speed_of_policy(model, x, costs, fitted[name], points=s["points"],
                         batch_sizes=s["batch_sizes"], threads=s["threads"], warmup=s["warmup"],
                         repeats=s["repeats"], device=suite["suite"]["device"])
    df["model"] = label
    df.insert(1, "policy", name)
    return df


def _write_results_json(out_dir: Path, suite: Suite, files: dict[str, str]) -> None:
    """results.json: one machine-readable record of a results folder: the resolved suite,
    the versions and eebench commit that made it, and the checksum of every file beside it."""
    from eebench.provenance import git_revision, package_versions

    record = {
        "schema_version": 1,
        "suite": json.loads(json.dumps(suite, default=str)),
        "versions": package_versions(),
        "git": git_revision(),
        "files": files,
        "cost_unit": suite_cost_unit(suite),
        "dataset": suite_dataset(suite),
    }
    (out_dir / "results.json").write_text(json.dumps(record, indent=2))


def _write_meta(out_dir: Path, suite: Suite, suite_file: str | None, command: str | None,
                provenance: dict[str, Any], store: Any, t0: float, files: dict[str, str]) -> None:
    """meta.json: how the results were made (command, versions, models) and their checksums."""
    from eebench.provenance import package_versions

    name = suite["suite"]["name"]
    meta = {
        "suite": name,
        "dataset": suite_dataset(suite),
        "title": suite["report"]["title"] or suite["suite"]["description"] or name,
        "cost_unit": suite_cost_unit(suite),
        "cost_convention": suite["costs"]["convention"] or "each model's paper convention",
        "published": suite["report"]["published"],
        "command": command or "eebench.runner.run_suite(...) from Python",
        "suite_file": suite_file,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(),
        "budgets": suite["evaluate"]["budgets"],
        "models": provenance,
        "store": str(store.root),
        "seconds": round(time.time() - t0, 1),
        "files": files,
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=2, default=str))


def load_suite_logits(lg: LogitsTable, store_root: str | Path | None = None) -> tuple[Any, Any, Any]:
    """A [[logits]] table's LogitSet (costs converted to MACs, or in their own unit) and the
    (fitting, test) pair: a split of it, another source that fits (``fit_source``, the whole
    source tests), or the whole source for both (``tune_on_test``)."""
    from eebench.store.sources import load_source
    from eebench.store.splits import split_logitset

    factor = COST_UNITS.get(lg["cost_unit"], 1.0)
    costs = [c * factor for c in lg["costs"]] if lg["costs"] is not None else None
    ls = load_source(lg["source"], costs, store_root)
    if costs is None:
        if ls.costs is None:
            raise SuiteError(
                f"logits {lg['label']!r}: {lg['source']} holds no per-exit costs; give costs = [...]"
            )
        if factor != 1.0:
            ls = load_source(ls, [c * factor for c in ls.costs])
    if lg["tune_on_test"]:
        return ls, ls, ls
    if lg["fit_source"]:
        try:
            fit = load_source(lg["fit_source"], list(ls.costs), store_root)
        except DataError as exc:
            raise SuiteError(f"logits {lg['label']!r}: fit_source {lg['fit_source']}: {exc}; "
                             "it must hold outputs of the same model") from None
        if fit.logits.shape[1:] != ls.logits.shape[1:]:
            raise SuiteError(
                f"logits {lg['label']!r}: fit_source {lg['fit_source']} has {fit.num_exits} exits "
                f"x {fit.num_classes} classes but the source has {ls.num_exits} x "
                f"{ls.num_classes}; both must be outputs of the same model"
            )
        return ls, fit, ls
    if lg["val_index"]:
        val, test = split_logitset(ls, val_index=lg["val_index"])
    else:
        val, test = split_logitset(ls, val_fraction=lg["val_fraction"], seed=lg["seed"])
    return ls, val, test


def current_command() -> str:
    """The command line of this process, for the report's provenance line."""
    argv = ["eebench", *sys.argv[1:]] if Path(sys.argv[0]).name == "eebench" else sys.argv
    return " ".join(shlex.quote(a) for a in argv)
