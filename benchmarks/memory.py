"""Resident memory of the running process, for benchmarks that measure peak memory in a
child process (imported by the children too: each benchmark puts this folder on sys.path)."""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def memory_now() -> tuple[int, int, str]:
    """(resident bytes now, peak resident bytes, source). Linux: VmRSS and VmHWM of this
    process's own memory (they start afresh at exec); elsewhere ru_maxrss for both (which
    a child started by vfork inherits from its parent, so run this before the parent grows)."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
            if ":" in line
        )
        rss = int(fields["VmRSS"].split()[0]) * 1024
        hwm = int(fields["VmHWM"].split()[0]) * 1024
        return rss, hwm, "VmHWM"
    except (OSError, KeyError, ValueError):
        return max_rss(), max_rss(), "ru_maxrss"


def max_rss(who: int = resource.RUSAGE_SELF) -> int:
    """``ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
