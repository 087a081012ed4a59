"""The ECDH-PSI protocol, driven in-process with run_local."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import random
import struct
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pcn.algorithms.base import Message, PartyContext, ProtocolError, run_local
from pcn.algorithms.psi.protocol import (
    COMMIT_DOMAIN,
    HASH_DOMAIN,
    HEADER,
    KIND_FINAL,
    KIND_INTERSECTION,
    KIND_RESULT,
    KIND_RETURN,
    KIND_SET,
    RESULT_DOMAIN,
    IdSet,
    PsiProtocol,
    blind_piece,
    hash_to_element,
    normalise_id,
)
from pcn.crypto.curve25519 import hash_dst
from pcn.data.table import Table

Cells = Sequence[str | None]


def names(n: int) -> list[str]:
    return [f"0xparty{i}" for i in range(n)]


def seed_for(name: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"psi-seed/{name}/{salt}".encode()).digest()


def make_parties(
    sets: Sequence[Cells],
    params: dict[str, Any] | None = None,
    recipient: int = 0,
    task_id: int = 42,
    seed_salt: str = "",
    parallel_map: Callable[..., list[Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> list[PsiProtocol]:
    who = names(len(sets))
    return [
        PsiProtocol.create(
            PartyContext(
                task_id,
                me,
                who,
                who[recipient],
                dict(params or {}),
                seed_for(me, seed_salt),
                progress,
                id_column="id",
                parallel_map=parallel_map,
            ),
            Table({"id": list(cells)}),
        )
        for me, cells in zip(who, sets, strict=True)
    ]


def result_of(parties: list[PsiProtocol]) -> dict[str, Any]:
    results = [p.result() for p in parties]
    assert sum(r is not None for r in results) == 1  # only the recipient has a result
    out = next(r for r in results if r is not None)
    assert out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return json.loads(out)  # type: ignore[no-any-return]


def run(sets: Sequence[Cells], params: dict[str, Any] | None = None, recipient: int = 0, **kw: Any) -> dict[str, Any]:
    shuffle_seed = kw.pop("shuffle_seed", None)
    parties = make_parties(sets, params, recipient, **kw)
    run_local(parties, shuffle_seed=shuffle_seed)
    assert all(p.done for p in parties)
    assert len({p.result_commitment() for p in parties}) == 1
    return result_of(parties)


def expected(sets: Sequence[Cells], casefold: bool = False) -> list[str]:
    normal = [{x for x in (normalise_id(c, casefold) for c in s) if x is not None} for s in sets]
    return sorted(set.intersection(*normal))


def random_sets(
    rng: random.Random, n: int, universe: int = 4000, own: tuple[int, int] = (500, 1800)
) -> list[list[str]]:
    """`n` sets, each 250 of 300 shared IDs plus `own` (a size range) IDs drawn from `universe`."""
    common = [f"cust-{rng.randrange(universe)}" for _ in range(300)]
    return [
        [f"cust-{rng.randrange(universe)}" for _ in range(rng.randrange(*own))] + rng.sample(common, 250)
        for _ in range(n)
    ]


def drive(parties: list[PsiProtocol], tamper: Callable[[Message], Message | None] | None = None) -> list[Message]:
    """run_local without shuffling, with a hook that can rewrite (or drop) any message in flight."""
    by_name = {p.ctx.me: p for p in parties}
    queue: deque[Message] = deque(m for p in parties for m in p.start())
    transcript = []
    while queue:
        msg = queue.popleft()
        target = by_name[msg.receiver]  # a rewritten receiver still lands where the link goes
        if tamper is not None:
            new = tamper(msg)
            if new is None:
                continue
            msg = new
        transcript.append(msg)
        queue.extend(target.receive(msg))
    return transcript


# -- correctness ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("shuffle_seed", [None, 11])
def test_matches_python_set_intersection(n: int, shuffle_seed: int | None) -> None:
    rng = random.Random(100 + n)
    sets = random_sets(rng, n)
    for recipient in sorted({0, n - 1, n // 2}):
        res = run(sets, {"bucket_size": 1024}, recipient=recipient, shuffle_seed=shuffle_seed)
        want = expected(sets)
        assert len(want) >= 100
        assert res["ids"] == want and res["size"] == len(want)
        assert res["output"] == "ids" and res["algorithm"] == "psi" and res["parties"] == n
        assert res["party_sizes"] == {w: len(set(s)) for w, s in zip(names(n), sets, strict=True)}


def test_five_parties_every_recipient() -> None:
    rng = random.Random(5)
    sets = random_sets(rng, 5, universe=1500, own=(150, 600))
    for recipient in range(5):
        assert run(sets, recipient=recipient, shuffle_seed=recipient)["ids"] == expected(sets)


def test_process_pool_path() -> None:
    rng = random.Random(9)
    sets = [[str(rng.randrange(20_000)) for _ in range(5000)] for _ in range(3)]
    calls: list[int] = []
    with multiprocessing.Pool(2) as pool:

        def pmap(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            calls.append(len(items))
            return pool.map(fn, items)

        res = run(sets, {"bucket_size": 4096}, recipient=1, parallel_map=pmap, shuffle_seed=3)
    assert res["ids"] == expected(sets)
    assert calls and max(calls) >= 3  # own sets of ~4,900 IDs are 3 pieces


def test_pool_and_in_process_give_identical_transcripts() -> None:
    sets = [[str(i) for i in range(0, 6000, 2)], [str(i) for i in range(0, 6000, 3)]]
    plain = make_parties(sets, {"bucket_size": 2048})
    t1 = run_local(plain, shuffle_seed=1)
    with multiprocessing.Pool(2) as pool:
        pooled = make_parties(sets, {"bucket_size": 2048}, parallel_map=pool.map)
        t2 = run_local(pooled, shuffle_seed=1)
    assert t1 == t2
    assert plain[0].result() == pooled[0].result()


@pytest.mark.parametrize("n", [2, 3])
def test_duplicates_are_removed(n: int) -> None:
    sets = [["a", "b", "b", "c", "a", " a "] + [f"x{i}" for i in range(k)] for k in range(n)]
    sets[0] += ["d", "d", "d"]
    res = run(sets)
    assert res["ids"] == ["a", "b", "c"]
    assert res["duplicates_removed"] == 3 + 2  # " a " normalises to "a"
    assert res["party_sizes"][names(n)[0]] == 4


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("empty_at", [0, 1])
def test_empty_set_at_one_party(n: int, empty_at: int) -> None:
    sets: list[Cells] = [["1", "2", "3"] for _ in range(n)]
    sets[empty_at] = []
    res = run(sets, shuffle_seed=2)
    assert res["ids"] == [] and res["size"] == 0
    assert res["party_sizes"][names(n)[empty_at]] == 0


def test_all_empty_and_only_nulls() -> None:
    res = run([[None, "", "   "], [], []])
    assert res == {
        "algorithm": "psi",
        "output": "ids",
        "ids": [],
        "size": 0,
        "party_sizes": dict.fromkeys(names(3), 0),
        "casefold": False,
        "parties": 3,
        "skipped_empty": 3,
        "duplicates_removed": 0,
    }


@pytest.mark.parametrize("n", [2, 3])
def test_disjoint_and_identical(n: int) -> None:
    disjoint = [[f"{k}-{i}" for i in range(500)] for k in range(n)]
    assert run(disjoint)["ids"] == []
    same = [[f"id{i}" for i in range(1500)] for _ in range(n)]
    res = run(same, {"bucket_size": 1024}, recipient=n - 1)
    assert res["ids"] == sorted(same[0]) and res["size"] == 1500


@pytest.mark.parametrize("recipient", [0, 1])
def test_skewed_sizes(recipient: int) -> None:
    rng = random.Random(4)
    big = [f"u{i}" for i in range(5_000)]
    small = [*rng.sample(big, 6), "nobody-1", "nobody-2", "nobody-3", "nobody-4"]
    res = run([small, big], {"bucket_size": 1024}, recipient=recipient)
    assert res["ids"] == sorted(small[:6])
    assert res["party_sizes"] == {names(2)[0]: 10, names(2)[1]: 5_000}


def test_skewed_sizes_three_parties() -> None:
    rng = random.Random(6)
    big = [f"u{i}" for i in range(5_000)]
    mid = rng.sample(big, 500)
    small = [*mid[:7], "x", "y", "z"]
    res = run([big, small, mid], {"bucket_size": 1024}, recipient=1, shuffle_seed=8)
    assert res["ids"] == sorted(mid[:7])


def test_normalisation_rules() -> None:
    nfd = unicodedata.normalize("NFD", "café")
    assert nfd != "café"
    a: Cells = ["  alice ", "\tbob\n", nfd, "Zoë", "CASE", None, "", "   ", "\u3000full\u3000"]
    b: Cells = ["alice", "bob", "café", unicodedata.normalize("NFD", "Zoë"), "case", "full", "007"]
    res = run([a, b])
    assert res["ids"] == sorted(["alice", "bob", "café", "Zoë", "full"])
    assert res["skipped_empty"] == 3
    folded = run([a, b], {"casefold": True})
    assert folded["ids"] == sorted(["alice", "bob", "café", "zoë", "case", "full"])
    assert folded["casefold"] is True
    assert run([["7"], ["007"]])["ids"] == []  # no other rewriting
    assert normalise_id("Straße", True) == "strasse"
    with pytest.raises(ProtocolError):
        normalise_id(7, False)


def test_non_ascii_ids_in_result() -> None:
    ids = ["北京-001", "emoji-😀", "ß", "e\u0301"]
    res = run([ids, [*ids, "other"], ids])
    assert res["ids"] == sorted(unicodedata.normalize("NFC", x) for x in ids)


@pytest.mark.parametrize("n", [2, 3, 4])
def test_cardinality_mode_releases_only_the_size(n: int) -> None:
    sets = random_sets(random.Random(20 + n), n)
    parties = make_parties(sets, {"output": "cardinality", "bucket_size": 1024}, recipient=n - 1)
    run_local(parties, shuffle_seed=4)
    res = result_of(parties)
    assert "ids" not in res and res["output"] == "cardinality"
    assert res["size"] == len(expected(sets))
    assert parties[n - 1]._ids == []  # the recipient did not even keep its ID list
    assert len({p.result_commitment() for p in parties}) == 1


def test_cardinality_mode_shuffles_the_recipients_set_at_every_hop() -> None:
    ids = [f"k{i}" for i in range(3000)]
    for output, shuffled in (("ids", False), ("cardinality", True)):
        parties = make_parties([ids, ids], {"output": output, "bucket_size": 1024})
        transcript = run_local(parties)
        sent = b"".join(
            m.payload[HEADER.size :] for m in transcript if m.kind == KIND_SET and m.receiver == names(2)[1]
        )
        back = b"".join(m.payload[HEADER.size :] for m in transcript if m.kind == KIND_RETURN)
        # re-blind what the recipient sent with the other party's key: same order iff not shuffled
        other = parties[1]
        reblinded = other._blind(sent, other._keys_peer, "test")
        assert (reblinded == back) is not shuffled
        assert sorted(reblinded[i : i + 32] for i in range(0, len(back), 32)) == sorted(
            back[i : i + 32] for i in range(0, len(back), 32)
        )


def test_only_the_recipient_gets_a_result_and_commitments_open() -> None:
    sets = random_sets(random.Random(3), 3)
    parties = make_parties(sets, recipient=2)
    run_local(parties, shuffle_seed=5)
    assert [p.result() is None for p in parties] == [True, True, False]
    commitment = parties[0].result_commitment()
    assert all(p.result_commitment() == commitment for p in parties)
    result = parties[2].result()
    assert result is not None
    opening = parties[2].commitment_opening()
    assert PsiProtocol.commitment_for(result, opening) == commitment
    # the opening is the set sizes and the salt; the commitment binds the result bytes
    sizes = b"".join(struct.pack(">Q", len(set(s))) for s in sets)
    assert opening[:-32] == sizes and parties[0].commitment_opening() == sizes
    h_r = hashlib.sha256(RESULT_DOMAIN + opening[-32:] + result).digest()
    assert commitment == hashlib.sha256(COMMIT_DOMAIN + sizes + h_r).digest()
    assert PsiProtocol.commitment_for(result + b" ", opening) != commitment
    with pytest.raises(ProtocolError):
        PsiProtocol.commitment_for(result, opening[:-33])


def test_unfinished_protocol_has_no_commitment() -> None:
    parties = make_parties([["a"], ["a"]])
    with pytest.raises(ProtocolError):
        parties[0].result_commitment()
    with pytest.raises(ProtocolError):
        parties[1].commitment_opening()


# -- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
def test_deterministic_transcripts(n: int) -> None:
    sets = random_sets(random.Random(30 + n), n)
    params = {"bucket_size": 1024}
    t1 = run_local(make_parties(sets, params, recipient=1), shuffle_seed=9)
    t2 = run_local(make_parties(sets, params, recipient=1), shuffle_seed=9)
    assert t1 == t2
    a = make_parties(sets, params, recipient=1)
    b = make_parties(sets, params, recipient=1, seed_salt="other")
    t3, t4 = run_local(a, shuffle_seed=1), run_local(b)
    assert {m.payload for m in t3} != {m.payload for m in t4}  # fresh keys, fresh transcript
    assert result_of(a) == result_of(b)


def per_link(m: Message) -> tuple[str, int]:
    return (m.receiver, m.seq)


def test_resumed_party_replays_identical_messages() -> None:
    """A worker restarted from its seed, fed the messages it had received, re-emits the same."""
    sets = random_sets(random.Random(40), 3)
    parties = make_parties(sets, {"bucket_size": 1024}, recipient=0)
    transcript = run_local(parties, shuffle_seed=2)
    for i, me in enumerate(names(3)):
        fresh = make_parties(sets, {"bucket_size": 1024}, recipient=0)[i]
        out = fresh.start()
        for m in transcript:
            if m.receiver == me:
                out += fresh.receive(m)

        mine = [m for m in transcript if m.sender == me]
        assert sorted(out, key=per_link) == sorted(mine, key=per_link)
        assert fresh.result_commitment() == parties[0].result_commitment()


# -- privacy structure ----------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 4, 5])
@pytest.mark.parametrize("output", ["ids", "cardinality"])
def test_no_party_can_compare_sets_beyond_the_stated_leakage(n: int, output: str) -> None:
    """With identical sets everywhere, two sets under the same keys would show equal elements.
    Per party, group every element it receives or sends by (set owner, message kind): only the
    aggregator may see equal elements in different groups, and only among the fully blinded
    non-recipient sets ("final") and their intersection."""
    ids = [f"same-{i}" for i in range(200)]
    for recipient in range(n):
        parties = make_parties([ids] * n, {"output": output}, recipient=recipient)
        transcript = run_local(parties)
        who = names(n)
        aggregator = next(p for p in who if p != who[recipient]) if n >= 3 else None
        for me in who:
            groups: dict[tuple[str, str, str], set[bytes]] = {}
            for m in transcript:
                if me not in (m.sender, m.receiver) or m.kind == KIND_RESULT:
                    continue
                owner = who[HEADER.unpack_from(m.payload)[0]]
                direction = "in" if m.receiver == me else "out"
                body = m.payload[HEADER.size :]
                groups.setdefault((owner, m.kind, direction), set()).update(
                    body[i : i + 32] for i in range(0, len(body), 32)
                )
            keys = list(groups)
            for i, g1 in enumerate(keys):
                for g2 in keys[i + 1 :]:
                    if groups[g1] & groups[g2]:
                        allowed = me == aggregator and {g1[1], g2[1]} <= {KIND_FINAL, KIND_INTERSECTION}
                        # a forwarded set is the same set in and out only if nothing was applied
                        assert allowed, (n, recipient, me, g1, g2)


# -- tampering ------------------------------------------------------------------------------


def tamper_nth(kind: str, nth: int, change: Callable[[Message], Message | None]) -> Callable[[Message], Message | None]:
    seen = [0]

    def hook(msg: Message) -> Message | None:
        if msg.kind == kind:
            seen[0] += 1
            if seen[0] == nth:
                return change(msg)
        return msg

    return hook


def with_payload(msg: Message, payload: bytes) -> Message:
    return Message(msg.sender, msg.receiver, msg.round, msg.kind, payload, msg.seq)


def flip(msg: Message, pos: int, mask: int = 0x01) -> Message:
    p = bytearray(msg.payload)
    p[pos] ^= mask
    return with_payload(msg, bytes(p))


def set_element(msg: Message, index: int, value: bytes) -> Message:
    p = bytearray(msg.payload)
    p[HEADER.size + 32 * index : HEADER.size + 32 * (index + 1)] = value
    return with_payload(msg, bytes(p))


SMALL_ORDER = (1).to_bytes(32, "little")

TAMPERS: dict[str, tuple[str, int, Callable[[Message], Message | None]]] = {
    "owner index": (KIND_SET, 2, lambda m: flip(m, 1)),
    "owner out of range": (KIND_SET, 1, lambda m: flip(m, 0, 0x80)),
    "bucket index": (KIND_SET, 2, lambda m: flip(m, 5)),
    "bucket count": (KIND_SET, 1, lambda m: flip(m, 9)),
    "set size": (KIND_SET, 3, lambda m: flip(m, 17)),
    "truncated": (KIND_SET, 2, lambda m: with_payload(m, m.payload[:-1])),
    "extra element": (KIND_SET, 2, lambda m: with_payload(m, m.payload + m.payload[-32:])),
    "short header": (KIND_SET, 1, lambda m: with_payload(m, m.payload[:10])),
    "top bit": (KIND_SET, 2, lambda m: flip(m, HEADER.size + 31, 0x80)),
    "unreduced": (KIND_SET, 1, lambda m: set_element(m, 0, (2**255 - 19).to_bytes(32, "little"))),
    "zero element": (KIND_RETURN, 1, lambda m: set_element(m, 3, bytes(32))),
    "small order": (KIND_SET, 2, lambda m: set_element(m, 5, SMALL_ORDER)),
    "unexpected kind": (KIND_SET, 2, lambda m: Message(m.sender, m.receiver, m.round, "share", m.payload, m.seq)),
    "wrong stream kind": (KIND_SET, 2, lambda m: Message(m.sender, m.receiver, m.round, KIND_FINAL, m.payload, m.seq)),
    "wrong round": (KIND_SET, 1, lambda m: Message(m.sender, m.receiver, m.round + 1, m.kind, m.payload, m.seq)),
    "unknown sender": (KIND_SET, 1, lambda m: Message("0xmallory", m.receiver, m.round, m.kind, m.payload, m.seq)),
    "misdelivered": (KIND_SET, 1, lambda m: Message(m.sender, "0xparty9", m.round, m.kind, m.payload, m.seq)),
    "intersection size": (KIND_INTERSECTION, 1, lambda m: flip(m, 17, 0x40)),
    "final header": (KIND_FINAL, 1, lambda m: flip(m, 5)),
    "result hash length": (KIND_RESULT, 1, lambda m: with_payload(m, m.payload + b"\0")),
    "result hash round": (KIND_RESULT, 1, lambda m: Message(m.sender, m.receiver, 1, m.kind, m.payload, m.seq)),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_messages_are_refused(case: str) -> None:
    kind, nth, change = TAMPERS[case]
    sets = [[f"t{i}" for i in range(3000)] for _ in range(3)]
    parties = make_parties(sets, {"bucket_size": 1024}, recipient=1)
    with pytest.raises(ProtocolError):
        drive(parties, tamper_nth(kind, nth, change))


P25519, A25519 = 2**255 - 19, 486662
ORDER_8_U = 325606250916557431795983626356110631294008115727848805560023387167927233504


def on_twist(element: bytes) -> bool:
    u = int.from_bytes(element, "little")
    return pow((u * u * u + A25519 * u * u + u) % P25519, (P25519 - 1) // 2, P25519) == P25519 - 1


TWIST_U = next(u for u in range(2, 100) if on_twist(u.to_bytes(32, "little")))

# #13.1: elements a peer chose off the group, in every kind of stream
OFF_GROUP: dict[str, tuple[str, int, Callable[[Message], Message | None], str]] = {
    "twist point in a set": (KIND_SET, 2, lambda m: set_element(m, 5, TWIST_U.to_bytes(32, "little")), "twist"),
    "twist point in an intersection": (
        KIND_INTERSECTION,
        1,
        lambda m: set_element(m, 0, TWIST_U.to_bytes(32, "little")),
        "twist",
    ),
    "order-8 point in a final set": (
        KIND_FINAL,
        1,
        lambda m: set_element(m, 7, ORDER_8_U.to_bytes(32, "little")),
        "small order",
    ),
    "order-4 point in a return": (
        KIND_RETURN,
        1,
        lambda m: set_element(m, 2, (P25519 - 1).to_bytes(32, "little")),
        "small order",
    ),
    "u = p + 1 in a set": (
        KIND_SET,
        1,
        lambda m: set_element(m, 3, (P25519 + 1).to_bytes(32, "little")),
        "2\\^255 - 19",
    ),
}


@pytest.mark.parametrize("case", sorted(OFF_GROUP))
def test_elements_off_the_group_are_refused_with_a_clear_error(case: str) -> None:
    kind, nth, change, reason = OFF_GROUP[case]
    sets = [[f"t{i}" for i in range(3000)] for _ in range(3)]
    parties = make_parties(sets, {"bucket_size": 1024}, recipient=1)
    with pytest.raises(ProtocolError, match=reason):
        drive(parties, tamper_nth(kind, nth, change))


@pytest.mark.parametrize("n", [2, 3])
def test_twist_bit_attack_no_element_on_the_wire_is_on_the_twist(n: int) -> None:
    """#13.1: with v1 about half of the blinded IDs a peer received were twist points, which
    one Legendre symbol reveals; now every element on the wire is a point of the curve."""
    sets = [[f"id-{i}" for i in range(300)] for _ in range(n)]
    transcript = drive(make_parties(sets, recipient=n - 1))
    elements = [
        m.payload[i : i + 32]
        for m in transcript
        if m.kind != KIND_RESULT
        for i in range(HEADER.size, len(m.payload), 32)
    ]
    assert len(elements) > 300 * n
    assert not [e for e in elements if on_twist(e)]


@pytest.mark.parametrize("reorder", [False, True])
def test_replayed_and_out_of_order_buckets_are_refused(reorder: bool) -> None:
    sets = [[f"t{i}" for i in range(3000)], [f"t{i}" for i in range(3000)]]
    parties = make_parties(sets, {"bucket_size": 1024})
    held: list[Message] = []

    def hook(msg: Message) -> Message | None:
        if msg.kind != KIND_SET or msg.sender != names(2)[1]:
            return msg
        held.append(msg)
        if len(held) == 1:
            return None if reorder else msg  # reorder: bucket 0 withheld, bucket 1 comes first
        return held[0]  # replay: bucket 0 again

    with pytest.raises(ProtocolError):
        drive(parties, hook)


def test_message_before_start_and_double_start() -> None:
    parties = make_parties([["a"], ["a"]])
    msgs = parties[0].start()
    with pytest.raises(ProtocolError):
        parties[1].receive(msgs[0])
    with pytest.raises(ProtocolError):
        parties[0].start()


def test_tampered_result_hash_breaks_commitment_agreement() -> None:
    parties = make_parties([["a", "b"], ["b", "c"], ["b"]])
    drive(parties, tamper_nth(KIND_RESULT, 1, lambda m: flip(m, 0)))
    assert all(p.done for p in parties)
    # the first result hash goes to party 1: its commitment no longer matches the others'
    assert parties[1].result_commitment() != parties[0].result_commitment() == parties[2].result_commitment()


def test_early_result_hash_is_refused() -> None:
    parties = make_parties([["a"], ["a"], ["a"]])
    parties[1].start()
    with pytest.raises(ProtocolError):
        parties[1].receive(Message(names(3)[0], names(3)[1], 5, KIND_RESULT, bytes(32)))


# -- parameters -----------------------------------------------------------------------------


def test_validate_params_defaults() -> None:
    assert PsiProtocol.validate_params({}) == {
        "id_column": None,
        "output": "ids",
        "casefold": False,
        "bucket_size": 65_536,
    }
    full = {"id_column": "cust", "output": "cardinality", "casefold": True, "bucket_size": 1024}
    assert PsiProtocol.validate_params(full) == full
    assert PsiProtocol.privacy_cost(full) == 0.0


@pytest.mark.parametrize(
    "params",
    [
        {"unknown": 1},
        {"output": "both"},
        {"output": None},
        {"casefold": 1},
        {"casefold": "yes"},
        {"bucket_size": 1023},
        {"bucket_size": 1_048_577},
        {"bucket_size": True},
        {"bucket_size": 4096.0},
        {"bucket_size": "4096"},
        {"id_column": ""},
        {"id_column": 3},
    ],
)
def test_invalid_params_are_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        PsiProtocol.validate_params(params)
    with pytest.raises(ProtocolError):
        make_parties([["a"], ["a"]], params)


def test_params_must_be_an_object() -> None:
    with pytest.raises(ProtocolError):
        PsiProtocol.validate_params([])  # type: ignore[arg-type]


def test_id_column_param_and_context_checks() -> None:
    who = names(2)
    tables = [Table({"cust": ["a", "b"], "id": ["x", "y"]}), Table({"cust": ["b"], "id": ["x"]})]
    parties = [
        PsiProtocol.create(PartyContext(1, me, who, who[0], {"id_column": "cust"}, seed_for(me), id_column="id"), t)
        for me, t in zip(who, tables, strict=True)
    ]
    run_local(parties)
    assert result_of(parties)["ids"] == ["b"]
    with pytest.raises(ProtocolError):  # no column anywhere
        PsiProtocol.create(PartyContext(1, who[0], who, who[0], {}, seed_for(who[0])), tables[0])
    with pytest.raises(ProtocolError):  # one participant
        PsiProtocol.create(PartyContext(1, who[0], who[:1], who[0], {}, seed_for(who[0]), id_column="id"), tables[0])
    with pytest.raises(ProtocolError):  # recipient not a participant
        PsiProtocol.create(PartyContext(1, who[0], who, "0xother", {}, seed_for(who[0]), id_column="id"), tables[0])
    with pytest.raises(ProtocolError):  # short seed
        PsiProtocol.create(PartyContext(1, who[0], who, who[0], {}, b"short", id_column="id"), tables[0])
    with pytest.raises(ProtocolError):  # task id out of range
        PsiProtocol.create(PartyContext(-1, who[0], who, who[0], {}, seed_for(who[0]), id_column="id"), tables[0])


def test_hash_is_domain_separated_by_task() -> None:
    a = hash_to_element(hash_dst(HASH_DOMAIN, (1).to_bytes(32, "big")), b"alice")
    b = hash_to_element(hash_dst(HASH_DOMAIN, (2).to_bytes(32, "big")), b"alice")
    assert a != b and len(a) == 32 and not on_twist(a) and not on_twist(b)
    # different tasks: the same IDs give unrelated transcripts
    t1 = run_local(make_parties([["a", "b"], ["a"]], task_id=1))
    t2 = run_local(make_parties([["a", "b"], ["a"]], task_id=2))
    elements = [{m.payload[HEADER.size :] for m in t if m.kind != KIND_RESULT} for t in (t1, t2)]
    assert not elements[0] & elements[1]  # same party seeds (keys) in both runs, yet nothing in common


# -- streaming, progress, throughput ----------------------------------------------------------


def test_messages_are_bounded_buckets_and_progress_is_reported() -> None:
    events: list[tuple[float, str]] = []
    sets = [[f"b{i}" for i in range(5000)], [f"b{i}" for i in range(2500, 9000)], [f"b{i}" for i in range(4000)]]
    parties = make_parties(sets, {"bucket_size": 1024}, recipient=2, progress=lambda f, w: events.append((f, w)))
    transcript = run_local(parties, shuffle_seed=6)
    assert result_of(parties)["ids"] == expected(sets)
    assert max(len(m.payload) for m in transcript) == HEADER.size + 1024 * 32
    assert sum(m.kind == KIND_SET for m in transcript) > 30
    assert events[-1][0] == 1.0 and any(0.3 < f < 0.9 for f, _ in events)


def test_progress_text_carries_no_intersection_size() -> None:
    """#13.9: progress is read by every participant and the requester: it names the step,
    never the intersection's size (only the recipient learns it)."""
    sets = [[f"x{i}" for i in range(3000)], [f"x{i}" for i in range(1763, 5000)], [f"x{i}" for i in range(4000)]]
    for output in ("ids", "cardinality"):
        events: list[str] = []
        parties = make_parties(sets, {"output": output}, progress=lambda _f, w, seen=events: seen.append(w))
        run_local(parties, shuffle_seed=3)
        assert result_of(parties)["size"] == 1237
        text = "\n".join(events)
        assert events and "1237" not in text and "1,237" not in text and "intersection of" not in text, text


