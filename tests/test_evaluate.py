"""Evaluation: anytime tables, ECE rules, budgeted curves, summaries with bootstrap, splits, sweeps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from policy_testing import synthetic_exits
from shared_data import SHARED_DATA

from eebench.data.splits import SplitError
from eebench.errors import DataError
from eebench.evaluate import (
    accuracy_at,
    anytime_table,
    budgeted_curve,
    cost_to_reach,
    expected_calibration_error,
    mean_accuracy,
    run_sweep,
    summarize,
)
from eebench.policies import (
    OraclePolicy,
    StaticPolicy,
    TemperatureScaling,
    exit_correct,
    exit_distribution,
    exit_predictions,
    exit_scores,
    get_grid,
    make_policy,
)
from eebench.policies import reference as ref
from eebench.store.logitset import LogitSet
from eebench.store.splits import split_logitset


def _cifar() -> LogitSet:
    path = SHARED_DATA / "logits" / "cnn6exit-cifar10.npz"
    if not path.is_file():
        pytest.skip(f"shared test data {path} is absent")
    z = np.load(path)
    return LogitSet(np.ascontiguousarray(np.swapaxes(z["logits"], 0, 1)), z["labels"], np.arange(1, 7.0))


def _synthetic(n: int = 2000, k: int = 4, c: int = 10, seed: int = 0) -> LogitSet:
    """Exits that get better with depth (with saturation, so a policy can match the last exit)."""
    return synthetic_exits(n, k, c, seed)


# ---------------------------------------------------------------- anytime and ECE


def test_anytime_table_columns_and_values() -> None:
    ls = _synthetic()
    tab = anytime_table(ls)
    assert list(tab.columns) == [
        "exit", "exit_name", "cost", "top1", "top5", "nll", "ece", "overthinking",
    ]
    correct = exit_correct(ls)
    assert tab.top1.tolist() == pytest.approx(correct.mean(axis=0).tolist())
    assert (tab.top5 >= tab.top1).all() and (tab.top5 <= 1).all()
    over = [(correct[:, k] & ~correct[:, -1]).mean() for k in range(ls.num_exits)]
    assert tab.overthinking.tolist() == pytest.approx(over) and tab.overthinking.iloc[-1] == 0
    assert 0 < tab.overthinking.iloc[0]
    z = ls.logits[:, 0].astype(np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    assert tab.nll.iloc[0] == pytest.approx(np.mean(lse - z[np.arange(ls.num_samples), ls.labels]), rel=1e-5)
    cal = TemperatureScaling().fit(ls)
    tab_cal = anytime_table(ls, calibration=cal)
    assert tab_cal.top1.tolist() == tab.top1.tolist()
    assert (tab_cal.nll <= tab.nll + 1e-6).all()


def test_anytime_on_real_logits_matches_readme() -> None:
    tab = anytime_table(_cifar())
    assert tab.top1.round(3).tolist() == [0.592, 0.681, 0.702, 0.728, 0.757, 0.774]


def _calibrated_dnn_ece_loop(conf: np.ndarray, corr: np.ndarray) -> float:
    """Transcription of calibrated-dnn's calc_bins / calculate_ECE."""
    bins = np.linspace(0.1, 1, 10)
    binned = np.digitize(conf, bins)
    sizes, accs, confs = np.zeros(10), np.zeros(10), np.zeros(10)
    for b in range(10):
        sizes[b] = len(conf[binned == b])
        if sizes[b] > 0:
            accs[b] = corr[binned == b].sum() / sizes[b]
            confs[b] = conf[binned == b].sum() / sizes[b]
    return float(sum(sizes[b] / sizes.sum() * abs(accs[b] - confs[b]) for b in range(10)))


