"""The private-query (keyword PIR) protocol, driven in-process with run_local."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import random
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from pcn.algorithms.base import Message, PartyContext, ProtocolError, TaskCache, TaskServices, run_local
from pcn.algorithms.codehash import algorithm_code_hash
from pcn.algorithms.private_query import encrypted as enc_mod
from pcn.algorithms.private_query.encrypted import (
    AEAD_OVERHEAD,
    HEADER_BYTES,
    TAG_BYTES,
    EncryptedTable,
    MemoryTableCache,
    UnreadableEntry,
    entry_tag,
    normalise_key,
    preprocess_table,
    value_key,
)
from pcn.algorithms.private_query.group import (
    L,
    P,
    clamp,
    h2c_prefix,
    hash_and_multiply,
    hash_to_curve,
    is_clamped,
    is_valid_point,
    multiply,
    scalar_bytes,
    unblinding_scalars,
)
from pcn.algorithms.private_query.protocol import (
    COMMIT_DOMAIN,
    RESULT_DOMAIN,
    PrivateQueryHolder,
    PrivateQueryProtocol,
    PrivateQueryQuerier,
)
from pcn.data.errors import DataError
from pcn.data.table import Table

Q, H = "0xquerier", "0xholder"
PARAMS: dict[str, Any] = {"value_columns": ["score", "name"]}


def seed_for(name: str, salt: str = "") -> bytes:
    return hashlib.sha256(f"seed/{name}/{salt}".encode()).digest()


def org_epoch_key(org_secret: bytes, labels: list[str] | None = None) -> Callable[[str], bytes]:
    """An organisation's epoch key service, like the node's HMAC of its account key;
    `labels` records what it was asked for."""

    def epoch_key(label: str) -> bytes:
        if labels is not None:
            labels.append(label)
        return hashlib.sha256(org_secret + label.encode()).digest()

    return epoch_key


def holder_services(cache: TaskCache | None = None, org_secret: bytes = b"holder org secret") -> TaskServices:
    return TaskServices(epoch_key=org_epoch_key(org_secret), **({"cache": cache} if cache is not None else {}))


def make_pair(
    query: Table,
    holder: Table,
    params: dict[str, Any] | None = None,
    *,
    seed_salt: str = "",
    holder_seed_salt: str | None = None,
    task_id: int = 7,
    id_column: str = "id",
    progress: Callable[[float, str], None] | None = None,
    parallel_map: Callable[[Callable[[Any], Any], Any], list[Any]] | None = None,
    services: TaskServices | None = None,
    querier_services: TaskServices | None = None,
) -> tuple[PrivateQueryProtocol, PrivateQueryProtocol]:
    """A querier (default: no task services, so no cache) and a holder with `services`
    (default: an organisation epoch key and no cache)."""
    p = PARAMS if params is None else params
    who = [Q, H]  # on-chain order; the querier is the recipient
    hsalt = seed_salt if holder_seed_salt is None else holder_seed_salt
    q = PrivateQueryProtocol.create(
        PartyContext(
            task_id,
            Q,
            who,
            Q,
            p,
            seed_for(Q, seed_salt),
            progress,
            id_column,
            parallel_map,
            services=querier_services or TaskServices(),
        ),
        query,
    )
    h = PrivateQueryProtocol.create(
        PartyContext(
            task_id,
            H,
            who,
            Q,
            p,
            seed_for(H, hsalt),
            progress,
            id_column,
            parallel_map,
            services=services or holder_services(),
        ),
        holder,
    )
    return q, h


def result_of(q: PrivateQueryProtocol, h: PrivateQueryProtocol) -> dict[str, Any]:
    assert q.done and h.done
    out = q.result()
    assert out is not None and h.result() is None
    assert out == json.dumps(json.loads(out), sort_keys=True, separators=(",", ":")).encode()  # canonical
    assert q.result_commitment() == h.result_commitment()
    assert PrivateQueryProtocol.commitment_for(out, q.commitment_opening()) == q.result_commitment()
    return json.loads(out)  # type: ignore[no-any-return]


def run(
    query: Table, holder: Table, params: dict[str, Any] | None = None, shuffle_seed: int | None = None, **kw: Any
) -> tuple[dict[str, Any], list[Message], PrivateQueryProtocol, PrivateQueryProtocol]:
    q, h = make_pair(query, holder, params, **kw)
    transcript = run_local([q, h], shuffle_seed=shuffle_seed)
    return result_of(q, h), transcript, q, h


def reference(query: Table, holder: Table, key_column: str, query_column: str, value_columns: list[str]) -> dict:
    """Plain Python lookup with the same normalisation."""
    table: dict[str, list[dict[str, str | None]]] = {}
    for i, cell in enumerate(holder.column(key_column)):
        k = normalise_key(cell)
        if k is not None:
            table.setdefault(k, []).append({c: holder.column(c)[i] for c in value_columns})
    asked = sorted({k for k in map(normalise_key, query.column(query_column)) if k is not None})
    return {
        "algorithm": "private-query",
        "hits": {k: table[k] for k in asked if k in table},
        "misses": [k for k in asked if k not in table],
        "queried": len(asked),
        "table_rows": holder.num_rows,
    }


def random_case(rng: random.Random, rows: int, queries: int) -> tuple[Table, Table]:
    ids = [f"cust-{rng.randrange(rows * 2):06d}" for _ in range(rows)]  # duplicates likely
    for i in rng.sample(range(rows), min(rows, 5)):
        ids[i] = rng.choice([None, "", "  "])
    holder = Table(
        {
            "id": ids,
            "score": [rng.choice([None, str(rng.randint(300, 850))]) for _ in range(rows)],
            "name": [rng.choice(["Zhang San", "李四", 'O\'Brien "x"', "", None]) for _ in range(rows)],
            "secret": [f"s{i}" for i in range(rows)],
        }
    )
    asked = [f"cust-{rng.randrange(rows * 2):06d}" for _ in range(queries)]
    asked += [rng.choice([i for i in ids if i]) for _ in range(queries // 2)]  # sure hits
    asked += [None, "", asked[0], " " + asked[1] + "\t"]  # nulls, empties, duplicates
    rng.shuffle(asked)
    return Table({"id": asked}), holder


# -- correctness -------------------------------------------------------------------------


@pytest.mark.parametrize("shuffle_seed", [None, 3, 11])
@pytest.mark.parametrize("batch_size", [1, 7, 4096])
def test_matches_plain_lookup(shuffle_seed: int | None, batch_size: int) -> None:
    rng = random.Random(shuffle_seed or 0)
    query, holder = random_case(rng, rows=300, queries=60)
    params = {"value_columns": ["score", "name"], "batch_size": batch_size}
    got, transcript, _, _ = run(query, holder, params, shuffle_seed)
    assert got == reference(query, holder, "id", "id", ["score", "name"])
    assert got["hits"] and got["misses"]
    blinded = [m for m in transcript if m.kind == "blinded"]
    assert len(blinded) == -(-got["queried"] // batch_size)


def test_hits_and_misses() -> None:
    holder = Table({"id": ["a", "b", "c"], "score": ["1", "2", "3"], "name": ["x", "y", "z"]})
    got, *_ = run(Table({"id": ["c", "zz", "a"]}), holder)
    assert got == {
        "algorithm": "private-query",
        "hits": {"a": [{"name": "x", "score": "1"}], "c": [{"name": "z", "score": "3"}]},
        "misses": ["zz"],
        "queried": 2 + 1,
        "table_rows": 3,
    }


def test_duplicate_query_keys_are_asked_once() -> None:
    holder = Table({"id": ["a", "b"], "score": ["1", "2"], "name": ["x", "y"]})
    got, transcript, _, _ = run(Table({"id": ["a", "a", " a ", "b", "b", "q", "q"]}), holder)
    assert got["queried"] == 3
    assert got["hits"] == {"a": [{"name": "x", "score": "1"}], "b": [{"name": "y", "score": "2"}]}
    assert got["misses"] == ["q"]
    head = next(m for m in transcript if m.kind == "query-head")
    assert int.from_bytes(head.payload, "big") == 3  # the holder learns 3, not 7
    assert sum(len(m.payload) - 4 for m in transcript if m.kind == "blinded") == 3 * 32


def test_duplicate_table_keys_are_grouped_in_table_order() -> None:
    holder = Table(
        {
            "id": ["k", "j", "k", " k", "k\n"],
            "score": ["1", "2", "3", "4", "5"],
            "name": ["first", "other", "second", "third", "fourth"],
        }
    )
    got, transcript, _, _ = run(Table({"id": ["k", "j"]}), holder)
    assert [r["score"] for r in got["hits"]["k"]] == ["1", "3", "4", "5"]
    assert [r["name"] for r in got["hits"]["k"]] == ["first", "second", "third", "fourth"]
    assert got["hits"]["j"] == [{"name": "other", "score": "2"}]
    head = next(m for m in transcript if m.kind == "table-head")
    assert int.from_bytes(head.payload[16:24], "big") == 2  # one entry per distinct key


def test_a_key_with_many_rows_spans_several_slots() -> None:
    rows = 2000
    holder = Table(
        {
            "id": ["big"] * rows + [f"small{i}" for i in range(50)],
            "score": [str(i) for i in range(rows + 50)],
            "name": ["n" * 20] * (rows + 50),
        }
    )
    got, transcript, _, _ = run(Table({"id": ["big", "small3", "none"]}), holder)
    assert [r["score"] for r in got["hits"]["big"]] == [str(i) for i in range(rows)]
    assert got["hits"]["small3"] == [{"name": "n" * 20, "score": str(rows + 3)}]
    assert got["misses"] == ["none"]
    head = next(m for m in transcript if m.kind == "table-head")
    entries = int.from_bytes(head.payload[16:24], "big")
    slot = int.from_bytes(head.payload[24:28], "big")
    assert slot == enc_mod.SLOT_CAP and entries > 51  # the big key needs many slots, the rest one each


@pytest.mark.parametrize("shuffle_seed", [None, 5])
def test_empty_batch(shuffle_seed: int | None) -> None:
    holder = Table({"id": ["a"], "score": ["1"], "name": ["x"]})
    for query in (Table({"id": []}), Table({"id": [None, "", "   "]})):
        got, transcript, _, _ = run(query, holder, shuffle_seed=shuffle_seed)
        assert got == {"algorithm": "private-query", "hits": {}, "misses": [], "queried": 0, "table_rows": 1}
        assert not [m for m in transcript if m.kind in ("blinded", "evaluated")]


def test_empty_holder_table() -> None:
    holder = Table({"id": [], "score": [], "name": []})
    got, *_ = run(Table({"id": ["a", "b"]}), holder)
    assert got == {"algorithm": "private-query", "hits": {}, "misses": ["a", "b"], "queried": 2, "table_rows": 0}
    got, *_ = run(Table({"id": []}), holder)
    assert got["queried"] == 0 and got["table_rows"] == 0


def test_key_only_in_another_dataset_version_is_a_miss() -> None:
    v1 = Table({"id": ["a", "b", "gone"], "score": ["1", "2", "3"], "name": ["x", "y", "z"]})
    v2 = Table({"id": ["a", "b", "new"], "score": ["1", "20", "4"], "name": ["x", "y", "w"]})
    query = Table({"id": ["gone", "new", "b"]})
    old, *_ = run(query, v1)
    new, *_ = run(query, v2)
    assert old["hits"].keys() == {"gone", "b"} and old["misses"] == ["new"]
    assert new["hits"].keys() == {"new", "b"} and new["misses"] == ["gone"]
    assert new["hits"]["b"] == [{"name": "y", "score": "20"}]  # the current version's value


FULLWIDTH_ABC = "\uff21\uff22\uff23"


def test_unicode_normalisation() -> None:
    nfd = unicodedata.normalize("NFD", "Café")
    assert nfd != "Café"
    holder = Table(
        {"id": ["Café", "北京 ", FULLWIDTH_ABC], "score": ["1", "2", "3"], "name": ["nfc", "han", "fullwidth"]}
    )
    query = Table({"id": [f"  {nfd}\t", "北京", "CAFÉ", "ABC", "\u3000" + FULLWIDTH_ABC]})
    got, *_ = run(query, holder)
    assert got["hits"] == {
        "Café": [{"name": "nfc", "score": "1"}],
        "北京": [{"name": "han", "score": "2"}],
        FULLWIDTH_ABC: [{"name": "fullwidth", "score": "3"}],  # ideographic space stripped; width kept (NFC, not NFKC)
    }
    assert got["misses"] == ["ABC", "CAFÉ"]  # case and width are significant
    assert got["queried"] == 5


def test_values_with_nulls_and_empty_strings() -> None:
    holder = Table({"id": ["a", "b", "c"], "score": [None, "", "7"], "name": ["", None, None]})
    got, *_ = run(Table({"id": ["a", "b", "c"]}), holder)
    assert got["hits"] == {
        "a": [{"name": "", "score": None}],
        "b": [{"name": None, "score": ""}],
        "c": [{"name": None, "score": "7"}],
    }


def test_only_requested_value_columns_are_released() -> None:
    holder = Table({"id": ["a"], "score": ["1"], "name": ["x"], "secret": ["do not leak"]})
    got, transcript, _, _ = run(Table({"id": ["a"]}), holder, {"value_columns": ["score"]})
    assert got["hits"] == {"a": [{"score": "1"}]}
    assert not any(b"do not leak" in m.payload for m in transcript)


def test_explicit_key_and_query_columns() -> None:
    holder = Table({"phone": ["138", "139"], "score": ["1", "2"], "name": ["x", "y"], "id": ["138", "139"]})
    query = Table({"mobile": ["139", "999"], "id": ["138", "x"]})
    params = {"value_columns": ["score"], "key_column": "phone", "query_column": "mobile"}
    got, *_ = run(query, holder, params, id_column="")
    assert got["hits"] == {"139": [{"score": "2"}]} and got["misses"] == ["999"]
    with pytest.raises(ProtocolError, match="no key column"):
        run(query, holder, {"value_columns": ["score"]}, id_column="")


def test_data_errors() -> None:
    holder = Table({"id": ["a"], "score": ["1"], "name": ["x"]})
    q, h = make_pair(Table({"other": ["a"]}), holder)
    with pytest.raises(DataError, match="no column 'id'"):
        q.start()
    q, h = make_pair(Table({"id": ["a"]}), holder, {"value_columns": ["score", "income"]})
    with pytest.raises(DataError, match="no column 'income'"):
        h.start()


# -- privacy -----------------------------------------------------------------------------


def test_holder_never_sees_a_query_key_or_its_hash() -> None:
    rng = random.Random(2)
    query, holder = random_case(rng, rows=200, queries=40)
    got, transcript, _, h = run(query, holder, shuffle_seed=1)
    to_holder = b"".join(m.payload for m in transcript if m.receiver == H)
    prefix = h2c_prefix("default")
    asked = [k for k in map(normalise_key, query.column("id")) if k is not None]
    assert asked and got["queried"] == len(set(asked))
    assert h._scalar is not None
    for key in asked:
        kb = key.encode()
        point = hash_to_curve(prefix, kb)
        t = hash_and_multiply((h._scalar, prefix, [key]))
        for forbidden in (kb, hashlib.sha256(kb).digest(), hashlib.sha256(kb).digest()[:16], point, t):
            assert forbidden not in to_holder
    # Nor anything derived from the key without Q's secret: the blinded values of the same
    # keys in another task (fresh seed) are different, so two queries cannot be linked.
    _, other, _, _ = run(query, holder, shuffle_seed=1, seed_salt="another task", holder_seed_salt="")
    blinded = [m.payload[4:] for m in transcript if m.kind == "blinded"]
    blinded_other = [m.payload[4:] for m in other if m.kind == "blinded"]
    first = {b"".join(blinded)[i : i + 32] for i in range(0, len(b"".join(blinded)), 32)}
    second = {b"".join(blinded_other)[i : i + 32] for i in range(0, len(b"".join(blinded_other)), 32)}
    assert len(first) == got["queried"] and not first & second


def table_from(transcript: list[Message]) -> EncryptedTable:
    head = next(m for m in transcript if m.kind == "table-head")
    rows, slot = int.from_bytes(head.payload[8:16], "big"), int.from_bytes(head.payload[24:28], "big")
    body = b"".join(m.payload[4:] for m in transcript if m.kind == "table")
    return EncryptedTable(rows, slot, body)


def tags_of(table: EncryptedTable) -> set[bytes]:
    size = table.entry_size
    return {table.body[i : i + TAG_BYTES] for i in range(0, len(table.body), size)}


def test_querier_cannot_open_entries_it_did_not_ask_for() -> None:
    keys = [f"k{i}" for i in range(30)]
    holder = Table({"id": keys, "score": [str(i) for i in range(30)], "name": [f"name{i}" for i in range(30)]})
    asked = ["k1", "k5", "k9", "zz"]
    got, transcript, q, h = run(Table({"id": asked}), holder)
    assert sorted(got["hits"]) == ["k1", "k5", "k9"]
    table = table_from(transcript)
    assert table.num_entries == 30
    # Everything group-like the querier saw or can compute: its blinded values, the evaluated
    # values, their unblinding (= the OPRF values T_q of its own keys) and the tags.
    blinded = b"".join(m.payload[4:] for m in transcript if m.kind == "blinded")
    evaluated = b"".join(m.payload[4:] for m in transcript if m.kind == "evaluated")
    assert q._unblind is not None
    unblinded = multiply((q._unblind, evaluated, 0))
    seen = [blob[i : i + 32] for blob in (blinded, evaluated, unblinded) for i in range(0, len(blob), 32)]
    seen += [table.body[i * table.entry_size : i * table.entry_size + TAG_BYTES] * 2 for i in range(30)]
    assert h._scalar is not None
    prefix = h2c_prefix("default")
    opened = 0
    for key in keys:
        t_true = hash_and_multiply((h._scalar, prefix, [key]))
        rows = table.open(key, t_true)  # positive control: the real OPRF value opens every entry
        assert rows == [{"name": f"name{key[1:]}", "score": key[1:]}]
        if key in asked:
            assert t_true in unblinded
            continue
        for v in seen:
            assert table.open(key, v) is None
            aead = ChaCha20Poly1305(value_key(v, key.encode()))
            for i in range(table.num_entries):
                start = i * table.entry_size
                tag = table.body[start : start + TAG_BYTES]
                ct = table.body[start + TAG_BYTES : start + table.entry_size]
                with pytest.raises(InvalidTag):
                    aead.decrypt(bytes(12), ct, tag)
                opened += 1
    assert opened == 27 * len(seen) * 30


def test_entries_are_uniform_and_unordered() -> None:
    holder = Table({"id": ["a", "b", "c"], "score": ["1", "22222222222", ""], "name": ["x", "y", None]})
    table = preprocess_table(holder, "id", ["score", "name"], bytes(range(32)), "e")
    assert table.num_entries == 3 and len(table.body) == 3 * table.entry_size
    tags = [table.body[i * table.entry_size : i * table.entry_size + TAG_BYTES] for i in range(3)]
    assert tags == sorted(tags)
    assert table.entry_size == TAG_BYTES + table.slot_size + AEAD_OVERHEAD


# -- the preprocessing cache ---------------------------------------------------------------


def test_cache_reuses_the_encrypted_table() -> None:
    cache = MemoryTableCache()
    services = holder_services(cache)
    rng = random.Random(4)
    query, holder = random_case(rng, rows=500, queries=30)
    first, t1, _, h1 = run(query, holder, services=services)
    assert (cache.hits, cache.misses, cache.puts) == (0, 1, 1) and not h1.cache_hit
    assert h1.preprocess_seconds > 0
    query2, _ = random_case(random.Random(5), rows=500, queries=30)
    second, t2, _, h2 = run(query2, holder, seed_salt="", task_id=8, services=services)
    assert (cache.hits, cache.misses, cache.puts) == (1, 1, 1) and h2.cache_hit
    assert h2.preprocess_seconds == 0.0
    assert second == reference(query2, holder, "id", "id", ["score", "name"])
    assert table_from(t1).body == table_from(t2).body  # the same encrypted table
    again, *_ = run(query, holder, services=services)
    assert again == first and cache.hits == 2
    # A new epoch re-keys and re-preprocesses; so does another column selection.
    third, t3, _, h3 = run(query, holder, {"value_columns": ["score", "name"], "epoch": "2026-12"}, services=services)
    assert (cache.hits, cache.misses, cache.puts) == (2, 2, 2) and not h3.cache_hit
    assert third == first
    assert not tags_of(table_from(t3)) & tags_of(table_from(t1))
    run(query, holder, {"value_columns": ["score"]}, services=services)
    assert cache.misses == 3
    # A new dataset version is a different table: a miss, and the old key is not reused.
    columns = {c: list(holder.column(c)) for c in holder.names}
    columns["score"][0] = "999"
    run(query, Table(columns), services=services)
    assert cache.misses == 4


def test_epoch_key_makes_the_cache_reusable_across_tasks() -> None:
    cache = MemoryTableCache()
    labels: list[str] = []
    services = TaskServices(epoch_key=org_epoch_key(b"org master secret", labels), cache=cache)
    holder = Table({"id": ["a", "b"], "score": ["1", "2"], "name": ["x", "y"]})
    a, *_ = run(Table({"id": ["a", "c"]}), holder, seed_salt="task 1", task_id=1, services=services)
    b, *_ = run(Table({"id": ["b"]}), holder, seed_salt="task 2", task_id=2, services=services)  # other seeds
    assert cache.hits == 1 and cache.misses == 1
    assert a["hits"] == {"a": [{"name": "x", "score": "1"}]} and b["hits"] == {"b": [{"name": "y", "score": "2"}]}
    assert labels[0].startswith("pq-epoch/default/") and len(set(labels)) == 1
    # Another organisation's key (a node sharing the cache by mistake) is a cache miss, never
    # a wrong answer.
    c, *_ = run(Table({"id": ["a"]}), holder, services=holder_services(cache, b"another organisation"))
    assert cache.misses == 2 and c["hits"] == a["hits"]


def test_bad_epoch_key_service() -> None:
    holder = Table({"id": ["a"], "score": ["1"], "name": ["x"]})
    with pytest.raises(ProtocolError, match="32 bytes"):
        run(Table({"id": ["a"]}), holder, services=TaskServices(epoch_key=lambda label: b"short"))


def test_a_holder_needs_an_epoch_key() -> None:
    holder = Table({"id": ["a"], "score": ["1"], "name": ["x"]})
    with pytest.raises(ProtocolError, match="no organisation epoch key"):
        run(Table({"id": ["a"]}), holder, services=TaskServices())


def test_damaged_cache_entry_is_rebuilt() -> None:
    cache = MemoryTableCache()
    services = holder_services(cache)
    holder = Table({"id": ["a", "b"], "score": ["1", "2"], "name": ["x", "y"]})
    first, *_ = run(Table({"id": ["a"]}), holder, services=services)
    (key,) = list(cache._items)
    cache._items[key] = cache._items[key][:-1]
    second, _, _, h = run(Table({"id": ["a"]}), holder, services=services)
    assert second == first and not h.cache_hit and cache.puts == 2


# -- commitments, determinism, progress ----------------------------------------------------


def test_commitments_agree_and_open() -> None:
    holder = Table({"id": ["a", "b"], "score": ["1", "2"], "name": ["x", "y"]})
    _, transcript, q, h = run(Table({"id": ["a", "c"]}), holder)
    result = q.result()
    assert result is not None
    opening = q.commitment_opening()
    assert len(opening) == 128 and h.commitment_opening() == opening[:96]
    salt = opening[96:]
    result_hash = hashlib.sha256(RESULT_DOMAIN + salt + result).digest()
    assert next(m for m in transcript if m.kind == "result-hash").payload == result_hash
    assert q.result_commitment() == hashlib.sha256(COMMIT_DOMAIN + opening[:96] + result_hash).digest()
    assert PrivateQueryProtocol.commitment_for(result + b" ", opening) != q.result_commitment()
    with pytest.raises(ProtocolError, match="opening"):
        PrivateQueryProtocol.commitment_for(result, opening[:-1])


def transcript_key(transcript: list[Message]) -> list[tuple[Any, ...]]:
    return [(m.sender, m.receiver, m.round, m.kind, m.payload, m.seq) for m in transcript]


def test_deterministic_given_seeds() -> None:
    query, holder = random_case(random.Random(6), rows=200, queries=40)
    params = {"value_columns": ["score", "name"], "batch_size": 9}
    runs = [run(query, holder, params, shuffle_seed=2) for _ in range(2)]
    assert transcript_key(runs[0][1]) == transcript_key(runs[1][1])
    assert runs[0][0] == runs[1][0]
    other = run(query, holder, params, shuffle_seed=2, seed_salt="other")
    assert transcript_key(other[1]) != transcript_key(runs[0][1])
    assert other[0] == runs[0][0]  # different randomness, same answer


def test_resumed_party_replays_to_the_same_messages() -> None:
    query, holder = random_case(random.Random(7), rows=150, queries=30)
    params = {"value_columns": ["score"], "batch_size": 8}
    q, h = make_pair(query, holder, params)
    transcript = run_local([q, h], shuffle_seed=4)
    for i, victim in enumerate((q, h)):
        me = victim.ctx.me
        sent = [m for m in transcript if m.sender == me]
        fresh = make_pair(query, holder, params)[i]
        replayed = list(fresh.start())
        for m in transcript:
            if m.receiver == me:
                replayed.extend(fresh.receive(m))
        assert transcript_key(replayed) == transcript_key(sent)
        assert fresh.result() == victim.result()
        assert fresh.result_commitment() == victim.result_commitment()


def test_progress_is_reported() -> None:
    seen: list[tuple[float, str]] = []
    query, holder = random_case(random.Random(8), rows=50, queries=10)
    q, h = make_pair(query, holder, progress=lambda f, what: seen.append((f, what)))
    run_local([q, h])
    assert seen and all(0.0 <= f <= 1.0 for f, _ in seen)
    assert any("encrypted" in w for _, w in seen) and any("blinding" in w for _, w in seen)
    assert sum(f == 1.0 for f, _ in seen) == 2  # both parties finish


def test_progress_text_carries_no_hit_count() -> None:
    """#13.9: progress is read by every participant and the requester, so it says which step
    runs, never how many keys were found (the holder must not learn it)."""
    holder = Table({"id": [f"k{i}" for i in range(600)], "score": [str(i) for i in range(600)], "name": ["n"] * 600})
    query = Table({"id": [f"k{i}" for i in range(0, 1374, 2)]})  # 300 hits of 687 distinct keys
    seen: list[str] = []
    q, h = make_pair(query, holder, progress=lambda _f, what: seen.append(what))
    run_local([q, h])
    out = json.loads(q.result() or b"{}")
    assert len(out["hits"]) == 300 and len(out["misses"]) == 387
    text = "\n".join(seen)
    assert seen and "found" not in text and "hit" not in text and "miss" not in text
    for count in (300, 387):
        assert str(count) not in text, text


def test_process_pool_gives_identical_messages() -> None:
    query, holder = random_case(random.Random(9), rows=5000, queries=200)
    plain = run(query, holder, {"value_columns": ["score", "name"], "batch_size": 1500})
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:

        def pmap(fn: Callable[[Any], Any], items: Any) -> list[Any]:
            return list(pool.map(fn, items))

        pooled = run(query, holder, {"value_columns": ["score", "name"], "batch_size": 1500}, parallel_map=pmap)
    assert transcript_key(pooled[1]) == transcript_key(plain[1])
    assert pooled[0] == plain[0]


def test_code_hash_covers_the_package() -> None:
    assert len(algorithm_code_hash(PrivateQueryProtocol.name)) == 32


# -- the group -----------------------------------------------------------------------------


def test_blinding_commutes_and_unblinds() -> None:
    rng = random.Random(10)
    for i in range(20):
        a = clamp(rng.randbytes(32))
        b = scalar_bytes(clamp(rng.randbytes(32)))
        u1, u2 = unblinding_scalars(a, lambda j, i=i: hashlib.sha256(f"{i}/{j}".encode()).digest())
        assert is_clamped(u1) and is_clamped(u2) and a * u1 * u2 % L == 1
        point = hash_to_curve(b"p", f"key{i}".encode())
        assert is_valid_point(point)
        t = multiply(((b,), point, 0))
        round_trip = multiply(
            ((scalar_bytes(u1), scalar_bytes(u2)), multiply(((b,), multiply(((scalar_bytes(a),), point, 0)), 0)), 0)
        )
        assert round_trip == t


def test_invalid_points_are_rejected() -> None:
    b = scalar_bytes(clamp(bytes(32)))
    twist = next(u.to_bytes(32, "little") for u in range(2, 100) if not is_valid_point(u.to_bytes(32, "little")))
    non_canonical = (P + 1).to_bytes(32, "little")
    for bad, why in ((twist, "not a canonical point"), (non_canonical, "not a canonical point"), (bytes(32), "not a")):
        with pytest.raises(ProtocolError, match=why):
            multiply(((b,), bad, 0))
    with pytest.raises(ProtocolError, match="whole number"):
        multiply(((b,), bytes(33), 0))


def test_small_order_points_are_rejected_before_any_scalar_is_applied() -> None:
    b = scalar_bytes(clamp(bytes(32)))
    order_8 = (325606250916557431795983626356110631294008115727848805560023387167927233504).to_bytes(32, "little")
    for bad in (order_8, (1).to_bytes(32, "little"), (P - 1).to_bytes(32, "little")):
        with pytest.raises(ProtocolError, match="small order"):
            multiply(((b,), bad, 0))


def test_private_query_uses_the_shared_rfc9380_hash_with_its_own_dst() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

    from pcn.crypto import curve25519

    assert hash_to_curve is curve25519.hash_to_curve
    scalar = scalar_bytes(clamp(hashlib.sha256(b"s").digest()))
    dst = h2c_prefix("2026-12")
    assert curve25519.SUITE_ID in dst and b"pcn/pq/hash-to-curve/v2" in dst
    expected = X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(curve25519.hash_to_curve(dst, b"k1"))
    )
    assert hash_and_multiply((scalar, dst, ["k1"])) == expected
    psi_dst = curve25519.hash_dst(b"pcn/psi/v2", bytes(32))
    assert curve25519.hash_to_curve(dst, b"k1") != curve25519.hash_to_curve(psi_dst, b"k1")
    assert h2c_prefix("2026-12") != h2c_prefix("2027-01")


# -- tampering and malformed messages --------------------------------------------------------


def drive(
    parties: tuple[PrivateQueryProtocol, PrivateQueryProtocol], tamper: Callable[[Message], Message]
) -> list[Message]:
    by_name = {p.ctx.me: p for p in parties}
    queue: deque[Message] = deque(m for p in parties for m in p.start())
    transcript = []
    while queue:
        msg = tamper(queue.popleft())
        transcript.append(msg)
        queue.extend(by_name[msg.receiver].receive(msg))
    return transcript


def rewrite(kind: str, fn: Callable[[bytes], bytes]) -> Callable[[Message], Message]:
    done: list[Message] = []

    def tamper(msg: Message) -> Message:
        if msg.kind != kind or done:
            return msg
        done.append(msg)
        return Message(msg.sender, msg.receiver, msg.round, msg.kind, fn(msg.payload), msg.seq)

    return tamper


def flip(pos: int) -> Callable[[bytes], bytes]:
    def fn(p: bytes) -> bytes:
        i = pos % len(p)
        return p[:i] + bytes([p[i] ^ 1]) + p[i + 1 :]

    return fn


def small_case() -> tuple[PrivateQueryProtocol, PrivateQueryProtocol]:
    holder = Table({"id": [f"k{i}" for i in range(40)], "score": ["1"] * 40, "name": ["x"] * 40})
    return make_pair(Table({"id": ["k1", "k2", "zz"]}), holder, {"value_columns": ["score"], "batch_size": 2})


@pytest.mark.parametrize(
    ("kind", "fn", "message"),
    [
        ("table", flip(10), "does not match the digest"),
        ("table", flip(2), "unexpected 'table' message"),
        ("table", lambda p: p[:-1], "bytes, expected"),
        ("table-head", flip(-1), "does not match the digest"),
        ("table-head", flip(20), "chunks for"),
        ("table-head", flip(0), "malformed"),
        ("evaluated", lambda p: p + bytes(32), "bytes, expected"),
        ("evaluated", flip(3), "unexpected 'evaluated' message"),
        ("evaluated", lambda p: p[:4] + (P + 5).to_bytes(32, "little") + p[36:], "not a canonical point"),
        ("blinded", lambda p: p[:4] + (P + 5).to_bytes(32, "little") + p[36:], "not a canonical point"),
        ("blinded", lambda p: p[:4] + bytes(32) + p[36:], "not a canonical point"),
        ("blinded", lambda p: p[:-32], "bytes, expected"),
        ("query-head", lambda p: p + b"\0", "bytes, expected"),
        ("query-head", lambda p: (10**9).to_bytes(8, "big"), "at most"),
        ("query-head", lambda p: (2).to_bytes(8, "big"), "unexpected 'blinded' message 1"),
        ("result-hash", lambda p: p[:-1], "bytes, expected"),
    ],
)
def test_tampered_messages_are_rejected(kind: str, fn: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        drive(small_case(), rewrite(kind, fn))


def test_untampered_drive_finishes() -> None:
    q, h = small_case()
    drive((q, h), lambda m: m)
    assert result_of(q, h)["hits"].keys() == {"k1", "k2"}


def test_a_tampered_entry_for_a_queried_key_fails_authentication() -> None:
    holder = Table({"id": ["a", "b"], "score": ["1", "2"], "name": ["x", "y"]})
    table = preprocess_table(holder, "id", ["score"], bytes(32), "e")
    t = hash_and_multiply((scalar_bytes(clamp(bytes(32))), h2c_prefix("e"), ["a"]))
    assert table.open("a", t) == [{"score": "1"}]
    tag = entry_tag(t, b"a", 0)
    i = table.body.index(tag)
    body = bytearray(table.body)
    body[i + TAG_BYTES + 3] ^= 1
    with pytest.raises(UnreadableEntry, match="fails authentication"):
        EncryptedTable(table.table_rows, table.slot_size, bytes(body)).open("a", t)
    with pytest.raises(ProtocolError, match="not sorted"):
        EncryptedTable(
            table.table_rows, table.slot_size, table.body[table.entry_size :] + table.body[: table.entry_size]
        )
    with pytest.raises(ProtocolError):
        EncryptedTable.from_bytes(b"NOTMAGIC" + table.to_bytes()[8:])
    assert EncryptedTable.from_bytes(table.to_bytes()).body == table.body


def test_a_corrupt_entry_for_a_queried_key_does_not_abort(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dishonest holder plants an undecryptable entry for a key it suspects; the querier
    must finish normally (an abort would tell the holder the key was asked) and report it."""
    original = PrivateQueryHolder._encrypted_table

    def malicious(self: PrivateQueryHolder) -> EncryptedTable:
        table = original(self)
        assert self._scalar is not None
        t = hash_and_multiply((self._scalar, h2c_prefix("default"), ["suspect"]))
        i = table.body.index(entry_tag(t, b"suspect", 0))
        body = bytearray(table.body)
        body[i + TAG_BYTES] ^= 1
        return EncryptedTable(table.table_rows, table.slot_size, bytes(body))

    monkeypatch.setattr(PrivateQueryHolder, "_encrypted_table", malicious)
    holder = Table({"id": ["suspect", "other"], "score": ["1", "2"], "name": ["x", "y"]})
    for asked in (["suspect", "other", "nobody"], ["other", "nobody"]):
        got, transcript, _, _ = run(Table({"id": asked}), holder)
        assert got["hits"] == {"other": [{"name": "y", "score": "2"}]} and got["misses"] == ["nobody"]
        assert got.get("unreadable", []) == (["suspect"] if "suspect" in asked else [])
        # What the holder sees has the same shape either way.
        assert [(m.kind, len(m.payload)) for m in transcript if m.receiver == H][-1] == ("result-hash", 32)


