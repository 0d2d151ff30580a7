"""Benchmark suites: a TOML file that names data, models, policies and report options,
and the runner that walks the whole flow of DESIGN.md over it.

The file is validated completely before anything runs. The runner is
idempotent: trained weights and extracted logits are found again by identity,
so a second run only re-fits policies and redraws the report. A suite built in
code (``eebench compare``) goes through the same validator and runner, so its
results are those of the equivalent file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
import time
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eebench.errors import DataError, OutputPathError
from eebench.outputs import atomic_dir, check_path_name, prepare_output_dir
from eebench.parallel import current as current_world
from eebench.schema import Field, SuiteError, Table, one_of, positive, validate_table

BASELINES = ("oracle", "random", "static")


def _registered(kind: str) -> Callable[[Any], str | None]:
    """A check against the names the policies package registers (read when a suite is
    validated, so a newly registered score, calibration or solver is accepted at once)."""

    def check(value: Any) -> str | None:
        from eebench.policies import list_calibrations, list_policy_solvers, list_scores

        names = {"score": list_scores, "solver": list_policy_solvers,
                 "calibration": list_calibrations}[kind]()
        return None if value in names else f"must be one of {', '.join(names)}; got {value!r}"

    return check


def _costs(value: list[float]) -> str | None:
    from eebench.store.validate import check_costs

    try:
        check_costs(value, "costs")
    except ValueError as exc:
        return str(exc).removeprefix("costs: ")
    return None


def _budgets(value: list[float]) -> str | None:
    from eebench.store.validate import check_budgets

    try:
        check_budgets(value)
    except ValueError as exc:
        return str(exc).removeprefix("budgets: ")
    return None


def _fraction_table(value: dict[str, Any]) -> str | None:
    bad = [k for k in value if k not in ("train", "val", "test")]
    if bad:
        return f"has unknown split names {bad}; use train, val and test"
    if "val" not in value or "test" not in value:
        return "must name at least val and test fractions, e.g. {train = 0.6, val = 0.2, test = 0.2}"
    if any(not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0 for v in value.values()):
        return "fractions must be positive numbers"
    if sum(value.values()) > 1 + 1e-9:
        return f"fractions sum to {sum(value.values()):g}, more than 1"
    return None


TRAIN = Table(
    {
        "epochs": Field(int, required=True, check=positive, doc="training epochs"),
        "lr": Field(float, default=0.1, check=positive),
        "optimizer": Field(str, default="sgd", check=one_of(["sgd", "adamw"])),
        "batch_size": Field(int, default=64, check=positive),
        "weight_decay": Field(float, default=1e-4),
        "momentum": Field(float, default=0.9),
        "distill_alpha": Field(float, default=None, doc="self-distillation weight, 0..1"),
        "distill_temperature": Field(float, default=1.0, check=positive),
        "augment": Field(bool, default=True, doc="random-crop augmentation while training"),
        "seed": Field(int, default=0),
    }
)

MODEL = Table(
    {
        "name": Field(str, required=True, doc="registered model name (eebench zoo list)"),
        "label": Field(str, default=None, doc="display name in figures and tables"),
        "overrides": Field(dict, default=dict, doc="keyword arguments of the model function"),
        "checkpoint": Field(str, default=None, doc="path of a local checkpoint to load strictly"),
        "train": Field(dict, default=None, table=TRAIN, doc="training recipe"),
    }
)

POLICY = Table(
    {
        "label": Field(str, default=None),
        "score": Field(str, default="confidence", check=_registered("score")),
        "solver": Field(str, default="geometric", check=_registered("solver")),
        "grid": Field((str, list), default=None, doc="q grid name or list of values"),
        "budgets": Field(list, default=None, items=float, check=_budgets,
                         doc="target mean costs, in MACs"),
        "calibration": Field(str, default=None, check=_registered("calibration")),
        "thresholds": Field(list, default=None, items=(float, str),
                            doc="sweep: threshold grid (\"last\": every sample to the last exit)"),
        "like": Field(str, default=None, doc="random: the policy label whose exit fractions it copies"),
        "seed": Field(int, default=0),
        "generations": Field(int, default=None, check=positive, doc="ga: generations"),
        "population": Field(int, default=None, check=positive, doc="ga: population size"),
        "epsilon": Field((float, list), default=None,
                         doc="risk: bound(s) on the accuracy drop against the last exit"),
        "delta": Field(float, default=None, doc="risk: allowed probability of a larger drop"),
        "bound": Field(str, default=None, check=one_of(["binomial", "hb"]),
                       doc="risk: p-value of the test (binomial or Hoeffding-Bentkus)"),
        "hidden": Field(int, default=None, check=positive, doc="eenet: hidden units per exit"),
        "epochs": Field(int, default=None, check=positive, doc="eenet: training epochs"),
        "lr": Field(float, default=None, check=positive, doc="eenet: learning rate"),
        "weight_decay": Field(float, default=None, doc="eenet: weight decay"),
    }
)

POLICY_OPTIONS = {
    "ga": ("generations", "population"),
    "risk": ("epsilon", "delta", "bound"),
    "eenet": ("hidden", "epochs", "lr", "weight_decay"),
}
"""The [[policies]] keys that are options of one solver, passed to make_policy by name."""

COST_UNITS = {"MACs": 1.0, "MMACs": 1e6, "GMACs": 1e9}
"""Multiply-accumulate units, converted to MACs; any other unit (``ms``, ``mJ``, ...) is kept
as given and labelled so in the report."""


def _cost_unit(value: Any) -> str | None:
    if not value.strip():
        return "must name a unit, e.g. MACs, GMACs, ms or mJ"
    if value.strip().lower().removesuffix("s") in ("flop", "mflop", "gflop", "tflop"):
        return (f"is {value!r}: papers write FLOPs for MACs and counters differ by a factor of "
                "2, so eebench does not guess; give the costs in MACs, MMACs or GMACs (as "
                "your counter counts multiply-adds)")
    return None


def results_cost_unit(unit: str) -> str:
    """The unit a source's costs are reported in: MACs for the multiply-accumulate family
    (converted), anything else as given."""
    return "MACs" if unit in COST_UNITS else unit.strip()


LOGITS = Table(
    {
        "label": Field(str, required=True, doc="display name in figures and tables"),
        "source": Field(str, required=True, doc=".npz file of logits and labels, or a store entry"),
        "costs": Field(list, default=None, items=float, check=_costs,
                       doc="cumulative cost per exit (required when the source has none)"),
        "cost_unit": Field(str, default="MACs", check=_cost_unit,
                           doc="unit of costs: MACs, MMACs, GMACs (converted to MACs) or any "
                               "other unit such as ms or mJ, kept and labelled as given"),
        "val_fraction": Field(float, default=0.5, doc="share of samples that fit the thresholds"),
        "val_index": Field(str, default=None, doc=".npy of validation sample indices (the rest is test)"),
        "seed": Field(int, default=0, doc="seed of the validation split"),
        "fit_source": Field(str, default=None,
                            doc="another .npz or store entry whose outputs fit the thresholds "
                                "(e.g. training images, as DVT and Dynamic Perceiver do); the "
                                "whole source is then the test set"),
        "tune_on_test": Field(bool, default=False,
                              doc="fit and evaluate on the whole source with no held-out split "
                                  "(CF-ViT's protocol); results are marked as tuned on the test set"),
    }
)

SUITE = Table(
    {
        "suite": Field(
            dict,
            default=dict,
            table=Table(
                {
                    "name": Field(str, default=None, doc="defaults to the file name"),
                    "description": Field(str, default=""),
                    "seed": Field(int, default=0),
                    "device": Field(str, default="cpu", doc="cpu or cuda (under torchrun: each "
                                    "rank's own GPU)"),
                    "autocast": Field(str, default=None, check=one_of(["bf16", "fp16"]),
                                      doc="mixed precision of extraction (part of the entries' identity)"),
                    "features": Field(bool, default=False,
                                      doc="also store each exit's pre-logit features (needed by "
                                      "the laplace calibration; part of the entries' identity)"),
                }
            ),
        ),
        "data": Field(
            dict,
            default=None,
            doc="the data set (needed when the suite has [[models]])",
            table=Table(
                {
                    "dataset": Field(str, required=True, doc="registered data set (eebench data list)"),
                    "params": Field(dict, default=dict, doc="data set arguments, e.g. root"),
                    "splits": Field(dict, default=None, check=_fraction_table),
                    "seed": Field(int, default=0, doc="seed of the split"),
                    "val_index": Field(str, default=None, doc=".npy of validation indices"),
                    "test_index": Field(str, default=None, doc=".npy of test indices"),
                    "batch_size": Field(int, default=256, check=positive, doc="extraction batch"),
                    "workers": Field(int, default=0, doc="DataLoader workers of extraction"),
                    "chunk_size": Field(int, default=1024, check=positive,
                                        doc="samples per extraction chunk (the unit of resuming "
                                        "and of sharing work between torchrun ranks)"),
                }
            ),
        ),
        "costs": Field(
            dict,
            default=dict,
            table=Table(
                {
                    "convention": Field(
                        str, default=None, check=one_of(["fvcore", "msdnet"]),
                        doc="counting rules; default: each model's paper convention",
                    ),
                    "cross_check": Field(bool, default=True),
                }
            ),
        ),
        "models": Field(list, default=list, table=MODEL, doc="[[models]] tables"),
        "logits": Field(list, default=list, table=LOGITS, doc="[[logits]] tables: cached or imported logits"),
        "policies": Field(list, default=list, table=POLICY, doc="[[policies]] tables"),
        "speed": Field(
            dict,
            default=None,
            doc="measure real early exit of every model (results/<suite>/speed.csv)",
            table=Table(
                {
                    "policy": Field(str, default=None,
                                    doc="policy label whose thresholds exit (default: the first "
                                    "threshold policy)"),
                    "points": Field(int, default=3, check=positive,
                                    doc="operating points along its curve"),
                    "batch_sizes": Field(list, default=lambda: [1, 32], items=int,
                                         check=lambda v: None if v and min(v) >= 1
                                         else f"must be positive batch sizes, got {v!r}"),
                    "samples": Field(int, default=64, check=positive, doc="test images timed"),
                    "threads": Field(int, default=None, check=positive),
                    "warmup": Field(int, default=1),
                    "repeats": Field(int, default=3, check=positive),
                }
            ),
        ),
        "evaluate": Field(
            dict,
            default=dict,
            table=Table(
                {
                    "ece_bins": Field(int, default=15, check=positive),
                    "n_boot": Field(int, default=200, check=positive),
                    "seed": Field(int, default=0),
                    "budgets": Field(list, default=None, items=float, check=_budgets,
                                     doc="costs for tables, MACs"),
                    "fit_split": Field(str, default="val", check=one_of(["val", "train", "test"]),
                                       doc="models: the split whose outputs fit the thresholds: "
                                           "val, train (DVT's and Dynamic Perceiver's protocol) "
                                           "or test (tuned on the test set, marked so)"),
                }
            ),
        ),
        "report": Field(
            dict,
            default=dict,
            table=Table(
                {
                    "title": Field(str, default=None),
                    "published": Field(
                        list, default=None, items=str,
                        doc="paper keys of results/published (or CSV paths) to draw beside ours",
                    ),
                    "published_dataset": Field(str, default=None, doc="keep published rows of this data set"),
                    "published_models": Field(list, default=None, items=str,
                                              doc="keep these published models (as the papers name them)"),
                    "published_citation": Field(str, default=None,
                                                doc="keep rows whose citation contains this, e.g. 'Table 5'"),
                }
            ),
        ),
    }
)


_SHORT_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array",
                dict: "table"}


def _type_text(f: Field) -> str:
    types = f.types if isinstance(f.types, tuple) else (f.types,)
    if f.table is not None:
        return "array of tables" if list in types else "table"
    names = [_SHORT_TYPES.get(t, t.__name__) for t in types]
    if f.items is not None:
        items = f.items if isinstance(f.items, tuple) else (f.items,)
        of = " or ".join(_SHORT_TYPES.get(t, t.__name__) + "s" for t in items)
        names = [f"array of {of}" if n == "array" else n for n in names]
    return " or ".join(names)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}" if not value else "{ " + ", ".join(
            f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return str(value)


_NO_VALUE = ("required", "unset", "(table)")


def _default_text(f: Field) -> str:
    if f.required:
        return "required"
    value = f.default() if callable(f.default) else f.default
    if value is None:
        return "unset"
    if f.table is not None and isinstance(value, dict):
        return "(table)"
    return _toml_value(value)


def _choices(check: Callable[[Any], str | None] | None) -> list[str] | None:
    """The names a key accepts, read from its ``one_of`` or ``_registered`` check, so that the
    listing and the validator can never disagree."""
    if check is None or not check.__closure__:
        return None
    cells = dict(zip(check.__code__.co_freevars, (c.cell_contents for c in check.__closure__)))
    if check.__qualname__.startswith("one_of.") and "choices" in cells:
        return [str(c) for c in cells["choices"]]
    if check.__qualname__.startswith("_registered.") and "kind" in cells:
        from eebench.policies import list_calibrations, list_policy_solvers, list_scores

        return {"score": list_scores, "solver": list_policy_solvers,
                "calibration": list_calibrations}[cells["kind"]]()
    return None


def schema_rows() -> list[dict[str, str]]:
    """Every key a suite accepts, in file order: ``key`` (``models[].train.epochs`` for a key
    of an array of tables), ``type``, ``default`` (``required``, ``unset`` or a TOML value)
    and ``doc`` (with the accepted names where the key takes a name)."""
    rows: list[dict[str, str]] = []

    def walk(table: Table, prefix: str) -> None:
        for key, f in table.fields.items():
            doc = f.doc
            names = _choices(f.check)
            if names:
                doc = (doc + "; " if doc else "") + "one of: " + ", ".join(names)
            rows.append({"key": prefix + key, "type": _type_text(f), "default": _default_text(f),
                         "doc": doc})
            if f.table is not None:
                walk(f.table, prefix + key + ("[]." if f.types is list else "."))

    walk(SUITE, "")
    return rows


def format_schema(markdown: bool = False) -> str:
    """The suite keys of ``schema_rows`` as aligned text, or as a Markdown table."""
    rows = schema_rows()
    cols = ("key", "type", "default", "doc")
    if markdown:
        def cell(column: str, text: str) -> str:
            code = column == "key" or (column == "default" and text not in _NO_VALUE)
            return f"`{text}`" if code else text.replace("|", "\\|")

        head = "| key | type | default | description |\n|---|---|---|---|"
        return "\n".join([head, *("| " + " | ".join(cell(c, r[c]) for c in cols) + " |"
                                   for r in rows)])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols[:3]}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols[:3]) + "  doc"]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in cols[:3]) + "  " + r["doc"] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def policy_label(p: dict[str, Any]) -> str:
    """The name a policy goes by in results: ``score[+calibration]/solver`` or the baseline."""
    if p.get("label"):
        return p["label"]
    if p["solver"] in BASELINES or p["solver"] == "eenet":  # eenet learns its own score
        return p["solver"]
    score = p["score"] + (f"+{p['calibration']}" if p.get("calibration") else "")
    return f"{score}/{p['solver']}"


def model_label(m: dict[str, Any]) -> str:
    return m.get("label") or m["name"]


def load_suite(path: str | os.PathLike[str], *, need_policies: bool = True) -> dict[str, Any]:
    """Read and fully validate a suite file; returns it with defaults filled in.

    ``need_policies=False`` accepts a suite without [[policies]] (an accuracy check
    runs only the anytime protocol)."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(f"suite file {path} does not exist")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML: {exc}") from None
    return validate_suite(raw, str(path), name=path.stem, need_policies=need_policies)


