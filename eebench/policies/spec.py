"""Policy spec strings: one line of text that names a whole exit policy with its options.

A comparison of many policies on one set of logits should not need a TOML file, so every
[[policies]] table of a suite can also be written as a spec:

    spec     := [score ["+" calibration] "/"] solver ["(" option ("," option)* ")"]
    option   := name "=" value
    value    := number | "[" [value ("," value)*] "]" | "quoted string" | bare string

for example ``confidence/geometric``, ``entropy+temperature/geometric(grid=msdnet)``,
``confidence+temperature/ga(population=128,generations=60)``,
``confidence/risk(epsilon=0.01,delta=0.1)``, ``eenet(budgets=[2,3,4],epochs=100)``,
``patience/sweep(grid=[1,2,3,4])``, ``oracle``, ``static``, ``random(like=confidence/geometric)``.

Calibration names may contain ``+`` themselves (``temperature+mie``), so the text before
``/`` is split after the longest registered score name it starts with, never guessed. A spec
parses to exactly the table a suite's [[policies]] entry validates to (the same schema checks
it), and ``format_policy_spec`` writes a table back as its canonical spec, which is also the
policy's label followed by its options.

That table's schema lives here too (``POLICY``): a few fixed keys (label, score, solver,
calibration, like, calibration_options) and, read from the registries when a table is
checked, every keyword parameter of every registered solver's and policy's constructor.
A solver registered in a notebook is therefore accepted by specs and suites at once, with
all of its options.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from eebench.errors import EebenchError, InputError, UnknownNameError
from eebench.policies.estimator import constructor_options, option_types
from eebench.registry import normalize_name
from eebench.schema import Field, SuiteError, Table, validate_table

_ANY = (str, int, float, list)


def _registered(kind: str) -> Callable[[Any], str | None]:
    """A check against the names the policies package registers (read when a table is
    validated, so a newly registered score, calibration or solver is accepted at once)."""

    def check(value: Any) -> str | None:
        from eebench.policies import list_calibrations, list_policy_solvers, list_scores

        names = {"score": list_scores, "solver": list_policy_solvers,
                 "calibration": list_calibrations}[kind]()
        return None if normalize_name(value) in names else f"must be one of {', '.join(names)}; got {value!r}"

    return check


def registered_choices(check: Callable[[Any], str | None]) -> list[str] | None:
    """The names a ``_registered`` check accepts (for listings), else None."""
    if not check.__qualname__.startswith("_registered.") or not check.__closure__:
        return None
    from eebench.policies import list_calibrations, list_policy_solvers, list_scores

    kind = dict(zip(check.__code__.co_freevars, (c.cell_contents for c in check.__closure__)))
    return {"score": list_scores, "solver": list_policy_solvers,
            "calibration": list_calibrations}[kind["kind"]]()


def _option_fields() -> dict[str, Field]:
    """One key per option of every registered solver and policy, from their constructors."""
    from eebench.policies.factory import list_policy_solvers, solver_class

    users: dict[str, list[tuple[str, Any]]] = {}
    types: dict[str, list[type]] = {}
    for name in list_policy_solvers():
        cls = solver_class(name)
        for opt, default in constructor_options(cls).items():
            users.setdefault(opt, []).append((name, default))
            found = option_types(cls, opt)
            types.setdefault(opt, []).extend(found or _ANY)
    return {
        opt: Field(tuple(dict.fromkeys(types[opt])), default=None,
                   doc="option of " + ", ".join(
                       f"{n} (default {d!r})" if d is not None else n for n, d in used))
        for opt, used in users.items()
    }


POLICY = Table(
    {
        "label": Field(str, default=None, doc="name in results (default: score[+calibration]/solver)"),
        "score": Field(str, default="confidence", check=_registered("score")),
        "solver": Field(str, default="geometric", check=_registered("solver")),
        "calibration": Field(str, default=None, check=_registered("calibration")),
        "like": Field(str, default=None, doc="random: the policy label whose exit fractions it copies"),
        "calibration_options": Field(dict, default=None,
                                     doc="options of the calibration's constructor by name, e.g. "
                                         "{weights = \"uniform\"} for mie (eebench policies "
                                         "lists them); no spec syntax"),
    },
    more=_option_fields,
)
"""A [[policies]] table: the fixed keys, then every option of every registered solver and
policy under its constructor's name (unset means the class's default)."""

_FIRST = ("grid", "thresholds", "budgets", "like")
_LAST = ("seed", "label")
"""Spec options are written grid and budgets first, then the class's own options in
signature order, seed and label last."""


def no_score(solver: str) -> bool:
    """Whether ``solver`` is a whole policy that thresholds no score (a baseline, or a policy
    that learns its own exit scores)."""
    from eebench.policies.factory import is_policy_class

    return is_policy_class(solver)


def table_policy_kind(p: Mapping[str, Any]) -> str:
    """What a table's policy is compared as: "learned", or a reference ("oracle", "random",
    "static"); see BasePolicy.kind."""
    if not no_score(p["solver"]):
        return "learned"
    from eebench.policies.factory import solver_class

    return str(getattr(solver_class(p["solver"]), "kind", "learned"))


def accepted_options(solver: str) -> tuple[str, ...]:
    """The option names a policy of ``solver`` accepts (in a spec's parentheses or beside
    the names in a [[policies]] table), in the order specs are written."""
    from eebench.policies.factory import policy_options, solver_key

    own = list(policy_options(solver))
    if solver_key(solver) == "random":
        own.append("like")
    keys = [k for k in _FIRST if k in own]
    keys += [k for k in own if k not in _FIRST and k not in _LAST]
    keys += [k for k in _LAST if k in own or k == "label"]
    return tuple(keys)


def policy_label(p: Mapping[str, Any]) -> str:
    """The name a policy goes by in results: ``score[+calibration]/solver`` or the policy's
    own name (baselines, learned scorers)."""
    if p.get("label"):
        return str(p["label"])
    if no_score(p["solver"]):
        return str(p["solver"])
    score = p["score"] + (f"+{p['calibration']}" if p.get("calibration") else "")
    return f"{score}/{p['solver']}"


def _options(p: Mapping[str, Any]) -> dict[str, Any]:
    from eebench.policies.factory import policy_options

    return {k: p[k] for k in policy_options(p["solver"]) if p.get(k) is not None}


def build_policy(p: Mapping[str, Any], tables: list[dict[str, Any]]) -> Any:
    """The unfitted policy of one validated [[policies]] table; ``tables`` are all the
    tables of its suite (a random policy copies the one its ``like`` names)."""
    from eebench.policies.factory import make_policy, solver_key

    if solver_key(p["solver"]) == "random":
        base = next(q for q in tables if policy_label(q) == p["like"])
        opts = {k: v for k, v in _options(base).items() if k != "seed"}
        return make_policy(base["score"], "random", calibration=base["calibration"],
                           seed=p.get("seed"), base_solver=base["solver"],
                           calibration_options=base.get("calibration_options"), **opts)
    return make_policy(p["score"], p["solver"], calibration=p["calibration"],
                       calibration_options=p.get("calibration_options"), **_options(p))


def normalize_policy_table(p: dict[str, Any]) -> None:
    """Names in their registered form (the registries match names in any case)."""
    from eebench.policies.factory import solver_key

    p["solver"] = solver_key(p["solver"])
    p["score"] = normalize_name(p["score"])
    if p["calibration"] is not None:
        p["calibration"] = normalize_name(p["calibration"])


def check_policy_table(p: Mapping[str, Any], where: str, path: str) -> None:
    """Options the table's solver does not take, and values its constructor refuses, fail
    with ``where``, the key path and (for a name) the options it does take."""
    accepted = accepted_options(p["solver"])
    fixed = set(POLICY.fields)
    for k, v in p.items():
        if k not in fixed and v is not None and k not in accepted:
            at = f"{path}.{k}" if path else k
            raise SuiteError(f"{where}: {at!r}: the {p['solver']} solver has no option {k!r}; "
                             f"it accepts: {', '.join(accepted)}")
    if p.get("calibration_options") and p["calibration"] in (None, "none"):
        raise SuiteError(f"{where}: {path + '.' if path else ''}calibration_options: options "
                         "given, but no calibration; name one with calibration = ...")
    if p["like"] is not None and "like" not in accepted:
        raise SuiteError(f"{where}: {path + '.' if path else ''}like: only a random policy "
                         "copies another policy's exit fractions")
    from eebench.policies.factory import solver_key

    if solver_key(p["solver"]) == "random":
        return  # its options are those of the policy it copies, checked there
    try:
        build_policy(p, [])
    except (EebenchError, ValueError, TypeError) as exc:  # a constructor refusing a value
        raise SuiteError(f"{where}: {path + ': ' if path else ''}{exc}") from None


_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = set(",()[]=\"'\\")


def split_policy_specs(text: str) -> list[str]:
    """Split ``"a,b(c=1,d=[2,3]),e"`` at its top-level commas: ``["a", "b(c=1,d=[2,3])", "e"]``."""
    parts, depth, quote, escaped, start = [], 0, None, False, 0
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise InputError(f"policy specs {text!r}: unbalanced {ch!r} at character {i + 1}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise InputError(f"policy specs {text!r}: an unclosed "
                         f"{'quote' if quote else 'bracket or parenthesis'}")
    parts.append(text[start:])
    specs = [p.strip() for p in parts]
    if not any(specs):
        raise InputError("no policy spec given; write e.g. confidence/geometric,oracle")
    if not all(specs):
        raise InputError(f"policy specs {text!r}: an empty spec (two commas in a row, or a "
                         "comma at either end)")
    return specs


class _Reader:
    """A cursor over one spec, with errors that quote the spec and say where."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def fail(self, what: str) -> InputError:
        return InputError(f"policy spec {self.text!r}: {what}")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, *chars: str) -> str:
        """Step over one of ``chars`` (and return it), or fail naming what was found."""
        ch = self.peek()
        if not ch or ch not in chars:
            found = repr(ch) if ch else "the end"
            raise self.fail(f"expected {' or '.join(map(repr, chars))} at character "
                            f"{self.pos + 1}, found {found}")
        self.pos += 1
        return ch

    def value(self, key: str, in_list: bool = False) -> Any:
        ch = self.peek()
        if ch == "[":
            self.pos += 1
            items: list[Any] = []
            if self.peek() == "]":
                self.pos += 1
                return items
            while True:
                items.append(self.value(key, in_list=True))
                if self.expect(",", "]") == "]":
                    return items
        if ch in "\"'":
            return self.quoted(key)
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] not in ",)]":
            if self.text[self.pos] in "([=\"'":
                raise self.fail(f"unexpected {self.text[self.pos]!r} in the value of {key} "
                                f"(character {self.pos + 1}); quote values that contain it")
            self.pos += 1
        token = self.text[start:self.pos].strip()
        if not token:
            raise self.fail(f"an empty item in the list of {key}" if in_list
                            else f"{key} has no value; write {key}=VALUE")
        if _INTEGER.fullmatch(token):
            return int(token)
        if _NUMBER.fullmatch(token):
            return float(token)
        return token

    def quoted(self, key: str) -> str:
        """A string in double quotes (JSON's escapes) or single quotes (backslash escapes
        the next character)."""
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == quote:
                if quote == "'":
                    return "".join(out)
                try:
                    return json.loads(self.text[start:self.pos])
                except json.JSONDecodeError as exc:
                    raise self.fail(f"the quoted value of {key} is not a valid string: "
                                    f"{exc.msg}") from None
            else:
                out.append(ch)
        raise self.fail(f"the quoted value of {key} is not closed")