def test_rejects_malformed_messages() -> None:
    q, h = small_case()
    assert h.start() == []  # the table goes out with the answer to the query head
    q_msgs = q.start()
    head = next(m for m in q_msgs if m.kind == "query-head")
    blinded = next(m for m in q_msgs if m.kind == "blinded")
    with pytest.raises(ProtocolError, match="before the query head"):
        h.receive(blinded)
    with pytest.raises(ProtocolError, match="not a peer"):
        h.receive(Message("0xstranger", H, 1, "query-head", head.payload))
    with pytest.raises(ProtocolError, match="delivered to"):
        h.receive(Message(Q, Q, 1, "query-head", head.payload))
    with pytest.raises(ProtocolError, match="unexpected message"):
        h.receive(Message(Q, H, 1, "table-head", bytes(64)))
    with pytest.raises(ProtocolError, match="unexpected message"):
        q.receive(Message(H, Q, 1, "blinded", blinded.payload))
    with pytest.raises(ProtocolError, match="before every batch"):
        h.receive(Message(Q, H, 3, "result-hash", bytes(32)))
    h_msgs = h.receive(head)
    with pytest.raises(ProtocolError, match="duplicate"):
        h.receive(head)
    h.receive(blinded)
    with pytest.raises(ProtocolError, match="duplicate or out-of-order"):
        h.receive(blinded)
    chunk = next(m for m in h_msgs if m.kind == "table")
    with pytest.raises(ProtocolError, match="before the table head"):
        q.receive(chunk)
    with pytest.raises(ProtocolError, match="has not finished"):
        q.result_commitment()
    with pytest.raises(ProtocolError, match="twice"):
        q.start()


