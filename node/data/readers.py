"""Read a dataset file (CSV or Parquet) into a `Table` of canonical text cells and its `Schema`.

Every cell that leaves this module is the canonical text the fingerprint is computed over
(see `pcn.data.canonical`): Unicode NFC strings, or None for a Parquet null. Any problem with
the file is a `DataError` that names the file and, where there is one, the line or column;
no csv, codec or pyarrow exception escapes.

CSV (format "csv"): UTF-8 (a leading byte-order mark is dropped), RFC 4180 quoting, LF or
CRLF line ends, a header row naming every column. Every column has the logical type
"string" and no cell is ever null (an empty field is the empty string). Completely blank
lines carry no record and are skipped (a single empty field is written ``""`` by RFC 4180
writers, so nothing is lost). These are the semantics of Python's `csv` module in strict
mode; Arrow's C++ parser reads the file whenever it provably gives the same cells (see
`read_csv`), and `csv` itself reads the rest and words the errors.

Parquet (format "parquet"): every column is converted to text, type by type:

==========================  ==========================  ===================================
Arrow type                  schema type                 canonical text
==========================  ==========================  ===================================
string, large_string, view  "string"                    the string, NFC
bool                        "bool"                      "true" / "false" (`bool_text`)
int8 ... uint64             "int8" ... "uint64"         decimal, e.g. "-42"
float64                     "float64"                   `float_text` (Python repr)
float32, float16            "float32", "float16"        `float_text` of the shortest decimal
                                                        that round-trips in that width
                                                        (float32 0.1 -> "0.1")
decimal128/256(p, s)        "decimal(p,s)"              fixed point with s decimals
date32, date64              "date"                      "YYYY-MM-DD"
timestamp[unit(, tz)]       "timestamp[unit(,tz=..)]"   "YYYY-MM-DDTHH:MM:SS[.fff...]" with
                                                        as many decimals as the unit has,
                                                        plus "Z" when the column has a tz
dictionary<T>               as T                        as T
null                        "null"                      None
==========================  ==========================  ===================================

Nulls of any type stay None. Other types (binary, lists, structs, times, durations...) are a
`DataError` naming the column. A Parquet file of string columns and a CSV file with the same
header and cells therefore give the same rows, schema hash and Merkle root.
"""

from __future__ import annotations

import codecs
import csv
import datetime as _dt
import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pcn.data.canonical import Schema, bool_text, float_text, nfc, schema_from_pairs
from pcn.data.errors import DataError
from pcn.data.table import Table, nfc_cells

FORMATS = ("csv", "parquet")
_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_FMT_ALIASES = {"csv": "csv", "parquet": "parquet", "pq": "parquet"}
_CSV_FIELD_LIMIT = 2**31 - 1
_ARROW_BLOCK_BYTES = 1 << 22  # Arrow parses blocks in parallel; a record longer than this takes the `csv` path


def infer_format(path: str | Path, fmt: str | None = None) -> str:
    """The format name ("csv" or "parquet") given explicitly or by the file's suffix."""
    if fmt is not None:
        found = _FMT_ALIASES.get(fmt.strip().lower())
        if found is None:
            raise DataError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", path=path)
        return found
    suffix = Path(path).suffix.lower()
    found = _SUFFIXES.get(suffix)
    if found is None:
        raise DataError(
            f"cannot tell the format from the suffix {suffix or '(none)'!r}; name the file .csv, .parquet or .pq, "
            "or give the format explicitly",
            path=path,
        )
    return found


def read_table(path: str | Path, fmt: str | None = None) -> tuple[Table, Schema]:
    """Read a CSV or Parquet file into canonical text cells and its schema.

    `fmt` is "csv" or "parquet" ("pq"); when None it is inferred from the suffix.
    Raises `DataError` (naming the file, and the line or column) for any problem.
    """
    kind = infer_format(path, fmt)
    if kind == "csv":
        return read_csv(path)
    return read_parquet(path)


