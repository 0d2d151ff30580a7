"""Results as a schema: the columns a program reads instead of prose (policy_kind, cost_lo,
cost_hi, how an interval was made, cost_unit, dataset), Parquet beside every CSV, and a
report that never parses the ``note`` column yet still renders folders written before
those columns existed."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from zoo_testing import one_torch_thread  # noqa: F401  (module fixture)

from eebench.compare import compare
from eebench.errors import InputError
from eebench.evaluate.curves import RESULT_COLUMNS, append_result_columns
from eebench.report import build_report
from eebench.report.frames import policy_kinds
from eebench.report.style import cost_scale
from eebench.report.tables import budget_tables, summary_tables
from eebench.store import LogitStore
from eebench.store.logitset import LogitSet
from eebench.store.logitstore import file_sha256

# "oracle" is the label of a learned policy here: only the policy_kind column can tell the
# report that it competes, while the real oracle goes by another name
SPECS = ("confidence/geometric,entropy/geometric(label=oracle),oracle(label=upper-bound),"
         "random")
KINDS = {"confidence/geometric": "learned", "oracle": "learned", "upper-bound": "oracle",
         "random": "random", "static": "static"}
BUDGETS = [2e9, 3e9]
N_BOOT = 10
NEW_COLUMNS = {"anytime.csv": ["cost_unit", "dataset"],
               "curves.csv": ["policy_kind", "cost_unit", "dataset"],
               "summary.csv": ["policy_kind", "cost_lo", "cost_hi", "ci_level", "n_boot",
                               "boot_seed", "cost_unit", "dataset"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):  # noqa: F811
    """A small comparison on synthetic logits kept in a store entry that names its data set."""
    root = tmp_path_factory.mktemp("schema")
    rng = np.random.default_rng(0)
    n, k, c = 240, 4, 5
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, k, c)).astype(np.float32)
    for e in range(k):  # later exits are more often right
        logits[np.arange(n), e, labels] += 0.8 * (e + 1)
    ls = LogitSet(logits=logits, labels=labels, costs=np.array([1e9, 2e9, 3e9, 4e9]))
    LogitStore(root / "store").put(ls, {"model": "net", "dataset": "synthetic-digits"},
                                   name="net")
    out = compare("store:net", SPECS, budgets=BUDGETS, n_boot=N_BOOT,
                  out=root / "cmp", store_root=root / "store")
    return root, out.results_dir


def _csv(folder, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / name)


def test_new_columns_come_last_with_their_values(run) -> None:
    _, res = run
    for name, new in NEW_COLUMNS.items():
        df = _csv(res, name)
        assert list(df.columns[-len(new):]) == new, name
        assert set(df["cost_unit"]) == {"MACs"} and set(df["dataset"]) == {"synthetic-digits"}
    curves = _csv(res, "curves.csv")
    assert list(curves.columns[:4]) == ["model", "policy", "param", "param_name"]
    assert dict(zip(curves["policy"], curves["policy_kind"])) == KINDS

    summary = _csv(res, "summary.csv")
    assert dict(zip(summary["policy"], summary["policy_kind"])) == {
        p: k for p, k in KINDS.items() if p != "static"}
    assert (summary["ci_level"] == 0.95).all() and (summary["boot_seed"] == 0).all()
    assert (summary["n_boot"] == N_BOOT).all()  # every policy here is bootstrapped
    # mean accuracy: the cost range common to the curves with two points or more
    spans = [(g["test_cost"].min(), g["test_cost"].max())
             for p, g in curves.groupby("policy") if p != "static" and g["test_cost"].nunique() > 1]
    lo, hi = max(s[0] for s in spans), min(s[1] for s in spans)
    mean = summary[summary["metric"] == "mean_accuracy"]
    many = mean[mean["policy"] != "upper-bound"]  # the oracle has one point: no area, no range
    assert np.allclose(many["cost_lo"], lo, rtol=1e-12) and np.allclose(many["cost_hi"], hi,
                                                                         rtol=1e-12)
    assert mean.loc[mean["policy"] == "upper-bound", ["cost_lo", "cost_hi"]].isna().all().all()
    for r in many.itertuples():  # the prose says the same range, for people
        assert f"over cost [{lo:g}, {hi:g}]" in r.note
    at = summary[summary["metric"] == "accuracy_at_cost"]
    assert sorted(set(at["at_cost"])) == BUDGETS
    assert (at["cost_lo"] == at["at_cost"]).all() and (at["cost_hi"] == at["at_cost"]).all()
    rest = summary[summary["metric"].isin(["cost_to_match_last_exit", "speedup_vs_last_exit"])]
    assert len(rest) and rest[["cost_lo", "cost_hi"]].isna().all().all()
    # the oracle is never a reference of the paired differences, whatever its label
    assert "upper-bound" not in set(summary["diff_ref"].dropna())
    assert "oracle" in set(summary["diff_ref"].dropna())


def test_parquet_beside_every_csv_holds_the_same_table(run) -> None:
    _, res = run
    csvs = sorted(p.name for p in res.glob("*.csv"))
    assert {"anytime.csv", "curves.csv", "summary.csv", "reliability.csv", "costs.csv"} <= set(csvs)
    meta = json.loads((res / "meta.json").read_text())
    for name in csvs:
        parquet = res / name.replace(".csv", ".parquet")
        assert parquet.is_file(), parquet
        pd.testing.assert_frame_equal(pd.read_csv(res / name), pd.read_parquet(parquet),
                                      obj=name)
        assert meta["files"][parquet.name] == file_sha256(parquet)  # checked like the CSV


def _tables(res) -> tuple[list, list]:
    curves, summary = _csv(res, "curves.csv"), _csv(res, "summary.csv")
    scale = cost_scale("MACs", curves["test_cost"])
    return summary_tables(summary, scale), budget_tables(curves, scale, BUDGETS, summary=summary)


def test_tables_do_not_read_the_note(run) -> None:
    _, res = run
    curves, summary = _csv(res, "curves.csv"), _csv(res, "summary.csv")
    scale = cost_scale("MACs", curves["test_cost"])
    blank_s, blank_c = summary.assign(note=""), curves.assign(note="")
    for with_note, without in [
        (summary_tables(summary, scale), summary_tables(blank_s, scale)),
        (budget_tables(curves, scale, BUDGETS, summary=summary),
         budget_tables(blank_c, scale, BUDGETS, summary=blank_s)),
    ]:
        assert [t.to_markdown() for t in with_note] == [t.to_markdown() for t in without]
    table = summary_tables(blank_s, scale)[0]
    text = table.to_markdown()
    lo = summary.loc[summary["metric"] == "mean_accuracy", "cost_lo"].dropna().iloc[0]
    assert f"{lo / 1e9:.2f}" in text.split("mean acc.: area under")[1]  # range from cost_lo
    assert f"95% percentile bootstrap, {N_BOOT} test resamples (seed 0)" in text
    header = table.columns
    assert header[2] == "acc. (%) @ 2.00 GMACs" and header[3] == "acc. (%) @ 3.00 GMACs"
    # the learned policy labelled "oracle" is a row with its values; the oracle is not marked
    rows = {r[0].text: r for r in table.rows}
    assert rows["oracle"][1].text != "—" and not any(c.bold for c in rows["upper-bound"][1:])
    budgets = budget_tables(blank_c, scale, BUDGETS, summary=blank_s)[0]
    assert [r[0].text for r in budgets.rows] == ["confidence/geometric", "oracle", "random",
                                                 "static"]
    assert any(n.startswith("upper-bound (knows the labels") for n in budgets.notes)


def _as_before_the_schema(res, dest):
    """A copy of a results folder as written before the schema columns and Parquet existed:
    the new columns and files dropped, meta.json's checksums those of the remaining files."""
    shutil.copytree(res, dest)
    for p in dest.glob("*.parquet"):
        p.unlink()
    for name, new in NEW_COLUMNS.items():
        df = pd.read_csv(dest / name)
        df.drop(columns=new).to_csv(dest / name, index=False)
    for meta_file in ("results.json", "meta.json"):
        meta = json.loads((dest / meta_file).read_text())
        meta["files"] = {f.name: file_sha256(f) for f in sorted(dest.iterdir())
                         if f.name in meta["files"]}
        (dest / meta_file).write_text(json.dumps(meta, indent=2))
    meta = json.loads((dest / "meta.json").read_text())
    meta["files"]["results.json"] = file_sha256(dest / "results.json")
    (dest / "meta.json").write_text(json.dumps(meta, indent=2))


