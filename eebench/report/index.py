"""Build a report folder from a results folder: every figure, every table, and index.md.

The report is made from the saved result files alone (``eebench report
RESULTS_DIR`` never touches a model or the logit store), so it can be rebuilt
and restyled at any time. index.md is the page a reader opens first: it shows
each figure and table with one line saying what it is, and the exact command
and suite file that produced the numbers, so that a figure pasted into a paper
can be traced back to its run.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from eebench.errors import EebenchError, InputError
from eebench.outputs import check_path_name
from eebench.report.frames import (
    ANYTIME_COLUMNS,
    CURVE_COLUMNS,
    RELIABILITY_REQUIRED,
    SUMMARY_COLUMNS,
    ordered,
    require_columns,
    require_fractions,
    require_numbers,
)

if TYPE_CHECKING:
    import pandas as pd

    from eebench.report.style import CostScale
    from eebench.report.tables import Table

class ResultsError(EebenchError, ValueError):
    """A results folder that cannot be reported faithfully."""


REQUIRED_FILES = ("meta.json", "anytime.csv", "curves.csv")
PUBLISHED_FILE = "published.csv"  # the papers' rows a suite draws beside its own (optional)
OPTIONAL_FILES = ("summary.csv", "reliability.csv")


@dataclass
class Results:
    """The contents of ``results/<suite>/``; optional frames are None when their file is absent."""

    folder: Path
    meta: dict[str, Any]
    anytime: pd.DataFrame
    curves: pd.DataFrame
    summary: pd.DataFrame | None
    reliability: pd.DataFrame | None


def _check_files(folder: Path, meta: dict[str, Any]) -> None:
    """Refuse a results folder whose files are not the ones its run wrote.

    ``meta.json`` lists the sha256 of every file the run wrote; a truncated, edited or
    half-copied file would otherwise become a report with invented numbers.
    """
    from eebench.store.logitstore import file_sha256

    files = meta.get("files")
    if files is None:
        return  # written before checksums were recorded: the column checks below still apply
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ResultsError(f"{folder / 'meta.json'}: 'files' must map file names to sha256")
    for name, digest in sorted(files.items()):
        path = folder / name
        if Path(name).name != name:
            raise ResultsError(f"{folder / 'meta.json'}: file name {name!r} is not a plain name")
        if not path.is_file():
            raise ResultsError(
                f"{path} is missing, but the run that made {folder} wrote it; re-run the suite "
                "(`eebench run SUITE`)"
            )
        if file_sha256(path) != digest:
            raise ResultsError(
                f"{path} is not the file the run wrote (checksum differs: truncated, edited or "
                "half-copied); re-run the suite (`eebench run SUITE`) rather than report it"
            )


def _missing(folder: Path, name: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{folder / name} is missing: a report needs {', '.join(REQUIRED_FILES)} in the results "
        f"folder. Create them with `eebench run SUITE` (results go to results/<suite>/), or point "
        f"`eebench report` at the folder that holds them."
    )


def load_results(results_dir: str | Path) -> Results:
    """Read and check a results folder; fails naming the missing file or column."""
    import pandas as pd

    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"results folder {folder} does not exist; run `eebench run SUITE` first "
            f"(it writes results/<suite>/)"
        )
    for name in REQUIRED_FILES:
        if not (folder / name).is_file():
            raise _missing(folder, name)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{folder / 'meta.json'} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict):
        raise InputError(f"{folder / 'meta.json'} must hold a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("cost_unit"), str) or not meta["cost_unit"].strip():
        raise InputError(
            f"{folder / 'meta.json'} lacks 'cost_unit' (e.g. \"MACs\"); the report cannot "
            f"label costs without it"
        )
    _check_files(folder, meta)
    budgets = meta.get("budgets")
    if budgets is not None and (
        not isinstance(budgets, list) or not all(isinstance(b, (int, float)) for b in budgets)
    ):
        raise InputError(
            f"{folder / 'meta.json'}: 'budgets' must be a list of costs in {meta['cost_unit']} "
            f"or null, got {budgets!r}"
        )

    def read(name: str, columns: Sequence[str]) -> pd.DataFrame:
        path = folder / name
        with open(path, "rb") as f:  # every row the run wrote ends with a newline
            f.seek(0, 2)
            if f.tell():
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    raise ResultsError(
                        f"{path} ends in the middle of a row: the file is truncated or damaged; "
                        "re-create it with `eebench run SUITE`"
                    )
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise ResultsError(f"{path} is empty; re-create it with `eebench run SUITE`") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise ResultsError(
                f"{path} cannot be read as CSV ({' '.join(str(exc).split())}): the file is "
                "truncated or damaged; re-create it with `eebench run SUITE`"
            ) from None
        require_columns(df, columns, str(path))
        if "model" in df.columns:
            df["model"] = df["model"].astype(str)
        if "policy" in df.columns:  # an empty cell (the raw rows of reliability.csv) stays ""
            df["policy"] = df["policy"].fillna("").astype(str)
        return df

    anytime = read("anytime.csv", ANYTIME_COLUMNS)
    curves = read("curves.csv", CURVE_COLUMNS)
    if (anytime.empty or curves.empty) and not (folder / PUBLISHED_FILE).is_file():
        raise InputError(
            f"{folder / ('anytime.csv' if anytime.empty else 'curves.csv')} has no rows; "
            f"re-create it with `eebench run SUITE`"
        )
    require_numbers(anytime, ["exit", "cost", "top1"], str(folder / "anytime.csv"))
    require_numbers(curves, ["test_acc", "test_cost"], str(folder / "curves.csv"))
    require_fractions(anytime, ["top1", "top5", "overthinking"], str(folder / "anytime.csv"))
    require_fractions(curves, ["test_acc", "val_acc"], str(folder / "curves.csv"))
    summary = read("summary.csv", SUMMARY_COLUMNS) if (folder / "summary.csv").is_file() else None
    reliability = (
        read("reliability.csv", RELIABILITY_REQUIRED)
        if (folder / "reliability.csv").is_file()
        else None
    )
    return Results(folder, meta, anytime, curves, summary, reliability)


def _read_speed(folder: Path) -> pd.DataFrame | None:
    """speed.csv of a results folder (real early exit), checked, or None when absent."""
    import pandas as pd

    from eebench.report.figures import SPEED_REQUIRED

    path = folder / "speed.csv"
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} cannot be read as CSV ({exc}); re-run the suite") from None
    require_columns(df, SPEED_REQUIRED, str(path))
    require_numbers(df, ["predicted_speedup", "measured_speedup", "throughput"], str(path))
    df["model"] = df["model"].astype(str)
    return df


def results_dataset(results_dir: str | Path) -> str | None:
    """The data set a results folder was measured on: meta.json's ``dataset``, else the
    resolved suite's [data] table; None when neither says (logits or papers only)."""
    folder = Path(results_dir)
    for name, get in (("meta.json", lambda d: d.get("dataset")),
                      ("suite.resolved.json", lambda d: (d.get("data") or {}).get("dataset"))):
        try:
            value = get(json.loads((folder / name).read_text()))
        except (OSError, ValueError, AttributeError, TypeError):
            continue
        if isinstance(value, str) and value:
            return value
    return None


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


