"""The chain watcher: follows pcn's events from a persisted cursor and queues, on this
organisation's Celery queue, every authorised task it takes part in.

At-least-once: the cursor advances only after the handler returned, so a watcher killed
between queueing and saving the cursor queues the task again on restart — harmless,
because task execution is idempotent per (task, organisation, step).

A sweep closes the remaining gap: a task message can still vanish after it was queued
(a broker wiped or restored from an old snapshot, a message rejected while Redis was
away). Every `sweep_interval` the watcher looks at the tasks it queued that this
organisation has not finished on chain; one that no worker holds, that is not in the
queue, and whose progress has been silent for `requeue_after` seconds is queued again.
"""

from __future__ import annotations

import json
import logging
import signal
import time
import uuid
from types import FrameType

import redis

from pcn.chain.errors import ChainError
from pcn.chain.events import ChainEvent
from pcn.chain.types import ParticipantState
from pcn.runtime.context import NodeContext
from pcn.runtime.taskstate import holds_intermediates

log = logging.getLogger("pcn.watcher")


_RUN_MESSAGE_PREFIX = "pcn-run-"


def run_message_id(task_id: int) -> str:
    """The Celery message id of a run of `task_id`: unique per message, and naming the task."""
    return f"{_RUN_MESSAGE_PREFIX}{task_id}-{uuid.uuid4().hex}"


def task_of_run_message(message_id: str) -> int | None:
    """The task a run message id names (None for any other message)."""
    if not message_id.startswith(_RUN_MESSAGE_PREFIX):
        return None
    task, _, _nonce = message_id[len(_RUN_MESSAGE_PREFIX) :].partition("-")
    return int(task) if task.isdecimal() else None


class Watcher:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.ledger = ctx.ledger
        self.me = ctx.address.lower()
        self.reader = self.ledger.event_reader(
            ctx.config.data_path / "watcher.cursor", confirmations=max(0, ctx.config.confirmations - 1)
        )
        self._stop = False
        self._last_sweep = time.monotonic()

    def _queue(self, task_id: int) -> None:
        from pcn.runtime.worker import RUN_TASK, app

        self.ctx.redis.hset(self.ctx.key("open-tasks"), str(task_id), f"{time.time():.3f}")
        app.send_task(RUN_TASK, args=[task_id], queue=self.ctx.queue, task_id=run_message_id(task_id))

    def handle(self, ev: ChainEvent) -> None:
        if ev.contract != "TaskManager" or ev.name != "TaskAuthorised":
            return
        task_id = int(ev.args["taskId"])
        participants = [p.lower() for p in self.ledger.task_participants(task_id)]
        if self.me not in participants:
            return
        if self.ctx.redis.hexists(self.ctx.key("open-tasks"), str(task_id)):
            # The same authorisation read again (the reader re-reads blocks after a chain
            # restart or a reorg): the task is queued already, and the sweep re-queues it if
            # its run message was lost.
            log.info("task %s: authorisation seen again; already queued", task_id)
            return
        self._queue(task_id)
        self.ctx.log.append("queued", task_id, block=ev.block_number, tx=ev.tx_hash)
        log.info("queued task %s", task_id)

    def _in_queue(self) -> set[int]:
        """Task ids of the run messages waiting in this organisation's Celery queue, read from
        the message ids the watcher chose (`run_message_id`), not from Celery's display fields."""
        ids: set[int] = set()
        for raw in self.ctx.redis.lrange(self.ctx.queue, 0, -1):
            try:
                message_id = json.loads(raw)["headers"]["id"]
            except (ValueError, KeyError, TypeError):
                continue
            task_id = task_of_run_message(message_id) if isinstance(message_id, str) else None
            if task_id is not None:
                ids.add(task_id)
        return ids

    def sweep(self) -> list[int]:
        """Queue again the open tasks whose message was lost; return their ids."""
        r, cfg = self.ctx.redis, self.ctx.config
        open_key = self.ctx.key("open-tasks")
        open_tasks = {int(k): float(v) for k, v in r.hgetall(open_key).items()}
        if not open_tasks:
            return []
        waiting = self._in_queue()
        requeued = []
        now = time.time()
        for task_id, queued_at in sorted(open_tasks.items()):
            state = self.ledger.participant_state(task_id, self.me)
            terminal = self.ledger.task(task_id).status.is_final or state in (
                ParticipantState.RECEIPTED,
                ParticipantState.REFUSED,
                ParticipantState.DROPPED,
            )
            if terminal and not holds_intermediates(self.ctx, task_id):
                r.hdel(open_key, str(task_id))
                continue
            # not finished here, or finished elsewhere while this node still holds its inputs
            if task_id in waiting or r.exists(self.ctx.key("lock", task_id)):
                continue
            updated = r.hget(self.ctx.key("progress", task_id), "updated")
            last_sign = max(queued_at, float(updated) if updated else 0.0)
            if now - last_sign < cfg.requeue_after:
                continue
            self._queue(task_id)
            self.ctx.log.append("requeued", task_id, silent_for=round(now - last_sign, 1))
            log.warning("task %s: its run message was lost (silent %.0f s); queued again", task_id, now - last_sign)
            requeued.append(task_id)
        return requeued

    def run_forever(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        backoff = self.ctx.config.poll_interval
        while not self._stop:
            try:
                self.reader.poll(self.handle)
                if time.monotonic() - self._last_sweep >= self.ctx.config.sweep_interval:
                    self._last_sweep = time.monotonic()
                    self.sweep()
                backoff = self.ctx.config.poll_interval
            except (ChainError, redis.RedisError) as exc:  # chain or Redis briefly away: keep the cursor, retry
                log.warning("watcher poll failed: %s", exc)
                backoff = min(5.0, backoff * 2)
            except Exception:  # a bug: say so with its traceback, but keep watching for the other tasks
                log.exception("watcher poll failed")
                backoff = min(5.0, backoff * 2)
            time.sleep(backoff)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watcher %(levelname)s %(message)s")
    Watcher(NodeContext.from_env()).run_forever()


if __name__ == "__main__":
    main()