def validate_suite(raw: Mapping[str, Any], where: str, *, name: str | None = None,
                   need_policies: bool = True) -> dict[str, Any]:
    """Fully validate a suite given as data (what a TOML file parses to, or what a command
    such as ``eebench compare`` builds); returns it with defaults filled in. ``where`` names
    the suite in every error; ``name`` is the suite name when ``[suite] name`` is not set."""
    suite = validate_table(raw, SUITE, where, "")
    suite["suite"]["name"] = suite["suite"]["name"] or name
    if not suite["suite"]["name"]:
        raise SuiteError(f"{where}: missing suite.name (it names the results and report folders)")
    try:  # the name becomes results/<name>/ and reports/<name>/
        check_path_name(suite["suite"]["name"], "suite.name")
    except OutputPathError as exc:
        raise SuiteError(f"{where}: {exc}") from None
    _check_names(suite, where, need_policies)
    return suite


def _check_names(suite: dict[str, Any], where: str, need_policies: bool = True) -> None:
    """Names that the schema cannot know: models, data sets, policy combinations."""
    from eebench.data import list_datasets
    from eebench.zoo.registry import close_matches, is_model

    _expand_paths(suite)
    if not (suite["models"] or suite["logits"] or suite["report"]["published"]):
        raise SuiteError(
            f"{where}: nothing to do: name [[models]] to run, [[logits]] to evaluate, or "
            f"report.published papers to draw"
        )
    d = suite["data"]
    if suite["models"] and d is None:
        raise SuiteError(f"{where}: [[models]] need a [data] table naming the data set")
    if d is not None:
        if d["dataset"] not in list_datasets():
            raise SuiteError(
                f"{where}: data.dataset: unknown data set {d['dataset']!r}; "
                f"known: {', '.join(list_datasets())}"
            )
        if d["splits"] is None and d["val_index"] is None:
            d["splits"] = {"train": 0.6, "val": 0.2, "test": 0.2}
    _check_published(suite, where)
    labels = set()
    for i, lg in enumerate(suite["logits"]):
        if not 0 < lg["val_fraction"] < 1:
            raise SuiteError(f"{where}: logits[{i}].val_fraction must lie in (0, 1), got {lg['val_fraction']}")
        if lg["label"] in labels:
            raise SuiteError(f"{where}: logits[{i}]: label {lg['label']!r} is used twice")
        labels.add(lg["label"])
        given = [k for k in ("fit_source", "val_index") if lg[k]] + (
            ["tune_on_test"] if lg["tune_on_test"] else [])
        if len(given) > 1:
            raise SuiteError(f"{where}: logits[{i}]: give at most one of fit_source, val_index, "
                             f"tune_on_test (got {', '.join(given)})")
    units = {results_cost_unit(lg["cost_unit"]) for lg in suite["logits"]}
    if suite["models"]:
        units.add("MACs")
    if len(units) > 1:
        raise SuiteError(
            f"{where}: costs in different units in one suite ({', '.join(sorted(units))}); a "
            "results folder holds one unit: split the suite, or give every source in one unit"
        )
    for i, m in enumerate(suite["models"]):
        if not is_model(m["name"]):
            hint = close_matches(m["name"])
            raise SuiteError(
                f"{where}: models[{i}].name: unknown model {m['name']!r}"
                + (f"; did you mean {', '.join(hint)}?" if hint else "; see `eebench zoo list`")
            )
        if m["checkpoint"] and m["train"]:
            raise SuiteError(f"{where}: models[{i}]: give either checkpoint or train, not both")
        lab = model_label(m)
        if lab in labels:
            raise SuiteError(f"{where}: models[{i}]: label {lab!r} is used twice; set label = ...")
        labels.add(lab)
    if need_policies and (suite["models"] or suite["logits"]) and not suite["policies"]:
        raise SuiteError(f"{where}: policies: name at least one [[policies]] table")
    plabels = [policy_label(p) for p in suite["policies"]]
    for i, p in enumerate(suite["policies"]):
        if plabels.count(plabels[i]) > 1:
            raise SuiteError(f"{where}: policies[{i}]: label {plabels[i]!r} is used twice; set label = ...")
        if p["solver"] == "random":
            learned = [lab for lab, q in zip(plabels, suite["policies"])
                       if q["solver"] not in BASELINES]
            if p["like"] is None and learned:
                p["like"] = learned[0]
            if p["like"] not in learned:
                raise SuiteError(
                    f"{where}: policies[{i}].like must name a learned policy to copy exit fractions "
                    f"from ({', '.join(learned) or 'none in this suite'})"
                )


