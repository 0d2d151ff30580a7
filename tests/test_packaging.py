"""The dependency contract: pyproject's lower bounds are the tested minimum set, and the lock
pins every dependency, so that an install a year from now can still reproduce a result."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            out[re.sub(r"[-_.]+", "-", name).lower()] = version
    return out


def _floors() -> dict[str, str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([^,;\s]+)", dep.strip())
        assert m, f"pyproject dependency {dep!r} must be NAME>=FLOOR (one tested lower bound)"
        out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_lower_bounds_are_the_tested_minimum_set() -> None:
    assert _floors() == _pins(ROOT / "requirements" / "minimum.txt")


def test_the_lock_pins_every_dependency_at_or_above_its_floor() -> None:
    from packaging.version import Version

    locked = _pins(ROOT / "requirements" / "locked.txt")
    for name, floor in _floors().items():
        assert name in locked, f"requirements/locked.txt does not pin {name}"
        assert Version(locked[name]) >= Version(floor), (name, locked[name], floor)


def test_results_record_every_package_that_can_change_a_number() -> None:
    from eebench.provenance import NUMBER_PACKAGES, package_versions

    versions = package_versions()
    for pkg in ("torch", "timm", "fvcore", "ptflops", "numpy", "scipy", "deap", "pandas"):
        assert pkg in NUMBER_PACKAGES and versions.get(pkg), pkg
    assert versions["eebench"]
    if (ROOT / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", versions["eebench_git"])