@dataclass
class ReportInputs:
    """What every figure and table of a report reads: the checked results, the papers' rows
    to overlay, one cost scale and one model order for all of them, the exit policy the
    exit-distribution figure is restricted to, and the optional speed measurements."""

    res: Results
    published: pd.DataFrame | None
    scale: CostScale
    models: list[str]
    exit_policy: str | None
    speed: pd.DataFrame | None

    @property
    def unit(self) -> str:
        return str(self.res.meta["cost_unit"])

    @property
    def measured(self) -> bool:
        """Whether the suite measured a model (else it draws published numbers only)."""
        return not (self.res.anytime.empty or self.res.curves.empty)


def report_inputs(
    results_dir: str | Path,
    *,
    published: pd.DataFrame | None = None,
    exit_policy: str | None = None,
) -> ReportInputs:
    """Load and check a results folder and derive what its report shows everywhere: the
    cost scale (from every cost drawn) and the order of the models."""
    from eebench.report.style import cost_scale

    res = load_results(results_dir)
    if published is None and (res.folder / PUBLISHED_FILE).is_file():
        import pandas as pd

        published = pd.read_csv(res.folder / PUBLISHED_FILE)
    all_costs = np.concatenate(
        [res.anytime["cost"].to_numpy(dtype=np.float64), res.curves["test_cost"].to_numpy(dtype=np.float64)]
    )
    if (res.anytime.empty or res.curves.empty) and published is not None:
        all_costs = published["gmacs"].to_numpy(dtype=np.float64) * 1e9  # only the papers' numbers
    return ReportInputs(
        res=res,
        published=published,
        scale=cost_scale(res.meta["cost_unit"], all_costs),
        models=ordered([*res.anytime["model"], *res.curves["model"]]),
        exit_policy=exit_policy,
        speed=_read_speed(res.folder),  # optional: suites without a [speed] section
    )