def test_rejects_message_before_start() -> None:
    _, h = small_case()
    with pytest.raises(ProtocolError, match="before start"):
        h.receive(Message(Q, H, 1, "query-head", bytes(8)))


def test_bad_context() -> None:
    table = Table({"id": ["a"]})
    with pytest.raises(ProtocolError, match="exactly 2"):
        PrivateQueryProtocol.create(PartyContext(1, "a", ["a", "b", "c"], "a", PARAMS, bytes(32)), table)
    with pytest.raises(ProtocolError, match="exactly 2"):
        PrivateQueryProtocol.create(PartyContext(1, "a", ["a"], "a", PARAMS, bytes(32)), table)
    with pytest.raises(ProtocolError, match="participants"):
        PrivateQueryProtocol.create(PartyContext(1, "a", ["a", "b"], "c", PARAMS, bytes(32)), table)
    with pytest.raises(ProtocolError, match="seed"):
        PrivateQueryProtocol.create(PartyContext(1, "a", ["a", "b"], "a", PARAMS, b"x"), table)


def test_each_role_has_its_class() -> None:
    q, h = make_pair(Table({"id": ["a"]}), Table({"id": ["a"], "score": ["1"], "name": ["x"]}))
    assert (type(q), type(h)) == (PrivateQueryQuerier, PrivateQueryHolder)
    assert type(PrivateQueryHolder.create(h.ctx, h.data)) is PrivateQueryHolder
    with pytest.raises(ProtocolError, match="plays the part of PrivateQueryQuerier"):
        PrivateQueryHolder.create(q.ctx, q.data)
    with pytest.raises(ProtocolError, match="PrivateQueryQuerier plays the querier, which '0xholder' is not"):
        PrivateQueryQuerier(h.ctx, h.data)
    shared: type[PrivateQueryProtocol] = PrivateQueryProtocol
    with pytest.raises(TypeError, match="abstract"):
        shared(q.ctx, q.data)


