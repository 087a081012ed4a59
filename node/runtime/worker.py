"""The organisation's Celery application: one queue per organisation on its own Redis.

Settings that make a killed worker lose nothing:
- `task_acks_late` + `task_reject_on_worker_lost`: a message is acknowledged only after
  the task function returned, and goes back to the queue when its worker process dies;
- `worker_prefetch_multiplier = 1`: a worker holds one task message at a time, so a slow
  task does not hide others from idle workers;
- `visibility_timeout`: how long Redis waits before redelivering an unacknowledged
  message whose worker vanished without a trace (the whole node killed); the watcher's
  sweep (`watcher.py`) re-queues such a task much sooner, once it has been silent for
  `requeue_after` seconds with no worker holding its lock;
- the task lock (`taskstate.TaskLock`) keeps a redelivered message from running beside a
  live one, and is broken at once when its holder's process is gone;
- transient failures (chain or Redis away) are retried inside the worker, not through a
  new broker message (see `run_task` below);
- every step of a task is idempotent against the chain (`execute.py`), so a redelivered
  message resumes the task rather than repeating it.

Start with `celery -A pcn.runtime.worker worker -Q pcn.<org>` and $PCN_CONFIG set
(`pcn node start` does this).
"""

from __future__ import annotations

import logging
import os
import time
from functools import cache

from celery import Celery, Task
from celery.signals import worker_process_init

from pcn.runtime.context import NodeContext

RUN_TASK = "pcn.run_task"
log = logging.getLogger("pcn.worker")


def make_app(broker_url: str, org: str) -> Celery:
    app = Celery(f"pcn-{org}", broker=broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=f"pcn.{org}",
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


@cache
def node() -> NodeContext:
    return NodeContext.from_env()


def _app_from_env() -> Celery:
    if not os.environ.get("PCN_CONFIG"):
        return make_app("memory://", "unconfigured")
    cfg = node().config
    return make_app(cfg.redis_url, cfg.name)


app = _app_from_env()


@worker_process_init.connect
def warm_code_hashes(**_: object) -> None:
    """Hash every built-in algorithm's code once when a worker process starts, so the check
    at each task start only re-stats the files (codehash caches per process)."""
    from pcn.algorithms import BUILTIN
    from pcn.algorithms.codehash import CodeHashError, warm

    try:
        warm(sorted(BUILTIN))
    except (CodeHashError, OSError) as exc:  # such an algorithm's tasks are refused when they come
        log.warning("could not hash the algorithms' code: %s", exc)
    import_task_code()


def import_task_code() -> None:
    """Import the task runner and every built-in protocol when a worker process starts (about
    0.5 s and 25 MiB), not when its first task arrives: the first task after a node start
    would otherwise pay it between its pick-up and its verification."""
    import pcn.runtime.execute  # noqa: F401
    from pcn.algorithms import BUILTIN, protocol_class

    for kind in sorted(BUILTIN):
        try:
            protocol_class(kind)
        except ImportError as exc:  # a broken algorithm is refused at its task, with the error
            log.warning("could not import algorithm %s: %s", kind, exc)


# Transient failures are retried inside the worker, not through `Task.retry`: a retry is a
# new message published to the broker, and when the broker itself (the organisation's Redis)
# is what went away, publishing fails and Celery drops the message — the task would be lost.
# Retrying in place keeps the original message unacknowledged (acks_late) until it is done.
TRANSIENT_ATTEMPTS = 40
TRANSIENT_MAX_BACKOFF = 30.0


@app.task(name=RUN_TASK, bind=True, max_retries=60)
def run_task(self: Task, task_id: int) -> dict[str, str]:
    from pcn.runtime.execute import TRANSIENT_ERRORS
    from pcn.runtime.execute import run_task as execute

    backoff = 1.0
    for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
        try:
            out = execute(node(), int(task_id))
            break
        except TimeoutError as exc:  # another worker holds the task: try again shortly
            raise self.retry(exc=exc, countdown=2) from exc
        except TRANSIENT_ERRORS as exc:  # chain or Redis away: back off and resume the task
            if attempt == TRANSIENT_ATTEMPTS:
                raise
            log.warning("task %s: %s; retrying in %.0f s (attempt %d)", task_id, exc, backoff, attempt)
            time.sleep(backoff)
            backoff = min(TRANSIENT_MAX_BACKOFF, backoff * 2)
    return {"task_id": str(out.task_id), "status": out.status, "reason": out.reason, "result": out.result_hash}
