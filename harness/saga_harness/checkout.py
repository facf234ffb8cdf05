"""Where this checkout is, for the processes the harness starts.

The product's packages sit at the repository's root and the harness's under ``harness/``.
Child processes get both on ``PYTHONPATH`` (and the root as their working directory), so
they run this checkout's code even when the venv's editable install points at another one.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PYTHONPATH", "REPO"]

HARNESS = Path(__file__).resolve().parents[1]
REPO = HARNESS.parent
PYTHONPATH = os.pathsep.join([str(REPO), str(HARNESS)])
