"""Reading contract events: log decoding and a resumable, reorg-aware event reader.

The reader polls by block range up to `head - confirmations`, hands each decoded event to
a handler, and persists its cursor only after the handler succeeded (at-least-once
delivery: handlers key their effects by (tx hash, log index)). It remembers the hashes of
the blocks it read; when the chain under its cursor changes (a reorg), it rewinds to the
last block both agree on, tells the caller, and reads the new branch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from eth_abi import decode as abi_decode
from eth_typing import ChecksumAddress
from eth_utils import keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import BlockNotFound

from pcn.chain.errors import ChainError

RECENT_BLOCKS_KEPT = 128


class ReorgTooDeep(ChainError):
    """The chain changed below every block the reader still remembers."""


@dataclass(frozen=True)
class ChainEvent:
    contract: str
    name: str
    args: dict[str, Any]
    block_number: int
    block_hash: str
    tx_hash: str
    log_index: int

    @property
    def key(self) -> tuple[str, int]:
        """Identity of the event, stable across re-reads of the same block."""
        return (self.tx_hash, self.log_index)


def _type_string(inp: dict[str, Any]) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_type_string(c) for c in inp["components"]) + ")" + t[5:]
    return t


def _python(value: Any, abi_type: str) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, (list, tuple)):
        inner = abi_type[: abi_type.rindex("[")] if abi_type.endswith("]") else abi_type
        return [_python(v, inner) for v in value]
    if abi_type == "address" and isinstance(value, str):
        return to_checksum_address(value)
    return value


def _hex(v: Any) -> str:
    if isinstance(v, (bytes, bytearray)):
        return "0x" + bytes(v).hex()
    s = str(v)
    return s if s.startswith("0x") else "0x" + s


class LogDecoder:
    """Decodes raw logs of known contracts by address and topic0."""

    def __init__(self, contracts: dict[str, tuple[str, list[dict[str, Any]]]]) -> None:
        """contracts: name -> (address, abi)."""
        self._names = {addr.lower(): name for name, (addr, _) in contracts.items()}
        self._events: dict[tuple[str, bytes], dict[str, Any]] = {}
        for _name, (addr, abi) in contracts.items():
            for entry in abi:
                if entry.get("type") != "event" or entry.get("anonymous"):
                    continue
                sig = f"{entry['name']}({','.join(_type_string(i) for i in entry['inputs'])})"
                self._events[(addr.lower(), keccak(text=sig))] = entry

    @property
    def addresses(self) -> list[ChecksumAddress]:
        return [to_checksum_address(a) for a in self._names]

    def decode(self, log: Any) -> ChainEvent | None:
        address = str(log["address"]).lower()
        topics = [bytes(t) if not isinstance(t, str) else bytes.fromhex(t.removeprefix("0x")) for t in log["topics"]]
        if not topics:
            return None
        entry = self._events.get((address, topics[0]))
        if entry is None:
            return None
        indexed = [i for i in entry["inputs"] if i["indexed"]]
        plain = [i for i in entry["inputs"] if not i["indexed"]]
        data = log["data"]
        data = bytes(data) if not isinstance(data, str) else bytes.fromhex(data.removeprefix("0x"))
        values = abi_decode([_type_string(i) for i in plain], data)
        args: dict[str, Any] = {}
        for inp, topic in zip(indexed, topics[1:], strict=True):
            (v,) = abi_decode([_type_string(inp)], topic)
            args[inp["name"]] = _python(v, inp["type"])
        for inp, v in zip(plain, values, strict=True):
            args[inp["name"]] = _python(v, inp["type"])
        ordered = {i["name"]: args[i["name"]] for i in entry["inputs"]}
        return ChainEvent(
            contract=self._names[address],
            name=entry["name"],
            args=ordered,
            block_number=int(log["blockNumber"]),
            block_hash=_hex(log["blockHash"]),
            tx_hash=_hex(log["transactionHash"]),
            log_index=int(log["logIndex"]),
        )

    def decode_all(self, logs: Iterable[Any]) -> list[ChainEvent]:
        out = [e for e in (self.decode(log) for log in logs) if e is not None]
        out.sort(key=lambda e: (e.block_number, e.log_index))
        return out


@dataclass
class Cursor:
    """Next block to read, plus hashes of recently read blocks (for reorg detection)."""

    next_block: int
    recent: dict[int, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"next_block": self.next_block, "recent": {str(k): v for k, v in self.recent.items()}})

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        data = json.loads(text)
        return cls(int(data["next_block"]), {int(k): v for k, v in data.get("recent", {}).items()})


class CursorStore(Protocol):
    """Where an EventReader keeps its cursor (a JSON file here, a SQL row in the auditor)."""

    def load(self) -> Cursor | None: ...

    def save(self, cursor: Cursor) -> None: ...


class FileCursorStore:
    """Persists a cursor atomically in a JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Cursor | None:
        if not self.path.is_file():
            return None
        try:
            return Cursor.from_json(self.path.read_text())
        except (ValueError, KeyError) as exc:
            raise ChainError(f"event cursor {self.path} is corrupt: {exc}") from exc

    def save(self, cursor: Cursor) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(cursor.to_json())
        tmp.replace(self.path)


