"""psi-ot (KKRT16 OT-extension PSI) as a pure protocol: results against Python set operations,
the bit-matrix transpose, cuckoo hashing, base OTs, determinism and refusal of bad messages."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import struct
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pcn.algorithms import protocol_class
from pcn.algorithms.base import Message, PartyContext, ProtocolError, local_binding, run_local
from pcn.algorithms.psi.protocol import normalise_id
from pcn.algorithms.psi_ot import kkrt
from pcn.algorithms.psi_ot import protocol as psi_ot
from pcn.algorithms.psi_ot.protocol import COMMITMENT, PsiOtProtocol
from pcn.data.table import Table

Cells = Sequence[str | None]
WHO = ["0xreceiver", "0xsender"]


def seed_for(name: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"psi-ot-seed/{name}/{salt}".encode()).digest()


def make_parties(
    sets: Sequence[Cells],
    params: dict[str, Any] | None = None,
    recipient: int = 0,
    task_id: int = 7,
    seed_salt: str = "",
    parallel_map: Callable[..., list[Any]] | None = None,
    progress: Callable[[float, str], None] | None = None,
    arrow: bool = False,
) -> list[PsiOtProtocol]:
    who = WHO[: len(sets)] if len(sets) <= 2 else [f"0xparty{i}" for i in range(len(sets))]
    return [
        PsiOtProtocol.create(
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
            Table({"id": pa.array(list(cells), type=pa.large_string()) if arrow else list(cells)}),
        )
        for me, cells in zip(who, sets, strict=True)
    ]


def result_of(parties: list[PsiOtProtocol]) -> dict[str, Any]:
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


def random_sets(rng: random.Random, universe: int = 4000) -> list[list[str]]:
    common = [f"cust-{rng.randrange(universe)}" for _ in range(300)]
    return [
        [f"cust-{rng.randrange(universe)}" for _ in range(rng.randrange(500, 1800))] + rng.sample(common, 250)
        for _ in range(2)
    ]


def drive(parties: list[PsiOtProtocol], tamper: Callable[[Message], Message | None] | None = None) -> list[Message]:
    """run_local without shuffling, with a hook that can rewrite (or drop) any message in flight."""
    by_name = {p.ctx.me: p for p in parties}
    queue: deque[Message] = deque(m for p in parties for m in p.start())
    transcript = []
    while queue:
        msg = queue.popleft()
        target = by_name[msg.receiver]
        if tamper is not None:
            new = tamper(msg)
            if new is None:
                continue
            msg = new
        transcript.append(msg)
        queue.extend(target.receive(msg))
    return transcript


# -- correctness ----------------------------------------------------------------------------


@pytest.mark.parametrize("recipient", [0, 1])
@pytest.mark.parametrize("shuffle_seed", [None, 11])
def test_matches_python_set_intersection(recipient: int, shuffle_seed: int | None) -> None:
    sets = random_sets(random.Random(100 + recipient))
    res = run(sets, recipient=recipient, shuffle_seed=shuffle_seed)
    want = expected(sets)
    assert len(want) >= 100
    assert res["ids"] == want and res["size"] == len(want)
    assert res["algorithm"] == "psi-ot" and res["output"] == "ids" and res["parties"] == 2
    assert res["party_sizes"] == {w: len(set(s)) for w, s in zip(WHO, sets, strict=True)}
    assert res["casefold"] is False


def test_duplicates_are_removed() -> None:
    sets = [["a", "a", "b", " b ", "c", None, ""], ["b", "b", "c", "c", "d"]]
    res = run(sets)
    assert res["ids"] == ["b", "c"]
    assert res["duplicates_removed"] == 2 and res["skipped_empty"] == 2
    assert res["party_sizes"] == {WHO[0]: 3, WHO[1]: 3}


@pytest.mark.parametrize("empty_at", [0, 1])
def test_empty_set_at_either_party(empty_at: int) -> None:
    sets: list[list[str | None]] = [["x", "y", "z"], ["y", "z", "w"]]
    sets[empty_at] = [None, "  ", ""]
    res = run(sets)
    assert res["ids"] == [] and res["size"] == 0
    assert res["party_sizes"][WHO[empty_at]] == 0


def test_both_empty() -> None:
    res = run([[], []])
    assert res["ids"] == [] and res["party_sizes"] == {WHO[0]: 0, WHO[1]: 0}


def test_disjoint_and_identical() -> None:
    a = [f"id-{i}" for i in range(700)]
    b = [f"other-{i}" for i in range(900)]
    assert run([a, b])["ids"] == []
    assert run([a, list(reversed(a))])["ids"] == sorted(a)


@pytest.mark.parametrize("small_at", [0, 1])
def test_skewed_sizes(small_at: int) -> None:
    rng = random.Random(3 + small_at)
    big = [f"k{rng.randrange(10**9)}" for _ in range(5000)]
    small = [*rng.sample(big, 6), "not-there-1", "not-there-2", "not-there-3", "not-there-4"]
    sets = [small, big] if small_at == 0 else [big, small]
    res = run(sets, shuffle_seed=5)
    assert res["ids"] == expected(sets) and res["size"] == 6


def test_normalisation_rules_and_casefold() -> None:
    sets = [["  Alice ", "BOB", "Straße", "e\u0301", "007"], ["alice", "bob", "STRASSE", "\u00e9", "7", "\talice\n"]]
    assert run(sets)["ids"] == ["é"]
    res = run(sets, {"casefold": True})
    assert res["ids"] == expected(sets, casefold=True) == ["alice", "bob", "strasse", "é"]
    assert res["casefold"] is True


def test_non_ascii_ids_in_result() -> None:
    sets = [["客户-1", "клиент-2", "🙂", "x"], ["🙂", "клиент-2", "y"]]
    res = run(sets)
    assert res["ids"] == sorted(["клиент-2", "🙂"])


def test_cardinality_output() -> None:
    sets = random_sets(random.Random(8))
    res = run(sets, {"output": "cardinality"})
    assert "ids" not in res and res["size"] == len(expected(sets)) and res["output"] == "cardinality"


def test_only_the_recipient_gets_a_result_and_commitments_open() -> None:
    sets = random_sets(random.Random(12))
    parties = make_parties(sets, recipient=1)
    run_local(parties)
    rec, other = parties[1], parties[0]
    assert other.result() is None and rec.result() is not None
    assert rec.result_commitment() == other.result_commitment()
    opening = rec.commitment_opening()
    assert len(opening) == 16 + 32 and opening[:16] == other.commitment_opening()
    assert COMMITMENT.open(rec.result() or b"", opening) == rec.result_commitment()
    assert PsiOtProtocol.commitment_for(rec.result() or b"", opening) == rec.result_commitment()
    with pytest.raises(ProtocolError, match="psi-ot opening"):
        COMMITMENT.open(rec.result() or b"", opening[8:])
    assert COMMITMENT.open((rec.result() or b"") + b" ", opening) != rec.result_commitment()


def test_unfinished_protocol_has_no_commitment() -> None:
    parties = make_parties([["a"], ["a"]])
    with pytest.raises(ProtocolError, match="not finished"):
        parties[0].result_commitment()
    with pytest.raises(ProtocolError, match="not finished"):
        parties[1].commitment_opening()


def test_messages_are_split_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psi_ot, "ROW_BINS", 1024)
    monkeypatch.setattr(psi_ot, "VALUES_PER_MESSAGE", 1000)
    rng = random.Random(4)
    sets = [[str(rng.randrange(9000)) for _ in range(3000)] for _ in range(2)]
    parties = make_parties(sets)
    transcript = run_local(parties, shuffle_seed=4)
    kinds = [m.kind for m in transcript]
    assert kinds.count("rows") == -(-parties[0]._bins // 1024) >= 4
    assert kinds.count("values") == -(-3 * len(set(sets[1])) // 1000) >= 8
    assert result_of(parties)["ids"] == expected(sets)


def test_message_sizes_at_full_scale_stay_under_the_mailbox_limit() -> None:
    # 40 k x 40: two "rows" messages of at most 2 MiB + header, the mailbox takes 8 MiB
    sets = [[f"r{i}" for i in range(40_000)], [f"r{i}" for i in range(0, 400, 10)]]
    parties = make_parties(sets)
    transcript = run_local(parties)
    assert max(len(m.payload) for m in transcript) <= 4 << 20
    assert [m.kind for m in transcript].count("rows") == 2
    assert result_of(parties)["size"] == 40


def test_process_pool_and_in_process_give_identical_transcripts() -> None:
    sets = [[str(i) for i in range(0, 60_000, 2)], [str(i) for i in range(0, 6000, 3)]]
    plain = make_parties(sets)
    t1 = run_local(plain, shuffle_seed=1)
    calls: list[int] = []
    with multiprocessing.get_context("fork").Pool(2) as pool:

        def pmap(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            calls.append(len(items))
            return pool.map(fn, items)

        pooled = make_parties(sets, parallel_map=pmap)
        t2 = run_local(pooled, shuffle_seed=1)
    assert t1 == t2
    assert plain[0].result() == pooled[0].result()
    assert max(calls) >= 2  # 38 k bins are 2 pieces of work


# -- determinism and resume -------------------------------------------------------------------


def test_deterministic_transcripts() -> None:
    sets = random_sets(random.Random(30))
    t1 = run_local(make_parties(sets), shuffle_seed=9)
    t2 = run_local(make_parties(sets), shuffle_seed=9)
    assert t1 == t2
    a, b = make_parties(sets), make_parties(sets, seed_salt="other")
    t3, t4 = run_local(a), run_local(b)
    assert not {m.payload for m in t3} & {m.payload for m in t4}  # fresh seeds, fresh transcript
    assert result_of(a) == result_of(b)


def test_resumed_party_replays_identical_messages() -> None:
    """A worker restarted from its seed, fed the messages it had received, re-emits the same."""
    sets = random_sets(random.Random(40))
    parties = make_parties(sets)
    transcript = run_local(parties, shuffle_seed=2)
    for i, me in enumerate(WHO):
        fresh = make_parties(sets)[i]
        out = fresh.start()
        for m in transcript:
            if m.receiver == me:
                out += fresh.receive(m)
        assert out == [m for m in transcript if m.sender == me]
        assert fresh.result_commitment() == parties[0].result_commitment()


# -- refusals ---------------------------------------------------------------------------------


def with_payload(msg: Message, payload: bytes) -> Message:
    return Message(msg.sender, msg.receiver, msg.round, msg.kind, payload, msg.seq)


def tamper_first(kind: str, change: Callable[[Message], Message]) -> Callable[[Message], Message | None]:
    done: list[bool] = []

    def hook(msg: Message) -> Message | None:
        if msg.kind == kind and not done:
            done.append(True)
            return change(msg)
        return msg

    return hook


def set_point(payload: bytes, offset: int, point: bytes) -> bytes:
    return payload[:offset] + point + payload[offset + 32 :]


IDENTITY = b"\x01" + bytes(31)
NOT_ON_CURVE = b"\x02" + bytes(31)  # y = 2 gives no x on edwards25519
SMALL_ORDER = bytes(32)  # y = 0: a point of order 4


TAMPERS: dict[str, tuple[str, Callable[[Message], Message], str]] = {
    "points-truncated": ("ot-points", lambda m: with_payload(m, m.payload[:-1]), "bytes, expected"),
    "points-extended": ("ot-points", lambda m: with_payload(m, m.payload + b"\0"), "bytes, expected"),
    "points-huge-set": (
        "ot-points",
        lambda m: with_payload(m, struct.pack(">Q", 1 << 40) + m.payload[8:]),
        "at most",
    ),
    "points-identity": ("ot-points", lambda m: with_payload(m, set_point(m.payload, 8, IDENTITY)), "edwards25519"),
    "points-off-curve": ("ot-points", lambda m: with_payload(m, set_point(m.payload, 8 + 32 * 5, NOT_ON_CURVE)), "5"),
    "points-small-order": ("ot-points", lambda m: with_payload(m, set_point(m.payload, 8, SMALL_ORDER)), "subgroup"),
    "points-wrong-round": ("ot-points", lambda m: Message(m.sender, m.receiver, 2, m.kind, m.payload, m.seq), "round"),
    "reply-truncated": ("ot-reply", lambda m: with_payload(m, m.payload[:-32]), "bytes"),
    "reply-bins-not-aligned": (
        "ot-reply",
        lambda m: with_payload(m, struct.pack(">I", struct.unpack_from(">I", m.payload)[0] + 1) + m.payload[4:]),
        "multiple of 128",
    ),
    "reply-attempt": ("ot-reply", lambda m: with_payload(m, m.payload[:4] + b"\x09" + m.payload[5:]), "attempt"),
    "reply-row-count": (
        "ot-reply",
        lambda m: with_payload(m, m.payload[:5] + struct.pack(">I", 7) + m.payload[9:]),
        "row messages",
    ),
    "reply-off-curve": ("ot-reply", lambda m: with_payload(m, set_point(m.payload, 9, NOT_ON_CURVE)), "base-OT reply"),
    "reply-small-order": ("ot-reply", lambda m: with_payload(m, set_point(m.payload, 9, SMALL_ORDER)), "subgroup"),
    "points-base-point": (
        "ot-points",
        lambda m: with_payload(m, set_point(m.payload, 8 + 32 * 3, kkrt.ot_base(local_binding(7)))),
        "point 3",
    ),
    "reply-wrong-round": ("ot-reply", lambda m: Message(m.sender, m.receiver, 3, m.kind, m.payload, m.seq), "round"),
    "rows-truncated": ("rows", lambda m: with_payload(m, m.payload[:-1]), "bytes, expected"),
    "rows-no-header": ("rows", lambda m: with_payload(m, b"\0\0"), "header"),
    "rows-wrong-index": ("rows", lambda m: with_payload(m, struct.pack(">II", 1, 1) + m.payload[8:]), "expected 0"),
    "values-truncated": ("values", lambda m: with_payload(m, m.payload[:-3]), "bytes, expected"),
    "values-wrong-count": ("values", lambda m: with_payload(m, struct.pack(">II", 0, 2) + m.payload[8:]), "of 2"),
    "values-wrong-kind": ("values", lambda m: Message(m.sender, m.receiver, 3, "set", m.payload, m.seq), "kind"),
    "result-hash-short": ("result-hash", lambda m: with_payload(m, m.payload[:31]), "31 bytes"),
    "result-hash-round": ("result-hash", lambda m: Message(m.sender, m.receiver, 5, m.kind, m.payload, m.seq), "round"),
}


@pytest.mark.parametrize("case", sorted(TAMPERS))
def test_tampered_messages_are_refused(case: str) -> None:
    kind, change, match = TAMPERS[case]
    parties = make_parties([["a", "b", "c"], ["b", "c", "d"]])
    with pytest.raises(ProtocolError, match=match):
        drive(parties, tamper_first(kind, change))


@pytest.mark.parametrize("kind", ["ot-points", "ot-reply", "rows", "values", "result-hash"])
def test_replayed_messages_are_refused(kind: str) -> None:
    """The runtime drops a duplicate by its sequence number before the protocol sees it; a
    replay that still reaches the protocol is a ProtocolError, never a second evaluation."""
    parties = make_parties([["a", "b"], ["b", "c"]])
    by_name = {p.ctx.me: p for p in parties}
    transcript = run_local(parties)
    msg = next(m for m in transcript if m.kind == kind)
    with pytest.raises(ProtocolError, match=r"duplicate|after the last"):
        by_name[msg.receiver].receive(msg)


def test_messages_to_the_wrong_role_and_before_start() -> None:
    parties = make_parties([["a"], ["a"]])
    rec, snd = parties
    msg = Message(snd.ctx.me, rec.ctx.me, 2, "rows", b"", 0)
    with pytest.raises(ProtocolError, match="before start"):
        rec.receive(msg)
    rec.start()
    snd.start()
    with pytest.raises(ProtocolError, match="sent to the recipient"):
        rec.receive(msg)
    with pytest.raises(ProtocolError, match="sent to the OPRF sender"):
        snd.receive(Message(rec.ctx.me, snd.ctx.me, 1, "ot-points", b"", 0))
    with pytest.raises(ProtocolError, match="before 'ot-reply'"):
        snd.receive(Message(rec.ctx.me, snd.ctx.me, 2, "rows", b"", 0))
    with pytest.raises(ProtocolError, match="before the base OTs"):
        rec.receive(Message(snd.ctx.me, rec.ctx.me, 3, "values", b"", 0))
    with pytest.raises(ProtocolError, match="before this party's part"):
        snd.receive(Message(rec.ctx.me, snd.ctx.me, 4, "result-hash", bytes(32), 0))
    with pytest.raises(ProtocolError, match="not a peer"):
        rec.receive(Message("0xstranger", rec.ctx.me, 1, "ot-points", b"", 0))
    with pytest.raises(ProtocolError, match="twice"):
        rec.start()


def test_tampered_result_hash_breaks_commitment_agreement() -> None:
    parties = make_parties([["a", "b"], ["b"]])
    flip = tamper_first("result-hash", lambda m: with_payload(m, bytes([m.payload[0] ^ 1]) + m.payload[1:]))
    drive(parties, flip)
    assert parties[0].result_commitment() != parties[1].result_commitment()


# -- participants and parameters ------------------------------------------------------------


def test_participant_count_is_refused() -> None:
    with pytest.raises(ProtocolError, match="psi-ot takes exactly 2 participants, not 3"):
        make_parties([["a"], ["a"], ["a"]])
    with pytest.raises(ProtocolError, match="psi-ot takes exactly 2 participants, not 1"):
        PsiOtProtocol.check_participant_count(1)
    PsiOtProtocol.check_participant_count(2)
    assert protocol_class("psi-ot") is PsiOtProtocol
    assert protocol_class("private-query").participant_range == (2, 2)
    assert protocol_class("psi").participant_range == (2, 0xFFFF)
    protocol_class("psi").check_participant_count(5)
    with pytest.raises(ProtocolError, match="psi takes between 2 and 65535 participants, not 1"):
        protocol_class("psi").check_participant_count(1)
    with pytest.raises(ProtocolError, match="fedavg takes between 3"):
        protocol_class("fedavg").check_participant_count(2)


def test_validate_params() -> None:
    assert PsiOtProtocol.validate_params({}) == {"id_column": None, "output": "ids", "casefold": False}
    for bad, match in [
        ({"bucket_size": 1024}, "unknown psi-ot params"),
        ({"output": "everything"}, "output"),
        ({"casefold": "yes"}, "casefold"),
        ({"id_column": ""}, "id_column"),
    ]:
        with pytest.raises(ProtocolError, match=match):
            PsiOtProtocol.validate_params(bad)
    with pytest.raises(ProtocolError, match="must be an object"):
        PsiOtProtocol.validate_params([])  # type: ignore[arg-type]


def test_progress_is_reported_without_the_intersection_size() -> None:
    seen: list[tuple[float, str]] = []
    sets = [[f"x{i}" for i in range(300)], [f"x{i}" for i in range(150, 600)]]
    run(sets, progress=lambda f, what: seen.append((f, what)))
    assert seen and seen[-1][0] == 1.0
    assert not any("150" in what for _, what in seen)


# -- primitives -----------------------------------------------------------------------------


@pytest.mark.parametrize(("rows", "cols"), [(8, 8), (16, 64), (128, 512), (512, 1024), (40, 8), (8, 200)])
def test_transpose_bits_matches_numpy(rows: int, cols: int) -> None:
    rng = np.random.default_rng(rows * cols)
    packed = rng.integers(0, 256, size=(rows, cols // 8), dtype=np.uint8)
    want = np.packbits(np.unpackbits(packed, axis=1).T, axis=1)
    got = kkrt.transpose_bits(packed)
    assert got.shape == (cols, rows // 8) and np.array_equal(got, want)
    assert np.array_equal(kkrt.transpose_bits(got), packed)


def test_cuckoo_places_every_item_once_in_one_of_its_bins() -> None:
    n = 20_000
    digests = np.frombuffer(hashlib.shake_256(b"items").digest(16 * n), dtype=np.uint8).reshape(n, 16)
    bins = kkrt.bin_count(n)
    assert bins % 128 == 0 and bins >= 1.27 * n + 32
    cands = kkrt.candidate_bins(b"k" * 16, digests, bins)
    placed = kkrt.cuckoo(cands, bins)
    assert placed is not None
    table, which = placed
    items = table[table >= 0]
    assert sorted(items.tolist()) == list(range(n))  # every item exactly once
    assert np.all(cands[np.arange(n), which] == np.flatnonzero(table >= 0)[np.argsort(items)])
    assert np.all(table[cands[np.arange(n), which]] == np.arange(n))


def test_cuckoo_failure_is_reported() -> None:
    cands = np.zeros((3, 3), dtype=np.int64)  # three items that all want bin 0
    assert kkrt.cuckoo(cands, 128) is None


def test_base_ots_give_the_receiver_exactly_its_chosen_seeds() -> None:
    binding = hashlib.sha256(b"binding").digest()
    base = kkrt.ot_base(binding)
    choices = np.unpackbits(np.frombuffer(hashlib.sha256(b"s").digest() * 2, dtype=np.uint8))
    k = [kkrt.scalar(hashlib.sha512(b"k%d" % j).digest()) for j in range(kkrt.WIDTH)]
    r = kkrt.scalar(hashlib.sha512(b"r").digest())
    points = kkrt.ot_receiver_points(base, choices, k)
    reply, seeds0, seeds1 = kkrt.ot_sender(binding, base, points, r)
    got = kkrt.ot_receiver_seeds(binding, points, reply, k)
    for j in range(kkrt.WIDTH):
        assert got[j] == (seeds1[j] if choices[j] else seeds0[j])
        assert got[j] != (seeds0[j] if choices[j] else seeds1[j])
    with pytest.raises(kkrt.OtError, match="point 7 is the base point"):
        kkrt.ot_sender(binding, base, points[: 7 * 32] + base + points[8 * 32 :], r)


def test_oprf_values_have_the_stated_length() -> None:
    assert kkrt.prf_bytes(128, 0) == 6  # 40 + 7 + 1 bits
    assert kkrt.prf_bytes(kkrt.bin_count(100_000), 100_000) == 10  # 40 + 17 + 19 bits
    assert kkrt.prf_bytes(kkrt.bin_count(1 << 31), 1 << 31) <= 14


def test_oprf_hash_is_the_chained_fixed_key_aes_compression() -> None:
    """H(b, row): h_0 = g(u128be(b)), h_i = g(h_{i-1} xor block i), g(z) = AES_K(z) xor z,
    checked against a literal one-row-at-a-time implementation; every bit of the bin and of
    the row changes the value."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    rng = np.random.default_rng(7)
    key = bytes(range(16))
    bins = rng.integers(0, 2**32, size=50, dtype=np.uint64)
    rows = rng.integers(0, 256, size=(50, 64), dtype=np.uint8)

    def literal(b: int, row: bytes) -> bytes:
        aes = Cipher(algorithms.AES(key), modes.ECB()).encryptor()

        def g(z: bytes) -> bytes:
            return bytes(x ^ y for x, y in zip(aes.update(z), z, strict=True))

        h = g(b.to_bytes(16, "big"))
        for i in range(4):
            h = g(bytes(x ^ y for x, y in zip(h, row[16 * i : 16 * i + 16], strict=True)))
        return h

    got = kkrt.prf(key, bins, rows, 13)
    assert got == b"".join(literal(int(b), rows[i].tobytes())[:13] for i, b in enumerate(bins))
    one = kkrt.prf(key, bins[:1], rows[:1], 16)
    for bit in range(512):
        flipped = rows[:1].copy()
        flipped[0, bit // 8] ^= 1 << (bit % 8)
        assert kkrt.prf(key, bins[:1], flipped, 16) != one
    for bit in range(32):
        assert kkrt.prf(key, bins[:1] ^ np.uint64(1 << bit), rows[:1], 16) != one
    assert kkrt.prf(bytes(16), bins[:1], rows[:1], 16) != one
    with pytest.raises(ValueError, match="1 to 16 bytes"):
        kkrt.prf(key, bins, rows, 17)


@pytest.mark.parametrize("sizes", [(3000, 5000), (5000, 300), (0, 40), (40, 0)])
def test_each_party_bounds_what_its_peer_will_send_as_soon_as_it_knows_the_sizes(sizes: tuple[int, int]) -> None:
    """`inbound_bytes`: R knows after 'ot-points', S after 'ot-reply', before the bulk ('rows',
    'values') arrives; the bound covers every inbox entry the peer's messages make (payload and
    head) and overshoots by less than 1 KiB a message."""
    from pcn.runtime.inbox import encode

    sets = [[f"r{i}" for i in range(sizes[0])], [f"s{i}" if i % 3 else f"r{i}" for i in range(sizes[1])]]
    parties = make_parties(sets)
    by_name = {p.ctx.me: p for p in parties}
    assert [p.inbound_bytes() for p in parties] == [{}, {}]
    known_at_bulk: list[dict[str, int]] = []

    def watch(msg: Message) -> Message:
        if msg.kind in ("rows", "values"):
            known_at_bulk.append(by_name[msg.receiver].inbound_bytes())
        return msg

    transcript = drive(parties, watch)
    for me, p in by_name.items():
        peer = WHO[1 - WHO.index(me)]
        got = [m for m in transcript if m.receiver == me]
        stored = sum(len(encode(m)) for m in got)
        assert list(p.inbound_bytes()) == [peer]
        assert stored <= p.inbound_bytes()[peer] <= stored + 1024 * len(got)
    assert known_at_bulk and all(known_at_bulk) and len({tuple(k.items()) for k in known_at_bulk}) <= 2


def test_submit_checks_the_participant_count_before_the_chain() -> None:
    from pcn.runtime.operations import InvalidParameters, check_participants

    check_participants(None, "psi-ot", 2)
    check_participants(None, "psi", 3)
    check_participants(None, "not-built-in", 3)  # its nodes judge
    with pytest.raises(InvalidParameters, match="not valid for psi-ot: psi-ot takes exactly 2 participants, not 3"):
        check_participants(None, "psi-ot", 3)
    with pytest.raises(InvalidParameters, match="private-query takes exactly 2"):
        check_participants(None, "private-query", 3)


# -- bounded memory: Arrow columns, streamed extension and values --------------------------------


def test_arrow_columns_give_the_same_transcript_as_lists() -> None:
    """A node's readers hand psi-ot Arrow columns, normalised without a Python object per cell;
    the protocol must not be able to tell: same messages, same result."""
    rng = random.Random(11)
    sets = [
        [f" Cust-{rng.randrange(3000)}\x1c" for _ in range(2500)] + ["", None, "\t", "cust-7"],
        [f"cust-{rng.randrange(3000)}" for _ in range(2000)] + ["CUST-7 ", None],
    ]
    for params in ({}, {"casefold": True}):
        transcripts, results = [], []
        for arrow in (False, True):
            parties = make_parties(sets, params, arrow=arrow)
            transcripts.append([(m.kind, m.payload) for m in run_local(parties)])
            results.append(result_of(parties))
        assert transcripts[0] == transcripts[1]
        assert results[0] == results[1]
        assert results[1]["ids"] == expected(sets, params.get("casefold", False))


def test_the_extension_and_the_values_are_streamed_in_bounded_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """R computes the u columns ROW_BATCH pieces at a time and sends each batch before computing
    the next; S evaluates the OPRF as each batch of rows arrives, and gathers its values message
    by message: no party holds the whole extension or all values as messages at once."""
    monkeypatch.setattr(psi_ot, "ROW_BINS", 1024)
    monkeypatch.setattr(psi_ot, "ROW_BATCH", 2)
    monkeypatch.setattr(psi_ot, "VALUES_PER_MESSAGE", 4000)
    rng = random.Random(5)
    sets = [[f"k{rng.randrange(20000)}" for _ in range(6000)], [f"k{rng.randrange(20000)}" for _ in range(5000)]]
    events: list[tuple[str, Any]] = []

    def pmap(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        events.append(("map", fn.__name__, len(items)))
        return [fn(x) for x in items]

    rec, snd = make_parties(sets, parallel_map=pmap)
    queue: deque[Message] = deque(snd.start())
    assert list(rec.start()) == []
    points = queue.popleft()
    lazy = rec.receive(points)
    assert not isinstance(lazy, list)  # a generator: nothing computed yet
    assert not [e for e in events if e[1] == "receiver_piece"]
    for m in lazy:
        events.append(("sent", m.kind, None))
        queue.append(m)
    rows_sent = [m for m in queue if m.kind == "rows"]
    assert len(rows_sent) == -(-kkrt.bin_count(len(set(sets[0]))) // 1024) > 4
    # R: each batch of at most 2 pieces is sent before the next is computed
    r_events = [e for e in events if e[1] in ("receiver_piece", "rows")]
    batches = [e[2] for e in r_events if e[0] == "map"]
    # (a batch of one piece runs in-process, without the parallel map)
    assert max(batches) <= 2 and sum(batches) >= len(rows_sent) - 1
    pattern = [e[0] for e in r_events]
    assert pattern == ["map", "sent", "sent"] * (len(rows_sent) // 2) + ["sent"] * (len(rows_sent) % 2)
    events.clear()
    out: list[Message] = []
    for m in queue:
        out.extend(snd.receive(m))
    # S: one evaluation per 2 received pieces (the last batch may be shorter)
    s_batches = [e[2] for e in events if e[1] == "sender_piece"]
    assert s_batches == [2] * (len(rows_sent) // 2)
    values = [m for m in out if m.kind == "values"]
    assert len(values) == -(-3 * len(set(sets[1])) // 4000) and all(
        len(m.payload) - 8 == 4000 * kkrt.prf_bytes(kkrt.bin_count(len(set(sets[0]))), len(set(sets[1])))
        for m in values[:-1]
    )
    for m in values:
        out2 = list(rec.receive(m))
    assert [m.kind for m in out2] == ["result-hash"]
    assert result_of([rec, snd])["ids"] == expected(sets)


def test_values_before_the_recipient_sent_all_its_rows_are_refused() -> None:
    rec, snd = make_parties([["a", "b"], ["b"]])
    points = next(iter(snd.start()))
    assert list(rec.start()) == []
    rec.receive(points)  # the extension is never iterated: R has sent nothing
    with pytest.raises(ProtocolError, match="before this party sent all its rows"):
        rec.receive(Message(snd.ctx.me, rec.ctx.me, 3, "values", struct.pack(">II", 0, 1) + bytes(3 * 8), 1))


@pytest.mark.parametrize("size", [5, 8, 11])
def test_the_matcher_finds_exactly_the_equal_values(size: int) -> None:
    """R's lookup of S's values: by an 8-byte key, then the whole value; groups with equal keys
    (own values sharing their first 8 bytes) take the slow path and still find every match."""
    rng = np.random.default_rng(size)
    own = rng.integers(0, 256, size=(3000, size), dtype=np.uint8)
    own[1, :8] = own[0, :8]  # equal keys; for size <= 8 equal values: both items match
    own[2, :8], own[2, 8:] = own[0, :8], own[0, 8:] ^ 1  # equal key, other value (size > 8)
    which = (np.arange(3000) % 3).astype(np.int8)
    which[[0, 1, 2]] = 0
    matcher = psi_ot._Matcher.build(own, which)
    assert matcher.repeated[0]
    theirs_items = np.array([0, 5, 7, 2998, 1500])
    theirs = own[theirs_items].copy()
    theirs[4, -1] ^= 1  # one value off by one bit: no match
    hits = np.zeros(3000, dtype=bool)
    for i in range(3):
        matcher.mark(i, theirs[which[theirs_items] == i], hits)
    want = {0, 5, 7, 2998}
    if size <= 8:
        want |= {1, 2}  # items 1 and 2 hold item 0's value
    assert set(np.flatnonzero(hits).tolist()) == want


def test_cuckoo_places_a_table_near_its_load_threshold() -> None:
    """3-hash cuckoo holds up to about 91% load; psi-ot runs at 79%. Parallel insertion still
    places every item at 88% and is deterministic."""
    n = 50_000
    bins = 128 * (n * 100 // 88 // 128 + 1)
    digests = np.frombuffer(hashlib.shake_256(b"load").digest(16 * n), dtype=np.uint8).reshape(n, 16)
    cands = kkrt.candidate_bins(b"c" * 16, digests, bins)
    first, second = kkrt.cuckoo(cands, bins), kkrt.cuckoo(cands, bins)
    assert first is not None and second is not None
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    table, which = first
    assert np.array_equal(table[cands[np.arange(n), which]], np.arange(n))
    assert np.count_nonzero(table >= 0) == n


def test_id_digests_are_a_permutation_of_short_ids_and_blake2b_of_long_ones() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    prp_key, hash_key = b"p" * 16, b"h" * 32
    ids = ["a", "a\x00", "x" * 15, "x" * 16, "\u00e9" * 7, "\u00e9" * 8, "long-" * 10, "\U0001f600", "7"]
    encoded = [x.encode() for x in ids]
    offsets = np.cumsum([0] + [len(e) for e in encoded])
    got = kkrt.id_digests((prp_key, hash_key, b"".join(encoded), offsets))
    want = b""
    for e in encoded:
        if len(e) <= kkrt.SHORT_ID:
            block = e + bytes(kkrt.SHORT_ID - len(e)) + bytes([len(e)])
            want += Cipher(algorithms.AES(prp_key), modes.ECB()).encryptor().update(block)
        else:
            want += hashlib.blake2b(e, key=hash_key, person=b"pcn/psi-ot/id", digest_size=16).digest()
    assert got == want
    assert len({got[i : i + 16] for i in range(0, len(got), 16)}) == len(ids)


def test_ids_of_every_length_intersect_like_python_sets() -> None:
    """IDs on both sides of the 15-byte boundary of the digest, multi-byte UTF-8 included."""
    rng = random.Random(8)
    pool = ["".join(rng.choice("ab\u00e9\u4e2d7") for _ in range(rng.randrange(1, 40))) for _ in range(4000)] + [
        f"{rng.getrandbits(128):032x}-{i}" for i in range(1000)
    ]
    sets = [rng.sample(pool, 2500), rng.sample(pool, 2200)]
    for arrow in (False, True):
        assert run(sets, arrow=arrow)["ids"] == expected(sets)
