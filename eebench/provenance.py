"""What produced a number: package versions and the eebench source revision.

A curve made with another torch (kernels), timm (layer defaults), fvcore or
ptflops (counting rules), numpy/scipy (softmax, optimisers), deap (the GA's
random stream) or pandas (CSV formatting) can differ from one made today. So
every results folder and store entry records the versions of every package
that can change a number, and the git commit of eebench itself when it runs
from a checkout, so that anyone can install the same set again
(``requirements/locked.txt`` documents how).

Versions are read from package metadata: nothing heavy is imported.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

#: Packages whose version can change a number eebench prints.
NUMBER_PACKAGES = (
    "eebench", "torch", "torchvision", "timm", "fvcore", "ptflops", "numpy", "scipy", "deap",
    "pandas", "scikit-learn",
)


@functools.lru_cache(maxsize=1)
def git_revision() -> str | None:
    """``<commit>`` (plus ``-dirty`` with uncommitted changes) of the eebench checkout this
    code runs from; None for an installed wheel or where git is unavailable."""
    src = Path(__file__).resolve().parent.parent
    if not (src / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def package_versions() -> dict[str, str]:
    """Python's version and the installed version of every package in NUMBER_PACKAGES (those
    not installed are left out), plus ``eebench_git`` when running from a git checkout."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in NUMBER_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    if "eebench" not in out:
        from eebench import __version__

        out["eebench"] = __version__
    rev = git_revision()
    if rev:
        out["eebench_git"] = rev
    return out
