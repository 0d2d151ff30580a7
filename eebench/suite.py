"""Benchmark suites: a TOML file that names data, models, policies and report options.

The file is validated completely before anything runs; eebench.runner then walks the
whole flow of DESIGN.md over it. A suite built in code (``eebench compare``) goes through
the same validator and runner, so its results are those of the equivalent file.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from eebench.costs.conventions import cumulative_conventions
from eebench.costs.units import MAC_UNITS
from eebench.errors import OutputPathError
from eebench.outputs import check_path_name
from eebench.policies.spec import (
    POLICY,
    build_policy,
    check_policy_table,
    normalize_policy_table,
    policy_label,
    registered_choices,
    table_policy_kind,
)
from eebench.schema import Field, SuiteError, Table, one_of, positive, validate_table
from eebench.suite_types import ModelTable, Suite


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

COST_UNITS = MAC_UNITS
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
                        str, default=None, check=one_of(cumulative_conventions()),
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
    return registered_choices(check)


def schema_rows() -> list[dict[str, str]]:
    """Every key a suite accepts, in file order: ``key`` (``models[].train.epochs`` for a key
    of an array of tables), ``type``, ``default`` (``required``, ``unset`` or a TOML value)
    and ``doc`` (with the accepted names where the key takes a name)."""
    rows: list[dict[str, str]] = []

    def walk(table: Table, prefix: str) -> None:
        for key, f in table.all_fields().items():
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


def model_label(m: ModelTable) -> str:
    return m.get("label") or m["name"]


def load_suite(path: str | os.PathLike[str], *, need_policies: bool = True) -> Suite:
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
                   need_policies: bool = True) -> Suite:
    """Fully validate a suite given as data (what a TOML file parses to, or what a command
    such as ``eebench compare`` builds); returns it with defaults filled in. ``where`` names
    the suite in every error; ``name`` is the suite name when ``[suite] name`` is not set."""
    suite = cast(Suite, validate_table(raw, SUITE, where, ""))
    given = suite["suite"]["name"] or name
    if not given:
        raise SuiteError(f"{where}: missing suite.name (it names the results and report folders)")
    suite["suite"]["name"] = given
    try:  # the name becomes results/<name>/ and reports/<name>/
        check_path_name(suite["suite"]["name"], "suite.name")
    except OutputPathError as exc:
        raise SuiteError(f"{where}: {exc}") from None
    _check_names(suite, where, need_policies)
    return suite


def _check_names(suite: Suite, where: str, need_policies: bool = True) -> None:
    """Names that the schema cannot know: models, data sets, policy combinations."""
    from eebench.data.registry import dataset_name
    from eebench.errors import UnknownNameError
    from eebench.zoo.registry import model_name

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
        try:
            d["dataset"] = dataset_name(d["dataset"])
        except UnknownNameError as exc:
            raise SuiteError(f"{where}: data.dataset: {exc}") from None
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
        try:
            m["name"] = model_name(m["name"])
        except UnknownNameError as exc:
            raise SuiteError(f"{where}: models[{i}].name: {exc}") from None
        if m["checkpoint"] and m["train"]:
            raise SuiteError(f"{where}: models[{i}]: give either checkpoint or train, not both")
        lab = model_label(m)
        if lab in labels:
            raise SuiteError(f"{where}: models[{i}]: label {lab!r} is used twice; set label = ...")
        labels.add(lab)
    if need_policies and (suite["models"] or suite["logits"]) and not suite["policies"]:
        raise SuiteError(f"{where}: policies: name at least one [[policies]] table")
    for i, p in enumerate(suite["policies"]):
        normalize_policy_table(p)
        check_policy_table(p, where, f"policies[{i}]")
    plabels = [policy_label(p) for p in suite["policies"]]
    for i, p in enumerate(suite["policies"]):
        if plabels.count(plabels[i]) > 1:
            raise SuiteError(f"{where}: policies[{i}]: label {plabels[i]!r} is used twice; set label = ...")
        if p["solver"] == "random":
            learned = [lab for lab, q in zip(plabels, suite["policies"])
                       if table_policy_kind(q) == "learned"]
            if p["like"] is None and learned:
                p["like"] = learned[0]
            if p["like"] not in learned:
                raise SuiteError(
                    f"{where}: policies[{i}].like must name a learned policy to copy exit fractions "
                    f"from ({', '.join(learned) or 'none in this suite'})"
                )


def _expand_paths(suite: Suite) -> None:
    """``${VAR}`` in paths (data root, index files, checkpoints, logit sources) comes from the
    environment, so one suite file serves every machine; unset variables stay visible."""
    import os

    d = suite["data"]
    if d is not None:
        d["params"] = {k: os.path.expandvars(v) if isinstance(v, str) else v for k, v in d["params"].items()}
        if d["val_index"]:
            d["val_index"] = os.path.expandvars(d["val_index"])
        if d["test_index"]:
            d["test_index"] = os.path.expandvars(d["test_index"])
    for m in suite["models"]:
        if m["checkpoint"]:
            m["checkpoint"] = os.path.expandvars(m["checkpoint"])
    for i, lg in enumerate(suite["logits"]):
        lg["source"] = _expanded(lg["source"], f"logits[{i}].source")
        if lg["fit_source"]:
            lg["fit_source"] = _expanded(lg["fit_source"], f"logits[{i}].fit_source")


def _expanded(path: str, key: str) -> str:
    """``path`` with its environment variables filled in; an unset one fails, naming ``key``."""
    import os

    out = os.path.expandvars(path)
    if "$" in out:
        raise SuiteError(f"{key}: {out!r} names an environment variable that is not set; set "
                         "it to an .npz file or a store entry (store:NAME)")
    return out


def _check_published(suite: Suite, where: str) -> None:
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


def published_rows(suite: Suite) -> Any:
    """The published rows a suite's report draws (None when it names no papers)."""
    from eebench.report.published import published_overlay

    r = suite["report"]
    if not r["published"]:
        return None
    return published_overlay(
        r["published"], dataset=r["published_dataset"], models=r["published_models"],
        citation=r["published_citation"], results_dataset=suite_dataset(suite),
    )


def suite_cost_unit(suite: Suite) -> str:
    """The one unit of every cost in a suite's results (the validator refuses mixtures)."""
    units = [results_cost_unit(lg["cost_unit"]) for lg in suite["logits"]]
    return units[0] if units and not suite["models"] else "MACs"


def suite_dataset(suite: Suite) -> str | None:
    """The data set a suite's models run on (None for a suite of logits or papers only)."""
    data = suite["data"]
    return data["dataset"] if data else None


def _policies_for(suite: Suite) -> list[tuple[str, Any]]:
    """(label, unfitted policy) for every [[policies]] table."""
    return [(policy_label(p), build_policy(p, suite["policies"])) for p in suite["policies"]]
