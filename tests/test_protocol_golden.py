"""Golden outputs of the protocols on fixed seeds: what every party sends, its result, result
commitment, commitment opening, stored model, checkpoints and progress lines, hashed.

The digests below were recorded from the code as it was before the protocols were split into
role classes; the hetero-lr ones again when its products stopped going through BLAS (OpenBLAS
picks its kernel, and so the order of a sum's last bits, per CPU: they are now the same on
every x86-64 machine, see `test_hetero_lr_bytes_do_not_depend_on_the_cpu`). Any change to what
a party emits (a message's bytes, its sequence number, round or kind, a result byte, a
progress line) changes them. Small data, so this runs in seconds: the algorithms' own test
modules check that the outputs are right, this one that they stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pcn.algorithms import protocol_class
from pcn.algorithms.base import Message, PartyContext, Protocol, ProtocolError, TaskServices, run_local
from pcn.algorithms.hetero_lr import params as hlr_params
from pcn.data.table import Table

GUEST, HOSTS = "0xguest", ["0xhost0", "0xhost1"]


@pytest.fixture(scope="module", autouse=True)
def allow_1024_bit_keys_for_speed() -> Iterator[None]:
    """1024-bit Paillier keys keep the hetero-lr runs short; a node never has this allowance."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hlr_params, "TEST_ONLY_KEY_BITS", (1024,))
        yield


def seed(name: str, salt: str) -> bytes:
    return hashlib.sha256(f"golden/{salt}/{name}".encode()).digest()


class Party:
    """What one party's node would see of its protocol besides messages: progress lines and
    saved checkpoints."""

    def __init__(self) -> None:
        self.progress: list[str] = []
        self.checkpoints: list[tuple[int, str]] = []

    def on_progress(self, fraction: float, what: str) -> None:
        self.progress.append(f"{fraction!r} {what}")

    def save_checkpoint(self, epochs_done: int, blob: bytes) -> None:
        self.checkpoints.append((epochs_done, blob.hex()))


def context(
    task_id: int,
    me: str,
    who: list[str],
    recipient: str,
    params: dict[str, Any],
    salt: str,
    party: Party,
    *,
    id_column: str = "",
    services: TaskServices | None = None,
) -> PartyContext:
    base = services or TaskServices()
    services = TaskServices(
        epoch_key=base.epoch_key, load_model=base.load_model, save_checkpoint=party.save_checkpoint, cache=base.cache
    )
    return PartyContext(
        task_id, me, who, recipient, dict(params), seed(me, salt), party.on_progress, id_column, services=services
    )


def build(kind: str, ctx: PartyContext, data: Any) -> Protocol:
    return protocol_class(kind).create(ctx, data)


def resume(kind: str, ctx: PartyContext, data: Any, checkpoint: bytes) -> Protocol:
    return protocol_class(kind).resume(ctx, data, checkpoint)


def outcome(p: Protocol, method: str) -> str:
    try:
        value = getattr(p, method)()
    except ProtocolError as exc:
        return f"ProtocolError: {exc}"
    if value is None:
        return "None"
    return value.hex() if isinstance(value, bytes) else json.dumps(value, sort_keys=True)


def outcome_state(p: Protocol) -> dict[str, Any]:
    state = p.model_state()
    assert state is not None
    return state


def digests(parties: Sequence[Protocol], sent: Sequence[Message], seen: dict[str, Party]) -> dict[str, str]:
    """Per party: SHA-256 of everything it emitted, in order."""
    out = {}
    for p in parties:
        me = p.ctx.me
        doc = {
            "sent": [[m.sender, m.receiver, m.seq, m.round, m.kind, m.payload.hex()] for m in sent if m.sender == me],
            "done": p.done,
            "result": outcome(p, "result"),
            "commitment": outcome(p, "result_commitment"),
            "opening": outcome(p, "commitment_opening"),
            "model_state": outcome(p, "model_state"),
            "checkpoint_epoch": p.checkpoint_epoch,
            "progress": seen[me].progress,
            "checkpoints": seen[me].checkpoints,
        }
        out[me] = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return out


def drive(parties: dict[str, Protocol], initial: list[Message]) -> list[Message]:
    """run_local for parties that were already started (resumed ones): every message posted,
    duplicates by (sender, receiver, seq) dropped as the transport does."""
    queues: dict[tuple[str, str], deque[Message]] = {}
    seen: set[tuple[str, str, int]] = set()
    sent: list[Message] = []

    def post(msgs: list[Message]) -> None:
        for m in msgs:
            sent.append(m)
            if (m.sender, m.receiver, m.seq) in seen:
                continue
            seen.add((m.sender, m.receiver, m.seq))
            queues.setdefault((m.sender, m.receiver), deque()).append(m)

    for me, p in parties.items():
        for sender, count in p.resume_from.items():
            seen.update((sender, me, s) for s in range(count))
    post(initial)
    while links := [k for k, q in queues.items() if q]:
        m = queues[links[0]].popleft()
        post(parties[m.receiver].receive(m))
    assert all(p.done for p in parties.values())
    return sent


