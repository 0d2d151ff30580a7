"""Solvers and policies as estimators: the constructor's signature is the schema.

A solver's options are reachable from Python, from a suite's [[policies]] table
and from a policy spec string only if all three read them from one place. That
place is the constructor: every keyword parameter with a default is an option,
under the same name, in all three. Like scikit-learn's estimators, a component
stores each parameter under its own name, learns state in ``fit`` into names
ending in ``_``, and can say what it was built with (``get_params``), which is
also what its ``repr`` shows.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from eebench.errors import InputError


def constructor_options(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the keyword parameters of ``cls`` that have a default, in
    signature order (a required parameter, such as a random policy's base, is not an
    option: it cannot be written as a value)."""
    out: dict[str, Any] = {}
    for p in inspect.signature(cls).parameters.values():
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty:
            out[p.name] = p.default
    return out


_SEQUENCE = re.compile(r"\b(?:Sequence|list|tuple)\[(?:[^\[\]]|\[[^\[\]]*\])*\]")
_TOML_TYPES = (("bool", bool), ("int", int), ("float", float), ("str", str), ("Sequence", list),
               ("list", list), ("tuple", list))


def option_types(cls: type, name: str) -> tuple[type, ...]:
    """The TOML value types option ``name`` of ``cls`` takes, read from its annotation
    (``int``, ``float``, ``str``, ``bool``, sequences as arrays); empty when it says none
    of those (the constructor then checks the value itself)."""
    ann = inspect.signature(cls).parameters[name].annotation
    text = ann if isinstance(ann, str) else getattr(ann, "__name__", str(ann))
    text = _SEQUENCE.sub("Sequence", text)  # the items' types are not the option's
    words = set(text.replace("[", " ").replace("]", " ").replace("|", " ").replace(",", " ")
                .replace(".", " ").split())
    return tuple(dict.fromkeys(t for word, t in _TOML_TYPES if word in words))


def check_options(kind: str, name: str, cls: type, given: dict[str, Any]) -> None:
    """Fail in one line when ``given`` holds a name ``cls`` does not take, listing those it
    takes."""
    accepted = list(constructor_options(cls))
    unknown = [k for k in given if k not in accepted]
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], accepted, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(
            f"{kind} {name!r} has no option{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))}{hint}; it accepts: {', '.join(accepted) or 'none'}"
        )


def constructor_parameters(cls: type) -> dict[str, Any]:
    """``{name: default}`` of every keyword parameter of ``cls`` (``inspect.Parameter.empty``
    for a required one), in signature order."""
    return {p.name: p.default for p in inspect.signature(cls).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


class Estimator:
    """``get_params`` and a readable ``repr`` from the constructor's signature."""

    def get_params(self) -> dict[str, Any]:
        """The parameters this object was built with (scikit-learn style), by name."""
        return {name: getattr(self, name, None if default is inspect.Parameter.empty else default)
                for name, default in constructor_parameters(type(self)).items()}

    def __repr__(self) -> str:
        defaults = constructor_parameters(type(self))
        given = [f"{k}={v!r}" for k, v in self.get_params().items()
                 if defaults[k] is inspect.Parameter.empty or not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(given)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a plain truth value
        return a is b