class EventReader:
    """Polls every pcn contract's events from a persisted cursor, reorg-aware."""

    def __init__(
        self,
        w3: Web3,
        decoder: LogDecoder,
        store: CursorStore,
        start_block: int,
        confirmations: int = 0,
        batch_size: int = 2000,
    ) -> None:
        self.w3 = w3
        self.decoder = decoder
        self.store = store
        self.confirmations = confirmations
        self.batch_size = batch_size
        self.cursor = store.load() or Cursor(start_block)

    def _block_hash(self, number: int) -> str | None:
        try:
            block = self.w3.eth.get_block(number)
        except BlockNotFound:  # the chain is now shorter; an unreachable chain raises ChainUnavailable
            return None
        return _hex(block["hash"])

    def _check_reorg(self) -> int | None:
        """Return the block to rewind to when the remembered chain changed, else None."""
        if not self.cursor.recent:
            return None
        newest = max(self.cursor.recent)
        if self._block_hash(newest) == self.cursor.recent[newest]:
            return None
        for number in sorted(self.cursor.recent, reverse=True):
            if self._block_hash(number) == self.cursor.recent[number]:
                return number + 1
        raise ReorgTooDeep(f"chain changed below block {min(self.cursor.recent)}; re-index from the deployment block")

    def poll(
        self,
        handle: Callable[[ChainEvent], None],
        on_reorg: Callable[[int], None] | None = None,
        max_batches: int | None = None,
        to_block: int | None = None,
    ) -> int:
        """Deliver every confirmed event after the cursor (up to `to_block` at most) to `handle`;
        return how many."""
        rewind = self._check_reorg()
        if rewind is not None:
            if on_reorg is not None:
                on_reorg(rewind)
            self.cursor.next_block = rewind
            self.cursor.recent = {n: h for n, h in self.cursor.recent.items() if n < rewind}
            self.store.save(self.cursor)
        head = self.w3.eth.block_number
        safe = head - self.confirmations if to_block is None else min(head - self.confirmations, to_block)
        delivered = batches = 0
        while self.cursor.next_block <= safe:
            if max_batches is not None and batches >= max_batches:
                break
            start = self.cursor.next_block
            end = min(safe, start + self.batch_size - 1)
            # Read the range between two looks at its last block: if the chain moved under
            # us meanwhile, read the range again rather than deliver a mix of branches.
            end_hash = self._block_hash(end)
            logs = self.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "address": self.decoder.addresses})
            if self._block_hash(end) != end_hash:
                continue
            events = self.decoder.decode_all(logs)
            for ev in events:
                handle(ev)
                delivered += 1
            recent = dict(self.cursor.recent)
            for ev in events:
                recent[ev.block_number] = ev.block_hash
            if end_hash is not None:
                recent[end] = end_hash
            keep = sorted(recent)[-RECENT_BLOCKS_KEPT:]
            self.cursor = Cursor(end + 1, {n: recent[n] for n in keep})
            self.store.save(self.cursor)
            batches += 1
        return delivered