def _report_folder(res: Results, reports_dir: str | Path | None) -> Path:
    """``reports_dir``, else ``reports/<suite>`` from meta.json's suite name."""
    if reports_dir is not None:
        return Path(reports_dir)
    suite = res.meta.get("suite")
    if not isinstance(suite, str) or not suite:
        raise InputError(
            f"{res.folder / 'meta.json'} has no 'suite' name; pass the report folder explicitly"
        )
    check_path_name(suite, f"{res.folder / 'meta.json'}: suite")
    return Path("reports") / suite


def draw_figures(inputs: ReportInputs, out: Path) -> tuple[list[tuple[str, str, str]], list[str]]:
    """Draw every registered report figure into ``out`` (PDF + PNG), in their order; returns
    (stem, heading, caption) of each figure drawn and a line for each one left out."""
    from eebench.report.figures import FIGURES, LABEL_KEY
    from eebench.report.style import paper_style, save_figure

    drawn: list[tuple[str, str, str]] = []
    skipped: list[str] = []
    with paper_style():
        for figure in sorted(FIGURES.values(), key=lambda f: (f.order, f.name)):
            result = figure.draw(inputs)
            if isinstance(result, str):
                skipped.append(f"{figure.heading}: {result}")
            elif result is not None:
                save_figure(result.figure, out / figure.name)
                key = getattr(result.figure, LABEL_KEY, "")
                drawn.append((figure.name, figure.heading,
                              f"{result.caption} {key}" if key else result.caption))
    return drawn, skipped


def report_tables(inputs: ReportInputs) -> tuple[list[tuple[Table, str]], list[str]]:
    """Every table of the report, each with the line index.md shows above it, and a line for
    each kind of table left out."""
    from eebench.report.tables import anytime_tables, budget_tables, speed_table, summary_tables

    res, scale = inputs.res, inputs.scale
    tables: list[tuple[Table, str]] = []
    skipped: list[str] = []
    if inputs.measured:
        for t in anytime_tables(res.anytime, scale):
            tables.append((t, "Cost and test metrics of every exit under the anytime protocol."))
        for t in budget_tables(res.curves, scale, res.meta.get("budgets"), summary=res.summary):
            tables.append((t, "Test accuracy of every policy read off its curve at common budgets."))
    else:
        skipped.append("Anytime and budget tables: this suite measured no model (published numbers only).")
    if inputs.published is not None and len(inputs.published):
        from eebench.report.ablation import published_points_table

        tables.append((published_points_table(inputs.published, scale),
                       "Every published number drawn in the figures, with the table or figure it comes from."))
    if inputs.speed is not None:
        tables.append((speed_table(inputs.speed), "Latency and throughput with real exits."))
    if res.summary is None:
        skipped.append("Summary tables: summary.csv is absent from the results.")
    elif res.summary.empty:
        skipped.append("Summary tables: summary.csv has no rows.")
    else:
        for t in summary_tables(res.summary, scale):
            tables.append((t, "Summary metrics of every policy with bootstrap confidence intervals."))
    return tables, skipped


