"""The joint-statistics protocol, driven in-process with run_local."""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from pcn.algorithms import protocol_class
from pcn.algorithms.base import Message, PartyContext, ProtocolError, run_local
from pcn.algorithms.stats.protocol import COMMIT_DOMAIN, RESULT_DOMAIN, StatsProtocol
from pcn.data.errors import DataError
from pcn.data.table import Table

EDGES = [-1000.0, -10.0, 0.0, 10.0, 100.0, 1000.0]
ALL_STATS = ["count", "sum", "mean", "variance", "histogram"]
GROUPS = ["north", "south", "east"]


def names(n: int) -> list[str]:
    return [f"0xparty{i}" for i in range(n)]


def seed_for(name: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"seed/{name}/{salt}".encode()).digest()


def make_parties(
    tables: list[Table],
    params: dict[str, Any],
    recipient: int = 0,
    task_id: int = 42,
    seed_salt: str = "",
    progress: Callable[[float, str], None] | None = None,
) -> list[StatsProtocol]:
    who = names(len(tables))
    return [
        StatsProtocol.create(
            PartyContext(task_id, me, who, who[recipient], params, seed_for(me, seed_salt), progress),
            table,
        )
        for me, table in zip(who, tables, strict=True)
    ]


def cells(values: np.ndarray) -> list[str | None]:
    return [f"{x:.6f}" for x in values.tolist()]


def random_tables(rng: np.random.Generator, n: int, grouped: bool = True) -> list[Table]:
    """Party datasets of different sizes with negative values, outliers, missing cells and
    group labels that are not in the public list (and nulls)."""
    tables = []
    for _ in range(n):
        rows = int(rng.integers(50, 400))
        values: list[str | None] = cells(
            np.concatenate([rng.normal(5.0, 300.0, rows - 10), rng.uniform(-5e3, 5e3, 10)])
        )
        for i in rng.choice(rows, size=rows // 10, replace=False).tolist():
            values[i] = None if i % 2 else ""
        columns: dict[str, list[str | None]] = {"income": values}
        if grouped:
            labels: list[str | None] = list(rng.choice([*GROUPS, "west"], rows).tolist())
            for i in rng.choice(rows, size=5, replace=False).tolist():
                labels[i] = None
            columns["region"] = labels
        tables.append(Table(columns))
    return tables


def plaintext(tables: list[Table], grouped: bool) -> dict[str, dict[str, Any]]:
    """The reference: numpy over the concatenated rows."""
    raw = [c for t in tables for c in t.column("income")]
    labels = [c for t in tables for c in t.column("region")] if grouped else ["__all__"] * len(raw)
    missing = np.array([c is None or c == "" for c in raw])
    values = np.array([np.nan if m else float(c) for c, m in zip(raw, missing, strict=True)])
    group_names = [*GROUPS, "__other__"] if grouped else ["__all__"]
    key = np.array([g if g in group_names else "__other__" for g in labels])
    out = {}
    for g in group_names:
        sel = key == g
        x = values[sel & ~missing]
        under = int(np.sum(x < EDGES[0]))
        over = int(np.sum(x >= EDGES[-1]))
        inner = np.histogram(x[(x >= EDGES[0]) & (x < EDGES[-1])], bins=EDGES)[0].tolist()
        out[g] = {
            "count": len(x),
            "missing": int(np.sum(sel & missing)),
            "sum": float(np.sum(x)),
            "mean": float(np.mean(x)) if len(x) else None,
            "variance": float(np.var(x, ddof=1)) if len(x) > 1 else None,
            "histogram": [under, *inner, over],
        }
    return out


def close(a: float | None, b: float | None, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def result_json(parties: list[StatsProtocol]) -> dict[str, Any]:
    results = [p.result() for p in parties]
    assert sum(r is not None for r in results) == 1
    out = next(r for r in results if r is not None)
    assert out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":")).encode()  # canonical
    return json.loads(out)  # type: ignore[no-any-return]


def drive(parties: list[StatsProtocol], tamper: Callable[[Message], Message] | None = None) -> list[Message]:
    """run_local without shuffling, with a hook that can rewrite any message in flight."""
    by_name = {p.ctx.me: p for p in parties}
    queue: deque[Message] = deque(m for p in parties for m in p.start())
    transcript = []
    while queue:
        msg = queue.popleft()
        if tamper is not None:
            msg = tamper(msg)
        transcript.append(msg)
        queue.extend(by_name[msg.receiver].receive(msg))
    return transcript


