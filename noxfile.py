"""Developer sessions.

Sessions run in the environment nox itself runs in (the project's virtual
environment from the README), because a fresh environment per session would
download several GB of torch each time.
"""

from __future__ import annotations

import sys

import nox

# The interpreter nox runs under: the project's environment (see the module docstring).
PY = sys.executable

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "typecheck", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs)."""
    session.run(PY, "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole project."""
    session.run(PY, "-m", "ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package, configured in pyproject.toml ([tool.mypy]); eebench ships py.typed."""
    session.run(PY, "-m", "mypy", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks; each prints the times it measured and their ratio, in one run."""
    session.run(PY, "benchmarks/bench_solvers.py", *session.posargs)
    session.run(PY, "benchmarks/bench_policies.py")
    session.run(PY, "benchmarks/bench_startup.py")
    session.run(PY, "benchmarks/bench_speed.py")
    session.run(PY, "benchmarks/bench_store.py")
    session.run(PY, "benchmarks/bench_extract.py")


@nox.session
def figures(session: nox.Session) -> None:
    """Run the quickstart suite and rebuild its report (figures and tables)."""
    session.run(PY, "-m", "eebench.cli", "run", "suites/quickstart.toml")
