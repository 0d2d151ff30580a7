"""Published numbers as data: read, validate and select the rows of ``results/published/``.

A regression test on a paper is only as good as the numbers it compares
with, so every row is checked the way a reviewer would: it cites where it
comes from, its setting is known, the numbers its setting needs are there and
are numbers, and the file it sits in is the paper it names. A bad row stops
the load with the file, the line and the column, never a silently dropped
point. The schema is documented in ``results/published/README.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eebench.errors import EebenchError

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "source", "citation", "model", "zoo_model", "zoo_overrides", "dataset", "setting", "exit",
    "point", "gmacs", "params_m", "top1", "top5", "throughput", "convention", "from_figure", "note",
)
SETTINGS = ("anytime", "budgeted", "cost", "static", "ablation", "throughput")
DATASETS = ("imagenet", "cifar10", "cifar100")
NUMERIC = ("exit", "gmacs", "params_m", "top1", "top5", "throughput")
REQUIRED: dict[str, tuple[tuple[str, ...], ...]] = {
    # setting -> groups of columns; every group needs at least one filled column
    "anytime": (("gmacs",), ("top1",)),
    "budgeted": (("gmacs",), ("top1",)),
    "cost": (("exit",), ("gmacs",)),
    "static": (("gmacs", "params_m", "top1"),),
    "ablation": (("top1",),),
    "throughput": (("throughput",),),
}
ENV_VAR = "EEBENCH_PUBLISHED"


class PublishedError(EebenchError, ValueError):
    """A published-numbers file or row that does not follow the schema."""


def published_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of published CSVs: ``explicit``, else $EEBENCH_PUBLISHED, else
    ``results/published`` under the current directory, else the one in the eebench checkout."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = Path("results") / "published"
    if here.is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "results" / "published"


def list_sources(root: str | os.PathLike[str] | None = None) -> list[str]:
    """The paper keys (CSV stems) available under ``root``."""
    folder = published_root(root)
    return sorted(p.stem for p in folder.glob("*.csv")) if folder.is_dir() else []


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def _check_row(row: Mapping[str, Any], where: str, stem: str) -> None:
    for col in ("source", "citation", "model", "dataset", "setting"):
        if _blank(row[col]):
            raise PublishedError(f"{where}: column {col!r} is empty; every row needs it")
    if row["source"] != stem:
        raise PublishedError(
            f"{where}: source {row['source']!r} differs from the file name {stem!r}; one file per "
            f"paper, named by its source key"
        )
    if row["setting"] not in SETTINGS:
        raise PublishedError(f"{where}: setting {row['setting']!r} is not one of {', '.join(SETTINGS)}")
    if row["dataset"] not in DATASETS:
        raise PublishedError(f"{where}: dataset {row['dataset']!r} is not one of {', '.join(DATASETS)}")
    for group in REQUIRED[row["setting"]]:
        if all(_blank(row[c]) for c in group):
            raise PublishedError(
                f"{where}: a {row['setting']!r} row needs {' or '.join(group)}; it is empty"
            )
    if row["setting"] in ("anytime", "cost") and not _blank(row["exit"]):
        e = float(row["exit"])
        if e < 1 or e != int(e):
            raise PublishedError(f"{where}: exit {row['exit']!r} must be a 1-based integer")
    for col in ("top1", "top5"):
        if not _blank(row[col]) and not 0 <= float(row[col]) <= 100:
            raise PublishedError(f"{where}: {col} {row[col]!r} must be a percentage in [0, 100]")
    if not _blank(row["gmacs"]) and float(row["gmacs"]) <= 0:
        raise PublishedError(f"{where}: gmacs {row['gmacs']!r} must be positive")
    if str(row["from_figure"]).lower() not in ("true", "false"):
        raise PublishedError(f"{where}: from_figure must be true or false, got {row['from_figure']!r}")
    if str(row["from_figure"]).lower() == "true" and _blank(row["note"]):
        raise PublishedError(f"{where}: a number read off a figure needs a note saying which and how")
    if not _blank(row["zoo_overrides"]):
        try:
            ov = json.loads(row["zoo_overrides"])
        except json.JSONDecodeError as exc:
            raise PublishedError(f"{where}: zoo_overrides is not JSON: {exc}") from None
        if not isinstance(ov, dict):
            raise PublishedError(f"{where}: zoo_overrides must be a JSON object, e.g. {{\"alpha\": 0.7}}")


def read_published_csv(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate one paper's CSV; raises PublishedError naming the line and column."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published numbers file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PublishedError(f"{path}: not a readable CSV: {exc}") from None
    if tuple(df.columns) != COLUMNS:
        missing = [c for c in COLUMNS if c not in df.columns]
        extra = [c for c in df.columns if c not in COLUMNS]
        raise PublishedError(
            f"{path}: columns must be exactly {', '.join(COLUMNS)} in this order "
            f"(missing {missing}, unexpected {extra}); see results/published/README.md"
        )
    if df.empty:
        raise PublishedError(f"{path}: has no rows")
    df = df.map(lambda v: v.strip() if isinstance(v, str) else v)
    for col in NUMERIC:
        conv = pd.to_numeric(df[col].replace("", None), errors="coerce")
        bad = df[col].ne("") & conv.isna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise PublishedError(f"{path}:{i + 2}: column {col!r} holds {df[col].iloc[i]!r}, not a number")
        df[col] = conv.astype("float64")
    for i, row in enumerate(df.to_dict("records")):
        _check_row(row, f"{path}:{i + 2}", path.stem)
    df["from_figure"] = df["from_figure"].str.lower() == "true"
    return df


def load_published(
    sources: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """All rows of the named sources (paper keys, or paths of CSV files in the same schema),
    or of every CSV under the published root when ``sources`` is None."""
    import pandas as pd

    folder = published_root(root)
    if sources is None:
        if not folder.is_dir():
            raise FileNotFoundError(
                f"no published-numbers folder at {folder}; set ${ENV_VAR} or run from the eebench "
                f"checkout (results/published/)"
            )
        paths = sorted(folder.glob("*.csv"))
    else:
        paths = []
        for s in sources:
            p = Path(s)
            if p.suffix == ".csv":
                paths.append(p)
            elif (folder / f"{s}.csv").is_file():
                paths.append(folder / f"{s}.csv")
            else:
                raise FileNotFoundError(
                    f"unknown published source {s!r}: no {folder / (s + '.csv')}; known: "
                    f"{', '.join(list_sources(folder)) or 'none'} (or give a path to a .csv)"
                )
    frames = [read_published_csv(p) for p in paths]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="float64" if c in NUMERIC else "object") for c in COLUMNS})
    return pd.concat(frames, ignore_index=True)


def select_published(
    published: pd.DataFrame,
    *,
    dataset: str | None = None,
    settings: Iterable[str] | None = None,
    models: Iterable[str] | None = None,
    citation: str | None = None,
) -> pd.DataFrame:
    """Rows of one data set, some settings, some models (as the papers name them), and
    whose citation contains ``citation`` (e.g. "Table 5"); unknown model names fail."""
    df = published
    if dataset is not None:
        if dataset not in DATASETS:
            raise PublishedError(
                f"unknown data set {dataset!r} for published numbers; known: {', '.join(DATASETS)}"
            )
        df = df[df["dataset"] == dataset]
    if settings is not None:
        df = df[df["setting"].isin(list(settings))]
    if citation is not None:
        df = df[df["citation"].str.contains(citation, regex=False)]
    if models is not None:
        models = list(models)
        unknown = [m for m in models if m not in set(df["model"])]
        if unknown:
            raise PublishedError(
                f"published rows name no model {unknown} (after the other filters); known: "
                f"{', '.join(sorted(set(df['model'])))}"
            )
        df = df[df["model"].isin(models)]
    return df.reset_index(drop=True)


def published_overlay(
    sources: Sequence[str],
    *,
    dataset: str | None = None,
    models: Iterable[str] | None = None,
    citation: str | None = None,
    root: str | os.PathLike[str] | None = None,
    results_dataset: str | None = None,
) -> pd.DataFrame:
    """The rows of ``sources`` that a report draws beside measured curves (anytime and
    budgeted), filtered as ``select_published`` does, and always of one data set.

    Numbers of different data sets on one accuracy axis mislead, so the data set is the
    results' own (``results_dataset``, when it is one the papers report), else ``dataset``,
    else the only one the selected rows have; when none of these decides, or ``dataset``
    contradicts the results, or nothing is left, the call fails and says what to pass.
    """
    rows = load_published(sources, root)
    rows = rows[rows["setting"].isin(["anytime", "budgeted"])]
    names = ", ".join(sources)
    if results_dataset in DATASETS:
        if dataset is not None and dataset != results_dataset:
            raise PublishedError(
                f"the results are on {results_dataset}, but published rows of {dataset} were "
                f"asked for; numbers of two data sets cannot share an accuracy axis (drop the "
                "published data set, or report results of that data set)"
            )
        dataset = results_dataset
    if dataset is None:
        present = sorted(set(rows["dataset"]))
        if len(present) > 1:
            raise PublishedError(
                f"published rows of {names} cover {len(present)} data sets ({', '.join(present)}) "
                "and the results do not say which one they are on; choose one "
                "(--published-dataset / report.published_dataset)"
            )
        dataset = present[0] if present else None
    out = select_published(rows, dataset=dataset, models=models, citation=citation)
    if out.empty:
        raise PublishedError(
            f"{names} has no anytime or budgeted rows for data set {dataset}"
            + (f" cited from {citation!r}" if citation else "")
            + f"; data sets with rows: {', '.join(sorted(set(rows['dataset']))) or 'none'}"
        )
    return out
