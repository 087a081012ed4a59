"""The dataset fingerprint: a salted Merkle root over canonical rows, plus schema and metadata
hashes and the row count (DESIGN §4 step 2). Computed locally; only the fingerprint goes on
chain, never a row.

Construction (version 2)::

    row_key     = HMAC-SHA256(dataset_salt, b"pcn/row-salt/v2")
    row_salt(i) = AES-256(row_key, u128be(2i)) || AES-256(row_key, u128be(2i + 1))
    leaf(i)     = SHA256(0x00 || row_salt(i) || canonical_row(i))
    node(l, r)  = SHA256(0x01 || l || r)

The row salts are the AES-256-CTR keystream under `row_key` (a PRF in counter mode, the
counter starting at 0): the whole table's salts come from one cipher call instead of an
HMAC per row, and any single row's salt is still one block computation away. (Version 1
derived each salt as HMAC-SHA256(dataset_salt, b"pcn/row-salt/v1" || u64be(i)); the leaf
and node hashes are unchanged.)

Leaves are in file order (row order matters). The tree is built level by level, pairing
nodes left to right; when a level has an odd number of nodes the last one is *promoted
unchanged* to the next level (it is not paired with itself, so no two different row lists
share a root by duplication). The root of one row is its leaf; the root of no rows is
``SHA256(b"pcn/empty")``. The 0x00 / 0x01 prefixes separate leaves from inner nodes, so a
leaf can never be presented as an inner node or the other way round.

Salting: without the dataset salt nobody can confirm a guessed row against the on-chain
root. Each row has its own salt derived from the dataset salt, so an owner can disclose
one row together with its row salt and an inclusion proof (`RowProof`), and an auditor
checks it against the registered root with `verify_row_proof` (SHA-256 only: the auditor
never derives a salt), learning nothing about the other rows or the dataset salt: a
disclosed salt is two AES blocks, from which neither the key nor any other block follows.

Speed: the canonical rows are never built cell by cell in Python. Each window of rows is
assembled by Arrow (`pyarrow.compute.binary_join_element_wise`) from the columns' Arrow
string arrays and fixed-width NumPy blocks (leaf prefix, row salt, cell count, each cell's
tag and length), so Python only makes one SHA-256 call per leaf and per inner node.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pcn import jsonsafe
from pcn.chain.types import Fingerprint
from pcn.data.canonical import MAX_CELL_BYTES, NULL_TAG, VALUE_TAG, Schema, encode_row, json_hash, nfc
from pcn.data.errors import DataError
from pcn.data.readers import read_table
from pcn.data.table import Table, nfc_cells

if TYPE_CHECKING:
    import pyarrow as pa

ROW_SALT_DOMAIN = b"pcn/row-salt/v2"
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"pcn/empty").digest()
PROOF_VERSION = "pcn/row-proof/v1"
SALT_BYTES = 32
HASH_BYTES = 32
MAX_ROW_INDEX = 2**64 - 1

_sha256 = hashlib.sha256
_digest = type(hashlib.sha256()).digest
_pack_count = struct.Struct(">I").pack
_WINDOW = 1 << 16  # rows assembled and hashed per step: bounds the memory of the row bytes
assert _WINDOW & (_WINDOW - 1) == 0, "table_root needs a power-of-two window"


def new_dataset_salt() -> bytes:
    """A fresh secret dataset salt (32 bytes from `secrets`)."""
    return secrets.token_bytes(SALT_BYTES)


def _check_salt(dataset_salt: bytes) -> None:
    if not isinstance(dataset_salt, bytes | bytearray) or len(dataset_salt) == 0:
        raise DataError("the dataset salt must be non-empty bytes")


def _row_salt_stream(dataset_salt: bytes, first: int = 0) -> Any:
    """A cipher context whose ``update(bytes(32 * m))`` returns the salts of the next `m` rows,
    starting at row `first`."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    _check_salt(dataset_salt)
    key = hmac.digest(bytes(dataset_salt), ROW_SALT_DOMAIN, "sha256")
    return Cipher(algorithms.AES(key), modes.CTR((2 * first).to_bytes(16, "big"))).encryptor()


