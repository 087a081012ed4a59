"""The local hash-chained action log finds edited, removed and inserted entries."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from pcn.runtime.actionlog import GENESIS, ActionLog, LogCorrupt, parse_line, verify_entries


def _log(tmp_path: Path, n: int = 5) -> ActionLog:
    log = ActionLog(tmp_path / "actions.jsonl")
    for i in range(n):
        log.append("verified", task_id=i, outcome="ok", detail={"i": i})
    return log


def _rewrite(log: ActionLog, lines: list[str]) -> None:
    log.path.write_text("".join(line if line.endswith("\n") else line + "\n" for line in lines))


def test_chain_verifies_and_head_matches(tmp_path):
    log = _log(tmp_path)
    seq, head = log.verify()
    assert (seq, head) == log.head()
    assert seq == 5 and head != GENESIS
    first = next(log.entries())
    assert first.prev == GENESIS and first.seq == 1


def test_edit_is_found_at_the_edited_entry(tmp_path):
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    raw = json.loads(lines[2])
    raw["data"]["outcome"] = "refused"
    lines[2] = json.dumps(raw)
    _rewrite(log, lines)
    with pytest.raises(LogCorrupt) as err:
        log.verify()
    assert err.value.seq == 3 and "edited" in err.value.why


def test_removed_and_inserted_entries_are_found(tmp_path):
    log = _log(tmp_path)
    lines = log.path.read_text().splitlines()
    _rewrite(log, lines[:1] + lines[2:])
    with pytest.raises(LogCorrupt) as err:
        log.verify()
    assert err.value.seq == 3
    _rewrite(log, [*lines[:2], lines[1], *lines[2:]])
    with pytest.raises(LogCorrupt) as err:
        log.verify()
    assert err.value.seq == 2


def test_rehashed_forgery_still_breaks_against_the_anchor(tmp_path):
    """An attacker who re-hashes every later entry produces a valid chain with another head:
    only the on-chain anchor (seq, head) catches that, which is why nodes anchor it."""
    log = _log(tmp_path)
    anchored = log.head()
    entries = list(log.entries())
    forged = ActionLog(tmp_path / "forged.jsonl")
    for e in entries:
        data = dict(e.data, outcome="refused") if e.seq == 2 else e.data
        forged.append(e.action, e.task_id, **data)
    assert forged.verify()[0] == anchored[0]
    assert forged.verify()[1] != anchored[1]


def _append_many(path: str, n: int) -> None:
    log = ActionLog(Path(path))
    for i in range(n):
        log.append("message", task_id=1, i=i)


def test_concurrent_appends_from_processes_keep_the_chain(tmp_path):
    path = tmp_path / "actions.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), 25)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    entries = [parse_line(line) for line in path.read_text().splitlines()]
    assert verify_entries(entries)[0] == 75


def test_export_refuses_a_broken_log(tmp_path):
    log = _log(tmp_path)
    assert log.export(tmp_path / "out.jsonl") == 5
    log.path.write_text(log.path.read_text().replace('"ok"', '"no"', 1))
    with pytest.raises(LogCorrupt):
        log.export(tmp_path / "out2.jsonl")
    log.path.write_text("not json\n")
    with pytest.raises(LogCorrupt):
        log.verify()