# -- correctness -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("shuffle_seed", [None, 7])
@pytest.mark.parametrize("grouped", [True, False])
def test_matches_numpy_on_concatenated_data(n: int, shuffle_seed: int | None, grouped: bool) -> None:
    rng = np.random.default_rng(1000 + n)
    tables = random_tables(rng, n, grouped)
    params: dict[str, Any] = {"column": "income", "statistics": ALL_STATS, "histogram": {"edges": EDGES}}
    if grouped:
        params |= {"group_by": "region", "groups": GROUPS}
    parties = make_parties(tables, params, recipient=n - 1)
    run_local(parties, shuffle_seed=shuffle_seed)
    assert all(p.done for p in parties)
    res = result_json(parties)
    expected = plaintext(tables, grouped)
    assert res["parties"] == n and res["dp"] is None and res["column"] == "income"
    assert res["histogram_edges"] == EDGES
    assert set(res["groups"]) == set(expected)
    for g, want in expected.items():
        got = res["groups"][g]
        assert got["count"] == want["count"] and got["missing"] == want["missing"]
        assert got["histogram"] == want["histogram"]
        assert close(got["sum"], want["sum"]), (g, got["sum"], want["sum"])
        assert close(got["mean"], want["mean"]) and close(got["variance"], want["variance"])
    assert sum(g["missing"] for g in res["groups"].values()) > 0
    assert sum(g["histogram"][0] for g in res["groups"].values()) > 0  # some values below -1000


def test_default_statistics_and_single_group() -> None:
    tables = [Table({"income": ["1", "2", None]}), Table({"income": ["-3.5", ""]}), Table({"income": ["4"]})]
    parties = make_parties(tables, {"column": "income"}, recipient=1)
    run_local(parties)
    res = result_json(parties)
    assert res["statistics"] == ["count", "sum", "mean", "variance"]
    assert res["group_by"] is None and res["histogram_edges"] is None
    x = np.array([1, 2, -3.5, 4])
    assert res["groups"] == {
        "__all__": {
            "count": 4,
            "missing": 2,
            "sum": 3.5,
            "mean": 0.875,
            "variance": pytest.approx(float(np.var(x, ddof=1)), rel=1e-12),
        }
    }


def test_only_requested_statistics_are_released() -> None:
    tables = [Table({"income": ["1", "2"]}), Table({"income": ["3"]})]
    parties = make_parties(tables, {"column": "income", "statistics": ["sum"]})
    run_local(parties)
    assert result_json(parties)["groups"]["__all__"] == {"sum": 6.0, "missing": 0}
    # the shared vector holds only missing and sum: nothing else reaches the recipient
    assert parties[0].layout.components == ("missing", "sum")


def test_empty_and_single_row_groups() -> None:
    tables = [
        Table({"income": ["5", None], "region": ["north", "south"]}),
        Table({"income": ["7"], "region": ["north"]}),
    ]
    params = {"column": "income", "group_by": "region", "groups": ["north", "south", "east"]}
    parties = make_parties(tables, params)
    run_local(parties, shuffle_seed=1)
    groups = result_json(parties)["groups"]
    assert groups["north"] == {"count": 2, "missing": 0, "sum": 12.0, "mean": 6.0, "variance": 2.0}
    assert groups["south"] == {"count": 0, "missing": 1, "sum": 0.0, "mean": None, "variance": None}
    assert groups["east"]["count"] == 0 and groups["__other__"]["count"] == 0


def test_exact_for_large_values_and_many_rows() -> None:
    """Values near 1e9 with 6 decimals: naive float variance loses everything; ours is exact."""
    rng = np.random.default_rng(5)
    tables, ints = [], []
    for rows in (3000, 5000, 2000):
        x = 999_999_000_000_000 + rng.integers(0, 2_000_000_000, rows)  # fixed-point, 6 decimals
        ints.extend(x.tolist())
        tables.append(Table({"income": [f"{v // 10**6}.{v % 10**6:06d}" for v in x.tolist()]}))
    parties = make_parties(tables, {"column": "income"}, recipient=2)
    run_local(parties)
    got = result_json(parties)["groups"]["__all__"]
    n, s, ss = len(ints), sum(ints), sum(v * v for v in ints)
    assert got["count"] == n
    assert got["sum"] == float(Fraction(s, 10**6))
    assert got["mean"] == float(Fraction(s, n * 10**6))
    assert got["variance"] == float(Fraction(n * ss - s * s, n * (n - 1) * 10**12))