def test_ece_variants_differ_only_by_confidences_of_one() -> None:
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.05, 0.999, 3000)
    corr = rng.random(3000) < conf
    std10 = expected_calibration_error(conf, corr, bins=10)
    cdnn = expected_calibration_error(conf, corr, variant="calibrated-dnn")
    assert cdnn == pytest.approx(std10, abs=1e-12)
    assert cdnn == pytest.approx(_calibrated_dnn_ece_loop(conf, corr), abs=1e-12)
    conf1 = np.concatenate([conf, np.ones(1000)])
    corr1 = np.concatenate([corr, np.zeros(1000, bool)])  # badly over-confident at 1.0
    assert expected_calibration_error(conf1, corr1, variant="calibrated-dnn") == pytest.approx(cdnn)
    assert expected_calibration_error(conf1, corr1, variant="calibrated-dnn") == pytest.approx(
        _calibrated_dnn_ece_loop(conf1, corr1.astype(float))
    )
    std_with_ones = expected_calibration_error(conf1, corr1, bins=10)
    assert std_with_ones > std10 + 0.1  # the standard rule keeps the 1.0s in its last bin
    assert np.isnan(expected_calibration_error(np.ones(5), np.ones(5), variant="calibrated-dnn"))
    # 15-bin standard ECE by hand on a tiny case: bins [0, 1/15), ..., [14/15, 1]
    assert expected_calibration_error(np.array([1.0, 0.99]), np.array([1, 0])) == pytest.approx(
        abs(0.5 - 0.995)
    )
    with pytest.raises(ValueError, match="calibrated-dnn"):
        expected_calibration_error(conf, corr, variant="guo")


def test_anytime_ece_variant_switch() -> None:
    logits = np.zeros((4, 1, 3), dtype=np.float32)
    logits[:2, 0, 0] = 200.0  # float32 confidence exactly 1.0, right
    logits[2:, 0, 1] = 1.0  # moderate confidence, wrong (label 0)
    ls = LogitSet(logits, [0, 0, 0, 0], [1.0])
    std = anytime_table(ls).ece.iloc[0]
    cdnn = anytime_table(ls, ece_variant="calibrated-dnn").ece.iloc[0]
    conf = float(np.exp(1) / (np.exp(1) + 2))
    assert std == pytest.approx(0.5 * conf, rel=1e-6)
    assert cdnn == pytest.approx(conf, rel=1e-6)


# ---------------------------------------------------------------- budgeted curves


def test_budgeted_curve_matches_reference() -> None:
    ls = _synthetic(3000, k=4, seed=1)
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    curve = budgeted_curve(make_policy("confidence", grid="msdnet"), val, test)
    assert list(curve.columns[:7]) == [
        "policy", "param", "param_name", "val_acc", "val_cost", "test_acc", "test_cost",
    ]
    assert len(curve) == 39 and curve.policy.iloc[0] == "confidence/geometric[msdnet]"
    fr = curve[[f"frac_{k}" for k in range(4)]].to_numpy()
    assert np.allclose(fr.sum(axis=1), 1.0)
    dists = [exit_distribution(q, 4) for q in get_grid("msdnet").q]
    expected = ref.dynamic_evaluate(
        (exit_scores(val), exit_predictions(val), val.labels),
        (exit_scores(test), exit_predictions(test), test.labels),
        val.costs,
        dists,
    )
    assert curve.test_acc.tolist() == [r["test_acc"] for r in expected]
    assert curve.test_cost.tolist() == [r["test_cost"] for r in expected]
    assert curve.val_cost.tolist() == [r["val_cost"] for r in expected]
    assert json.loads(curve.thresholds.iloc[0]) == expected[0]["thresholds"]
    assert (curve.calibration == "").all()
    cal = budgeted_curve(make_policy("confidence", calibration="temperature"), val, test)
    temps = json.loads(cal.calibration.iloc[0])["temperatures"]
    assert len(temps) == 4 and all(t > 0 for t in temps)
    oracle = budgeted_curve(OraclePolicy(), val, test)
    assert len(oracle) == 1 and json.loads(oracle.thresholds.iloc[0]) == [None] * 4
    assert oracle.test_acc.iloc[0] >= curve.test_acc.max()


# ---------------------------------------------------------------- summaries


def test_curve_helpers() -> None:
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.7, 0.8])
    assert mean_accuracy(x, y, 1.0, 3.0) == pytest.approx((0.6 + 0.75) / 2)
    assert mean_accuracy(x, y, 1.5, 2.5) == pytest.approx((0.6 + 0.7) / 2 * 0.5 + (0.7 + 0.75) / 2 * 0.5)
    assert accuracy_at(x, y, 2.5) == pytest.approx(0.75) and np.isnan(accuracy_at(x, y, 3.5))
    assert cost_to_reach(x, y, 0.75) == pytest.approx(2.5)
    assert cost_to_reach(x, y, 0.4) == 1.0 and np.isnan(cost_to_reach(x, y, 0.9))


def _curve_and_points() -> tuple[pd.DataFrame, pd.DataFrame, LogitSet, dict]:
    ls = _synthetic(3000, k=4, seed=2)
    val, test = split_logitset(ls, val_fraction=0.5, seed=1)
    geo = make_policy("confidence", grid="msdnet")
    static = StaticPolicy()
    curve = pd.concat([budgeted_curve(geo, val, test), budgeted_curve(static, val, test)])
    return curve, anytime_table(test), test, {geo.name: geo.apply(test), "static": static}


