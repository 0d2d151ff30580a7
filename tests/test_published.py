"""Published numbers: every shipped row parses, cites a source and has a known setting;
the loader refuses rows that break the schema, naming file, line and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from eebench.report.published import (
    COLUMNS,
    SETTINGS,
    PublishedError,
    list_sources,
    load_published,
    published_root,
    read_published_csv,
    select_published,
)

SEED_PAPERS = {"chase", "dynperceiver", "dvt", "cfvit", "mcga"}
HEADER = ",".join(COLUMNS)
GOOD = "demo,Demo et al. Table 1,Net,,,imagenet,anytime,1,,0.5,,70.1,,,,false,"


def _write(tmp_path: Path, *rows: str, name: str = "demo") -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_shipped_files_cover_the_seed_papers_and_every_row_is_valid() -> None:
    root = published_root()
    assert root.is_dir(), root
    sources = set(list_sources())
    assert SEED_PAPERS <= sources, f"missing: {SEED_PAPERS - sources}"
    df = load_published()  # validates every row
    assert set(df["setting"]) <= set(SETTINGS)
    assert df["citation"].str.strip().ne("").all()
    assert (df["source"] + ".csv").isin([p.name for p in root.glob("*.csv")]).all()
    for paper in SEED_PAPERS:
        assert (df["source"] == paper).sum() > 0, paper
    # figure-read numbers say so
    assert df.loc[df["from_figure"], "note"].str.len().gt(0).all()


def test_shipped_zoo_models_exist_in_the_zoo() -> None:
    from eebench.zoo.registry import is_model

    df = load_published()
    named = sorted(set(df.loc[df["zoo_model"].ne(""), "zoo_model"]))
    assert named, "no published row names a zoo model"
    missing = [m for m in named if not is_model(m)]
    assert not missing, f"published rows name models the zoo lacks: {missing}"


def test_a_valid_file_loads_with_numbers_as_floats(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD, GOOD.replace(",1,,0.5,,70.1", ",2,,1.5,,75.0"))
    df = read_published_csv(path)
    assert list(df.columns) == list(COLUMNS)
    assert df["gmacs"].tolist() == [0.5, 1.5]
    assert df["from_figure"].tolist() == [False, False]
    assert df["top1"].dtype == "float64"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (GOOD.replace("Demo et al. Table 1", ""), "citation"),
        (GOOD.replace("anytime", "halfway"), "setting"),
        (GOOD.replace("imagenet", "imnet"), "dataset"),
        (GOOD.replace("0.5", "half"), "'gmacs'"),
        (GOOD.replace("70.1", ""), "needs top1"),
        (GOOD.replace("70.1", "0.701").replace("anytime,1", "anytime,0"), "1-based"),
        (GOOD.replace("70.1", "170.1"), "percentage"),
        (GOOD.replace("false,", "true,"), "figure needs a note"),
        (GOOD.replace("demo,", "other,", 1), "file name"),
        (GOOD.replace(",,imagenet", ",{oops,imagenet").replace("Net,", "Net,x"), "JSON"),
    ],
)
def test_bad_rows_are_refused_naming_line_and_column(tmp_path: Path, row: str, message: str) -> None:
    path = _write(tmp_path, GOOD, row)
    with pytest.raises(PublishedError, match=message) as err:
        read_published_csv(path)
    assert ":3" in str(err.value)  # header is line 1, the bad row line 3


def test_wrong_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "demo.csv"
    path.write_text("source,model,top1\ndemo,Net,70\n")
    with pytest.raises(PublishedError, match="columns must be exactly"):
        read_published_csv(path)


def test_unknown_source_lists_the_known_ones(tmp_path: Path) -> None:
    _write(tmp_path, GOOD)
    with pytest.raises(FileNotFoundError, match="known: demo"):
        load_published(["dmeo"], root=tmp_path)


def test_select_filters_and_names_unknown_models(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, GOOD.replace("anytime,1", "budgeted,").replace(",,0.5", ",b1,0.7"))
    df = load_published(root=tmp_path)
    assert len(select_published(df, settings=["budgeted"])) == 1
    assert len(select_published(df, citation="Table 1")) == 2
    assert select_published(df, dataset="cifar10").empty
    with pytest.raises(PublishedError, match="no model"):
        select_published(df, models=["Nett"])
    assert isinstance(select_published(df, models=["Net"]), pd.DataFrame)
