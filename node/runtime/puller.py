"""Pull mode: the node process that fetches, over an outbound connection, what waits for this
organisation at its relay, and hands it to its own mailbox (which listens on loopback only).

It runs when the organisation's config names a `relay_url`; the endpoint registered on chain
is then `<relay_url>/o/<address>`. Each fetched item goes to the local mailbox exactly as a
peer's delivery would (`POST /v1/tasks/<id>/messages` or `/params`): the mailbox checks the
envelope, the sender and the task as always. The puller acknowledges an item to the relay
once the mailbox gave a final answer: taken, a duplicate, or refused for good (a malformed,
forged or replayed envelope, a finished task). An answer that may change (the task is not
authorised yet on this node's view of the chain, a gap before an envelope still on its way,
the mailbox busy or restarting) keeps the item and everything after it at the relay, to be
tried again: nothing is lost and each link's order is kept.

Beside it, a `ProgressPublisher` thread puts this node's live progress of each task to the
relay whenever it changes, naming the accounts that may read it (the task's participants and
requester, from the chain), so a requester's progress request reaches it through the relay
as it would reach a mailbox.
"""

from __future__ import annotations

import base64
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from pcn.runtime.reqauth import sign_request

log = logging.getLogger("pcn.puller")

FETCH_WAIT = 20.0  # seconds the relay may hold a fetch open for the first item
RETRY_AFTER = 0.5  # seconds before an item with a temporary refusal is handed over again
UNKNOWN_TASK_PATIENCE = 120.0  # seconds an item of a task this node's chain view lacks is retried
RETRYABLE = {425, 429, 500, 502, 503, 504}
PUBLISH_EVERY = 0.5  # seconds between looks at this node's progress records


def relay_client(timeout: float, proxy: str = "") -> httpx.Client:
    """A client for the relay: through the configured outbound proxy if there is one (never
    one from the environment, so what the config says is what happens)."""
    return httpx.Client(timeout=timeout, trust_env=False, proxy=proxy or None)


def relay_route(relay_url: str, address: str) -> str:
    """The endpoint an outbound-only organisation registers on chain."""
    return f"{relay_url.rstrip('/')}/o/{address}"


class _Stopping(Exception):
    """Raised by the stop signal into a fetch that the relay may hold open for FETCH_WAIT."""


@dataclass
class Puller:
    """Fetches from `relay_url` what waits for `account` and hands it to `mailbox_url`."""

    relay_url: str
    mailbox_url: str
    account: LocalAccount
    client: httpx.Client = field(default_factory=lambda: relay_client(FETCH_WAIT + 10))
    local: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=FETCH_WAIT + 10, trust_env=False))
    handed: int = 0
    dropped: int = 0
    _stop: bool = False
    _fetching: bool = False  # a stop signal may end the wait at once (nothing is in hand yet)
    _unknown_since: dict[str, float] = field(default_factory=dict)

    @property
    def _base(self) -> str:
        return relay_route(self.relay_url, str(self.account.address))

    def _signed(self, method: str, path: str) -> dict[str, str]:
        return sign_request(self.account, method, path, 0)

    def fetch(self, wait: float = FETCH_WAIT) -> list[dict[str, Any]]:
        url = httpx.URL(self._base + "/fetch")
        r = self.client.get(url, params={"wait": wait}, headers=self._signed("GET", url.path))
        r.raise_for_status()
        items: list[dict[str, Any]] = r.json()["items"]
        return items

    def ack(self, upto: str) -> None:
        url = httpx.URL(f"{self._base}/ack/{upto}")
        self.client.post(url, headers=self._signed("POST", url.path)).raise_for_status()

    def _hand_over(self, item: dict[str, Any]) -> bool:
        """True when the mailbox's answer is final (the item can leave the relay)."""
        route = "messages" if item["kind"] == "message" else "params"
        body = base64.b64decode(item["body"])
        try:
            r = self.local.post(f"{self.mailbox_url}/v1/tasks/{item['task_id']}/{route}", content=body)
        except httpx.HTTPError as exc:
            log.warning("the local mailbox cannot be reached (%s); item %s stays at the relay", exc, item["id"])
            return False
        if r.status_code < 300:
            self._unknown_since.pop(item["id"], None)
            return True
        code = _error(r)
        if r.status_code in RETRYABLE or code == "gap":
            return False
        if code == "unknown-task":  # this node's view of the chain may lag the sender's
            first = self._unknown_since.setdefault(item["id"], time.monotonic())
            if time.monotonic() - first < UNKNOWN_TASK_PATIENCE:
                return False
        self._unknown_since.pop(item["id"], None)
        self.dropped += 1
        log.warning(
            "task %s: the mailbox refused relayed %s %s for good: %s %s",
            item["task_id"],
            item["kind"],
            item["id"],
            r.status_code,
            code,
        )
        return True

    def step(self, wait: float = FETCH_WAIT) -> int:
        """One fetch and hand-over; how many items left the relay."""
        # In id order, whatever order the relay answered in: an acknowledgement covers every
        # item up to the one it names, so it must never pass one not handed over yet.
        self._fetching = True
        try:
            fetched = self.fetch(wait)
        finally:
            self._fetching = False
        items = sorted(fetched, key=lambda i: tuple(int(x) for x in str(i["id"]).split("-")))
        last: str | None = None
        done = 0
        for item in items:
            if not self._hand_over(item):
                break
            last, done = item["id"], done + 1
        if last is not None:
            self.ack(last)
            self.handed += done
        if done < len(items):
            time.sleep(RETRY_AFTER)
        return done

    def run_forever(self) -> None:
        def stop(_sig: int, _frame: FrameType | None) -> None:
            self._stop = True
            if self._fetching:  # a long poll: end it now (a hand-over in progress is finished first)
                raise _Stopping

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        backoff = RETRY_AFTER
        while not self._stop:
            try:
                self.step()
                backoff = RETRY_AFTER
            except _Stopping:
                break
            except (httpx.HTTPError, ValueError, KeyError) as exc:  # the relay away or answering nonsense
                log.warning("fetching from the relay %s failed: %s", self.relay_url, exc)
                time.sleep(backoff)
                backoff = min(2.0, backoff * 2)  # the relay back soon: tasks wait on it


