"""Developer sessions.

Sessions run in the environment nox itself runs in (the project's virtual
environment from the README), because a fresh environment per session would
download several GB of torch each time.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (what CI runs)."""
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the whole project."""
    session.run("ruff", "check", ".")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks; each prints the times it measured and their ratio, in one run."""
    session.run("python", "benchmarks/bench_solvers.py", *session.posargs)


@nox.session
def figures(session: nox.Session) -> None:
    """Run the quickstart suite and rebuild its report (figures and tables)."""
    session.run("eebench", "run", "suites/quickstart.toml")
