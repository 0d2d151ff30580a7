"""Where the developers' real test data lies (``../shared/data``, or ``$EEBENCH_SHARED_DATA``).

One definition for every test module; tests that read it skip when it is absent, as it is
on a user's machine.
"""

from __future__ import annotations

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("EEBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
