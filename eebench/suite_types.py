"""The shape of a validated suite, for the type checker.

A validated suite stays plain data: it is written out as ``suite.resolved.json``, recorded
in ``results.json`` and accepted by ``run_suite`` as a dict, so a notebook can build one
without a file. These ``TypedDict`` records give that data a checked shape: mypy rejects a
misspelt key or a value used as the wrong type anywhere in the runner, and a test keeps
every record's keys equal to the schema tables that validate the file (``eebench.suite``),
so the two cannot drift apart.

A [[policies]] table stays a ``dict``: besides its fixed keys it holds the options of
whichever registered solver it names, which no fixed record can list.
"""

from __future__ import annotations

from typing import Any, TypedDict


class SuiteInfo(TypedDict):
    name: str
    description: str
    seed: int
    device: str
    autocast: str | None
    features: bool


class DataTable(TypedDict):
    dataset: str
    params: dict[str, Any]
    splits: dict[str, float] | None
    seed: int
    val_index: str | None
    test_index: str | None
    batch_size: int
    workers: int
    chunk_size: int


class CostsTable(TypedDict):
    convention: str | None
    cross_check: bool


class TrainTable(TypedDict):
    epochs: int
    lr: float
    optimizer: str
    batch_size: int
    weight_decay: float
    momentum: float
    distill_alpha: float | None
    distill_temperature: float
    augment: bool
    seed: int


class ModelTable(TypedDict):
    name: str
    label: str | None
    overrides: dict[str, Any]
    checkpoint: str | None
    train: TrainTable | None


class LogitsTable(TypedDict):
    label: str
    source: str
    costs: list[float] | None
    cost_unit: str
    val_fraction: float
    val_index: str | None
    seed: int
    fit_source: str | None
    tune_on_test: bool


PolicyTable = dict[str, Any]
"""label, score, solver, calibration, like, and every registered solver's options."""


class SpeedTable(TypedDict):
    policy: str | None
    points: int
    batch_sizes: list[int]
    samples: int
    threads: int | None
    warmup: int
    repeats: int


class EvaluateTable(TypedDict):
    ece_bins: int
    n_boot: int
    seed: int
    budgets: list[float] | None
    fit_split: str


class ReportTable(TypedDict):
    title: str | None
    published: list[str] | None
    published_dataset: str | None
    published_models: list[str] | None
    published_citation: str | None


class Suite(TypedDict):
    """A whole validated suite: every key present, defaults filled in."""

    suite: SuiteInfo
    data: DataTable | None
    costs: CostsTable
    models: list[ModelTable]
    logits: list[LogitsTable]
    policies: list[PolicyTable]
    speed: SpeedTable | None
    evaluate: EvaluateTable
    report: ReportTable
