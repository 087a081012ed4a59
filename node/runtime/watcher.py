"""The chain watcher: follows pcn's events from a persisted cursor and queues, on this
organisation's Celery queue, every authorised task it takes part in.

At-least-once: the cursor advances only after the handler returned, so a watcher killed
between queueing and saving the cursor queues the task again on restart — harmless,
because task execution is idempotent per (task, organisation, step).
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from pcn.chain.events import ChainEvent
from pcn.runtime.context import NodeContext

log = logging.getLogger("pcn.watcher")


class Watcher:
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.ledger = ctx.ledger
        self.me = ctx.address.lower()
        self.reader = self.ledger.event_reader(
            ctx.config.data_path / "watcher.cursor", confirmations=max(0, ctx.config.confirmations - 1)
        )
        self._stop = False

    def handle(self, ev: ChainEvent) -> None:
        if ev.contract != "TaskManager" or ev.name != "TaskAuthorised":
            return
        task_id = int(ev.args["taskId"])
        participants = [p.lower() for p in self.ledger.task_participants(task_id)]
        if self.me not in participants:
            return
        from pcn.runtime.worker import RUN_TASK, app

        app.send_task(RUN_TASK, args=[task_id], queue=self.ctx.queue)
        self.ctx.log.append("queued", task_id, block=ev.block_number, tx=ev.tx_hash)
        log.info("queued task %s", task_id)

    def run_forever(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self._stop = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        backoff = self.ctx.config.poll_interval
        while not self._stop:
            try:
                self.reader.poll(self.handle)
                backoff = self.ctx.config.poll_interval
            except Exception as exc:  # chain or Redis briefly away: keep the cursor, retry
                log.warning("watcher poll failed: %s", exc)
                backoff = min(5.0, backoff * 2)
            time.sleep(backoff)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watcher %(levelname)s %(message)s")
    Watcher(NodeContext.from_env()).run_forever()


if __name__ == "__main__":
    main()
