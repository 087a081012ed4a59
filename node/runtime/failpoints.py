"""Crash points for fault tests: a worker killed at an exact step of a task's run."""

from __future__ import annotations

import os
from pathlib import Path


def failpoint(name: str) -> None:
    """Crash this worker process here, once, when $PCN_FAILPOINTS names this point
    ("name=/path/marker"; the marker file records that it fired). Fault tests use it to kill
    a worker at an exact step, which a SIGKILL from outside can only hit by chance."""
    spec = os.environ.get("PCN_FAILPOINTS", "")
    for entry in filter(None, spec.split(",")):
        point, _, marker = entry.partition("=")
        if point == name and marker and not Path(marker).exists():
            Path(marker).write_text(f"{os.getpid()}\n")
            os._exit(137)