def test_decimals_rounding_and_edges() -> None:
    """Inputs are rounded half-to-even to 10^-decimals; a value on an edge starts that bin."""
    tables = [Table({"income": ["0.5", "1.5", "2.49"]}), Table({"income": ["10", "-0.4"]})]
    params = {
        "column": "income",
        "decimals": 0,
        "statistics": ["sum", "histogram"],
        "histogram": {"edges": [0, 2, 10]},
    }
    parties = make_parties(tables, params)
    run_local(parties)
    got = result_json(parties)["groups"]["__all__"]
    # rounded: 0, 2, 2 | 10, -0 -> bins [under, [0, 2), [2, 10), over]
    assert got["sum"] == 14.0
    assert got["histogram"] == [0, 2, 2, 1]


# -- who learns what; commitments --------------------------------------------------------


@pytest.mark.parametrize("recipient", [0, 1, 2, 3])
def test_only_recipient_gets_result_and_commitments_agree(recipient: int) -> None:
    tables = random_tables(np.random.default_rng(recipient), 4)
    params = {"column": "income", "group_by": "region", "groups": GROUPS}
    parties = make_parties(tables, params, recipient=recipient)
    run_local(parties, shuffle_seed=recipient)
    for i, p in enumerate(parties):
        assert (p.result() is not None) == (i == recipient)
    commitments = {p.result_commitment() for p in parties}
    assert len(commitments) == 1
    commitment = commitments.pop()
    owner = parties[recipient]
    result, opening = owner.result(), owner.commitment_opening()
    assert result is not None and len(opening) == 32 * (len(parties) + 1)
    assert StatsProtocol.commitment_for(result, opening) == commitment
    commits, salt = opening[:-32], opening[-32:]
    h_r = hashlib.sha256(RESULT_DOMAIN + salt + result).digest()
    assert hashlib.sha256(COMMIT_DOMAIN + commits + h_r).digest() == commitment
    for p in parties:
        if p is not owner:
            assert p.commitment_opening() == commits
    assert StatsProtocol.commitment_for(result + b" ", opening) != commitment


def test_non_recipients_see_only_random_shares() -> None:
    tables = [Table({"income": ["1"] * 10}) for _ in range(3)]
    parties = make_parties(tables, {"column": "income"}, recipient=0)
    transcript = run_local(parties)
    kinds = {(m.round, m.kind) for m in transcript}
    assert kinds == {(1, "share"), (2, "commit"), (2, "agg"), (3, "result-hash")}
    # identical data at every party, yet every share payload differs
    shares = [m.payload for m in transcript if m.kind == "share"]
    assert len(shares) == 6 and len(set(shares)) == 6
    assert all(m.receiver == parties[0].ctx.me for m in transcript if m.kind == "agg")
    assert parties[0].result() is not None


def test_registered_as_builtin() -> None:
    assert protocol_class("stats") is StatsProtocol


def test_progress_is_reported() -> None:
    seen: list[tuple[float, str]] = []
    tables = [Table({"income": ["1", "2"]}) for _ in range(3)]
    parties = make_parties(tables, {"column": "income"}, progress=lambda f, what: seen.append((f, what)))
    run_local(parties)
    assert seen[0][0] == 0.0 and sum(f == 1.0 for f, _ in seen) == 3
    assert all(0.0 <= f <= 1.0 for f, _ in seen)


# -- differential privacy ---------------------------------------------------------------


def dp_runs(runs: int, dp: dict[str, Any], statistics: list[str]) -> tuple[list[dict[str, Any]], int]:
    rng = np.random.default_rng(11)
    tables = [Table({"income": cells(rng.uniform(0, 50, 400))}) for _ in range(3)]
    params = {"column": "income", "statistics": statistics, "dp": dp}
    out = []
    for r in range(runs):
        parties = make_parties(tables, params, recipient=r % 3, seed_salt=f"run{r}")
        run_local(parties)
        out.append(result_json(parties))
    return out, 1200


