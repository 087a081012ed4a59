"""The watcher queues each authorised task once, however often it reads the event."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from pcn.chain.events import ChainEvent
from pcn.devnet.localnet import RedisServer
from pcn.runtime.watcher import Watcher

ME = "0x" + "ab" * 20


class _Log:
    def __init__(self) -> None:
        self.entries: list[tuple[str, int]] = []

    def append(self, action: str, task_id: int, **_: Any) -> None:
        self.entries.append((action, task_id))


def _authorised(task_id: int, block: int) -> ChainEvent:
    return ChainEvent(
        "TaskManager", "TaskAuthorised", {"taskId": task_id}, block, "0x" + "00" * 32, "0x" + "01" * 32, 0
    )


@pytest.fixture
def server(tmp_path: Path):
    srv = RedisServer(tmp_path / "redis")
    yield srv
    srv.stop()


def test_an_authorisation_read_twice_queues_the_task_once(server: RedisServer, monkeypatch) -> None:
    """After an anvil restart from its state file (or a reorg) the event reader delivers the
    same TaskAuthorised again: one run message, one `queued` entry."""
    sent: list[int] = []
    ledger = SimpleNamespace(event_reader=lambda *a, **k: None, task_participants=lambda task_id: [ME])
    ctx = SimpleNamespace(
        ledger=ledger,
        address=ME,
        redis=redis.Redis(port=server.port),
        key=lambda name, task_id=None: f"pcn:test:{name}" + ("" if task_id is None else f":{task_id}"),
        log=_Log(),
        config=SimpleNamespace(data_path=Path("/nonexistent"), confirmations=0),
        queue="pcn.test",
    )
    fake_app = SimpleNamespace(send_task=lambda name, args, queue: sent.append(args[0]))
    monkeypatch.setattr("pcn.runtime.worker.app", fake_app)
    w = Watcher(ctx)  # type: ignore[arg-type]
    w.handle(_authorised(7, 10))
    w.handle(_authorised(7, 10))  # the same event, read again
    w.handle(_authorised(8, 11))
    assert sent == [7, 8]
    assert ctx.log.entries == [("queued", 7), ("queued", 8)]
