"""Policy spec strings: each parses to the table a suite file validates to, writes back to
itself, covers every registered score, calibration and solver, and fails in one clear line."""

from __future__ import annotations

import tomllib

import pytest

from eebench.policies import list_calibrations, list_policy_solvers, list_scores
from eebench.policies.factory import policy_options
from eebench.policies.spec import (
    POLICY,
    accepted_options,
    build_policy,
    format_policy_spec,
    no_score,
    parse_policy_spec,
    policy_label,
    split_policy_specs,
)
from eebench.schema import validate_table
from eebench.suite import validate_suite

CANONICAL = [
    "confidence/geometric",
    "entropy+temperature/geometric(grid=msdnet)",
    "confidence+temperature/ga(population=128,generations=60)",
    "confidence/risk(epsilon=0.01,delta=0.1)",
    "confidence/risk(epsilon=[0.01,0.05],delta=0.1,bound=hb)",
    "eenet(budgets=[2,3,4],epochs=100)",
    "eenet(grid=dvt,hidden=16,epochs=5,lr=0.001,weight_decay=1e-05,seed=3)",
    "patience/sweep(grid=[1,2,3,4])",
    "margin/sweep(thresholds=[0.5,0.9,last])",
    "confidence+temperature+mie/exact(budgets=[2000000000.0,3.5])",
    "entropy+laplace+mie/geometric(grid=[0.5,1,2],label=\"calibrated, entropy\")",
    "ensemble-confidence/ga(grid=imta,budgets=[2,3],seed=7,label=ga-7)",
    "oracle",
    "static",
    "random",
    "random(like=confidence/geometric,seed=2)",
]


@pytest.mark.parametrize("spec", CANONICAL)
def test_canonical_specs_round_trip(spec) -> None:
    table = parse_policy_spec(spec)
    assert set(table) == set(POLICY.all_fields())  # the keys of a validated [[policies]] table
    assert format_policy_spec(table) == spec
    assert parse_policy_spec(format_policy_spec(table)) == table


def test_a_spec_is_the_table_a_suite_file_validates_to() -> None:
    toml = """
[[policies]]
score = "confidence"
calibration = "temperature"
solver = "ga"
population = 128
generations = 60

[[policies]]
solver = "eenet"
budgets = [2, 3, 4]
epochs = 100

[[policies]]
score = "patience"
solver = "sweep"
grid = [1, 2, 3, 4]

[[policies]]
solver = "risk"
epsilon = 0.01
delta = 0.1
"""
    tables = [validate_table(t, POLICY, "t", "") for t in tomllib.loads(toml)["policies"]]
    specs = ["confidence+temperature/ga(population=128,generations=60)",
             "eenet(budgets=[2,3,4],epochs=100)", "patience/sweep(grid=[1,2,3,4])",
             "confidence/risk(epsilon=0.01,delta=0.1)"]
    assert [parse_policy_spec(s) for s in specs] == tables
    assert [format_policy_spec(t) for t in tables] == specs
    # the spec of a table without options is its label
    assert policy_label(parse_policy_spec("entropy+temperature+mie/geometric")) == \
        "entropy+temperature+mie/geometric"


def test_spaces_case_and_defaults() -> None:
    t = parse_policy_spec("  Entropy + Temperature / GA ( population = 16 , generations=5 ) ")
    assert (t["score"], t["calibration"], t["solver"]) == ("entropy", "temperature", "ga")
    assert (t["population"], t["generations"], t["seed"], t["label"]) == (16, 5, None, None)
    assert format_policy_spec(t) == "entropy+temperature/ga(population=16,generations=5)"
    # no score: the default one; written explicitly
    assert format_policy_spec(parse_policy_spec("geometric")) == "confidence/geometric"
    assert parse_policy_spec("confidence/geometric()") == parse_policy_spec("confidence/geometric")
    t = parse_policy_spec("confidence/geometric(grid=[0.5,1,2.0e0],label='a b')")
    assert t["grid"] == [0.5, 1, 2.0] and isinstance(t["grid"][1], int)
    assert t["label"] == "a b" and format_policy_spec(t).endswith("label=a b)")


def _value_text(value) -> str:
    from eebench.policies.spec import _format_value

    return _format_value(value)


def _sample(key: str, solver: str = "geometric"):
    if key == "grid" and solver in ("sweep", "risk"):  # thresholds, not a q grid
        return [0.5, 0.9]
    return {"grid": "msdnet", "budgets": [2, 3], "seed": 4, "thresholds": [0.5, "last"],
            "like": "confidence/geometric", "label": "x", "generations": 3, "population": 8,
            "epsilon": [0.01, 0.05], "delta": 0.2, "bound": "hb", "hidden": 8, "epochs": 3,
            "lr": 0.01, "weight_decay": 0.001, "exit_weights": [1.0, 2.0], "cx_prob": 0.5,
            "mut_prob": 0.3, "tournament": 2, "elite": 1, "eta_cx": 10.0, "eta_mut": 12.0,
            "max_chunk_elements": 4096, "levels": 64}[key]