def build_report(
    results_dir: str | Path,
    reports_dir: str | Path | None = None,
    *,
    published: pd.DataFrame | None = None,
    exit_policy: str | None = None,
) -> Path:
    """Write every figure (PDF + PNG) and table (Markdown + LaTeX) of a results folder into
    ``reports_dir`` (default ``reports/<suite>/``) and an ``index.md`` showing them all;
    returns the path of index.md.

    ``published`` (columns source, model, setting, gmacs, top1 in %) is overlaid
    on the anytime and budgeted figures. ``exit_policy`` restricts the
    exit-distribution figure to one policy (default: every learned policy). The
    figures are those registered in ``eebench.report.figures.FIGURES``.
    """
    inputs = report_inputs(results_dir, published=published, exit_policy=exit_policy)
    out = _report_folder(inputs.res, reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures, skipped = draw_figures(inputs, out)
    tables, not_tabled = report_tables(inputs)
    for t, _ in tables:
        t.save(out)
    index = out / "index.md"
    index.write_text(
        _index_text(inputs.res, out, inputs.scale.note, figures, tables, skipped + not_tabled)
    )
    return index


def _solver_notes(curves: pd.DataFrame) -> list[str]:
    """One line per operating point a solver flagged (e.g. a budget it could not use)."""
    if "note" not in curves.columns:
        return []
    out = []
    for r in curves.to_dict("records"):
        note = r.get("note")
        if isinstance(note, str) and note.strip():
            at = f" at {r['param']:g}" if isinstance(r.get("param"), (int, float)) else ""
            out.append(f"{r['model']}, {r['policy']}{at}: {note}")
    return out


def _index_text(
    res: Results,
    out: Path,
    cost_note: str,
    figures: list[tuple[str, str, str]],
    tables: list[tuple[Table, str]],
    skipped: list[str],
) -> str:
    meta = res.meta
    title = meta.get("title") or meta.get("suite") or res.folder.name
    command = meta.get("command") or "(not recorded in meta.json)"
    suite_file = meta.get("suite_file") or "(not recorded in meta.json)"
    lines = [
        f"# {title}",
        "",
        f"Report of suite `{meta.get('suite', res.folder.name)}`. Results made by",
        "",
        "```",
        str(command),
        "```",
        "",
        f"from the suite file `{suite_file}`"
        + (f" on {meta['created']}" if meta.get("created") else "")
        + f"; read from `{_rel(res.folder, out)}`. Rebuild this page with "
        f"`eebench report {shlex.quote(res.folder.as_posix())} --out {shlex.quote(out.as_posix())}`.",
        "",
        cost_note,
        "",
    ]
    from eebench.report.figures import fit_sets

    on_test = [m for m, f in fit_sets(res.curves).items() if f.startswith("test set")]
    if on_test:
        lines += [
            f"**Tuned on the test set:** the thresholds of {', '.join(on_test)} were fit on the "
            "same samples they are evaluated on (no held-out split, as in CF-ViT's protocol); "
            "their curves are optimistic and not comparable with held-out results.",
            "",
        ]
    versions = meta.get("versions")
    if isinstance(versions, dict) and versions:
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", ""]
    lines += ["## Figures", ""]
    for stem, heading, line in figures:
        lines += [
            f"### {heading}",
            "",
            line,
            "",
            f"![{heading}]({stem}.png)",
            "",
            f"PDF: [{stem}.pdf]({stem}.pdf) · PNG: [{stem}.png]({stem}.png)",
            "",
        ]
    lines += ["## Tables", ""]
    for t, line in tables:
        lines += [
            f"### {t.title}",
            "",
            line,
            "",
            t.to_markdown().rstrip("\n"),
            "",
            f"LaTeX: [{t.stem}.tex]({t.stem}.tex) · Markdown: [{t.stem}.md]({t.stem}.md)",
            "",
        ]
    notes = _solver_notes(res.curves)
    if notes:
        lines += ["## Notes on operating points", ""]
        lines += [f"- {n}" for n in notes]
        lines.append("")
    if skipped:
        lines += ["## Not in this report", ""]
        lines += [f"- {s}" for s in skipped]
        lines.append("")
    return "\n".join(lines)