# -- hetero-lr and hetero-lr-predict -----------------------------------------------------------

HLR_ROWS = 48
HLR_RNG = np.random.default_rng(20240601)
HLR_X = HLR_RNG.normal(size=(HLR_ROWS, 7))
HLR_Y = (HLR_X @ HLR_RNG.normal(size=7) + 0.5 * HLR_RNG.normal(size=HLR_ROWS) > 0).astype(int)
HLR_COLUMNS = {GUEST: range(0, 2), HOSTS[0]: range(2, 4), HOSTS[1]: range(4, 7)}


def hlr_table(me: str, order_seed: int) -> Table:
    order = np.random.default_rng(order_seed).permutation(HLR_ROWS)
    data: dict[str, list[str | None]] = {"id": [f"r{i:03d}" for i in order]}
    for c in HLR_COLUMNS[me]:
        data[f"x{c}"] = [repr(float(HLR_X[i, c])) for i in order]
    if me == GUEST:
        data["y"] = [str(int(HLR_Y[i])) for i in order]
    return Table(data)


def hlr_parties(
    who: list[str], params: dict[str, Any], salt: str, seen: dict[str, Party], kind: str = "hetero-lr", **kw: Any
) -> list[Protocol]:
    out = []
    for k, me in enumerate(who):
        seen.setdefault(me, Party())
        ctx = context(11, me, who, GUEST, params, salt, seen[me], id_column="id", **kw)
        out.append(build(kind, ctx, hlr_table(me, k)))
    return out


HLR_PARAMS = {"label_column": "y", "key_bits": 1024, "batch_size": 16, "epochs": 3, "tol": 0.0, "l2": 0.01}

GOLDEN_HLR_TWO_HOSTS = {
    "0xguest": "169e3577b03575d8b3944b5e9bfb564b3dea4bfce9d6828cc38da98763c94cbb",
    "0xhost0": "929e3260dad7e353f02505f2df70e263e45fe3303f0255e87daff83cf9ecce01",
    "0xhost1": "a89accdcd923f14dc09708d8865a2f788f8f9987d9a6e5c8e01956c60a671059",
}
GOLDEN_HLR_RESUMED = {
    "0xguest": "4f1bb288375af46b924aca6f569fd615a6c9eb0b11dee74c899730d87e6d65c5",
    "0xhost0": "9e9ad61fcc38fdb3aafbe3b3ddf66628ee3435dd9ccb373323129676dd963f29",
    "0xhost1": "a734e4c4df13023fb925540e8f7f8c05343f0b9d86327b61fbdc1149d9401658",
}
GOLDEN_HLR_WEIGHTED = {
    "0xguest": "53a304fef0ff126d1d0995e9ab4720a9e927058f2c2c0a3482ebdc8b27db3e89",
    "0xhost0": "f9b337b4dbe7ba9f2a5dbe02310ca7aee78c4cb03d8f61a04769a7b9be7255d4",
    "0xhost1": "88a09bbaad87f4c90febea23dc044c3a4bf45fcd589ca26ca428e45789af2dec",
}
GOLDEN_HLR_ONE_HOST = {
    "0xguest": "1fd532e21441b7e25a0f902023ad6aa62c4ab714f3726b1236f2a17fef3e6a13",
    "0xhost0": "87499fef00c65c17cf3b78e91ad95c2229d4f9ae3f9178c20e6c66e1e979e99d",
}
GOLDEN_HLR_PREDICT = {
    "0xguest": "e44a86427002fbda88622f14eb3fc1fa4b74a4b6563b3cc7fc6aa1804714c23e",
    "0xhost0": "04adff382284895ff00fb871d3bec6e7c707002bb8931db25d4cf6fd442d4459",
    "0xhost1": "c78520137d752e2b498fde0086bc89829e2f1fec507e6b96e07418f40ed69234",
}