def _expand_paths(suite: dict[str, Any]) -> None:
    """``${VAR}`` in paths (data root, index files, checkpoints, logit sources) comes from the
    environment, so one suite file serves every machine; unset variables stay visible."""
    import os

    d = suite["data"]
    if d is not None:
        d["params"] = {k: os.path.expandvars(v) if isinstance(v, str) else v for k, v in d["params"].items()}
        for k in ("val_index", "test_index"):
            if d[k]:
                d[k] = os.path.expandvars(d[k])
    for m in suite["models"]:
        if m["checkpoint"]:
            m["checkpoint"] = os.path.expandvars(m["checkpoint"])
    for i, lg in enumerate(suite["logits"]):
        for key in ("source", "fit_source"):
            if lg[key]:
                lg[key] = os.path.expandvars(lg[key])
                if "$" in lg[key]:
                    raise SuiteError(
                        f"logits[{i}].{key}: {lg[key]!r} names an environment variable that is "
                        "not set; set it to an .npz file or a store entry (store:NAME)"
                    )


def _check_published(suite: dict[str, Any], where: str) -> None:
    """Load the named published sources now, so a typo fails before anything runs."""
    r = suite["report"]
    if not r["published"]:
        if any(r[k] for k in ("published_dataset", "published_models", "published_citation")):
            raise SuiteError(f"{where}: report.published_* filters need report.published = [...]")
        return
    from eebench.report.published import PublishedError

    try:
        published_rows(suite)
    except (PublishedError, FileNotFoundError) as exc:
        raise SuiteError(f"{where}: report.published: {exc}") from None


