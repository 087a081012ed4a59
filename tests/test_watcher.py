"""The watcher queues each authorised task once, however often it reads the event."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from pcn.chain.events import ChainEvent
from pcn.devnet.localnet import RedisServer
from pcn.runtime.watcher import Watcher, run_message_id, task_of_run_message

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
    fake_app = SimpleNamespace(send_task=lambda name, args, queue, task_id: sent.append(args[0]))
    monkeypatch.setattr("pcn.runtime.worker.app", fake_app)
    w = Watcher(ctx)  # type: ignore[arg-type]
    w.handle(_authorised(7, 10))
    w.handle(_authorised(7, 10))  # the same event, read again
    w.handle(_authorised(8, 11))
    assert sent == [7, 8]
    assert ctx.log.entries == [("queued", 7), ("queued", 8)]


def test_the_sweep_finds_queued_run_messages_by_their_own_ids(server: RedisServer, monkeypatch) -> None:
    """The watcher tells which tasks wait in the Celery queue from the message ids it chose,
    through a real Celery producer and Redis broker: a message whose display string
    (`argsrepr`) says nothing useful still counts, a foreign message does not."""
    from celery import Celery

    from pcn.runtime.worker import RUN_TASK

    broker = f"redis://127.0.0.1:{server.port}/0"
    app = Celery("pcn-test", broker=broker)
    monkeypatch.setattr("pcn.runtime.worker.app", app)
    ctx = SimpleNamespace(
        ledger=SimpleNamespace(event_reader=lambda *a, **k: None),
        address=ME,
        redis=redis.Redis(port=server.port),
        key=lambda name, task_id=None: f"pcn:test:{name}" + ("" if task_id is None else f":{task_id}"),
        config=SimpleNamespace(data_path=Path("/nonexistent"), confirmations=0),
        queue="pcn.test",
    )
    w = Watcher(ctx)  # type: ignore[arg-type]
    w._queue(12)
    app.send_task(RUN_TASK, args=[13], queue="pcn.test", task_id=run_message_id(13), argsrepr="<hidden>")
    app.send_task(RUN_TASK, args=[14], queue="pcn.test")  # not the watcher's: no run id
    app.send_task("other.task", args=[], queue="pcn.test", task_id="pcn-run-x-1")
    assert ctx.redis.llen("pcn.test") == 4
    assert w._in_queue() == {12, 13}


@pytest.mark.parametrize(
    ("message_id", "task"),
    [("pcn-run-7-" + "a" * 32, 7), ("pcn-run-7", 7), ("pcn-run--1-x", None), ("pcn-run-x-1", None), ("abc", None)],
)
def test_run_message_ids_name_their_task(message_id: str, task: int | None) -> None:
    assert task_of_run_message(message_id) == task
    assert task_of_run_message(run_message_id(31)) == 31