def test_dp_laplace_count_noise_has_the_stated_scale() -> None:
    epsilon = 0.5
    results, true_count = dp_runs(400, {"epsilon": epsilon, "mechanism": "laplace", "clip": [0, 50]}, ["count"])
    noise = np.array([r["groups"]["__all__"]["count"] - true_count for r in results])
    b = 1 / epsilon  # count is the only noised statistic: it gets the whole budget, sensitivity 1
    assert results[0]["dp"]["noise"]["count"] == {
        "epsilon": epsilon,
        "sensitivity": 1.0,
        "scale": b,
        "std": pytest.approx(math.sqrt(2) * b),  # the discrete Laplace on a 1e-6 grid
    }
    assert results[0]["dp"]["noise_parties"] == 1
    assert abs(noise.std() - math.sqrt(2) * b) < 0.2 * math.sqrt(2) * b
    assert abs(noise.mean()) < 4 * math.sqrt(2) * b / math.sqrt(len(noise))
    # fresh noise per run; on the 1e-6 grid two of 400 draws coincide with probability ~1 %
    assert len(set(noise.tolist())) >= len(noise) - 2
    assert np.all(np.abs(noise) < 40 * b)


def test_dp_gaussian_noise_and_budget_split() -> None:
    dp = {"epsilon": 0.8, "mechanism": "gaussian", "delta": 1e-6, "clip": [0, 50]}
    results, true_count = dp_runs(300, dp, ["count", "sum", "mean", "variance"])
    plan = results[0]["dp"]["noise"]
    assert set(plan) == {"count", "sum", "sumsq", "missing"}
    for comp, sensitivity in (("count", 1.0), ("sum", 50.0), ("sumsq", 2500.0)):
        assert plan[comp]["epsilon"] == pytest.approx(0.8 / 3)
        assert plan[comp]["delta"] == pytest.approx(1e-6 / 3)
        # rho-zCDP with rho + 2 sqrt(rho ln(1/delta_i)) = epsilon_i, sigma = sensitivity / sqrt(2 rho)
        log_inv = math.log(3 / 1e-6)
        rho = (math.sqrt(log_inv + 0.8 / 3) - math.sqrt(log_inv)) ** 2
        assert plan[comp]["rho"] == pytest.approx(rho)
        assert plan[comp]["scale"] == pytest.approx(sensitivity / math.sqrt(2 * rho))
        used = plan[comp]["rho"]  # rounded down, so the conversion stays within the budget
        assert used + 2 * math.sqrt(used * log_inv) <= 0.8 / 3
    assert plan["missing"]["epsilon"] == 0.8  # parallel composition: a missing row touches nothing else
    sigma = plan["count"]["scale"]
    noise = np.array([r["groups"]["__all__"]["count"] - true_count for r in results])
    assert abs(noise.std() - sigma) < 0.2 * sigma
    for r in results:
        g = r["groups"]["__all__"]
        assert 0 <= g["mean"] <= 50 and 0 <= g["variance"] <= 50**2 / 4 * g["count"] / (g["count"] - 1)
        assert g["missing"] >= 0


def test_dp_clips_values_and_histogram() -> None:
    tables = [Table({"income": ["-5", "1", "2"]}), Table({"income": ["3", "1000", None]})]
    dp = {"epsilon": 1e7, "mechanism": "laplace", "clip": [0, 10]}
    params = {"column": "income", "statistics": ALL_STATS, "histogram": {"edges": [0, 5, 10]}, "dp": dp}
    parties = make_parties(tables, params, recipient=1)
    run_local(parties)
    res = result_json(parties)
    g = res["groups"]["__all__"]
    x = np.array([0, 1, 2, 3, 10])  # clipped
    assert g["count"] == pytest.approx(5, abs=1e-3) and g["missing"] == pytest.approx(1, abs=1e-3)
    assert g["sum"] == pytest.approx(16, abs=1e-2)
    assert g["mean"] == pytest.approx(3.2, abs=1e-2)
    assert g["variance"] == pytest.approx(float(np.var(x, ddof=1)), abs=1e-1)
    assert g["histogram"] == [pytest.approx(v, abs=1e-3) for v in (0, 4, 0, 1)]
    assert res["dp"]["clip"] == [0.0, 10.0] and res["dp"]["mechanism"] == "laplace"
    assert res["dp"]["noise"]["histogram"]["scale"] == pytest.approx(4 / 1e7)  # 4 value components