def test_hetero_lr_two_hosts_with_checkpoints_resume_and_predict() -> None:
    who = [GUEST, *HOSTS]
    seen: dict[str, Party] = {}
    parties = hlr_parties(who, HLR_PARAMS, "hlr", seen)
    sent = run_local(parties)
    assert digests(parties, sent, seen) == GOLDEN_HLR_TWO_HOSTS

    # every party resumed at the checkpoint it saved after epoch 1, driven to the end again
    saved = {me: bytes.fromhex(dict(seen[me].checkpoints)[1]) for me in who}
    again: dict[str, Party] = {}
    resumed = {}
    for k, me in enumerate(who):
        again[me] = Party()
        ctx = context(11, me, who, GUEST, HLR_PARAMS, "hlr", again[me], id_column="id")
        resumed[me] = resume("hetero-lr", ctx, hlr_table(me, k), saved[me])
    sent = drive(resumed, [m for p in resumed.values() for m in p.start()])
    assert digests(list(resumed.values()), sent, again) == GOLDEN_HLR_RESUMED

    # scoring with the stored model parts
    models = {(11, p.ctx.me): outcome_state(p) for p in parties}

    def load_model(task: int, party: str) -> dict[str, Any]:
        return models[(task, party)]

    scoring: dict[str, Party] = {}
    predict = hlr_parties(
        who, {"model_task": 11}, "predict", scoring, "hetero-lr-predict", services=TaskServices(load_model=load_model)
    )
    sent = run_local(predict, shuffle_seed=5)
    assert digests(predict, sent, scoring) == GOLDEN_HLR_PREDICT


def test_hetero_lr_class_weights_two_hosts() -> None:
    who = [GUEST, *HOSTS]
    seen: dict[str, Party] = {}
    params = {**HLR_PARAMS, "class_weight": "balanced", "epochs": 2, "seed_split": 3}
    parties = hlr_parties(who, params, "weighted", seen)
    sent = run_local(parties, shuffle_seed=1)
    assert digests(parties, sent, seen) == GOLDEN_HLR_WEIGHTED


def one_host_digests() -> dict[str, str]:
    who = [GUEST, HOSTS[0]]
    seen: dict[str, Party] = {}
    params = {**HLR_PARAMS, "class_weight": {"0": 1.0, "1": 2.0}, "epochs": 5, "tol": 0.05, "batch_size": -1}
    parties = hlr_parties(who, params, "one", seen)
    sent = run_local(parties)
    return digests(parties, sent, seen)


def test_hetero_lr_one_host_converging() -> None:
    assert one_host_digests() == GOLDEN_HLR_ONE_HOST


@pytest.mark.parametrize("kernel", ["Prescott", "Haswell", "SkylakeX"])
def test_hetero_lr_bytes_do_not_depend_on_the_cpu(kernel: str) -> None:
    """What a party sends is the same on every machine (an organisation's workers may run on
    several hosts; a resumed worker must replay the bytes it sent): here under three OpenBLAS
    kernels, as on three CPU generations. Through BLAS, the Haswell and SkylakeX kernels gave
    different messages."""
    script = (
        "import json; from pcn.algorithms.hetero_lr import params; params.TEST_ONLY_KEY_BITS = (1024,); "
        "import tests.test_protocol_golden as g; print(json.dumps(g.one_host_digests()))"
    )
    env = {**os.environ, "OPENBLAS_CORETYPE": kernel}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=Path(__file__).parent.parent, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == GOLDEN_HLR_ONE_HOST


# -- private query -----------------------------------------------------------------------------

QUERIER, HOLDER = "0xquerier", "0xholder"

GOLDEN_PQ = {
    "0xquerier": "e7e26ee580dbd468e5fdb18e5e9176775a8d24bfe73f93bbab2c31264cea63dc",
    "0xholder": "c3b3c97aeb2f758088bc6a7096c22a46d6efc41499c8a5fbc428a3866a972aef",
}


def test_private_query() -> None:
    who = [QUERIER, HOLDER]
    query = Table({"id": ["k3", " k1", "k1", "missing", "k7", None, "", "K3", "k9"]})
    holder = Table(
        {
            "id": ["k1", "k2", "k3", "k3", "k4", "k5", "k6", "k7", "k8", "k9", None],
            "score": ["1", "2", "3", "33", None, "5", "6", "7", "8", "9", "10"],
            "name": ["a", "b", "c", "cc", "d", "e", "f", "g", "h", "i" * 50, "j"],
        }
    )
    params = {"value_columns": ["score", "name"], "batch_size": 2, "epoch": "2024-06"}
    seen = {QUERIER: Party(), HOLDER: Party()}

    def epoch_key(label: str) -> bytes:
        return hashlib.sha256(b"holder org/" + label.encode()).digest()

    parties = [
        build("private-query", context(5, QUERIER, who, QUERIER, params, "pq", seen[QUERIER], id_column="id"), query),
        build(
            "private-query",
            context(
                5,
                HOLDER,
                who,
                QUERIER,
                params,
                "pq",
                seen[HOLDER],
                id_column="id",
                services=TaskServices(epoch_key=epoch_key),
            ),
            holder,
        ),
    ]
    sent = run_local(parties, shuffle_seed=3)
    assert digests(parties, sent, seen) == GOLDEN_PQ


# -- fedavg ------------------------------------------------------------------------------------

FEATURES = ["a", "b", "c"]


