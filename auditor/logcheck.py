"""An organisation's exported action log, checked against the chain.

The node's local log (pcn.runtime.actionlog) is a hash chain; the node anchors (sequence,
head hash) on chain. `verify_node_log` checks the exported log three ways, each break
located by sequence number and line:

1. its hash chain from genesis: an edited entry (content no longer matches its hash, or
   re-hashed so that its successor no longer links to it), a removed entry (a sequence
   number missing), an inserted entry (one the chain does not link to);
2. every on-chain anchor of the organisation: the log's entry at the anchored sequence must
   hash to the anchored head (a consistent rewrite of the whole tail is caught here), and
   an anchor past the log's end means entries were cut off;
3. the organisation's on-chain actions: every start, refusal and receipt up to its last
   anchor must have its log entry naming the same transaction; every transaction the log
   names for such an action (or a dataset registration) must be on chain; logged result
   and deletion hashes and refusal reasons must equal the chain's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pcn.auditor.chainview import chain_time, short
from pcn.auditor.store import EventRow, LogAnchor, LogCheck, ReceiptRow, Store, using_store
from pcn.chain.types import RefusalReason
from pcn.runtime.actionlog import GENESIS, Entry, LogCorrupt, entry_hash, parse_line, verify_entries

_TX = re.compile(r"^0x[0-9a-fA-F]{64}$")
MAX_CHAIN_PROBLEMS = 200


class LogProblemKind(StrEnum):
    UNREADABLE = "unreadable"  # a line that is not a log entry
    EDITED = "edited"  # content changed (hash no longer matches, or re-hashed and unlinked)
    REMOVED = "removed"  # a sequence number is missing
    INSERTED = "inserted"  # an entry that is not part of the chain
    ANCHOR_MISMATCH = "anchor-mismatch"  # the log's hash at an anchored sequence differs
    ANCHOR_BEYOND_END = "anchor-beyond-end"  # the node anchored more entries than the log has
    MISSING_ENTRY = "missing-entry"  # an on-chain action of the org without its log entry
    UNKNOWN_TX = "unknown-tx"  # the log claims an on-chain action the chain does not hold
    CONTENT_MISMATCH = "content-mismatch"  # the log's account of an action differs from the chain's


@dataclass(frozen=True)
class LogProblem:
    kind: LogProblemKind
    seq: int | None
    message: str
    line: int | None = None
    tx_hash: str | None = None
    task_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = str(self.kind)
        return d


@dataclass(frozen=True)
class LogVerdict:
    org: str
    entries: int
    head_seq: int
    head_hash: str
    chain_intact: bool  # the hash chain verifies from genesis (actionlog.verify_entries)
    anchors_checked: int
    actions_checked: int
    problems: tuple[LogProblem, ...]
    as_of_block: int | None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    def kinds(self) -> set[LogProblemKind]:
        return {p.kind for p in self.problems}

    def to_dict(self) -> dict[str, Any]:
        return {
            "org": self.org,
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "chain_intact": self.chain_intact,
            "anchors_checked": self.anchors_checked,
            "actions_checked": self.actions_checked,
            "first_bad_seq": self.first_bad_seq,
            "as_of_block": self.as_of_block,
            "problems": [p.to_dict() for p in self.problems],
        }


def read_log(path: Path | str) -> tuple[list[Entry], list[LogProblem]]:
    """Parse an exported log file; unreadable lines are reported, not fatal."""
    entries: list[Entry] = []
    problems: list[LogProblem] = []
    with Path(path).open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                entries.append(parse_line(line))
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(LogProblem(LogProblemKind.UNREADABLE, None, f"line {n} is not a log entry: {exc}", n))
    return entries, problems


def _walk_chain(entries: Sequence[Entry]) -> tuple[dict[int, Entry], list[LogProblem]]:
    """Follow the hash chain entry by entry and classify every break; return the entries
    accepted as the chain (by seq) and the problems found."""
    problems: list[LogProblem] = []
    chain: dict[int, Entry] = {}
    prev, expected = GENESIS, 1
    last: tuple[Entry, int] | None = None  # (entry, line) accepted last
    i = 0
    while i < len(entries):
        e, line = entries[i], i + 1
        self_ok = entry_hash(e.body()) == e.hash
        if e.seq < expected:
            # Two entries claim this place. The genuine one is the one its successor links to.
            nxt = entries[i + 1] if i + 1 < len(entries) else None
            if last is not None and last[0].seq == e.seq and nxt is not None and nxt.prev == e.hash != last[0].hash:
                problems.append(
                    LogProblem(
                        LogProblemKind.INSERTED,
                        last[0].seq,
                        f"line {last[1]}: an entry with sequence {last[0].seq} that the chain does not link to "
                        f"(inserted before the genuine entry {e.seq})",
                        last[1],
                        task_id=last[0].task_id,
                    )
                )
                chain[e.seq] = e
                last, prev = (e, line), e.hash
                if not self_ok:
                    problems.append(
                        LogProblem(
                            LogProblemKind.EDITED, e.seq, f"entry {e.seq}: content does not match its hash", line
                        )
                    )
            else:
                problems.append(
                    LogProblem(
                        LogProblemKind.INSERTED,
                        e.seq,
                        f"line {line}: a second entry with sequence {e.seq} (inserted)",
                        line,
                        task_id=e.task_id,
                    )
                )
            i += 1
            continue
        gap = e.seq > expected
        if gap:
            missing = f"{expected}" if e.seq == expected + 1 else f"{expected}…{e.seq - 1}"
            problems.append(
                LogProblem(
                    LogProblemKind.REMOVED, expected, f"entry {missing} is missing (removed) before line {line}", line
                )
            )
        if not self_ok:
            problems.append(
                LogProblem(
                    LogProblemKind.EDITED,
                    e.seq,
                    f"entry {e.seq} (line {line}, action {e.action!r}): its content does not match its hash (edited)",
                    line,
                    task_id=e.task_id,
                )
            )
        elif e.prev != prev and not gap:
            if last is not None:
                problems.append(
                    LogProblem(
                        LogProblemKind.EDITED,
                        last[0].seq,
                        f"entry {last[0].seq} (line {last[1]}) was rewritten and re-hashed: entry {e.seq} "
                        "still links to its original hash",
                        last[1],
                        task_id=last[0].task_id,
                    )
                )
            else:
                problems.append(
                    LogProblem(
                        LogProblemKind.EDITED, e.seq, f"entry {e.seq} does not start from the genesis hash", line
                    )
                )
        chain[e.seq] = e
        last, prev, expected = (e, line), e.hash, e.seq + 1
        i += 1
    return chain, problems


# The node's own on-chain task actions and the log action that records each (with its tx).
# Registrations may be sent by other clients than the node, so a `dataset-registered` entry
# is only checked for naming a real transaction, not required.
_ACTION_EVENTS = {"TaskStarted": "start", "TaskRefused": "refuse", "ReceiptSubmitted": "receipt"}


def verify_node_log(
    store: Store | str | Path,
    org: str,
    entries: Sequence[Entry] | Path | str,
    *,
    record: bool = False,
) -> LogVerdict:
    """Check an organisation's exported action log: its hash chain (each break located by
    sequence number), every on-chain anchor of that organisation (the log's hash at the
    anchored sequence must equal the anchored head; an anchor past the log's end means
    entries were cut off), and its on-chain actions (every start, refusal and receipt of
    the organisation must have its log entry naming the same transaction, and every
    transaction the log names must be on chain). With `record`, the verdict is stored for
    the anomaly detector and the dashboard."""
    with using_store(store) as st:
        account = to_checksum_address(org)
        problems: list[LogProblem] = []
        if isinstance(entries, (str, Path)):
            parsed, unreadable = read_log(entries)
            problems += unreadable
        else:
            parsed = list(entries)
        try:
            head_seq, head_hash = verify_entries(parsed)
            intact = True
        except LogCorrupt:
            intact = False
            head_seq = parsed[-1].seq if parsed else 0
            head_hash = parsed[-1].hash if parsed else GENESIS
        chain, chain_problems = _walk_chain(parsed)
        if len(chain_problems) > MAX_CHAIN_PROBLEMS:  # a renumbered tail breaks every entry after it
            rest = len(chain_problems) - MAX_CHAIN_PROBLEMS
            chain_problems = chain_problems[:MAX_CHAIN_PROBLEMS]
            chain_problems.append(
                LogProblem(
                    LogProblemKind.EDITED,
                    None,
                    f"{rest} further breaks of the hash chain after entry {chain_problems[-1].seq} are not listed",
                )
            )
        problems += chain_problems
        if not intact and not chain_problems:  # cannot happen: the walk is stricter; keep the verdict honest
            problems.append(LogProblem(LogProblemKind.EDITED, None, "the hash chain does not verify"))
        last_seq = max(chain, default=0)

        with st.read() as s:
            as_of, _ = chain_time(s)
            anchors = sorted(
                s.scalars(select(LogAnchor).where(LogAnchor.org == account)).all(), key=lambda a: a.sequence
            )
            # anchors
            good_seq, covered_block = 0, -1
            for a in anchors:
                if a.sequence > last_seq:
                    problems.append(
                        LogProblem(
                            LogProblemKind.ANCHOR_BEYOND_END,
                            last_seq + 1,
                            f"the node anchored entry {a.sequence} (block {a.block_number}) but the log ends at "
                            f"{last_seq}: entries {last_seq + 1}…{a.sequence} were removed",
                            tx_hash=a.tx_hash,
                        )
                    )
                    continue
                e = chain.get(int(a.sequence))
                if e is None:
                    problems.append(
                        LogProblem(
                            LogProblemKind.ANCHOR_MISMATCH,
                            int(a.sequence),
                            f"the node anchored entry {a.sequence} (block {a.block_number}), which the log lacks",
                            tx_hash=a.tx_hash,
                        )
                    )
                elif e.hash.lower() != a.head_hash.lower():
                    problems.append(
                        LogProblem(
                            LogProblemKind.ANCHOR_MISMATCH,
                            int(a.sequence),
                            f"entry {a.sequence} hashes to {short(e.hash, 14)}, the node anchored "
                            f"{short(a.head_hash, 14)} at block {a.block_number}: the log was changed between "
                            f"entries {good_seq + 1} and {a.sequence}",
                            tx_hash=a.tx_hash,
                        )
                    )
                else:
                    good_seq = int(a.sequence)
                covered_block = max(covered_block, a.block_number)

            # on-chain actions of the org vs log entries
            by_tx: dict[str, list[Entry]] = {}
            for e in parsed:
                tx = str(e.data.get("tx", ""))
                if _TX.match(tx):
                    by_tx.setdefault(tx.lower(), []).append(e)
            actions = s.scalars(
                select(EventRow)
                .where(EventRow.actor == account, EventRow.name.in_(list(_ACTION_EVENTS)))
                .order_by(EventRow.block_number, EventRow.log_index)
            ).all()
            checked = 0
            for ev in actions:
                if ev.block_number > covered_block:
                    continue  # after the node's last anchor that this log covers: not yet committed to
                checked += 1
                want = _ACTION_EVENTS[ev.name]
                matches = [e for e in by_tx.get(ev.tx_hash.lower(), []) if e.action == want]
                if not matches:
                    around = [e.seq for e in parsed if e.task_id == ev.task_id]
                    where = f"; the log's entries for that task are {around}" if around else ""
                    problems.append(
                        LogProblem(
                            LogProblemKind.MISSING_ENTRY,
                            None,
                            f"the chain holds the {want} of task {ev.task_id} (block {ev.block_number}) "
                            f"but the log has no entry for it{where}",
                            tx_hash=ev.tx_hash,
                            task_id=ev.task_id,
                        )
                    )
                    continue
                e = matches[0]
                if ev.task_id is not None and e.task_id != ev.task_id:
                    problems.append(
                        LogProblem(
                            LogProblemKind.CONTENT_MISMATCH,
                            e.seq,
                            f"entry {e.seq} names task {e.task_id}, its transaction acted on task {ev.task_id}",
                            tx_hash=ev.tx_hash,
                            task_id=ev.task_id,
                        )
                    )
                problems += _compare_action(e, ev)
            problems += _compare_deletions(s, list(chain.values()), account)
            onchain_txs = {
                tx.lower()
                for tx in s.scalars(select(EventRow.tx_hash).where(EventRow.tx_hash.in_([t for t in by_tx if t]))).all()
            }
            for tx, es in by_tx.items():
                for e in es:
                    if e.action in ("start", "refuse", "receipt", "dataset-registered") and tx not in onchain_txs:
                        problems.append(
                            LogProblem(
                                LogProblemKind.UNKNOWN_TX,
                                e.seq,
                                f"entry {e.seq} ({e.action} of task {e.task_id}) names transaction {short(tx, 14)}, "
                                f"which the chain does not hold (indexed to block {as_of})",
                                tx_hash=tx,
                                task_id=e.task_id,
                            )
                        )
        verdict = LogVerdict(
            account,
            len(parsed),
            head_seq,
            head_hash,
            intact,
            len(anchors),
            checked,
            tuple(sorted(problems, key=lambda p: (p.seq if p.seq is not None else 1 << 62, str(p.kind)))),
            as_of,
        )
        if record:
            record_log_verdict(st, verdict)
        return verdict


def _compare_action(e: Entry, ev: EventRow) -> list[LogProblem]:
    """Compare what the log says about an action with the chain's record of it."""
    out: list[LogProblem] = []

    def differ(what: str, log_value: str, chain_value: str) -> None:
        out.append(
            LogProblem(
                LogProblemKind.CONTENT_MISMATCH,
                e.seq,
                f"entry {e.seq} ({e.action} of task {e.task_id}): {what} {log_value!r} in the log, "
                f"{chain_value!r} on chain",
                tx_hash=ev.tx_hash,
                task_id=ev.task_id,
            )
        )

    def norm(v: Any) -> str:
        return str(v).lower().removeprefix("0x")

    if (
        ev.name == "ReceiptSubmitted"
        and "result_hash" in e.data
        and norm(e.data["result_hash"]) != norm(ev.args["resultHash"])
    ):
        differ("result hash", str(e.data["result_hash"]), str(ev.args["resultHash"]))
    if ev.name == "TaskRefused" and "reason" in e.data:
        reason = RefusalReason(int(ev.args["reason"])).name
        if str(e.data["reason"]) != reason:
            differ("refusal reason", str(e.data["reason"]), reason)
    return out