def test_dp_noisy_counts_are_clamped() -> None:
    tables = [Table({"income": ["1"]}), Table({"income": ["2"]}), Table({"income": []})]
    dp = {"epsilon": 0.01, "mechanism": "laplace", "clip": [0, 10]}
    for r in range(20):
        parties = make_parties(tables, {"column": "income", "dp": dp}, seed_salt=str(r))
        run_local(parties)
        g = result_json(parties)["groups"]["__all__"]
        assert g["count"] >= 0 and g["missing"] >= 0
        assert g["variance"] is None or g["variance"] >= 0


# -- tampering, determinism, resumption -------------------------------------------------


def flip_first_byte(kind: str) -> Callable[[Message], Message]:
    done = []

    def tamper(msg: Message) -> Message:
        if msg.kind != kind or done:
            return msg
        done.append(msg)
        payload = bytes([msg.payload[0] ^ 1]) + msg.payload[1:]
        return Message(msg.sender, msg.receiver, msg.round, msg.kind, payload, msg.seq)

    return tamper


@pytest.mark.parametrize("kind", ["agg", "commit"])
def test_tampered_round2_payload_is_detected(kind: str) -> None:
    tables = random_tables(np.random.default_rng(3), 3)
    params = {"column": "income", "group_by": "region", "groups": GROUPS}
    parties = make_parties(tables, params, recipient=0)
    tamper = flip_first_byte(kind)
    if kind == "commit":  # tamper with a commitment the recipient relies on
        base = tamper

        def tamper(msg: Message) -> Message:
            return base(msg) if msg.receiver == parties[0].ctx.me else msg

    with pytest.raises(ProtocolError, match="does not match its broadcast commitment"):
        drive(parties, tamper)


def test_untampered_drive_matches_run_local() -> None:
    tables = random_tables(np.random.default_rng(3), 3)
    params = {"column": "income", "group_by": "region", "groups": GROUPS}
    a = make_parties(tables, params)
    drive(a)
    b = make_parties(tables, params)
    run_local(b, shuffle_seed=99)
    assert a[0].result() == b[0].result()
    assert a[0].result_commitment() == b[0].result_commitment()


def transcript_key(transcript: list[Message]) -> list[tuple[Any, ...]]:
    return [(m.sender, m.receiver, m.round, m.kind, m.payload, m.seq) for m in transcript]


@pytest.mark.parametrize("dp", [None, {"epsilon": 1.0, "mechanism": "laplace", "clip": [-100, 100]}])
def test_deterministic_given_seeds(dp: dict[str, Any] | None) -> None:
    tables = random_tables(np.random.default_rng(8), 5)
    params = {"column": "income", "group_by": "region", "groups": GROUPS, "dp": dp}
    runs = []
    for _ in range(2):
        parties = make_parties(tables, params, recipient=2)
        runs.append((transcript_key(run_local(parties, shuffle_seed=5)), parties[2].result()))
    assert runs[0] == runs[1]
    other = make_parties(tables, params, recipient=2, seed_salt="other")
    transcript = run_local(other, shuffle_seed=5)
    assert transcript_key(transcript) != runs[0][0]
    if dp is None:  # different randomness, same exact answer
        assert other[2].result() == runs[0][1]


def test_resumed_party_replays_to_the_same_messages() -> None:
    tables = random_tables(np.random.default_rng(9), 3)
    params = {"column": "income", "group_by": "region", "groups": GROUPS}
    parties = make_parties(tables, params, recipient=1)
    transcript = run_local(parties, shuffle_seed=4)
    for victim in parties:
        me = victim.ctx.me
        sent = [m for m in transcript if m.sender == me]
        fresh = make_parties(tables, params, recipient=1)[parties.index(victim)]
        replayed = list(fresh.start())
        for m in transcript:
            if m.receiver == me:
                replayed.extend(fresh.receive(m))
        assert sorted(transcript_key(replayed)) == sorted(transcript_key(sent))
        assert fresh.result() == victim.result()
        assert fresh.result_commitment() == victim.result_commitment()


# -- message validation -----------------------------------------------------------------


def started_pair() -> tuple[StatsProtocol, StatsProtocol, StatsProtocol, list[Message]]:
    tables = [Table({"income": ["1"]}) for _ in range(3)]
    r, a, b = make_parties(tables, {"column": "income"}, recipient=0)
    msgs = r.start() + a.start() + b.start()
    return r, a, b, msgs