def read_table_digest(path: str | Path, fmt: str | None = None) -> tuple[Table, Schema, bytes]:
    """`read_table`, and the SHA-256 of the very bytes it parsed (read once, so the digest
    names exactly the table returned: a node may reuse a fingerprint computed for the same
    bytes, see `pcn.runtime.cache.fingerprint_with_cache`)."""
    kind = infer_format(path, fmt)
    data = _read_bytes(path)
    digest = hashlib.sha256(data).digest()
    if kind == "csv":
        return (*_parse_csv(data, path), digest)
    return (*_parse_parquet(data, path), digest)


# -- CSV --------------------------------------------------------------------------------------


def _read_bytes(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", path=path) from None
    except IsADirectoryError:
        raise DataError("is a directory, not a data file", path=path) from None
    except OSError as exc:
        raise DataError(f"cannot read the file: {exc.strerror or exc}", path=path) from None


def read_csv(path: str | Path) -> tuple[Table, Schema]:
    """Read a CSV file (see the module docstring); every column has type "string".

    Fast path: Arrow's multithreaded C++ CSV parser, whenever it is certain to give exactly
    the cells Python's `csv` module (strict, RFC 4180) gives: the file is valid UTF-8 and
    either has no quote character at all or passes `_STRICT_CSV` (every quoted field closes
    right before a comma, a line end or the end of the file, which is all strict `csv` adds
    to Arrow's rules, and holds no CRLF, which Arrow can corrupt). Anything else (or anything
    Arrow rejects: ragged rows, huge cells...) goes through `csv`, which gives the same cells
    or the precise error with its line.
    """
    return _parse_csv(_read_bytes(path), path)


def _parse_csv(data: bytes, path: str | Path) -> tuple[Table, Schema]:
    skipped = 0
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
        skipped = len(codecs.BOM_UTF8)
    if not data.isascii():
        try:
            data.decode("utf-8")  # validate only: Arrow needs the bytes, the error needs Python's offset
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            bad = data[exc.start : exc.start + 1].hex()
            raise DataError(
                f"not valid UTF-8 (byte 0x{bad} at byte offset {exc.start + skipped}); save the file as UTF-8",
                path=path,
                line=line,
            ) from None
    fast = _read_csv_arrow(data, path)
    if fast is not None:
        return fast
    return _read_csv_python(data.decode("utf-8"), path)


# Files with quotes that strict `csv` and Arrow read alike: a sequence of quoted fields that
# close right before a separator or the end, unquoted runs (which may hold quotes after their
# first byte: literal in both), and separators. Arrow would read `"x"y` as `xy` where strict
# `csv` refuses it, so such a file (which this does not match in full) takes the `csv` path.
# So does a file with a CRLF inside a quoted field: Arrow drops its LF when a block boundary
# falls between the CR and the LF (apache/arrow#51368, open as of pyarrow 26).
_STRICT_CSV = re.compile(rb'(?:"(?:[^"\r]++|""|\r(?!\n))*+"(?=[,\r\n]|\Z)|[^",\r\n][^,\r\n]*+|[,\r\n]++)*+')


def _read_csv_arrow(data: bytes, path: str | Path) -> tuple[Table, Schema] | None:
    """`read_csv` by Arrow, or None when the `csv` path must decide (see `read_csv`)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    # never None: the pattern matches the empty string
    if b'"' in data and _STRICT_CSV.match(data).end() != len(data):  # type: ignore[union-attr]
        return None
    # the header by `csv` itself (it decodes lazily: only the first lines are read)
    reader = csv.reader(io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline=""), strict=True)
    header: list[str] | None = None
    try:
        for record in reader:
            if record:
                header = record
                break
    except csv.Error:
        return None
    if header is None:
        return None
    header_line = reader.line_num
    width = len(header)
    try:
        arrow = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(
                use_threads=True, block_size=_ARROW_BLOCK_BYTES, autogenerate_column_names=True, encoding="utf8"
            ),
            parse_options=pa_csv.ParseOptions(
                delimiter=",",
                quote_char='"',
                double_quote=True,
                escape_char=False,
                newlines_in_values=True,
                ignore_empty_lines=True,
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types={f"f{i}": pa.string() for i in range(width)},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
                auto_dict_encode=False,
            ),
        )
    except (pa.ArrowException, ValueError, OSError):
        return None
    if (
        arrow.num_columns != width
        or arrow.num_rows < 1
        or any(t != pa.string() for t in arrow.schema.types)
        or any(c.null_count for c in arrow.columns)
        or [c[0].as_py() for c in arrow.columns] != header
    ):
        return None
    names = _header_names(header, path, header_line, normalise=True)
    columns = {name: arrow.column(i).slice(1) for i, name in enumerate(names)}
    table = Table(columns, source=str(path))
    return table, schema_from_pairs(((n, "string") for n in names), "csv")


def _read_csv_python(text: str, path: str | Path) -> tuple[Table, Schema]:
    """`read_csv` by Python's `csv` module: the reference semantics, and the precise errors."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)

    header: list[str] | None = None
    header_line = 0
    try:
        for record in reader:
            if record:
                header = record
                header_line = reader.line_num
                break
        if header is None:
            raise DataError("the file is empty; a CSV dataset needs a header row naming its columns", path=path)
        records = list(reader)
    except csv.Error as exc:
        raise DataError(f"malformed CSV: {exc}", path=path, line=reader.line_num) from None

    ascii_text = text.isascii()
    names = _header_names(header, path, header_line, normalise=not ascii_text)
    width = len(names)
    if any(len(r) != width for r in records):
        records = _recheck_rows(text, path, width)

    # one comprehension per column: much faster than zip(*records) for a million rows
    columns: list[list[str]] = [[record[j] for record in records] for j in range(width)]
    del records
    if not ascii_text:
        columns = [nfc_cells(col) for col in columns]
    table = Table(dict(zip(names, columns, strict=True)), source=str(path))
    return table, schema_from_pairs(((n, "string") for n in names), "csv")


def _header_names(header: list[str], path: str | Path, line: int, normalise: bool) -> list[str]:
    names = [nfc(h) for h in header] if normalise else list(header)
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name.strip() == "":
            raise DataError(
                f"column {i + 1} of the header has no name; every column needs a non-empty name",
                path=path,
                line=line,
            )
        if name in seen:
            raise DataError(
                f"duplicate column name {name!r} (columns {seen[name] + 1} and {i + 1})", path=path, line=line
            )
        seen[name] = i
    return names


def _recheck_rows(text: str, path: str | Path, width: int) -> list[list[str]]:
    """Slow path when some record does not have `width` cells: drop blank lines, report the
    first ragged record with its line number."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[list[str]] = []
    seen_header = False
    row = 0
    for record in reader:
        if not record:
            continue
        if not seen_header:
            seen_header = True
            continue
        row += 1
        if len(record) != width:
            raise DataError(
                f"row {row} has {len(record)} cells but the header names {width} columns",
                path=path,
                line=reader.line_num,
            )
        out.append(record)
    return out


# -- Parquet ----------------------------------------------------------------------------------


def read_parquet(path: str | Path) -> tuple[Table, Schema]:
    """Read a Parquet file (see the module docstring for the per-type conversion)."""
    p = Path(path)
    if not p.exists():
        raise DataError("file not found", path=path)
    if p.is_dir():
        raise DataError("is a directory, not a data file", path=path)
    return _parse_parquet(p, path)


def _parse_parquet(source: Path | bytes, path: str | Path) -> tuple[Table, Schema]:
    """The table of the Parquet file at `source` (a path, or the file's bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        opened = pa.BufferReader(source) if isinstance(source, bytes) else source
        with pq.ParquetFile(opened) as parquet:  # not pq.read_table: it refuses duplicate names
            arrow = parquet.read()
    except (pa.ArrowException, OSError, ValueError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"not a readable Parquet file ({reason})", path=path) from None

    names: list[str] = []
    types: list[str] = []
    columns: list[Any] = []
    seen: set[str] = set()
    for i, field in enumerate(arrow.schema):
        name = nfc(field.name)
        if name.strip() == "":
            raise DataError(f"column {i + 1} has no name; every column needs a non-empty name", path=path)
        if name in seen:
            raise DataError(f"duplicate column name {name!r}", path=path, column=name)
        seen.add(name)
        type_name, cells = _arrow_column_text(arrow.column(i), path, name)
        names.append(name)
        types.append(type_name)
        columns.append(cells)
    if not names:
        raise DataError("the Parquet file has no columns", path=path)
    table = Table(dict(zip(names, columns, strict=True)), source=str(path))
    return table, schema_from_pairs(zip(names, types, strict=True), "parquet")


def _map_nullable(values: list[Any], fn: Callable[[Any], str], null_count: int) -> list[str | None]:
    if null_count == 0:
        return list(map(fn, values))
    return [None if v is None else fn(v) for v in values]


def _small_float_text(width: type[np.floating]) -> Callable[[float], str]:
    def text(value: float) -> str:
        # numpy prints the shortest decimal that round-trips in `width`; re-reading it as a
        # double and printing with float_text gives Python's repr style for that number.
        return float_text(float(str(width(value))))

    return text


def _fixed_point(value: Any) -> str:
    return format(value, "f")


def _arrow_column_text(col: Any, path: str | Path, name: str) -> tuple[str, Any]:
    """The schema type name and canonical text cells of one Arrow (chunked) column: a list,
    or the Arrow column itself for strings."""
    import pyarrow as pa

    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = col.type
    nulls = col.null_count

    if pa.types.is_string(t) or pa.types.is_large_string(t) or _is_string_view(t):
        return "string", col  # stays Arrow; `Table` brings it to NFC
    if pa.types.is_boolean(t):
        return "bool", _map_nullable(col.to_pylist(), bool_text, nulls)
    if pa.types.is_integer(t):
        return str(t), _map_nullable(col.to_pylist(), str, nulls)
    if pa.types.is_floating(t):
        if t == pa.float64():
            return "float64", _map_nullable(col.to_pylist(), float_text, nulls)
        if t == pa.float32():
            return "float32", _map_nullable(col.to_pylist(), _small_float_text(np.float32), nulls)
        # float16: to_pylist gives numpy halves; widen through numpy
        values = col.cast(pa.float32()).to_pylist()
        return "float16", _map_nullable(values, _small_float_text(np.float16), nulls)
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})", _map_nullable(col.to_pylist(), _fixed_point, nulls)
    try:
        if pa.types.is_date32(t):
            days = col.cast(pa.int32()).to_pylist()
            return "date", _map_nullable(days, _date_from_days, nulls)
        if pa.types.is_date64(t):
            ms = col.cast(pa.int64()).to_pylist()
            return "date", _map_nullable(ms, lambda v: _date_from_days(v // 86_400_000), nulls)
        if pa.types.is_timestamp(t):
            digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[t.unit]
            suffix = "Z" if t.tz else ""
            type_name = f"timestamp[{t.unit},tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]"
            raw = col.cast(pa.int64()).to_pylist()
            return type_name, _map_nullable(raw, lambda v: _timestamp_text(v, digits, suffix), nulls)
    except OverflowError:
        raise DataError("a date or timestamp lies outside the years 1-9999", path=path, column=name) from None
    if pa.types.is_null(t):
        return "null", [None] * len(col)
    raise DataError(
        f"column type {t} is not supported; use strings, booleans, integers, floats, decimals, dates or timestamps",
        path=path,
        column=name,
    )


def _is_string_view(t: Any) -> bool:
    import pyarrow as pa

    check = getattr(pa.types, "is_string_view", None)
    return bool(check(t)) if check is not None else False


_EPOCH_DATE = _dt.date(1970, 1, 1)
_EPOCH = _dt.datetime(1970, 1, 1)


def _date_from_days(days: int) -> str:
    return (_EPOCH_DATE + _dt.timedelta(days=days)).isoformat()


def _timestamp_text(value: int, digits: int, suffix: str) -> str:
    seconds, fraction = divmod(value, 10**digits)
    d = _EPOCH + _dt.timedelta(seconds=seconds)
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    if digits:
        text += f".{fraction:0{digits}d}"
    return text + suffix
