"""``python -m eebench`` (and ``torchrun -m eebench``) runs the command line."""

import sys

from eebench.cli import main

sys.exit(main())