def published_rows(suite: dict[str, Any]) -> Any:
    """The published rows a suite's report draws (None when it names no papers)."""
    from eebench.report.published import published_overlay

    r = suite["report"]
    if not r["published"]:
        return None
    return published_overlay(
        r["published"], dataset=r["published_dataset"], models=r["published_models"],
        citation=r["published_citation"], results_dataset=suite_dataset(suite),
    )


def suite_cost_unit(suite: dict[str, Any]) -> str:
    """The one unit of every cost in a suite's results (the validator refuses mixtures)."""
    units = [results_cost_unit(lg["cost_unit"]) for lg in suite["logits"]]
    return units[0] if units and not suite["models"] else "MACs"


def suite_dataset(suite: dict[str, Any]) -> str | None:
    """The data set a suite's models run on (None for a suite of logits or papers only)."""
    return suite["data"]["dataset"] if suite.get("data") else None


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


def extract_models(suite: dict[str, Any], path: str | Path, store: Any, *, progress: bool = True,
                   world: Any = None, features: bool | None = None) -> list[ExtractedModel]:
    """Train or reuse every model's weights, count its costs and fill the store with its
    validation and test logits (entries already there are reused, never recomputed).
    ``features`` (default: the suite's ``[suite] features``) stores pre-logit features too.

    Under torchrun, rank 0 trains (the others wait, then load the weights it saved), every
    rank extracts its share of the chunks, and rank 0 commits the entries.
    """
    from eebench.costs import count_costs
    from eebench.data import ImageDataset, create_dataset, split_dataset
    from eebench.parallel import device_for
    from eebench.store.validate import check_costs
    from eebench.zoo.checkpoint import state_dict_sha256

    world = world or current_world()
    if not suite["models"]:
        return []
    d = suite["data"]
    full: ImageDataset = create_dataset(d["dataset"], **d["params"])  # no split: the full set
    index_files = {k: d[f"{k}_index"] for k in ("val", "test") if d[f"{k}_index"]}
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
    device = device_for(suite["suite"]["device"], world)
    out = []
    for m in suite["models"]:
        label = model_label(m)
        if not world.is_main:
            world.barrier()  # rank 0 trains (or finds) the weights first
        model, weights = _prepare_model(m, suite, views, full.num_classes, store.root,
                                        progress and world.is_main)
        if world.is_main:
            world.barrier()
        model.eval()
        costs = count_costs(model, convention=suite["costs"]["convention"],
                            cross_check=suite["costs"]["cross_check"])
        try:
            check_costs(costs.macs, "costs")
        except DataError as exc:  # a convention that is not cumulative cannot price exits
            raise SuiteError(
                f"{path}: models[{label}]: {exc} under the {costs.convention!r} counting "
                "convention; set [costs] convention = \"fvcore\" to count cumulative work"
            ) from None
        weights_sha = state_dict_sha256(model)
        sets = {}
        fit_split = suite["evaluate"]["fit_split"]
        for split in ("val", "test", *(["train"] if fit_split == "train" else [])):
            key = extract_view_logits(
                model, m["name"], views[split], split, store, costs=costs, weights_sha256=weights_sha,
                batch_size=d["batch_size"], device=device, progress=progress,
                autocast=suite["suite"]["autocast"], num_workers=d["workers"], world=world,
                chunk_size=d["chunk_size"],
                features=suite["suite"]["features"] if features is None else features,
            )
            sets[split] = store.get(key)
        prov = {**weights, "model": m["name"], "weights_sha256": weights_sha,
                "cost_convention": costs.convention,
                "val_entry": sets["val"].manifest.get("key"),
                "test_entry": sets["test"].manifest.get("key")}
        out.append(ExtractedModel(label, model, costs, sets, views["test"], prov))
    return out


