"""Where the suite's time goes: wall time and CPU time per test file, opt-in.

`PCN_TEST_CPU_REPORT=1 make test` (tests/conftest.py registers it) adds a table at the end of
the run: each file's wall seconds, the CPU seconds of the pytest process itself
and of the child processes it reaped meanwhile (node processes, Redis, subprocess CLIs). With
pytest-xdist each worker measures its own files and sends them to the controller.

Children count when they are reaped, so a process that outlives its file (the session's anvil)
lands on the file during which it ends; the figures locate the heavy files, they are not an
exact bill.
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Generator
from typing import Any

import pytest

_KEY = "pcn_cpu_report"


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


class CpuReport:
    def __init__(self) -> None:
        self.files: dict[str, list[float]] = {}  # file -> [wall, own cpu, children cpu]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Generator[None, Any, None]:
        wall0, (own0, kids0) = time.perf_counter(), _cpu()
        yield
        own1, kids1 = _cpu()
        row = self.files.setdefault(item.location[0], [0.0, 0.0, 0.0])
        row[0] += time.perf_counter() - wall0
        row[1] += own1 - own0
        row[2] += kids1 - kids0

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        worker_output = getattr(session.config, "workeroutput", None)
        if worker_output is not None:  # an xdist worker: the controller prints
            worker_output[_KEY] = json.dumps(self.files)

    def pytest_testnodedown(self, node: Any, error: object) -> None:  # xdist controller
        for name, (wall, own, kids) in json.loads(node.workeroutput.get(_KEY, "{}")).items():
            row = self.files.setdefault(name, [0.0, 0.0, 0.0])
            row[0] += wall
            row[1] += own
            row[2] += kids

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.files:
            return
        tr = terminalreporter
        tr.section("time and CPU per test file (tests.cpu_report)")
        tr.write_line(f"{'wall s':>8} {'own cpu':>8} {'children':>8}  file")
        rows = sorted(self.files.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
        for name, (wall, own, kids) in rows:
            tr.write_line(f"{wall:8.1f} {own:8.1f} {kids:8.1f}  {name}")
        total = [sum(r[i] for r in self.files.values()) for i in range(3)]
        tr.write_line(f"{total[0]:8.1f} {total[1]:8.1f} {total[2]:8.1f}  total")