# -- params ------------------------------------------------------------------------------------

BAD_PARAMS: list[tuple[Any, str]] = [
    ([], "JSON object"),
    ({}, "'value_columns'"),
    ({"value_columns": []}, "'value_columns'"),
    ({"value_columns": "score"}, "'value_columns'"),
    ({"value_columns": ["score", "score"]}, "duplicates"),
    ({"value_columns": ["score", 1]}, "value_columns"),
    ({"value_columns": [""]}, "value_columns"),
    ({"value_columns": ["s"], "colour": 1}, "unknown key"),
    ({"value_columns": ["s"], "key_column": 5}, "'key_column'"),
    ({"value_columns": ["s"], "query_column": ""}, "'query_column'"),
    ({"value_columns": ["s"], "epoch": 2026}, "'epoch'"),
    ({"value_columns": ["s"], "epoch": ""}, "'epoch'"),
    ({"value_columns": ["s"], "batch_size": 0}, "'batch_size'"),
    ({"value_columns": ["s"], "batch_size": 65_537}, "'batch_size'"),
    ({"value_columns": ["s"], "batch_size": 2.0}, "'batch_size'"),
    ({"value_columns": ["s"], "batch_size": True}, "'batch_size'"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS)
def test_invalid_params_raise(params: Any, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        PrivateQueryProtocol.validate_params(params)
    with pytest.raises(ProtocolError, match=message):
        make_pair(Table({"id": []}), Table({"id": []}), params)


def test_valid_params_are_normalised() -> None:
    norm = PrivateQueryProtocol.validate_params({"value_columns": ["score"]})
    assert norm == {
        "key_column": None,
        "query_column": None,
        "value_columns": ["score"],
        "epoch": "default",
        "batch_size": 4096,
        "max_keys": None,
    }
    assert PrivateQueryProtocol.validate_params(norm) == norm
    full = {
        "key_column": "k",
        "query_column": "q",
        "value_columns": ["a", "b"],
        "epoch": "2026-11",
        "batch_size": 1,
        "max_keys": 1000,
    }
    assert PrivateQueryProtocol.validate_params(full) == full
    assert PrivateQueryProtocol.privacy_cost(full) == 0.0


# -- throughput ---------------------------------------------------------------------------------


def test_throughput_20k_rows_500_queries(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(12)
    rows, queries = 20_000, 500
    ids = [f"{rng.randrange(10**17, 10**18)}" for _ in range(rows)]
    holder = Table(
        {
            "id": ids,
            "score": [str(rng.randint(300, 850)) for _ in range(rows)],
            "name": [f"customer {i}" for i in range(rows)],
        }
    )
    asked = [rng.choice(ids) for _ in range(queries // 2)] + [str(rng.randrange(10**17)) for _ in range(queries // 2)]
    query = Table({"id": asked})
    services = holder_services(MemoryTableCache())
    t0 = time.perf_counter()
    got, transcript, _, h = run(query, holder, services=services)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again, _, _, h2 = run(query, holder, services=services)
    warm = time.perf_counter() - t0
    assert again == got and h2.cache_hit and not h.cache_hit
    assert got == reference(query, holder, "id", "id", ["score", "name"])
    assert len(got["hits"]) == len(set(asked[: queries // 2]))
    wire = sum(len(m.payload) for m in transcript)
    table_bytes = sum(len(m.payload) for m in transcript if m.kind in ("table", "table-head"))
    with capsys.disabled():
        print(
            f"\nprivate-query {rows:,} rows x {queries} keys: preprocessing {h.preprocess_seconds:.2f} s "
            f"({h.preprocess_seconds / rows * 1e6:.0f} us/row), cold task {cold:.2f} s, "
            f"warm task (cached table) {warm:.2f} s ({warm / queries * 1e3:.2f} ms/key), "
            f"wire {wire / 1e6:.2f} MB of which table {table_bytes / 1e6:.2f} MB"
        )


def test_the_declared_key_cap_binds_both_sides() -> None:
    """#13.6: params "max_keys" (hashed on chain, checked by nodes against the owners' cap)
    bounds the query: an honest querier stops before sending, the holder refuses a head over it."""
    holder = Table({"id": ["a", "b", "c"], "score": ["1", "2", "3"], "name": ["x", "y", "z"]})
    capped = {**PARAMS, "max_keys": 2}
    q, _ = make_pair(Table({"id": ["a", "b", "c"]}), holder, capped)
    with pytest.raises(ProtocolError, match="declares at most 2"):
        q.start()
    _, h = make_pair(Table({"id": ["a"]}), holder, capped)
    h.start()
    with pytest.raises(ProtocolError, match="declares at most 2"):
        h.receive(Message(Q, H, 1, "query-head", (3).to_bytes(8, "big")))
    got, _, _, _ = run(Table({"id": ["a", "b"]}), holder, capped)
    assert got["queried"] == 2 and set(got["hits"]) == {"a", "b"}
    with pytest.raises(ProtocolError, match="max_keys"):
        make_pair(Table({"id": ["a"]}), holder, {**PARAMS, "max_keys": 0})


# -- warm queries: the querier keeps the encrypted table -------------------------------------


def querier_cache_services() -> tuple[MemoryTableCache, TaskServices]:
    cache = MemoryTableCache(max_entries=64)
    return cache, TaskServices(cache=cache)


def wire(transcript: list[Message], receiver: str) -> int:
    return sum(len(m.payload) for m in transcript if m.receiver == receiver)


def test_a_warm_query_does_not_ship_the_table() -> None:
    holder_cache, (_, q_services) = MemoryTableCache(), querier_cache_services()
    services = holder_services(holder_cache)
    query, holder = random_case(random.Random(21), rows=3000, queries=40)
    cold, t1, q1, _ = run(query, holder, services=services, querier_services=q_services)
    assert not q1.warm and any(m.kind == "table" for m in t1)
    assert cold == reference(query, holder, "id", "id", ["score", "name"])
    one_key = Table({"id": [next(iter(cold["hits"]))]})
    warm, t2, q2, _ = run(one_key, holder, task_id=8, services=services, querier_services=q_services)
    assert q2.warm and not any(m.kind == "table" for m in t2)
    assert warm == reference(one_key, holder, "id", "id", ["score", "name"]) and warm["hits"]
    # 1 key warm: the heads, one blinded and one evaluated point, the result hash
    assert wire(t2, Q) + wire(t2, H) < 300 < wire(t1, Q) // 100
    # The querier's head announced its copy, and both parties' commitments bind it.
    assert len(next(m for m in t2 if m.kind == "query-head").payload) == 8 + 32


def test_a_changed_table_or_epoch_travels_again() -> None:
    holder_cache, (_, q_services) = MemoryTableCache(), querier_cache_services()
    services = holder_services(holder_cache)
    query, holder = random_case(random.Random(22), rows=400, queries=20)
    run(query, holder, services=services, querier_services=q_services)
    columns = {c: list(holder.column(c)) for c in holder.names}
    columns["score"] = ["777"] * len(columns["score"])
    changed = Table(columns)
    got, t, q, _ = run(query, changed, task_id=9, services=services, querier_services=q_services)
    assert not q.warm and any(m.kind == "table" for m in t)  # another digest: the new table is sent
    assert got == reference(query, changed, "id", "id", ["score", "name"])
    got, t, q, _ = run(query, changed, task_id=10, services=services, querier_services=q_services)
    assert q.warm and got == reference(query, changed, "id", "id", ["score", "name"])
    params = {**PARAMS, "epoch": "2027-01"}
    _, t, q, _ = run(query, changed, params, task_id=11, services=services, querier_services=q_services)
    assert not q.warm and any(m.kind == "table" for m in t)


def test_a_damaged_copy_is_not_used() -> None:
    holder_cache, (q_cache, q_services) = MemoryTableCache(), querier_cache_services()
    services = holder_services(holder_cache)
    query, holder = random_case(random.Random(23), rows=300, queries=20)
    run(query, holder, services=services, querier_services=q_services)
    for key, value in list(q_cache._items.items()):
        if key.startswith("pq-querier/table/"):
            q_cache._items[key] = value[:-1] + bytes([value[-1] ^ 1])
    got, t, q, _ = run(query, holder, task_id=12, services=services, querier_services=q_services)
    assert not q.warm and len(next(m for m in t if m.kind == "query-head").payload) == 8
    assert got == reference(query, holder, "id", "id", ["score", "name"])


def test_a_resumed_querier_announces_what_it_announced_first() -> None:
    """The decision is taken once per task: after the cold run stored the table, the same task
    started again (a resumed worker replaying its inbox) still sends the cold query head, which
    its peer already has; a warm task whose copy was evicted since fails clearly."""
    holder_cache, (q_cache, q_services) = MemoryTableCache(), querier_cache_services()
    services = holder_services(holder_cache)
    query, holder = random_case(random.Random(24), rows=300, queries=20)
    _, t1, _, _ = run(query, holder, task_id=13, services=services, querier_services=q_services)
    again, _ = make_pair(query, holder, task_id=13, services=services, querier_services=q_services)
    assert again.start()[0] == next(m for m in t1 if m.kind == "query-head")
    _, t2, q2, _ = run(query, holder, task_id=14, services=services, querier_services=q_services)
    assert q2.warm
    resumed, _ = make_pair(query, holder, task_id=14, services=services, querier_services=q_services)
    assert resumed.start()[0] == next(m for m in t2 if m.kind == "query-head")
    for key in [k for k in q_cache._items if k.startswith("pq-querier/table/")]:
        del q_cache._items[key]
    evicted, _ = make_pair(query, holder, task_id=14, services=services, querier_services=q_services)
    with pytest.raises(ProtocolError, match="no longer in the node's cache"):
        evicted.start()


def test_a_holder_cannot_skip_the_table_the_querier_does_not_have() -> None:
    """A dishonest holder answers "you have it" (0 chunks): refused, whether the querier has
    no copy or a copy of another table; and a querier's claim it cannot back costs only itself."""

    def skip() -> Callable[[Message], Message]:
        return rewrite("table-head", lambda p: p[:HEADER_BYTES] + bytes(4) + p[HEADER_BYTES + 4 :])

    with pytest.raises(ProtocolError, match="announced no copy of that table"):
        drive(small_case(), skip())
    holder_cache, (_, q_services) = MemoryTableCache(), querier_cache_services()
    services = holder_services(holder_cache)
    query, holder = random_case(random.Random(25), rows=300, queries=20)
    run(query, holder, services=services, querier_services=q_services)  # the querier keeps this table
    other = Table({"id": ["a", "b", "c"], "score": ["1", "2", "3"], "name": ["x", "y", "z"]})
    pair = make_pair(query, other, task_id=15, services=services, querier_services=q_services)
    with pytest.raises(ProtocolError, match="announced no copy of that table"):
        drive(pair, skip())
    # A querier announcing a digest the holder does not have simply gets the table.
    got, _t, q, _ = run(query, other, task_id=16, services=services, querier_services=q_services)
    assert not q.warm and got == reference(query, other, "id", "id", ["score", "name"])