def _recipe_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _weights_path(store_root: Path, model: dict[str, Any], overrides: dict[str, Any],
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


def _prepare_model(m: dict[str, Any], suite: dict[str, Any], views: dict[str, Any],
                   num_classes: int, store_root: Path, progress: bool):
    """Create the model and give it weights: a checkpoint, cached training, or training now."""
    import os

    import torch

    from eebench.train import load_trained, train_multi_exit
    from eebench.zoo import create_model, load_checkpoint

    overrides = dict(m["overrides"])
    overrides.setdefault("num_classes", num_classes)
    seed = m["train"]["seed"] if m["train"] else suite["suite"]["seed"]
    if m["train"] is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = create_model(m["name"], **overrides)
        if m["checkpoint"]:
            load_checkpoint(model, m["checkpoint"])
            return model, {"weights": "checkpoint", "path": m["checkpoint"]}
        return model, {"weights": "random initialisation (no checkpoint, no train recipe)"}
    train_desc = views["train"].describe()
    data_identity = {k: train_desc[k] for k in ("name", "params", "index_sha256")}
    path = _weights_path(store_root, m, overrides, data_identity)
    if path.is_file():
        return load_trained(path), {"weights": "trained (cached)", "path": str(path)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create_model(m["name"], **overrides)
    cfg = model.config
    t = m["train"]
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
    return model.eval(), {"weights": "trained", "path": str(path), "seconds": result.seconds}


def build_policy(p: dict[str, Any], tables: list[dict[str, Any]]) -> Any:
    """The unfitted policy of one validated [[policies]] table; ``tables`` are all the
    tables of its suite (a random policy copies the one its ``like`` names)."""
    from eebench.policies import make_policy

    if p["solver"] == "random":
        base = next(q for q in tables if policy_label(q) == p["like"])
        return make_policy(
            base["score"], "random", grid=base["grid"], budgets=base["budgets"],
            calibration=base["calibration"], seed=p["seed"], base_solver=base["solver"],
        )
    opts = {k: p[k] for k in POLICY_OPTIONS.get(p["solver"], ()) if p[k] is not None}
    grid = p["thresholds"] if p["solver"] == "sweep" and p["thresholds"] else p["grid"]
    return make_policy(
        p["score"], p["solver"], grid=grid, budgets=p["budgets"],
        calibration=p["calibration"], seed=p["seed"], **opts,
    )


def _policies_for(suite: dict[str, Any]) -> list[tuple[str, Any]]:
    """(label, unfitted policy) for every [[policies]] table."""
    return [(policy_label(p), build_policy(p, suite["policies"])) for p in suite["policies"]]


def run_suite(
    suite: str | Path | dict[str, Any],
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
    import pandas as pd

    from eebench.evaluate import anytime_table, budgeted_curve, summarize
    from eebench.evaluate.sweep import FIT_ON
    from eebench.report import build_report, reliability_table
    from eebench.store import LogitStore, default_store_root
    from eebench.store.logitstore import file_sha256

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

    anytime_rows, curve_rows, summary_rows, reliability_rows, cost_rows = [], [], [], [], []
    speed_rows: list[Any] = []
    provenance: dict[str, Any] = {}

    def evaluate(label: str, val: Any, test: Any, fit_on: str) -> dict[str, Any]:
        """Anytime, reliability, every policy's curve and the summaries of one model;
        ``fit_on`` says in the curves which outputs fit the thresholds."""
        anytime = anytime_table(test, ece_bins=suite["evaluate"]["ece_bins"])
        anytime.insert(0, "model", label)
        anytime_rows.append(anytime)
        reliability_rows.append(reliability_table(test, model=label, n_bins=suite["evaluate"]["ece_bins"]))
        boot = {"n_boot": suite["evaluate"]["n_boot"], "seed": suite["evaluate"]["seed"]}
        curves, fitted = [], {}
        for plabel, policy in _policies_for(suite):
            curve = budgeted_curve(policy, val, test, **boot)  # with test_acc_low/high bands
            curve["policy"] = plabel
            curves.append(curve)
            fitted[plabel] = policy
        from eebench.report.reliability import calibrated_reliability_tables

        # after the raw rows: each calibrated policy's bins (policy and calibration columns)
        reliability_rows.extend(calibrated_reliability_tables(
            fitted, test, label, n_bins=suite["evaluate"]["ece_bins"]))
        static = budgeted_curve(_static_policy(), val, test, **boot)
        static["policy"] = "static"
        curve = pd.concat([*curves, static], ignore_index=True)
        learned = pd.concat(curves, ignore_index=True)
        summary = summarize(
            learned, anytime, n_boot=suite["evaluate"]["n_boot"], seed=suite["evaluate"]["seed"],
            test=test, points=fitted, at_costs=suite["evaluate"]["budgets"],
        )
        curve.insert(0, "model", label)
        curve["fit_on"] = fit_on
        summary.insert(0, "model", label)
        curve_rows.append(curve)
        summary_rows.append(summary)
        return fitted

    world = current_world()
    for em in extract_models(suite, where, store, progress=progress, world=world,
                             features=features):
        cf = em.costs.to_frame()
        cf.insert(0, "model", em.label)
        cf["cost"], cf["cost_unit"] = cf["gmacs"] * 1e9, "MACs"
        cost_rows.append(cf)
        provenance[em.label] = em.provenance
        if not world.is_main:
            continue  # the other ranks helped extract; rank 0 evaluates and reports
        fit_split = suite["evaluate"]["fit_split"]
        em.provenance["fit_on"] = FIT_ON[fit_split]
        fitted = evaluate(em.label, em.sets[fit_split], em.sets["test"], FIT_ON[fit_split])
        if suite["speed"] is not None:
            speed_rows.append(_measure_speed(suite, em.label, em.model, em.test_view,
                                             em.costs.macs, fitted))
    if not world.is_main:
        return SuiteOutput(results_dir=results_dir, report_index=None)

    for lg in suite["logits"]:
        ls, val, test = load_suite_logits(lg, store_root=store.root)
        in_macs = results_cost_unit(lg["cost_unit"]) == "MACs"
        cost_rows.append(pd.DataFrame({
            "model": lg["label"], "exit": range(ls.num_exits), "exit_name": list(ls.exit_names),
            "gmacs": ls.costs / 1e9 if in_macs else float("nan"),
            "cost": ls.costs, "cost_unit": results_cost_unit(lg["cost_unit"]),
        }))
        fit_on = (FIT_ON["test"] if lg["tune_on_test"] else
                  f"another source: {lg['fit_source']}" if lg["fit_source"] else FIT_ON["val"])
        provenance[lg["label"]] = {"logits": lg["source"], "val_samples": val.num_samples,
                                   "test_samples": test.num_samples, "seed": lg["seed"],
                                   "costs_given_in": lg["cost_unit"], "fit_on": fit_on}
        evaluate(lg["label"], val, test, fit_on)

    from eebench.report.frames import (
        ANYTIME_COLUMNS,
        CURVE_COLUMNS,
        RELIABILITY_REQUIRED,
        SUMMARY_COLUMNS,
    )

    # The folder is built aside and swapped in whole: a killed run leaves the previous
    # results, never a mixture; meta.json (written last) holds every file's checksum, so
    # `eebench report` refuses a folder changed or truncated afterwards.
    with atomic_dir(results_dir) as out_dir:
        for rows, file, cols in (
            (anytime_rows, "anytime.csv", ANYTIME_COLUMNS),
            (curve_rows, "curves.csv", CURVE_COLUMNS),
            (summary_rows, "summary.csv", SUMMARY_COLUMNS),
            (reliability_rows, "reliability.csv", RELIABILITY_REQUIRED),
            (cost_rows, "costs.csv", ("model", "exit", "exit_name", "gmacs")),
        ):
            frame = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=list(cols))
            frame.to_csv(out_dir / file, index=False)
        if speed_rows:
            pd.concat(speed_rows, ignore_index=True).to_csv(out_dir / "speed.csv", index=False)
        published = published_rows(suite)
        if published is not None:
            published.to_csv(out_dir / "published.csv", index=False)
        (out_dir / "suite.resolved.json").write_text(json.dumps(suite, indent=2, default=str))
        files = {f.name: file_sha256(f) for f in sorted(out_dir.iterdir()) if f.is_file()}
        _write_results_json(out_dir, suite, files)
        files = {f.name: file_sha256(f) for f in sorted(out_dir.iterdir()) if f.is_file()}
        if path is not None:
            suite_file = suite_file or str(path)
            command = command or " ".join(shlex.quote(a) for a in ["eebench", "run", str(path)])
        _write_meta(out_dir, suite, suite_file, command, provenance, store, t0, files)
    index = build_report(results_dir, reports_dir)
    return SuiteOutput(results_dir=results_dir, report_index=Path(index))


def _measure_speed(suite: dict[str, Any], label: str, model: Any, view: Any, costs: Any,
                   fitted: dict[str, Any]) -> Any:
    """Real early exit of one model at operating points of one fitted policy, on the first
    test images (with the model's evaluation transform)."""
    import torch

    from eebench.costs.speed import speed_of_policy, timing_problem

    s = suite["speed"]
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


def _write_results_json(out_dir: Path, suite: dict[str, Any], files: dict[str, str]) -> None:
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


def _write_meta(out_dir: Path, suite: dict[str, Any], suite_file: str | None, command: str | None,
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
        "command": command or "eebench.suite.run_suite(...) from Python",
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


def extract_view_logits(
    model: Any,
    model_name: str,
    view: Any,
    split: str,
    store: Any,
    *,
    costs: Any = None,
    weights_sha256: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    progress: bool = True,
    autocast: str | None = None,
    num_workers: int = 0,
    world: Any = None,
    chunk_size: int = 1024,
    features: bool = False,
) -> str:
    """Cache ``model``'s logits on one split view (with the model's eval transform) under
    the identity every caller shares, so a suite run and an accuracy check find each
    other's entries; returns the store key. ``costs`` is the model's ExitCosts, if counted;
    ``features`` stores each exit's pre-logit features too (a separate entry)."""
    from eebench.store import extraction_identity
    from eebench.store.extract import extract_logits
    from eebench.zoo.checkpoint import state_dict_sha256

    view = view.with_eval_transform(model.config)
    desc = view.describe()
    identity = extraction_identity(
        model=model_name,
        model_config=model.config.to_dict(),
        weights_sha256=weights_sha256 or state_dict_sha256(model),
        dataset=desc["name"],
        dataset_params={**desc["params"], "split_rule": desc.get("split_rule")},
        split=split,
        split_indices=view.ids,
        transform=desc["transform"],
        dtype="float32",
    )
    return extract_logits(
        model, view, store, identity,
        costs=costs.macs if costs is not None else None,
        cost_counter=(
            {"convention": costs.convention, "input_size": list(costs.input_size)}
            if costs is not None else None
        ),
        exit_names=list(model.exits),
        batch_size=batch_size,
        device=device,
        progress=progress,
        autocast=autocast,
        num_workers=num_workers,
        world=world,
        chunk_size=chunk_size,
        features=features,
    )


def load_suite_logits(lg: dict[str, Any], store_root: str | Path | None = None) -> tuple[Any, Any, Any]:
    """A [[logits]] table's LogitSet (costs converted to MACs, or in their own unit) and the
    (fitting, test) pair: a split of it, another source that fits (``fit_source``, the whole
    source tests), or the whole source for both (``tune_on_test``)."""
    from eebench.evaluate.sweep import load_source, split_logitset

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


def _static_policy():  # noqa: ANN202
    from eebench.policies import make_policy

    return make_policy(solver="static")


def current_command() -> str:
    """The command line of this process, for the report's provenance line."""
    argv = ["eebench", *sys.argv[1:]] if Path(sys.argv[0]).name == "eebench" else sys.argv
    return " ".join(shlex.quote(a) for a in argv)
