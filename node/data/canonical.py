"""Byte-exact encodings that the dataset fingerprint is computed over.

Canonical row (version 1)::

    row   := u32be(cell_count) cell*
    cell  := 0x00                          -- null (Parquet null; CSV has no nulls)
           | 0x01 u32be(len(text)) text    -- a value, as UTF-8 (NFC) of its canonical text

Every cell is self-delimiting and the row starts with its cell count, so the encoding is
injective: two different cell lists (``["ab", "c"]`` vs ``["a", "bc"]``, ``None`` vs ``""``,
``[]`` vs ``[""]``) never encode to the same bytes, and `decode_row` inverts `encode_row`.
The tag byte carries no logical type: a value's type lives in the schema (and so in the
schema hash), which is why a Parquet file of strings and a CSV file with the same cells give
the same Merkle root.

Canonical JSON (schema and metadata hashes): UTF-8, keys sorted, no insignificant
whitespace, non-ASCII characters unescaped, NaN/Infinity refused, all strings NFC.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NULL_TAG = 0x00
VALUE_TAG = 0x01
MAX_CELL_BYTES = 0xFFFFFFFF
MAX_CELLS = 0xFFFFFFFF

_NULL_CELL = bytes([NULL_TAG])
_pack_count = struct.Struct(">I").pack
_pack_value_head = struct.Struct(">BI").pack
_unpack_u32 = struct.Struct(">I").unpack_from
_normalize = unicodedata.normalize


def nfc(text: str) -> str:
    """Unicode NFC of `text` (ASCII is returned as is, cheaply)."""
    return text if text.isascii() else _normalize("NFC", text)


def encode_cell(value: str | None) -> bytes:
    """One canonical cell: the null marker, or tag + length + NFC UTF-8 text."""
    if value is None:
        return _NULL_CELL
    data = nfc(value).encode("utf-8")
    if len(data) > MAX_CELL_BYTES:
        raise ValueError(f"cell of {len(data)} bytes exceeds the 4 GiB canonical cell limit")
    return _pack_value_head(VALUE_TAG, len(data)) + data


def encode_row(cells: Sequence[str | None]) -> bytes:
    """The canonical encoding of one row (see the module docstring)."""
    parts = [_pack_count(len(cells))]
    append = parts.append
    for value in cells:
        if value is None:
            append(_NULL_CELL)
        else:
            data = nfc(value).encode("utf-8")
            append(_pack_value_head(VALUE_TAG, len(data)))
            append(data)
    return b"".join(parts)


def encode_text_row(cells: Sequence[str]) -> bytes:
    """`encode_row` for cells already known to be NFC `str` (the CSV hot path)."""
    parts = [_pack_count(len(cells))]
    append = parts.append
    for value in cells:
        data = value.encode("utf-8")
        append(_pack_value_head(VALUE_TAG, len(data)))
        append(data)
    return b"".join(parts)


def join_encoded_cells(columns: Sequence[Sequence[bytes]]) -> list[bytes]:
    """Rows from per-column lists of already encoded cells (the Parquet hot path)."""
    if not columns:
        return []
    head = _pack_count(len(columns))
    return [head + b"".join(cells) for cells in zip(*columns, strict=True)]


def decode_row(data: bytes) -> list[str | None]:
    """Invert `encode_row`; `ValueError` if `data` is not a canonical row."""
    view = memoryview(data)
    if len(view) < 4:
        raise ValueError("canonical row is shorter than its 4-byte cell count")
    (count,) = _unpack_u32(view, 0)
    pos = 4
    cells: list[str | None] = []
    for i in range(count):
        if pos >= len(view):
            raise ValueError(f"canonical row ends before cell {i} of {count}")
        tag = view[pos]
        pos += 1
        if tag == NULL_TAG:
            cells.append(None)
            continue
        if tag != VALUE_TAG:
            raise ValueError(f"cell {i} has unknown tag 0x{tag:02x}")
        if pos + 4 > len(view):
            raise ValueError(f"cell {i} is missing its length")
        (length,) = _unpack_u32(view, pos)
        pos += 4
        if pos + length > len(view):
            raise ValueError(f"cell {i} claims {length} bytes but the row ends first")
        text = bytes(view[pos : pos + length]).decode("utf-8")
        if nfc(text) != text:
            raise ValueError(f"cell {i} is not in Unicode NFC")
        cells.append(text)
        pos += length
    if pos != len(view):
        raise ValueError(f"{len(view) - pos} trailing bytes after the last cell")
    return cells


# -- canonical text of typed values (Parquet) -------------------------------------------------


def float_text(value: float) -> str:
    """Shortest round-trip text of a float (Python repr); NaN, Infinity, -Infinity, -0.0."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(float(value))


def bool_text(value: bool) -> str:
    return "true" if value else "false"


# -- canonical JSON ---------------------------------------------------------------------------


def _nfc_json(value: Any, where: str) -> Any:
    if isinstance(value, str):
        return nfc(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} has no canonical JSON form")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: JSON object keys must be strings, got {key!r}")
            k = nfc(key)
            if k in out:
                raise ValueError(f"{where}: keys {key!r} collide after Unicode NFC")
            out[k] = _nfc_json(item, f"{where}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_nfc_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where}: {type(value).__name__} is not JSON (str, int, float, bool, None, list, dict)")


def canonical_json(value: Any) -> bytes:
    """Canonical JSON bytes of `value` (see the module docstring)."""
    return json.dumps(
        _nfc_json(value, "$"), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def json_hash(value: Any) -> bytes:
    return hashlib.sha256(canonical_json(value)).digest()


# -- schema -----------------------------------------------------------------------------------

SCHEMA_VERSION = "pcn/schema/v1"


@dataclass(frozen=True)
class Column:
    name: str
    type: str


@dataclass(frozen=True)
class Schema:
    """Ordered columns of a dataset, with their logical types, and the file format.

    The schema hash covers the column names and types only (not the format): a CSV file
    whose columns are all "string" and a Parquet file of string columns with the same names
    have the same schema hash.
    """

    columns: tuple[Column, ...]
    format: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def index_of(self, name: str) -> int:
        for i, c in enumerate(self.columns):
            if c.name == name:
                return i
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(c.name == name for c in self.columns)

    def canonical(self) -> dict[str, Any]:
        return {"version": SCHEMA_VERSION, "columns": [[c.name, c.type] for c in self.columns]}

    def canonical_json(self) -> bytes:
        return canonical_json(self.canonical())

    @property
    def hash(self) -> bytes:
        """sha256 of the canonical JSON of the ordered (name, type) pairs."""
        return hashlib.sha256(self.canonical_json()).digest()


def schema_from_pairs(pairs: Iterable[tuple[str, str]], fmt: str) -> Schema:
    return Schema(tuple(Column(nfc(n), t) for n, t in pairs), fmt)