def test_rejects_malformed_messages() -> None:
    r, a, b, msgs = started_pair()
    share_to_a = next(m for m in msgs if m.receiver == a.ctx.me and m.kind == "share")
    with pytest.raises(ProtocolError, match="bytes, expected"):
        a.receive(Message(share_to_a.sender, a.ctx.me, 1, "share", share_to_a.payload[:-1]))
    with pytest.raises(ProtocolError, match="unexpected message"):
        a.receive(Message(share_to_a.sender, a.ctx.me, 2, "share", share_to_a.payload))
    with pytest.raises(ProtocolError, match="not a peer"):
        a.receive(Message("0xstranger", a.ctx.me, 1, "share", share_to_a.payload))
    with pytest.raises(ProtocolError, match="delivered to"):
        a.receive(Message(share_to_a.sender, b.ctx.me, 1, "share", share_to_a.payload))
    with pytest.raises(ProtocolError, match="not the recipient"):
        a.receive(Message(b.ctx.me, a.ctx.me, 2, "agg", share_to_a.payload))
    with pytest.raises(ProtocolError, match="not the recipient"):
        a.receive(Message(b.ctx.me, a.ctx.me, 3, "result-hash", bytes(32)))
    with pytest.raises(ProtocolError, match="not the recipient"):
        r.receive(Message(b.ctx.me, r.ctx.me, 3, "result-hash", bytes(32)))
    a.receive(share_to_a)
    with pytest.raises(ProtocolError, match="duplicate"):
        a.receive(share_to_a)
    with pytest.raises(ProtocolError, match="has not finished"):
        a.result_commitment()


def test_rejects_message_before_start() -> None:
    tables = [Table({"income": ["1"]}) for _ in range(2)]
    r, a = make_parties(tables, {"column": "income"})
    with pytest.raises(ProtocolError, match="before start"):
        a.receive(Message(r.ctx.me, a.ctx.me, 1, "share", bytes(64)))


def test_bad_context() -> None:
    table = Table({"income": ["1"]})
    with pytest.raises(ProtocolError, match="at least 2"):
        StatsProtocol.create(PartyContext(1, "a", ["a"], "a", {"column": "income"}, bytes(32)), table)
    with pytest.raises(ProtocolError, match="participants"):
        StatsProtocol.create(PartyContext(1, "a", ["a", "b"], "c", {"column": "income"}, bytes(32)), table)


def test_data_errors() -> None:
    params = {"column": "income"}
    with pytest.raises(DataError, match="not a number"):
        make_parties([Table({"income": ["1", "abc"]}), Table({"income": ["1"]})], params)[0].start()
    with pytest.raises(DataError, match="not a finite number"):
        make_parties([Table({"income": ["1", "inf"]}), Table({"income": ["1"]})], params)[0].start()
    with pytest.raises(DataError, match="not a finite number"):
        make_parties([Table({"income": ["nan"]}), Table({"income": ["1"]})], params)[0].start()
    with pytest.raises(DataError, match="no column"):
        make_parties([Table({"salary": ["1"]}), Table({"income": ["1"]})], params)[0].start()
    with pytest.raises(DataError, match="too large"):
        make_parties([Table({"income": ["1e13"]}), Table({"income": ["1"]})], params)[0].start()


# -- params -----------------------------------------------------------------------------