def test_summarize_values_and_deterministic_bootstrap() -> None:
    curve, anytime, test, points = _curve_and_points()
    kw = dict(at_costs=[2.0, 99.0], n_boot=200, test=test, points=points)
    s1 = summarize(curve, anytime, seed=7, **kw)
    s2 = summarize(curve, anytime, seed=7, **kw)
    s3 = summarize(curve, anytime, seed=8, **kw)
    pd.testing.assert_frame_equal(s1, s2)
    assert not np.allclose(s1.ci_low.fillna(0), s3.ci_low.fillna(0))
    assert list(s1.columns) == [
        "policy", "metric", "at_cost", "value", "ci_low", "ci_high", "unit", "interpolated", "note",
        "diff_ref", "diff_low", "diff_high",
        "policy_kind", "cost_lo", "cost_hi", "ci_level", "n_boot", "boot_seed",
    ]
    geo = curve[curve.policy != "static"]
    g = s1[s1.policy == geo.policy.iloc[0]].set_index(["metric", "at_cost"], drop=False)
    rows = g.reset_index(drop=True)
    acc2 = rows[(rows.metric == "accuracy_at_cost") & (rows.at_cost == 2.0)].iloc[0]
    order = np.argsort(geo.test_cost.to_numpy())
    expect = np.interp(2.0, geo.test_cost.to_numpy()[order], geo.test_acc.to_numpy()[order])
    assert acc2.value == pytest.approx(expect) and acc2.interpolated
    assert acc2.ci_low <= acc2.value <= acc2.ci_high
    far = rows[(rows.metric == "accuracy_at_cost") & (rows.at_cost == 99.0)].iloc[0]
    assert np.isnan(far.value) and "outside" in far.note
    match = rows[rows.metric == "cost_to_match_last_exit"].iloc[0]
    speed = rows[rows.metric == "speedup_vs_last_exit"].iloc[0]
    assert speed.value == pytest.approx(anytime.cost.iloc[-1] / match.value)
    assert match.value < anytime.cost.iloc[-1] and speed.value > 1
    st = s1[(s1.policy == "static") & (s1.metric == "cost_to_match_last_exit")].iloc[0]
    assert st.value == pytest.approx(anytime.cost.iloc[-1])
    auc = s1[s1.metric == "mean_accuracy"].set_index("policy").value
    assert auc[geo.policy.iloc[0]] > auc["static"]  # a policy beats the anytime points
    no_boot = summarize(curve, anytime, at_costs=[2.0])
    assert no_boot.ci_low.isna().all() and "no interval" in no_boot.note.iloc[0]


def test_curve_bands_share_resamples_and_keep_the_curve() -> None:
    from eebench.evaluate.curves import accuracy_bands
    from eebench.evaluate.summary import bootstrap_weights

    ls = _synthetic(1200, k=4, seed=3)
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    plain = budgeted_curve(make_policy("confidence", grid="msdnet"), val, test)
    banded = budgeted_curve(make_policy("confidence", grid="msdnet"), val, test, n_boot=150, seed=4)
    # every column and value as without the band; the band's two columns come last
    assert list(banded.columns) == [*plain.columns, "test_acc_low", "test_acc_high"]
    pd.testing.assert_frame_equal(banded[plain.columns], plain)
    assert (banded.test_acc_low <= banded.test_acc).all()
    assert (banded.test_acc <= banded.test_acc_high).all()
    assert (banded.test_acc_high - banded.test_acc_low).between(0.01, 0.2).all()
    # the band of a point is the percentile interval over bootstrap_weights' resamples
    geo = make_policy("confidence", grid="msdnet").fit(val)
    pts = geo.apply(test)
    hits = [geo.correct(test)[np.arange(test.num_samples), p.exits] for p in pts]
    w = np.concatenate(list(bootstrap_weights(test.num_samples, 150, 4)))
    acc = w @ np.stack(hits, axis=1).astype(float) / test.num_samples
    lo, hi = np.percentile(acc[:, 7], [2.5, 97.5])
    assert banded.test_acc_low.iloc[7] == pytest.approx(lo, abs=1e-12)
    assert banded.test_acc_high.iloc[7] == pytest.approx(hi, abs=1e-12)
    # every point and every policy sees the same resamples: bands of points computed apart
    # are the bands of the points computed together
    static_hits = [test_c for test_c in exit_correct(test).T]
    both = accuracy_bands(hits[:3] + static_hits, 150, 4)
    alone = accuracy_bands(static_hits, 150, 4)
    assert np.array_equal(both[0][3:], alone[0]) and np.array_equal(both[1][3:], alone[1])
    static = budgeted_curve(StaticPolicy(), val, test, n_boot=150, seed=4)
    assert np.array_equal(static.test_acc_low.to_numpy(), alone[0])
    with pytest.raises(ValueError, match="n_boot"):
        budgeted_curve(StaticPolicy(), val, test, n_boot=-1)