def _lookup(kind: str, name: str, known: list[str], spec: str) -> str:
    key = name.strip().lower()
    if key in known:
        return key
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(f"policy spec {spec!r}: unknown {kind} {name.strip()!r}; known: "
                     f"{', '.join(known)}{hint}")


def _score_and_calibration(prefix: str, spec: str) -> tuple[str, str | None]:
    """Split ``score[+calibration]`` where the score is a registered name; calibrations may
    contain ``+`` themselves (``temperature+mie``)."""
    from eebench.policies import list_calibrations, list_scores

    scores, calibrations = list_scores(), list_calibrations()
    text = prefix.strip().lower()
    if text in scores:
        return text, None
    parts = text.split("+")
    heads = [i for i in range(len(parts) - 1, 0, -1) if "+".join(parts[:i]).strip() in scores]
    if not heads:
        return _lookup("score", parts[0], scores, spec), None  # raises, naming the scores
    score, calibration = "+".join(parts[:heads[0]]).strip(), "+".join(parts[heads[0]:]).strip()
    if not calibration:
        raise InputError(f"policy spec {spec!r}: nothing after '+'; name a calibration "
                         f"({', '.join(calibrations)}) or drop the '+'")
    return score, _lookup("calibration", calibration, calibrations, spec)


def parse_policy_spec(text: str) -> dict[str, Any]:
    """The validated [[policies]] table a spec stands for (every key, defaults filled in),
    e.g. ``parse_policy_spec("confidence+temperature/ga(population=128,generations=60)")``.

    Raises ValueError with one line that quotes the spec and says what is wrong: an unknown
    score, calibration or solver (with the known names), an option the solver does not take
    (with the ones it does), a value of the wrong type."""
    from eebench.policies import list_policy_solvers

    if not isinstance(text, str) or not text.strip():
        raise InputError("empty policy spec; write e.g. confidence/geometric")
    spec = text.strip()
    r = _Reader(spec)
    head_end = spec.find("(")
    head = spec if head_end < 0 else spec[:head_end]
    bad = sorted(set(head) & (_SPECIAL - {"("}))
    if bad:
        raise r.fail(f"unexpected {bad[0]!r} before the options; write "
                     "score[+calibration]/solver(name=value,...)")
    if head.count("/") > 1:
        raise r.fail("more than one '/'; write score[+calibration]/solver")
    prefix, _, solver_text = head.rpartition("/") if "/" in head else ("", "", head)
    solver = _lookup("solver", solver_text, list_policy_solvers(), spec)
    raw: dict[str, Any] = {"solver": solver}
    if "/" in head:
        if no_score(solver):
            why = {"eenet": "it learns its own exit scores",
                   "random": "it copies the exit fractions of a learned policy: "
                             f"{solver}(like=LABEL)"}.get(solver, "it reads no score")
            raise r.fail(f"the {solver} policy takes no score or calibration ({why}); "
                         f"write {solver} without '{prefix}/'")
        raw["score"], calibration = _score_and_calibration(prefix, spec)
        if calibration is not None:
            raw["calibration"] = calibration
    if head_end >= 0:
        r.pos = head_end + 1
        accepted = accepted_options(solver)
        if r.peek() != ")":
            while True:
                r.skip_space()
                m = _NAME.match(spec, r.pos)
                if not m:
                    raise r.fail(f"expected an option name at character {r.pos + 1}; write "
                                 "name=value")
                key, r.pos = m.group(), m.end()
                if key not in accepted:
                    close = difflib.get_close_matches(key, accepted, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise r.fail(f"the {solver} solver has no option {key!r}{hint}; it accepts: "
                                 f"{', '.join(accepted)}")
                if key in raw:
                    raise r.fail(f"option {key!r} is given twice")
                r.expect("=")
                raw[key] = r.value(key)
                if r.expect(",", ")") == ")":
                    break
        else:
            r.expect(")")
        if r.peek():
            raise r.fail(f"unexpected text after the options: {spec[r.pos:]!r}")
    try:
        table = validate_table(raw, POLICY, f"policy spec {spec!r}", "")
        normalize_policy_table(table)
        check_policy_table(table, f"policy spec {spec!r}", "")
    except SuiteError as exc:
        raise InputError(str(exc)) from None
    return table


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        raise InputError(f"a policy option cannot be true/false, got {value!r}")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    plain = (text and text == text.strip() and not set(text) & _SPECIAL
             and not _NUMBER.fullmatch(text))
    return text if plain else json.dumps(text, ensure_ascii=False)


def format_policy_spec(table: Mapping[str, Any]) -> str:
    """The canonical spec of a [[policies]] table: ``parse_policy_spec(format_policy_spec(t))``
    gives ``t`` back for every table a spec or a suite file validates to. Keys left at their
    defaults are not written; a key the solver does not use raises ValueError."""
    solver = str(table.get("solver", POLICY.fields["solver"].default))
    default = {k: f.default for k, f in POLICY.all_fields().items()}
    score = table.get("score", default["score"])
    calibration = table.get("calibration")
    if table.get("calibration_options"):
        raise InputError("calibration options have no spec syntax; give the policy as a table "
                         "(a suite's [[policies]] or a dict passed to eebench.compare.compare)")
    if no_score(solver):
        if calibration is not None or score != default["score"]:
            raise InputError(f"the {solver} policy takes no score or calibration, but the table "
                             f"sets score = {score!r}, calibration = {calibration!r}")
        head = solver
    else:
        head = f"{score}{'+' + calibration if calibration else ''}/{solver}"
    accepted = accepted_options(solver)
    ignored = {"score", "calibration", "solver", *accepted}
    unused = [k for k, v in table.items() if k not in ignored and v != default.get(k)]
    if unused:
        raise InputError(f"the {solver} solver does not use {', '.join(unused)}; it accepts: "
                         f"{', '.join(accepted)}")
    opts = [f"{k}={_format_value(table[k])}" for k in accepted
            if table.get(k, default.get(k)) != default.get(k)]
    return head + (f"({','.join(opts)})" if opts else "")