def test_many_buckets_two_parties() -> None:
    """Sets spanning a dozen buckets intersect exactly (throughput is measured by bench/psi.py,
    side by side with openmined-psi, not here)."""
    n = 12_000
    sets = [[f"customer-{i}" for i in range(n)], [f"customer-{i}" for i in range(n // 2, n + n // 2)]]
    parties = make_parties(sets, {"bucket_size": 1024})
    run_local(parties)
    res = result_of(parties)
    assert res["size"] == n // 2
    assert res["ids"] == sorted(f"customer-{i}" for i in range(n // 2, n))


# -- the group ------------------------------------------------------------------------------


def test_blinding_commutes_and_matches_the_public_api() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    k1, k2 = hashlib.sha256(b"k1").digest(), hashlib.sha256(b"k2").digest()
    points = b"".join(hash_to_element(b"p", str(i).encode()) for i in range(50))
    one, bad = blind_piece(((k1,), points))
    assert not bad
    direct = X25519PrivateKey.from_private_bytes(k1).exchange(X25519PublicKey.from_public_bytes(points[:32]))
    assert one[:32] == direct
    a, _ = blind_piece(((k2,), one))
    b, _ = blind_piece(((k1,), blind_piece(((k2,), points))[0]))
    both, _ = blind_piece(((k1, k2), points))
    assert a == b == both and len(a) == len(points)


def test_small_order_inputs_are_reported_not_raised() -> None:
    k = hashlib.sha256(b"k").digest()
    good = hash_to_element(b"p", b"x")
    out, bad = blind_piece(((k,), good + SMALL_ORDER + bytes(32) + good))
    assert bad == [1, 2] and len(out) == 64 and out[:32] == out[32:]


def test_own_id_hashing_to_a_small_order_point_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    from pcn.algorithms.psi import protocol as psi

    real = psi.hash_elements

    def cursed(dst: bytes, idents: list[bytes]) -> list[bytes]:
        return [bytes(32) if x == b"cursed" else h for x, h in zip(idents, real(dst, idents), strict=True)]

    monkeypatch.setattr(psi, "hash_elements", cursed)
    res = run([["a", "b", "cursed", "c"], ["b", "c", "cursed"], ["c", "b"]])
    assert res["ids"] == ["b", "c"]
    assert res["party_sizes"] == {names(3)[0]: 3, names(3)[1]: 2, names(3)[2]: 2}


@pytest.mark.parametrize("casefold", [False, True])
def test_id_sets_from_arrow_and_from_lists_are_the_same(casefold: bool) -> None:
    """IdSet normalises an all-ASCII Arrow column in Arrow's kernels and anything else cell by
    cell with `normalise_id`: the same IDs, in the same order, with the same counts."""
    spaces = [chr(c) for c in range(128) if chr(c).isspace()]
    rng = random.Random(3)
    cells: list[str | None] = []
    for _ in range(3000):
        core = rng.choice(["Ab", "ab", "AB", "x-1", "007", "7", "a b", ""]) + str(rng.randrange(40))
        pad = "".join(rng.choice(spaces) for _ in range(rng.randrange(3)))
        cells.append(rng.choice([core, pad + core, core + pad, pad, None]))
    want = IdSet.of(Table({"id": cells}), "id", casefold)
    assert isinstance(want.ids, list) and want.skipped > 0 and want.duplicates > 0
    got = IdSet.of(Table({"id": pa.array(cells, type=pa.string())}), "id", casefold)
    assert not isinstance(got.ids, list)  # the Arrow path
    assert got.as_list() == want.ids and (got.skipped, got.duplicates) == (want.skipped, want.duplicates)
    for ids in (got, want):
        blob, offsets = ids.utf8(5, 9)
        assert [blob[a:b] for a, b in itertools.pairwise(offsets.tolist())] == [x.encode() for x in want.ids[5:9]]
    assert got.pick(np.array([3, 1])) == [want.ids[3], want.ids[1]]
    # one non-ASCII cell: the column takes the cell-by-cell path, with Unicode rules
    wide = [*cells, "\u00c9cole\u2003", "E\u0301cole"]
    arrow_wide = IdSet.of(Table({"id": pa.array(wide)}), "id", casefold)
    assert isinstance(arrow_wide.ids, list)
    assert arrow_wide == IdSet.of(Table({"id": wide}), "id", casefold)
    assert "\u00e9cole" in arrow_wide.ids if casefold else "\u00c9cole" in arrow_wide.ids