def test_summarize_paired_differences() -> None:
    ls = _synthetic(2000, k=4, seed=5)
    val, test = split_logitset(ls, val_fraction=0.5, seed=0)
    geo, twin, static, oracle = (make_policy("confidence", grid="msdnet"),
                                 make_policy("confidence", grid="msdnet"), StaticPolicy(),
                                 OraclePolicy())
    curve = pd.concat([
        budgeted_curve(geo, val, test), budgeted_curve(twin, val, test).assign(policy="twin"),
        budgeted_curve(static, val, test), budgeted_curve(oracle, val, test),
    ])
    points = {geo.name: geo, "twin": twin, "static": static, "oracle": oracle}
    s = summarize(curve, anytime_table(test), n_boot=120, seed=1, test=test, points=points)
    m = s[s.metric == "mean_accuracy"].set_index("policy")
    # the best (the first of two identical policies) is compared with the runner-up, its
    # twin: the very same resamples give a difference of exactly zero
    assert m.loc[geo.name, "diff_ref"] == "twin"
    assert m.loc[geo.name, "diff_low"] == 0 and m.loc[geo.name, "diff_high"] == 0
    assert m.loc["twin", "diff_ref"] == geo.name
    # everyone else against the best; static exits are clearly behind thresholds
    assert m.loc["static", "diff_ref"] == geo.name and m.loc["static", "diff_high"] < 0
    diff = m.loc["static", "value"] - m.loc[geo.name, "value"]
    assert m.loc["static", "diff_low"] <= diff <= m.loc["static", "diff_high"]
    # the oracle is never a reference, and with no mean accuracy has no difference either
    c = s[s.metric == "cost_to_match_last_exit"].set_index("policy")
    assert "oracle" not in set(s.diff_ref) and c.loc["oracle", "diff_ref"] == ""
    assert np.isnan(c.loc["oracle", "diff_low"])
    # lower cost is better: the reference of the cost metric is the cheapest policy
    finite = c.drop(index="oracle").dropna(subset=["value"])
    cheapest = finite.value.idxmin()
    assert all(c.loc[p, "diff_ref"] == cheapest for p in finite.index if p != cheapest)
    # without a bootstrap no policy has a difference
    plain = summarize(curve, anytime_table(test))
    assert (plain.diff_ref == "").all() and plain.diff_low.isna().all()


def test_summarize_rejects_mismatched_points() -> None:
    curve, anytime, test, points = _curve_and_points()
    wrong = {curve.policy.iloc[0]: points["static"]}
    with pytest.raises(ValueError, match="do not reproduce"):
        summarize(curve, anytime, n_boot=10, test=test, points=wrong)
    with pytest.raises(ValueError, match="not in the curve"):
        summarize(curve, anytime, n_boot=10, test=test, points={"nope": points["static"]})


# ---------------------------------------------------------------- splits and sweeps


def test_split_logitset(tmp_path: Path) -> None:
    ls = _synthetic(100, k=2)
    val, test = split_logitset(ls, val_fraction=0.3, seed=4)
    assert (val.num_samples, test.num_samples) == (30, 70)
    assert not set(val.ids) & set(test.ids)
    again, _ = split_logitset(ls, val_fraction=0.3, seed=4)
    assert np.array_equal(val.ids, again.ids)
    np.save(tmp_path / "val.npy", np.arange(10))
    v2, t2 = split_logitset(ls, val_index=tmp_path / "val.npy")
    assert v2.ids.tolist() == list(range(10)) and t2.num_samples == 90
    v3, _ = split_logitset(ls, val_index=[5, 1])
    assert v3.ids.tolist() == [1, 5]
    with pytest.raises(ValueError, match="exactly one"):
        split_logitset(ls)
    with pytest.raises(ValueError, match="exactly one"):
        split_logitset(ls, val_fraction=0.5, val_index=[1])
    with pytest.raises(SplitError, match="between 0 and 1"):
        split_logitset(ls, val_fraction=1.0)
    with pytest.raises(SplitError, match="outside"):
        split_logitset(ls, val_index=[100])