def test_results_without_the_new_columns_still_render(run) -> None:
    root, res = run
    old = root / "old-results"
    _as_before_the_schema(res, old)
    assert not any(c in pd.read_csv(old / "summary.csv").columns for c in ("cost_lo", "n_boot"))
    index = build_report(old, root / "old-report")
    assert index.is_file()
    (new_summary,), (new_budgets,) = _tables(res)
    (old_summary,), (old_budgets,) = _tables(old)
    # the same numbers where the label does not mislead the name rule ...
    new_rows = {r[0].text: [c.text for c in r] for r in new_summary.rows}
    old_rows = {r[0].text: [c.text for c in r] for r in old_summary.rows}
    assert old_summary.columns == new_summary.columns and new_rows == old_rows
    # ... the interval described in general and the mean-accuracy range left out ...
    assert "Interval: percentile bootstrap over test resamples" in old_summary.to_markdown()
    assert "mean acc.: area under the test accuracy-cost curve divided by the width of the cost " \
           "range common to the policies." in old_summary.to_markdown()
    # ... and, with no policy_kind column, the label decides: "oracle" leaves the rows
    assert [r[0].text for r in old_budgets.rows] == ["confidence/geometric", "upper-bound",
                                                     "random", "static"]
    assert any(n.startswith("oracle (knows the labels") for n in old_budgets.notes)


