"""The per-(task, organisation) lock that keeps two workers off one task: renewed while held,
broken at once when its holder's process is gone, never broken across pid spaces."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from pcn.runtime.taskstate import TaskLock, _process_space
from tests.nodes import RedisServer


@pytest.fixture(scope="module")
def r(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    server = RedisServer(tmp_path_factory.mktemp("lock-redis"))
    yield redis.Redis(port=server.port)
    server.stop()


def ctx_for(r: redis.Redis) -> Any:
    return SimpleNamespace(redis=r, key=lambda *parts: "pcn:test:" + ":".join(str(p) for p in parts))


def _hold(port: int, task_id: int, ready: Any) -> None:
    lock = TaskLock(ctx_for(redis.Redis(port=port)), task_id, ttl=30.0)
    lock.__enter__()
    ready.set()
    time.sleep(600)


def test_the_lock_is_renewed_while_held(r: redis.Redis) -> None:
    with TaskLock(ctx_for(r), 1, ttl=1.0):
        time.sleep(2.5)  # more than twice the ttl
        with pytest.raises(TimeoutError):
            TaskLock(ctx_for(r), 1, ttl=0.3).__enter__()
        assert r.exists("pcn:test:lock:1")
    assert not r.exists("pcn:test:lock:1")


def test_a_lock_whose_holder_was_killed_is_taken_at_once(r: redis.Redis) -> None:
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Event()
    holder = spawn.Process(target=_hold, args=(r.connection_pool.connection_kwargs["port"], 2, ready))
    holder.start()
    assert ready.wait(60)
    token = r.get("pcn:test:lock:2").decode()
    assert f"|{holder.pid}|" in token
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    t0 = time.monotonic()
    with TaskLock(ctx_for(r), 2, ttl=30.0):
        took = time.monotonic() - t0
        assert r.get("pcn:test:lock:2").decode() != token
    assert took < 5.0  # not the 30 s the dead holder's ttl had left


def test_a_holder_in_another_pid_space_is_left_alone(r: redis.Redis) -> None:
    """A pid from another machine or container says nothing about processes here."""
    dead_pid = 2**22 + 17  # above any pid_max default: no such process here
    assert _process_space() != "another-boot/pid:[1]"
    r.set("pcn:test:lock:3", f"another-boot/pid:[1]|{dead_pid}|abcd", px=20_000)
    with pytest.raises(TimeoutError):
        TaskLock(ctx_for(r), 3, ttl=0.3).__enter__()
    assert r.get("pcn:test:lock:3").decode().startswith("another-boot")
    # and in our own pid space the same dead pid would be broken
    r.set("pcn:test:lock:3", f"{_process_space()}|{dead_pid}|abcd", px=20_000)
    with TaskLock(ctx_for(r), 3, ttl=0.3):
        assert str(os.getpid()) in r.get("pcn:test:lock:3").decode()