def row_salt(dataset_salt: bytes, index: int) -> bytes:
    """The salt of row `index` (0-based, file order): AES-256(row_key, u128be(2i)) ||
    AES-256(row_key, u128be(2i + 1)) with row_key = HMAC-SHA256(dataset_salt,
    b"pcn/row-salt/v2")."""
    _check_salt(dataset_salt)
    if not 0 <= index <= MAX_ROW_INDEX:
        raise DataError(f"row index {index} is outside 0..2^64-1")
    salt: bytes = _row_salt_stream(dataset_salt, index).update(bytes(SALT_BYTES))
    return salt


def row_leaf(salt: bytes, row_bytes: bytes) -> bytes:
    """SHA256(0x00 || row_salt || canonical_row_bytes)."""
    return _sha256(LEAF_PREFIX + salt + row_bytes).digest()


def inner_node(left: bytes, right: bytes) -> bytes:
    """SHA256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    sha, prefix = _sha256, NODE_PREFIX
    pairs = iter(level)
    out = [sha(prefix + a + b).digest() for a, b in zip(pairs, pairs, strict=False)]
    if len(level) % 2:
        out.append(level[-1])  # odd node: promoted unchanged
    return out


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over `leaves` (see the module docstring); `EMPTY_ROOT` for none."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


# -- canonical rows of a table ----------------------------------------------------------------


def _canonical_columns(table: Table, names: Sequence[str]) -> list[pa.ChunkedArray]:
    """Each column as an Arrow string array of NFC cells (list columns are normalised here,
    as `canonical.encode_row` would)."""
    import pyarrow as pa

    out = []
    for name in names:
        col = table.arrow_column(name)
        if col is None:
            col = pa.chunked_array([pa.array(nfc_cells(table.column(name)), type=pa.large_string())])
        out.append(col)
    return out


def _fixed_width(block: np.ndarray) -> pa.Array:
    """A binary array whose value i is the bytes of row i of the 2-D uint8 `block`."""
    import pyarrow as pa

    rows, width = block.shape
    offsets = np.arange(0, (rows + 1) * width, width, dtype=np.int64)
    return pa.Array.from_buffers(
        pa.large_binary(), rows, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(block))]
    )


def _cell_parts(cells: pa.Array) -> list[pa.Array]:
    """The encoded cells of one column as two binary arrays: tag and length (or the null tag),
    then the UTF-8 text (empty for a null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = len(cells)
    lengths = pc.binary_length(cells)
    if cells.null_count:
        lengths = lengths.fill_null(0)
    sizes = lengths.to_numpy()
    if int(sizes.max()) > MAX_CELL_BYTES:
        raise ValueError(f"cell of {int(sizes.max())} bytes exceeds the 4 GiB canonical cell limit")
    head = np.empty((rows, 5), dtype=np.uint8)
    head[:, 0] = VALUE_TAG
    head[:, 1:] = sizes.astype(">u4").view(np.uint8).reshape(rows, 4)
    heads = _fixed_width(head)
    values = cells.cast(pa.large_binary())
    if cells.null_count:
        heads = pc.if_else(cells.is_valid(), heads, pa.scalar(bytes([NULL_TAG]), pa.large_binary()))
        values = values.fill_null(b"")
    return [heads, values]


def _encode_window(prefix: np.ndarray, columns: Sequence[pa.ChunkedArray], start: int) -> list[bytes]:
    """``prefix[i] || cells(start + i)`` for each row i of the 2-D uint8 `prefix`, where
    cells(r) is the encoded cells of row r: with the cell count in the last 4 bytes of each
    prefix row, that is ``... || canonical_row(r)``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = [_fixed_width(prefix)]
    for col in columns:
        parts.extend(_cell_parts(col.slice(start, len(prefix)).combine_chunks()))
    joined = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, pa.scalar(b"", pa.large_binary()))
    rows: list[bytes] = joined.to_pylist()
    return rows


def _count_block(rows: int, width: int, count: int) -> np.ndarray:
    block = np.empty((rows, width), dtype=np.uint8)
    block[:, width - 4 :] = np.frombuffer(_pack_count(count), dtype=np.uint8)
    return block


def canonical_rows(table: Table, names: Sequence[str] | None = None) -> list[bytes]:
    """The canonical row encodings (`canonical.encode_row`) of `table`, in row order, with
    the columns in the order of `names` (default: the table's own order)."""
    names = table.names if names is None else list(names)
    columns = _canonical_columns(table, names)
    rows: list[bytes] = []
    for start in range(0, table.num_rows, _WINDOW):
        m = min(_WINDOW, table.num_rows - start)
        rows.extend(_encode_window(_count_block(m, 4, len(columns)), columns, start))
    return rows


def _leaf_windows(table: Table, dataset_salt: bytes, names: Sequence[str] | None = None) -> Iterator[list[bytes]]:
    """`row_leaf` of every row, one window of _WINDOW rows at a time: Arrow assembles
    ``0x00 || row_salt || canonical_row`` for the window, Python hashes each."""
    names = table.names if names is None else list(names)
    salts = _row_salt_stream(dataset_salt)
    columns = _canonical_columns(table, names)
    sha, digest = _sha256, _digest
    for start in range(0, table.num_rows, _WINDOW):
        m = min(_WINDOW, table.num_rows - start)
        prefix = _count_block(m, 1 + SALT_BYTES + 4, len(columns))
        prefix[:, 0] = LEAF_PREFIX[0]
        prefix[:, 1 : 1 + SALT_BYTES] = np.frombuffer(salts.update(bytes(SALT_BYTES * m)), dtype=np.uint8).reshape(
            m, SALT_BYTES
        )
        yield list(map(digest, map(sha, _encode_window(prefix, columns, start))))


def _leaves(table: Table, dataset_salt: bytes, names: Sequence[str] | None = None) -> list[bytes]:
    return [leaf for window in _leaf_windows(table, dataset_salt, names) for leaf in window]


def table_root(table: Table, dataset_salt: bytes) -> bytes:
    """The salted Merkle root of `table`'s rows (columns in table order), in memory bounded by
    one window: _WINDOW is a power of two, so the root of each window's leaves is the node of
    the whole tree at level log2(_WINDOW) (pairs never cross a window boundary, and a last,
    shorter window promotes its odd nodes exactly as the whole level does), and the tree over
    the window roots is the rest of the whole tree."""
    return merkle_root([merkle_root(window) for window in _leaf_windows(table, dataset_salt)])


def _check_schema(table: Table, schema: Schema) -> None:
    if table.names != schema.names:
        raise DataError(f"the schema names columns {schema.names} but the table has {table.names}", path=table.source)


def metadata_hash(metadata: Mapping[str, Any]) -> bytes:
    """sha256 of the canonical JSON of `metadata` (a JSON object)."""
    if not isinstance(metadata, Mapping):
        raise DataError(f"dataset metadata must be a JSON object (dict), not {type(metadata).__name__}")
    try:
        return json_hash(metadata)
    except ValueError as exc:
        raise DataError(f"dataset metadata: {exc}") from None


def fingerprint_table(table: Table, schema: Schema, dataset_salt: bytes, metadata: Mapping[str, Any]) -> Fingerprint:
    """Merkle root, schema hash, metadata hash and row count of `table`."""
    _check_schema(table, schema)
    return Fingerprint(
        merkle_root=table_root(table, dataset_salt),
        schema_hash=schema.hash,
        metadata_hash=metadata_hash(metadata),
        row_count=table.num_rows,
    )


def fingerprint_file(
    path: str | Path, fmt: str | None, dataset_salt: bytes, metadata: Mapping[str, Any]
) -> Fingerprint:
    """`fingerprint_table` of the file read by `read_table(path, fmt)`."""
    table, schema = read_table(path, fmt)
    return fingerprint_table(table, schema, dataset_salt, metadata)


# -- inclusion proofs -------------------------------------------------------------------------

LEFT = "left"
RIGHT = "right"


@dataclass(frozen=True)
class Sibling:
    """A sibling hash on the path from a leaf to the root, and the side it sits on."""

    side: str  # "left": hash(0x01 || sibling || node); "right": hash(0x01 || node || sibling)
    hash: bytes


@dataclass(frozen=True)
class RowProof:
    """Everything an auditor needs to check one disclosed row against a registered root.

    `row_count` is the number of rows of the dataset (the on-chain fingerprint has it): with
    it the verifier derives, from `index`, on which side each sibling must sit and how many
    there are, so the proof binds the row to its position (when the verifier checks
    `row_count` against the registered one, see `verify_row_proof`).
    """

    index: int
    row_count: int
    cells: tuple[str | None, ...]
    row_salt: bytes
    siblings: tuple[Sibling, ...]

    def leaf(self) -> bytes:
        return row_leaf(self.row_salt, encode_row(list(self.cells)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": PROOF_VERSION,
            "index": self.index,
            "row_count": self.row_count,
            "cells": list(self.cells),
            "row_salt": "0x" + self.row_salt.hex(),
            "siblings": [{"side": s.side, "hash": "0x" + s.hash.hex()} for s in self.siblings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, source: str | Path | None = None) -> RowProof:
        """Parse `to_json` output; anything malformed is a `DataError` (naming `source`)."""
        try:
            raw = jsonsafe.loads(text)  # a proof file may come from anyone: "[[[[…" must not crash us
        except (ValueError, TypeError) as exc:
            raise DataError(f"row proof is not valid JSON ({exc})", path=source) from None
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: Any, source: str | Path | None = None) -> RowProof:
        def bad(message: str) -> DataError:
            return DataError(f"row proof: {message}", path=source)

        if not isinstance(raw, dict):
            raise bad("expected a JSON object")
        expected = {"version", "index", "row_count", "cells", "row_salt", "siblings"}
        missing = sorted(expected - raw.keys())
        if missing:
            raise bad(f"missing key(s) {', '.join(missing)}")
        unknown = sorted(raw.keys() - expected)
        if unknown:
            raise bad(f"unknown key(s) {', '.join(unknown)}")
        if raw["version"] != PROOF_VERSION:
            raise bad(f"version {raw['version']!r} is not {PROOF_VERSION!r}")
        index, count = raw["index"], raw["row_count"]
        for key, value in (("index", index), ("row_count", count)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0 or value > MAX_ROW_INDEX:
                raise bad(f"{key} must be an integer in 0..2^64-1")
        if index >= count:
            raise bad(f"index {index} is not below row_count {count}")
        cells = raw["cells"]
        if not isinstance(cells, list) or not all(c is None or isinstance(c, str) for c in cells):
            raise bad("cells must be a list of strings and nulls")
        salt = _hex_field(raw["row_salt"], "row_salt", bad)
        siblings_raw = raw["siblings"]
        if not isinstance(siblings_raw, list):
            raise bad("siblings must be a list")
        siblings: list[Sibling] = []
        for i, s in enumerate(siblings_raw):
            if not isinstance(s, dict) or set(s) != {"side", "hash"}:
                raise bad(f"siblings[{i}] must be an object with keys side and hash")
            if s["side"] not in (LEFT, RIGHT):
                raise bad(f"siblings[{i}].side must be {LEFT!r} or {RIGHT!r}")
            siblings.append(Sibling(s["side"], _hex_field(s["hash"], f"siblings[{i}].hash", bad)))
        return cls(index, count, tuple(cells), salt, tuple(siblings))


def _hex_field(value: Any, key: str, bad: Callable[[str], DataError]) -> bytes:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise bad(f"{key} must be a 0x-prefixed hex string")
    try:
        data = bytes.fromhex(value[2:])
    except ValueError:
        raise bad(f"{key} is not valid hex") from None
    if len(data) != HASH_BYTES:
        raise bad(f"{key} must be {HASH_BYTES} bytes, got {len(data)}")
    return data


def _path_sides(index: int, count: int) -> list[str]:
    """The side of each sibling on the path of leaf `index` in a tree of `count` leaves
    (levels where the node is promoted have no sibling)."""
    sides: list[str] = []
    while count > 1:
        if index % 2 == 1:
            sides.append(LEFT)
        elif index + 1 < count:
            sides.append(RIGHT)
        index //= 2
        count = (count + 1) // 2
    return sides


def inclusion_proofs(table: Table, dataset_salt: bytes, indices: Sequence[int]) -> list[RowProof]:
    """Proofs for several rows of `table`, building the tree once."""
    n = table.num_rows
    for i in indices:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise DataError(f"row index {i!r} is outside 0..{n - 1}", path=table.source)
    leaves = _leaves(table, dataset_salt)
    levels = [leaves]
    while len(levels[-1]) > 1:
        levels.append(_next_level(levels[-1]))
    names = table.names
    proofs: list[RowProof] = []
    for index in indices:
        siblings: list[Sibling] = []
        pos = index
        for level in levels[:-1]:
            if pos % 2 == 1:
                siblings.append(Sibling(LEFT, level[pos - 1]))
            elif pos + 1 < len(level):
                siblings.append(Sibling(RIGHT, level[pos + 1]))
            pos //= 2
        cells = tuple(None if (c := table.cell(name, index)) is None else nfc(c) for name in names)
        proofs.append(RowProof(index, n, cells, row_salt(dataset_salt, index), tuple(siblings)))
    return proofs


def inclusion_proof(table: Table, dataset_salt: bytes, row_index: int) -> RowProof:
    """The proof that row `row_index` (0-based) is in the tree whose root `table_root` gives."""
    return inclusion_proofs(table, dataset_salt, [row_index])[0]


def verify_row_proof(root: bytes | str, proof: RowProof, row_count: int | None = None) -> bool:
    """True when `proof`'s row, at its index, hashes up to `root` (bytes or 0x-hex).

    Needs only the on-chain root and the disclosed proof. That proves the row is in the
    dataset; to also pin down *which* row it is, pass the on-chain `row_count` (the
    registered fingerprint has it): with promotion, two tree sizes can share a path shape,
    so an index is only as good as the row count it is read against (row 2 of 3 and row 1
    of 2 take the same path). `verify_against_fingerprint` does both. Never raises for a
    malformed proof; it is simply False.
    """
    try:
        if isinstance(root, str):
            root = bytes.fromhex(root.removeprefix("0x"))
        if len(root) != HASH_BYTES:
            return False
        if row_count is not None and proof.row_count != row_count:
            return False
        if not (0 <= proof.index < proof.row_count) or len(proof.row_salt) != HASH_BYTES:
            return False
        sides = _path_sides(proof.index, proof.row_count)
        if len(sides) != len(proof.siblings):
            return False
        node = proof.leaf()
        for side, sibling in zip(sides, proof.siblings, strict=True):
            if sibling.side != side or len(sibling.hash) != HASH_BYTES:
                return False
            node = inner_node(sibling.hash, node) if side == LEFT else inner_node(node, sibling.hash)
        return hmac.compare_digest(node, root)
    except (TypeError, ValueError, AttributeError):
        return False


def verify_against_fingerprint(fingerprint: Fingerprint, proof: RowProof) -> bool:
    """`verify_row_proof` against a registered fingerprint's root and row count."""
    return verify_row_proof(fingerprint.merkle_root, proof, row_count=fingerprint.row_count)