def _compare_deletions(s: Session, entries: Sequence[Entry], account: str) -> list[LogProblem]:
    """Every `delete` entry's hash must equal the deletion hash the org attested in its
    receipt for that task."""
    out: list[LogProblem] = []
    receipts = {r.task_id: r for r in s.scalars(select(ReceiptRow).where(ReceiptRow.participant == account)).all()}
    for e in entries:
        if e.action != "delete" or e.task_id is None or e.task_id not in receipts:
            continue
        logged = str(e.data.get("hash", "")).lower().removeprefix("0x")
        attested = receipts[e.task_id].deletion_hash.lower().removeprefix("0x")
        if logged != attested:
            out.append(
                LogProblem(
                    LogProblemKind.CONTENT_MISMATCH,
                    e.seq,
                    f"entry {e.seq}: the deletion logged for task {e.task_id} hashes to {short(logged, 12)}, "
                    f"the receipt attests {short(attested, 12)}",
                    tx_hash=receipts[e.task_id].tx_hash,
                    task_id=e.task_id,
                )
            )
    return out


def record_log_verdict(store: Store | str | Path, verdict: LogVerdict, checked_at: int | None = None) -> int:
    """Store a log verdict (for anomalies and the dashboard); return its id."""
    with using_store(store) as st, st.write() as s:
        row = LogCheck(
            org=verdict.org,
            checked_at=int(time.time()) if checked_at is None else checked_at,
            ok=verdict.ok,
            entries=verdict.entries,
            head_seq=verdict.head_seq,
            head_hash=verdict.head_hash,
            indexed_block=verdict.as_of_block if verdict.as_of_block is not None else -1,
            problems=[p.to_dict() for p in verdict.problems],
        )
        s.add(row)
        s.flush()
        return int(row.id)


def latest_log_checks(s: Session) -> list[LogCheck]:
    """The newest stored log verdict of every organisation."""
    newest = select(LogCheck.org, func.max(LogCheck.id).label("id")).group_by(LogCheck.org).subquery()
    return list(s.scalars(select(LogCheck).join(newest, LogCheck.id == newest.c.id)).all())
