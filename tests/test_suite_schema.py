"""Suite files are validated before anything runs; errors name file, key path and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from eebench.schema import SuiteError
from eebench.suite import load_suite, policy_label

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = """
[data]
dataset = "digits"

[[models]]
name = "msdnet_cifar10_budget"
[models.train]
epochs = 2

[[policies]]
score = "confidence"
solver = "geometric"
grid = "msdnet"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_quickstart_suite_validates() -> None:
    suite = load_suite(ROOT / "suites" / "quickstart.toml")
    assert suite["suite"]["name"] == "quickstart"
    labels = [policy_label(p) for p in suite["policies"]]
    assert labels == [
        "confidence/geometric",
        "entropy/geometric",
        "confidence+temperature/geometric",
        "confidence/ga",
        "oracle",
        "random",
    ]
    kinds = {m["name"].split("/")[0] for m in suite["models"]}
    assert len(kinds) == 2  # an MSDNet and a timm/ model


def test_defaults_are_filled_in(tmp_path) -> None:
    suite = load_suite(_write(tmp_path, MINIMAL))
    assert suite["suite"]["name"] == "s"
    assert suite["data"]["splits"] == {"train": 0.6, "val": 0.2, "test": 0.2}
    assert suite["models"][0]["train"]["optimizer"] == "sgd"
    assert suite["costs"]["convention"] is None  # each model's paper convention


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("[data]", "[data]\nbatchsize = 3"), ["s.toml", "data.batchsize", "batch_size"]),
        (('epochs = 2', 'epochs = "two"'), ["models[0].train.epochs", "an integer", "'two'"]),
        (('name = "msdnet_cifar10_budget"', 'name = "msdnet_cifar10_budgt"'),
         ["models[0].name", "msdnet_cifar10_budget"]),
        (('solver = "geometric"', 'solver = "genetic"'), ["policies[0].solver", "ga", "'genetic'"]),
        (('dataset = "digits"', 'dataset = "digitz"'), ["data.dataset", "digits"]),
        (("[data]", "[data]\nsplits = { val = 0.7, test = 0.7 }"), ["data.splits", "more than 1"]),
        (("[[policies]]", "[[policies]]\nscore = 3"), ["policies[0].score", "a string"]),
    ],
)
def test_bad_suites_fail_with_the_key_path(tmp_path, edit, expected) -> None:
    old, new = edit
    text = MINIMAL.replace(old, new, 1)
    if "score = 3" in new:
        text = text.replace('score = "confidence"\n', "", 1)
    with pytest.raises(SuiteError) as err:
        load_suite(_write(tmp_path, text))
    for piece in expected:
        assert piece in str(err.value), (piece, str(err.value))


def test_invalid_toml_and_missing_file(tmp_path) -> None:
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(_write(tmp_path, "[data\n"))
    with pytest.raises(SuiteError, match="does not exist"):
        load_suite(tmp_path / "nope.toml")


def test_random_policy_needs_a_learned_policy_to_copy(tmp_path) -> None:
    text = MINIMAL + '\n[[policies]]\nsolver = "random"\nlike = "entropy/geometric"\n'
    with pytest.raises(SuiteError, match="confidence/geometric"):
        load_suite(_write(tmp_path, text))
