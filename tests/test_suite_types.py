"""The typed records of a validated suite (eebench.suite_types) have exactly the keys of the
schema tables that validate a suite file, at every level, and a validated suite's values
have the records' types."""

from __future__ import annotations

import types
import typing

from eebench import suite_types
from eebench.schema import Table
from eebench.suite import SUITE, validate_suite


def _record_of(annotation: object) -> object:
    """The TypedDict inside ``X | None`` or ``list[X]``, else None."""
    if typing.is_typeddict(annotation):
        return annotation
    for arg in typing.get_args(annotation):
        found = _record_of(arg)
        if found is not None:
            return found
    return None


def _walk(record: object, table: Table, path: str) -> list[str]:
    hints = typing.get_type_hints(record)
    problems = []
    if set(hints) != set(table.fields):
        problems.append(f"{path or 'suite'}: record {sorted(set(hints) ^ set(table.fields))}")
    for key, field in table.fields.items():
        if field.table is not None and key in hints and not field.table.more:
            inner = _record_of(hints[key])
            if inner is None:
                problems.append(f"{path}{key}: the record is not a TypedDict")
            else:
                problems.extend(_walk(inner, field.table, f"{path}{key}."))
    return problems


def test_records_have_the_schema_keys_at_every_level() -> None:
    assert _walk(suite_types.Suite, SUITE, "") == []


def _matches(value: object, annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if typing.is_typeddict(annotation):
        hints = typing.get_type_hints(annotation)
        return isinstance(value, dict) and all(_matches(value[k], h) for k, h in hints.items())
    if origin is list:
        (item,) = typing.get_args(annotation)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)  # type: ignore[arg-type]


def test_a_validated_suite_has_the_record_types() -> None:
    raw = {
        "suite": {"name": "t", "features": True},
        "data": {"dataset": "digits", "splits": {"train": 0.5, "val": 0.25, "test": 0.25}},
        "models": [{"name": "msdnet_cifar10_budget", "train": {"epochs": 1}}],
        "logits": [{"label": "x", "source": "x.npz", "costs": [1, 2]}],
        "policies": [{"solver": "ga", "population": 8}, {"solver": "oracle"}],
        "speed": {"points": 2},
        "evaluate": {"budgets": [1, 2]},
        "report": {"title": "A title"},
    }
    suite = validate_suite(raw, "t.toml", name="t")
    assert _matches(suite, suite_types.Suite)
    assert not _matches({**suite, "evaluate": {**suite["evaluate"], "n_boot": "many"}},
                        suite_types.Suite)