BAD_PARAMS: list[tuple[Any, str]] = [
    ([], "JSON object"),
    ({}, "'column'"),
    ({"column": ""}, "'column'"),
    ({"column": "x", "colour": 1}, "unknown key"),
    ({"column": "x", "groups": ["a"]}, "only allowed together"),
    ({"column": "x", "group_by": "g"}, "'groups'"),
    ({"column": "x", "group_by": "g", "groups": []}, "'groups'"),
    ({"column": "x", "group_by": "g", "groups": ["a", "a"]}, "duplicates"),
    ({"column": "x", "group_by": "g", "groups": ["a", 1]}, "strings"),
    ({"column": "x", "group_by": "g", "groups": ["__other__"]}, "reserved"),
    ({"column": "x", "statistics": []}, "non-empty"),
    ({"column": "x", "statistics": ["median"]}, "unknown statistic"),
    ({"column": "x", "statistics": ["sum", "sum"]}, "duplicates"),
    ({"column": "x", "decimals": -1}, "'decimals'"),
    ({"column": "x", "decimals": 13}, "'decimals'"),
    ({"column": "x", "decimals": True}, "'decimals'"),
    ({"column": "x", "decimals": 1.5}, "'decimals'"),
    ({"column": "x", "statistics": ["histogram"]}, "required when 'histogram'"),
    ({"column": "x", "histogram": {"edges": [0, 1]}}, "not in 'statistics'"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [1]}}, "'histogram.edges'"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, 2, 1]}}, "strictly increasing"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, 0]}}, "strictly increasing"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, 1e-9]}}, "strictly increasing"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, float("inf")]}}, "finite"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, "1"]}}, "finite"),
    ({"column": "x", "statistics": ["histogram"], "histogram": {"edges": [0, 1], "x": 1}}, "exactly the key"),
    ({"column": "x", "dp": 1}, "'dp'"),
    ({"column": "x", "dp": {"epsilon": 1, "clip": [0, 1], "extra": 1}}, "unknown key"),
    ({"column": "x", "dp": {"clip": [0, 1]}}, "epsilon"),
    ({"column": "x", "dp": {"epsilon": 0, "clip": [0, 1]}}, "epsilon"),
    ({"column": "x", "dp": {"epsilon": -1, "clip": [0, 1]}}, "epsilon"),
    ({"column": "x", "dp": {"epsilon": 1, "clip": [0, 1], "mechanism": "exp"}}, "mechanism"),
    ({"column": "x", "dp": {"epsilon": 1}}, "clip"),
    ({"column": "x", "dp": {"epsilon": 1, "clip": [1, 0]}}, "lo < hi"),
    ({"column": "x", "dp": {"epsilon": 1, "clip": [0, 1, 2]}}, "clip"),
    ({"column": "x", "dp": {"epsilon": 1, "clip": [0, 1], "delta": 1e-6}}, "only used by the gaussian"),
    ({"column": "x", "dp": {"epsilon": 0.5, "clip": [0, 1], "mechanism": "gaussian"}}, "delta"),
    ({"column": "x", "dp": {"epsilon": 0.5, "clip": [0, 1], "mechanism": "gaussian", "delta": 1}}, "delta"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_invalid_params_raise(params: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match="invalid stats params") as info:
        StatsProtocol.validate_params(params)
    assert message in str(info.value)
    with pytest.raises(ProtocolError):
        make_parties([Table({"x": ["1"]}), Table({"x": ["1"]})], params)


def test_valid_params_are_normalised() -> None:
    out = StatsProtocol.validate_params(
        {
            "column": "income",
            "group_by": "region",
            "groups": ["b", "a"],
            "statistics": ["histogram", "count"],
            "histogram": {"edges": [0, 10]},
            "dp": {"epsilon": 1, "clip": [0, 10]},
        }
    )
    assert out == {
        "column": "income",
        "group_by": "region",
        "groups": ["b", "a"],
        "statistics": ["count", "histogram"],
        "histogram": {"edges": [0.0, 10.0]},
        "decimals": 6,
        "dp": {"epsilon": 1.0, "mechanism": "laplace", "clip": [0.0, 10.0], "delta": None},
    }
    assert StatsProtocol.validate_params({"column": "c", "group_by": None})["statistics"] == [
        "count",
        "sum",
        "mean",
        "variance",
    ]


# -- scale ------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_one_million_rows_per_party() -> None:
    """3 parties x 1M rows (values up to 1e9 with 6 decimals); meant to finish in a few seconds."""
    rng = np.random.default_rng(2024)
    x = rng.integers(-(10**15), 10**15, 1_000_000)  # fixed-point values, |v| < 1e9
    column = [f"{v / 10**6:.6f}" for v in x.tolist()]
    tables = [Table({"income": column}) for _ in range(3)]
    parties = make_parties(tables, {"column": "income"})
    run_local(parties)
    got = result_json(parties)["groups"]["__all__"]
    assert got["count"] == 3_000_000
    full = np.rint(np.asarray(column, dtype=np.float64) * 1e6).astype(np.int64).tolist()
    s, ss, n = 3 * sum(full), 3 * sum(v * v for v in full), 3_000_000
    assert got["sum"] == float(Fraction(s, 10**6))
    assert got["variance"] == float(Fraction(n * ss - s * s, n * (n - 1) * 10**12))