@pytest.mark.parametrize("solver", list_policy_solvers())
def test_every_registered_name_parses_formats_and_builds(solver) -> None:
    """Every solver with every score and calibration it can take, and every option it accepts."""
    if no_score(solver):
        heads = [solver]
    else:
        heads = [f"{s}/{solver}" for s in list_scores()]
        heads += [f"{s}+{c}/{solver}" for s in list_scores() for c in list_calibrations()]
    for head in heads:
        table = parse_policy_spec(head)
        assert table["solver"] == solver
        assert format_policy_spec(table) == head
    accepted = accepted_options(solver)
    # every constructor option is accepted, and nothing else but the table's own keys
    assert "label" in accepted and set(policy_options(solver)) <= set(accepted)
    assert set(accepted) <= set(POLICY.all_fields())
    # every accepted option at once (grid excludes budgets, and sweep's thresholds)
    keys = [k for k in accepted
            if not (k == "grid" and ("budgets" in accepted or "thresholds" in accepted))]
    spec = heads[0] + "(" + ",".join(f"{k}={_value_text(_sample(k, solver))}"
                                     for k in keys) + ")"
    table = parse_policy_spec(spec)
    for k in keys:
        assert table[k] == _sample(k, solver), k
    assert parse_policy_spec(format_policy_spec(table)) == table
    # the suite builds a policy from it (random copies the learned policy its like names)
    raw = {"logits": [{"label": "m", "source": "m.npz", "costs": [1, 2]}],
           "policies": [{"solver": "geometric"}, {k: v for k, v in table.items() if v is not None}]}
    if solver == "random":
        raw["policies"][1]["like"] = "confidence/geometric"
    suite = validate_suite(raw, "test", name="t")
    assert build_policy(suite["policies"][1], suite["policies"]) is not None


def test_split_policy_specs() -> None:
    assert split_policy_specs("a,b(c=1,d=[2,3]),e") == ["a", "b(c=1,d=[2,3])", "e"]
    assert split_policy_specs(" oracle ") == ["oracle"]
    assert split_policy_specs('x(label="a,b"),y(label=\'c)d\')') == ['x(label="a,b")',
                                                                     "y(label='c)d')"]
    assert split_policy_specs("p(grid=[[0.1,0.2],[0.3]]),q") == ["p(grid=[[0.1,0.2],[0.3]])", "q"]
    for bad, words in [("a,,b", "empty spec"), ("a,", "empty spec"), ("", "no policy spec"),
                       ("a(b=[1,2),c", "unclosed"), ("a)", "unbalanced"),
                       ('a(label="x)', "unclosed quote")]:
        with pytest.raises(ValueError, match=words):
            split_policy_specs(bad)


@pytest.mark.parametrize("spec, words", [
    ("confidence/geometrik", "unknown solver 'geometrik'; known: eenet, exact, ga, geometric"),
    ("confidence/geometrik", "did you mean 'geometric'"),
    ("confidance/geometric", "unknown score 'confidance'; known: confidence"),
    ("temperature/geometric", "unknown score 'temperature'"),
    ("confidence+tempreature/geometric", "unknown calibration 'tempreature'; known: none"),
    ("confidence+/geometric", "nothing after '+'"),
    ("confidence/ga(pop=3)", "the ga solver has no option 'pop'; it accepts: grid, budgets, "
                             "population, generations, cx_prob, mut_prob, tournament, elite, "
                             "eta_cx, eta_mut, max_chunk_elements, levels, seed, label"),
    ("confidence/ga(populaton=3)", "did you mean 'population'"),
    ("confidence/geometric(seed=1)", "no option 'seed'; it accepts: grid, budgets, exit_weights, "
                                     "label"),
    ("confidence/sweep(budgets=[1,2])", "no option 'budgets'"),
    ("oracle(seed=1)", "the oracle solver has no option 'seed'; it accepts: label"),
    ("confidence/oracle", "the oracle policy takes no score or calibration"),
    ("entropy/eenet", "it learns its own exit scores"),
    ("confidence/random", "random(like=LABEL)"),
    ("confidence/ga(population=1.5)", "'population' must be an integer"),
    ("confidence/ga(population=0)", "population must be an integer in [2, 100000], got 0"),
    ("confidence/risk(bound=exact)", "bound must be one of binomial, hb"),
    ("eenet(budgets=[])", "empty"),
    ("eenet(budgets=[2,3,)", "an empty item in the list of budgets"),
    ("eenet(budgets=[2,3", "expected ',' or ']'"),
    ("confidence/geometric(grid=msdnet", "expected ',' or ')'"),
    ("confidence/geometric(grid=)", "grid has no value"),
    ("confidence/geometric(grid=msdnet,grid=imta)", "option 'grid' is given twice"),
    ("confidence/geometric(grid=msdnet)x", "unexpected text after the options: 'x'"),
    ("confidence/geometric(=1)", "expected an option name"),
    ("confidence/geometric(grid=a(b))", "quote values that contain it"),
    ("a/b/c", "more than one '/'"),
    ("confidence/geometric)", "unexpected ')'"),
    ("", "empty policy spec"),
])
def test_bad_specs_fail_in_one_clear_line(spec, words) -> None:
    with pytest.raises(ValueError) as exc:
        parse_policy_spec(spec)
    message = str(exc.value)
    assert words in message
    assert "\n" not in message
    if spec:
        assert message.startswith(f"policy spec {spec.strip()!r}: ")


def test_format_refuses_keys_the_solver_does_not_use() -> None:
    table = parse_policy_spec("confidence/geometric")
    with pytest.raises(ValueError, match="the geometric solver does not use population"):
        format_policy_spec({**table, "population": 8})
    with pytest.raises(ValueError, match="the oracle policy takes no score or calibration"):
        format_policy_spec({**parse_policy_spec("oracle"), "calibration": "temperature"})
    # strings that would read back as something else are quoted
    for label in ["12", "a,b", "x(y)", " pad", 'say "hi"', "naïve"]:
        t = {**table, "label": label}
        assert parse_policy_spec(format_policy_spec(t)) == t