def fedavg_table(k: int, rows: int) -> Table:
    rng = np.random.default_rng(100 + k)
    x = rng.normal(loc=0.2 * k, size=(rows, len(FEATURES)))
    y = (x @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=rows) > 0.1).astype(int)
    cols: dict[str, list[str | None]] = {f: [repr(v) for v in x[:, j].tolist()] for j, f in enumerate(FEATURES)}
    cols["label"] = [str(v) for v in y.tolist()]
    return Table(cols)


def fedavg_parties(n: int, params: dict[str, Any], recipient: int, salt: str, seen: dict[str, Party]) -> list[Protocol]:
    who = [f"0xparty{i}" for i in range(n)]
    base = {"label_column": "label", "features": FEATURES, **params}
    out = []
    for k, me in enumerate(who):
        seen[me] = Party()
        out.append(
            build("fedavg", context(9, me, who, who[recipient], base, salt, seen[me]), fedavg_table(k, 30 + 7 * k))
        )
    return out


GOLDEN_FEDAVG_DROPOUTS = {
    "0xparty0": "d7859a987a5012149b60cc5b19717519758b1d47ddf2086afe887ac246593528",
    "0xparty1": "b817f6411719f704f0cd79e59f0d4c5c88fac193e372a19ea01dfc5262c1d2ec",
    "0xparty2": "d7ef2137e486b0c7476fcfec9f0ed1b3757635862daf9024392676bbaac0b669",
    "0xparty3": "6190cb6d07d9dd14bb19154b7584510ea8eeb1f2b071398e44b72e81653ad3b1",
    "0xparty4": "dfaa4cce693aef3c405235a1e64f952ca8e1937291d654e3d4a28a2c12d6fc27",
}
GOLDEN_FEDAVG_PLAIN_MLP = {
    "0xparty0": "0390970ce7ead1798e2dfb9c51953f87e293fd8cba723f46d0f8be15fa708f11",
    "0xparty1": "94e26bb2f16016b4b7367c7c6e3a6a83296bc3e583e01a8cc11162cb0b9afc7a",
    "0xparty2": "bacdcfa23ffcc34c0b66df786c9fc6541ec75adf8f02dc8d99b0a5bdeecdef0e",
}
GOLDEN_FEDAVG_DECLARED = {
    "0xparty0": "86384725ae4c97522698cdc62dbd19be92b341ef64c9d6b326a5131dc66e94f2",
    "0xparty1": "b49cc580dae7af0d282cd2ca6c6b8bf71241fe1194535ab151ae2235f55a13f9",
    "0xparty2": "1568b2374d8d994d8a43a04e11286bfd1a9b25eb330714c815c481d71e122514",
    "0xparty3": "dcdb495ca622816d9db0e45a5bcb2d1cb614d6ffeafd0aa784e085ab4c93e803",
}


def test_fedavg_simulated_dropouts() -> None:
    seen: dict[str, Party] = {}
    drops = {"0xparty3": 2, "0xparty4": {"round": 3, "phase": "unmask"}}
    params = {"rounds": 3, "batch_size": 8, "simulate_dropout": drops, "threshold": 3}
    parties = fedavg_parties(5, params, 1, "drops", seen)
    sent = run_local(parties, shuffle_seed=7)
    assert digests(parties, sent, seen) == GOLDEN_FEDAVG_DROPOUTS


def test_fedavg_without_dropout_tolerance_mlp() -> None:
    seen: dict[str, Party] = {}
    params = {"rounds": 2, "model": "mlp", "hidden": [4], "dropout_tolerance": False, "local_epochs": 2}
    parties = fedavg_parties(3, params, 0, "mlp", seen)
    sent = run_local(parties)
    assert digests(parties, sent, seen) == GOLDEN_FEDAVG_PLAIN_MLP


def test_fedavg_runtime_declared_dropout() -> None:
    """Party 2 goes silent in round 2 after sending its update; the aggregator declares it
    dropped when nothing else is in flight, as the runtime does after its deadline."""
    seen: dict[str, Party] = {}
    parties = fedavg_parties(4, {"rounds": 2}, 0, "declared", seen)
    by_name = {p.ctx.me: p for p in parties}
    server, crash = parties[0], "0xparty2"
    queue: deque[Message] = deque()
    sent: list[Message] = []

    def post(msgs: list[Message]) -> None:
        for m in msgs:
            sent.append(m)
            if m.sender != crash or m.round < 2 or m.kind == "update":
                queue.append(m)

    for p in parties:
        post(p.start())
    awaited = []
    while queue or not server.done:
        if not queue:
            awaited.append(server.awaiting())
            post(server.declare_dropped(server.awaiting()))
            continue
        m = queue.popleft()
        if m.receiver != crash or m.round < 2 or m.kind == "model":
            post(by_name[m.receiver].receive(m))
    assert awaited == [[crash]]
    assert digests(parties, sent, seen) == GOLDEN_FEDAVG_DECLARED