Snapshot = tuple[int, str, dict[str, str]]  # task id, its "updated" stamp, its progress fields


@dataclass
class ProgressPublisher:
    """Puts this node's progress of each task to the relay when it changed. `snapshots()`
    gives every task's current record; `readers(task_id)` the accounts that may read it."""

    relay_url: str
    account: LocalAccount
    snapshots: Callable[[], list[Snapshot]]
    readers: Callable[[int], list[str]]
    client: httpx.Client = field(default_factory=lambda: relay_client(10))
    _published: dict[int, str] = field(default_factory=dict)

    def publish_changed(self) -> int:
        done = 0
        for task_id, updated, fields in self.snapshots():
            if self._published.get(task_id) == updated:
                continue
            url = httpx.URL(f"{relay_route(self.relay_url, str(self.account.address))}/progress/{task_id}")
            body = json.dumps({"fields": fields, "readers": self.readers(task_id)}).encode()
            headers = sign_request(self.account, "PUT", url.path, task_id)
            self.client.put(url, content=body, headers=headers).raise_for_status()
            self._published[task_id] = updated
            done += 1
        return done

    def run(self, stop: Callable[[], bool]) -> None:
        while not stop():
            try:
                self.publish_changed()
            except Exception as exc:  # the relay or the chain away: try again, keep fetching
                log.warning("publishing progress to the relay failed: %s", exc)
            time.sleep(PUBLISH_EVERY)


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error", ""))
    except ValueError:
        return ""


def main() -> None:
    from pcn.runtime.context import NodeContext

    logging.basicConfig(level=logging.INFO, format="%(asctime)s puller %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    from pcn.runtime.taskstate import Progress, shared_fields

    ctx = NodeContext.from_env()
    cfg = ctx.config
    puller = Puller(
        cfg.relay_url, cfg.local_mailbox_url, ctx.keys.account, client=relay_client(FETCH_WAIT + 10, cfg.relay_proxy)
    )
    prefix = ctx.key("progress", "")

    def snapshots() -> list[Snapshot]:
        out: list[Snapshot] = []
        for key in ctx.redis.scan_iter(prefix + "*"):
            suffix = bytes(key).decode()[len(prefix) :]
            if suffix.isdigit():
                fields = shared_fields(Progress(ctx, int(suffix)).read())  # never the own figures
                out.append((int(suffix), fields.get("updated", ""), fields))
        return out

    readers_of: dict[int, list[str]] = {}

    def readers(task_id: int) -> list[str]:
        if task_id not in readers_of:
            task = ctx.ledger.task(task_id)
            readers_of[task_id] = sorted(
                {*(p.lower() for p in ctx.ledger.task_participants(task_id)), task.requester.lower()}
            )
        return readers_of[task_id]

    publisher = ProgressPublisher(
        cfg.relay_url, ctx.keys.account, snapshots, readers, client=relay_client(10, cfg.relay_proxy)
    )
    threading.Thread(target=publisher.run, args=(lambda: puller._stop,), daemon=True).start()
    puller.run_forever()


if __name__ == "__main__":
    main()