def test_policy_kinds_reads_the_column_and_falls_back_to_the_label() -> None:
    df = pd.DataFrame({"policy": ["oracle", "a", "random", "b"],
                       "policy_kind": ["learned", np.nan, "random", " Oracle "]})
    assert policy_kinds(df) == {"oracle": "learned", "a": "learned", "random": "random",
                                "b": "oracle"}
    assert policy_kinds(df.drop(columns="policy_kind"))["oracle"] == "oracle"
    # a stated kind wins over empty cells of the same policy (frames put together)
    mixed = pd.DataFrame({"policy": ["oracle", "oracle"], "policy_kind": [np.nan, "learned"]})
    assert policy_kinds(mixed) == {"oracle": "learned"}
    with pytest.raises(InputError, match="policy_kind 'baseline'"):
        policy_kinds(df.assign(policy_kind="baseline"), "curves.csv")
    with pytest.raises(InputError, match="two kinds"):
        policy_kinds(pd.DataFrame({"policy": ["a", "a"], "policy_kind": ["learned", "static"]}))


def test_append_result_columns() -> None:
    df = pd.DataFrame({"model": ["m", "n"], "policy": ["p", "q"], "x": [1.0, 2.0]})
    out = append_result_columns(df, kinds={"p": "learned", "q": "oracle"}, cost_unit="ms",
                                datasets={"m": "cifar10"})
    assert list(out.columns) == ["model", "policy", "x", *RESULT_COLUMNS]
    assert out["policy_kind"].tolist() == ["learned", "oracle"]
    assert out["cost_unit"].tolist() == ["ms", "ms"] and out["dataset"].iloc[0] == "cifar10"
    assert pd.isna(out["dataset"].iloc[1])  # a model nobody named a data set for
    assert list(df.columns) == ["model", "policy", "x"]  # the input is left alone
    kept = append_result_columns(out, kinds={}, cost_unit="MACs")  # present columns are kept
    pd.testing.assert_frame_equal(kept, out)
    with pytest.raises(InputError, match=r"no kind given for the policies \['q'\]"):
        append_result_columns(df, kinds={"p": "learned"})
