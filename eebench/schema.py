"""A small declarative validator for suite files.

A suite that fails after twenty minutes of training because of a typo in a
policy name wastes a researcher's afternoon; so the whole file is checked
before anything runs, and every error names the file, the key path and what
was expected there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eebench.errors import EebenchError


class SuiteError(EebenchError, ValueError):
    """A suite file that cannot be run as written."""


@dataclass
class Field:
    """One key of a table: its type(s), whether it is required, its default, extra checks."""

    types: type | tuple[type, ...]
    required: bool = False
    default: Any = None
    doc: str = ""
    check: Callable[[Any], str | None] | None = None  # returns an error message or None
    table: Table | None = None  # for nested tables / arrays of tables
    items: type | tuple[type, ...] | None = None  # element type for plain arrays


@dataclass
class Table:
    fields: dict[str, Field] = field(default_factory=dict)
    open_keys: bool = False  # free-form table (e.g. model overrides)
    more: Callable[[], dict[str, Field]] | None = None
    """Keys read from elsewhere when the table is used (e.g. every registered solver's
    options), so that a component registered later is accepted at once."""

    def all_fields(self) -> dict[str, Field]:
        """``fields`` and the keys ``more`` adds (fixed keys win on a clash)."""
        extra = self.more() if self.more else {}
        return {**self.fields, **{k: f for k, f in extra.items() if k not in self.fields}}


def _type_name(t: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "an array",
        dict: "a table",
    }
    if isinstance(t, tuple):
        return " or ".join(names.get(x, x.__name__) for x in t)
    return names.get(t, t.__name__)


def _is_instance(value: Any, types: type | tuple[type, ...]) -> bool:
    tt = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in tt:
        return False  # TOML true is not a number
    if float in tt and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, tt)


def validate_table(data: Mapping[str, Any], table: Table, where: str, path: str) -> dict[str, Any]:
    """Check ``data`` against ``table``; return a copy with defaults filled in."""
    if not isinstance(data, Mapping):
        raise SuiteError(f"{where}: {path or 'top level'} must be a table, got {type(data).__name__}")
    out: dict[str, Any] = {}
    fields = table.all_fields()
    if not table.open_keys:
        for key in data:
            if key not in fields:
                import difflib

                hint = difflib.get_close_matches(key, list(fields), n=1)
                known = ", ".join(sorted(fields))
                raise SuiteError(
                    f"{where}: unknown key {_join(path, key)!r}"
                    + (f" (did you mean {_join(path, hint[0])!r}?)" if hint else "")
                    + f"; allowed here: {known}"
                )
    else:
        out.update(data)
    for key, spec in fields.items():
        p = _join(path, key)
        if key not in data:
            if spec.required:
                raise SuiteError(f"{where}: missing required key {p!r} ({_type_name(spec.types)}; {spec.doc})")
            value = spec.default() if callable(spec.default) else spec.default
            if spec.table is not None and isinstance(value, Mapping):
                value = validate_table(value, spec.table, where, p)  # nested defaults
            out[key] = value
            continue
        value = data[key]
        if not _is_instance(value, spec.types):
            raise SuiteError(
                f"{where}: {p!r} must be {_type_name(spec.types)}"
                + (f" ({spec.doc})" if spec.doc else "")
                + f", got {value!r}"
            )
        if spec.table is not None and isinstance(value, list):
            value = [validate_table(v, spec.table, where, f"{p}[{i}]") for i, v in enumerate(value)]
        elif spec.table is not None and isinstance(value, Mapping):
            value = validate_table(value, spec.table, where, p)
        elif spec.items is not None and isinstance(value, Sequence):
            for i, v in enumerate(value):
                if not _is_instance(v, spec.items):
                    raise SuiteError(
                        f"{where}: {p}[{i}] must be {_type_name(spec.items)}, got {v!r}"
                    )
        if spec.check is not None:
            problem = spec.check(value)
            if problem:
                raise SuiteError(f"{where}: {p!r} {problem}")
        out[key] = value
    return out


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(map(str, choices))}; got {value!r}"
        return None

    return check


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be positive, got {value!r}"