def test_run_sweep_from_npz_and_logitset(tmp_path: Path) -> None:
    ls = _synthetic(1000, k=3, seed=5)
    path = tmp_path / "x.npz"
    np.savez(path, logits=np.swapaxes(ls.logits, 0, 1), labels=ls.labels)  # (K, N, C) layout
    from_file = run_sweep(path, costs=[1.0, 2.5, 4.0], val_fraction=0.5, seed=3, grid="0.5,1,2")
    ls2 = LogitSet(ls.logits, ls.labels, [1.0, 2.5, 4.0])
    from_set = run_sweep(ls2, val_fraction=0.5, seed=3, grid=[0.5, 1, 2])
    pd.testing.assert_frame_equal(from_file, from_set)
    val, test = split_logitset(ls2, val_fraction=0.5, seed=3)
    direct = budgeted_curve(make_policy(grid=[0.5, 1, 2]), val, test)
    assert (from_set.pop("policy_kind") == "learned").all()  # the last column
    assert (from_set.pop("fit_on") == "validation split").all()
    pd.testing.assert_frame_equal(from_set, direct)
    ga = run_sweep(ls2, solver="ga", budgets=[2.0, 3.0], population=8, generations=2)
    assert (ga.val_cost <= ga.param).all() and ga.param.tolist() == [2.0, 3.0]
    default_split = run_sweep(ls2)
    assert len(default_split) == 39
    with pytest.raises(FileNotFoundError):
        run_sweep(tmp_path / "missing.npz", costs=[1, 2, 3])


# ---------------------------------------------------------------- one read of the logits


def _memmap_set(tmp_path: Path, n: int = 3000, k: int = 3, c: int = 7) -> LogitSet:
    rng = np.random.default_rng(11)
    path = tmp_path / "logits.npy"
    np.save(path, rng.normal(0, 2, size=(n, k, c)).astype(np.float16))
    return LogitSet(np.load(path, mmap_mode="r"), rng.integers(0, c, n), np.arange(1, k + 1.0))


def test_streamed_split_equals_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import eebench.store.splits as splits_mod

    ls = _memmap_set(tmp_path)
    monkeypatch.setattr(splits_mod, "_SPLIT_BLOCK_BYTES", 1000)  # many blocks, pages released
    for kw in ({"val_fraction": 0.3, "seed": 2}, {"val_index": [2999, 5, 0, 17]}):
        idx, _ = splits_mod.split_indices(ls.num_samples, **kw)
        val, test = split_logitset(ls, **kw)
        ref = ls.subset(idx)
        assert val.logits.dtype == np.float16 and type(val.logits) is np.ndarray
        np.testing.assert_array_equal(val.logits, ref.logits)
        np.testing.assert_array_equal(val.ids, ref.ids)
        np.testing.assert_array_equal(val.labels, ref.labels)
        rest = np.setdiff1d(np.arange(ls.num_samples), idx)
        np.testing.assert_array_equal(test.logits, np.asarray(ls.logits)[rest])
    # the source still reads the same after its pages were handed back
    np.testing.assert_array_equal(np.asarray(ls.logits[:5]), np.load(tmp_path / "logits.npy")[:5])


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_run_sweep_checks_values_while_splitting(tmp_path: Path, value: float) -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3, 5)).astype(np.float16)
    z[321, 2, 4] = value
    np.save(tmp_path / "bad.npy", z)
    ls = LogitSet(np.load(tmp_path / "bad.npy", mmap_mode="r"), rng.integers(0, 5, 400), [1.0, 2, 3])
    with pytest.raises(DataError, match="sample 321, exit 2, class 4"):
        run_sweep(ls)


def test_run_sweep_scores_each_split_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from eebench.policies import scores as S

    ls = _memmap_set(tmp_path, n=2000)
    calls: list[int] = []
    real = S._compute
    monkeypatch.setattr(S, "_compute", lambda *a: calls.append(a[0].num_samples) or real(*a))
    monkeypatch.setattr(S, "_compute_predictions", lambda *a: pytest.fail("extra prediction pass"))
    curve = run_sweep(ls, val_fraction=0.5, seed=1, grid="msdnet")
    assert sorted(calls) == [1000, 1000] and len(curve) == 39
