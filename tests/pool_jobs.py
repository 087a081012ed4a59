"""Jobs for the compute pool tests, in a module of their own: a spawned pool process imports
the module of the function it runs, and this one imports nothing heavy."""

from __future__ import annotations

import os
import signal
import time


def square_slowly(x: int) -> int:
    time.sleep(0.2)
    return x * x


def die(x: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer would, on every attempt
    return x
