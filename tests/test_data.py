"""pcn.data: readers, the salted Merkle fingerprint, row inclusion proofs and policy files.

No chain is needed: every test works on files under tmp_path.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import tempfile
import unicodedata
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pcn.chain.types import MAX_POLICY_ENTRIES, Fingerprint, epsilon_to_fixed
from pcn.data import fingerprint, readers
from pcn.data.canonical import Schema, encode_row, json_hash, schema_from_pairs
from pcn.data.errors import DataError
from pcn.data.fingerprint import (
    EMPTY_ROOT,
    RowProof,
    Sibling,
    canonical_rows,
    fingerprint_file,
    fingerprint_table,
    inclusion_proof,
    inclusion_proofs,
    new_dataset_salt,
    row_leaf,
    row_salt,
    table_root,
    verify_against_fingerprint,
    verify_row_proof,
)
from pcn.data.policy import load_policy
from pcn.data.readers import _read_csv_arrow, _read_csv_python, read_table
from pcn.data.table import Table

SALT = bytes(range(32))
OTHER_SALT = bytes(range(1, 33))

HEADER = ["id", "name", "amount", "note"]
ROWS = [
    ["1", "Alice", "10.5", ""],
    ["2", "Bob", "-3", 'says "hi", twice'],
    ["3", "Zoë", "0", "line one\nline two"],
    ["4", "Ølaf", "1e3", "  padded  "],
    ["5", "李", "7", "comma, inside"],
]


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, newline: str = "\n", bom: bool = False) -> Path:
    with path.open("w", encoding="utf-8-sig" if bom else "utf-8", newline="") as f:
        w = csv.writer(f, lineterminator=newline)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_parquet(path: Path, header: list[str], rows: list[list[str | None]]) -> Path:
    columns = {name: pa.array([r[i] for r in rows], type=pa.string()) for i, name in enumerate(header)}
    pq.write_table(pa.table(columns) if header else pa.table({}), path)
    return path


def table_of(rows: list[list[str | None]], names: list[str] | None = None) -> Table:
    width = len(rows[0]) if rows else 1
    names = names or [f"c{i}" for i in range(width)]
    return Table({n: [r[i] for r in rows] for i, n in enumerate(names)})


# -- an independent, literal implementation of the construction, for known-answer checks -----


def ref_row_salt(salt: bytes, i: int) -> bytes:
    # AES-256 of the counter blocks 2i and 2i+1 (ECB here: independent of the CTR stream the code uses)
    key = hmac.new(salt, b"pcn/row-salt/v2", hashlib.sha256).digest()
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return ecb.update((2 * i).to_bytes(16, "big") + (2 * i + 1).to_bytes(16, "big")) + ecb.finalize()


def ref_leaf(salt: bytes, i: int, cells: list[str | None]) -> bytes:
    return hashlib.sha256(b"\x00" + ref_row_salt(salt, i) + encode_row(cells)).digest()


def ref_node(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + a + b).digest()


# -- readers ----------------------------------------------------------------------------------


def test_csv_reads_cells_exactly(tmp_path: Path) -> None:
    table, schema = read_table(write_csv(tmp_path / "d.csv", HEADER, ROWS))
    assert table.names == HEADER
    assert table.num_rows == len(ROWS)
    assert table.column("note") == [r[3] for r in ROWS]
    assert schema.names == HEADER
    assert [c.type for c in schema.columns] == ["string"] * 4
    assert schema.format == "csv"


def test_csv_and_parquet_with_same_cells_have_same_root_and_schema_hash(tmp_path: Path) -> None:
    csv_path = write_csv(tmp_path / "d.csv", HEADER, ROWS)
    pq_path = write_parquet(tmp_path / "d.parquet", HEADER, ROWS)  # type: ignore[arg-type]
    fc = fingerprint_file(csv_path, None, SALT, {"name": "x"})
    fp = fingerprint_file(pq_path, None, SALT, {"name": "x"})
    assert fc.merkle_root == fp.merkle_root
    assert fc.schema_hash == fp.schema_hash
    assert fc == fp
    assert fc.row_count == len(ROWS)


def test_bom_and_crlf_do_not_change_the_root(tmp_path: Path) -> None:
    plain = write_csv(tmp_path / "a.csv", HEADER, ROWS)
    windows = write_csv(tmp_path / "b.csv", HEADER, ROWS, newline="\r\n", bom=True)
    assert windows.read_bytes().startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in windows.read_bytes()
    ta, sa = read_table(plain)
    tb, sb = read_table(windows)
    assert tb.names == HEADER  # the BOM is not part of the first column name
    assert table_root(ta, SALT) == table_root(tb, SALT)
    assert sa.hash == sb.hash


def test_csv_cells_and_names_are_nfc_normalised(tmp_path: Path) -> None:
    nfd_name = unicodedata.normalize("NFD", "prénom")
    nfd_cell = unicodedata.normalize("NFD", "Zoë")
    assert nfd_cell != "Zoë"
    path = tmp_path / "nfd.csv"
    path.write_text(f"{nfd_name},b\n{nfd_cell},x\n", encoding="utf-8")
    table, _schema = read_table(path)
    assert table.names == ["prénom", "b"]
    assert table.column("prénom") == ["Zoë"]
    nfc_path = tmp_path / "nfc.csv"
    nfc_path.write_text("prénom,b\nZoë,x\n", encoding="utf-8")
    assert fingerprint_file(path, None, SALT, {}) == fingerprint_file(nfc_path, None, SALT, {})


def test_csv_blank_lines_are_skipped_but_empty_fields_kept(tmp_path: Path) -> None:
    path = tmp_path / "blank.csv"
    path.write_text('a\n""\n\nx\n\n', encoding="utf-8")
    table, _ = read_table(path)
    assert table.column("a") == ["", "x"]


def test_header_only_csv_is_an_empty_table_with_the_empty_root(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n", encoding="utf-8")
    table, schema = read_table(path)
    assert table.num_rows == 0
    fp = fingerprint_table(table, schema, SALT, {})
    assert fp.merkle_root == EMPTY_ROOT == hashlib.sha256(b"pcn/empty").digest()
    assert fp.row_count == 0


def test_parquet_types_become_canonical_text(tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    table = pa.table(
        {
            "i": pa.array([1, -2, None], pa.int64()),
            "u": pa.array([255, 0, 7], pa.uint8()),
            "f": pa.array([0.1, float("nan"), -0.0], pa.float64()),
            "f32": pa.array([0.1, None, 1e20], pa.float32()),
            "b": pa.array([True, False, None]),
            "s": pa.array([unicodedata.normalize("NFD", "é"), None, ""]),
            "d": pa.array([dt.date(2024, 2, 29), None, dt.date(1969, 12, 31)]),
            "t": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 600000), None, None], pa.timestamp("ms", tz="UTC")),
            "cat": pa.array(["x", "y", "x"]).dictionary_encode(),
        }
    )
    pq.write_table(table, path)
    t, schema = read_table(path)
    assert t.column("i") == ["1", "-2", None]
    assert t.column("u") == ["255", "0", "7"]
    assert t.column("f") == ["0.1", "NaN", "-0.0"]
    assert t.column("f32") == ["0.1", None, "1e+20"]
    assert t.column("b") == ["true", "false", None]
    assert t.column("s") == ["é", None, ""]
    assert t.column("d") == ["2024-02-29", None, "1969-12-31"]
    assert t.column("t") == ["2024-01-02T03:04:05.600Z", None, None]
    assert t.column("cat") == ["x", "y", "x"]
    assert [c.type for c in schema.columns] == [
        "int64",
        "uint8",
        "float64",
        "float32",
        "bool",
        "string",
        "date",
        "timestamp[ms,tz=UTC]",
        "string",
    ]
    # a typed column has a different schema hash from the same cells as strings
    assert schema.hash != schema_from_pairs(((n, "string") for n in schema.names), "csv").hash


def test_parquet_null_differs_from_empty_string(tmp_path: Path) -> None:
    a = write_parquet(tmp_path / "a.parquet", ["x"], [[None]])
    b = write_parquet(tmp_path / "b.parquet", ["x"], [[""]])
    assert fingerprint_file(a, None, SALT, {}).merkle_root != fingerprint_file(b, None, SALT, {}).merkle_root


def test_unsupported_parquet_column_type_names_the_column(tmp_path: Path) -> None:
    path = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"ok": ["a"], "blob": pa.array([b"\x00"], pa.binary())}), path)
    with pytest.raises(DataError, match=r"column 'blob'.*not supported") as exc:
        read_table(path)
    assert exc.value.column == "blob"


def test_format_from_suffix_and_explicit(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "d.csv", HEADER, ROWS)
    renamed = tmp_path / "d.data"
    renamed.write_bytes(src.read_bytes())
    with pytest.raises(DataError, match=r"d\.data.*suffix"):
        read_table(renamed)
    table, schema = read_table(renamed, "csv")
    assert table.num_rows == len(ROWS)
    assert schema.format == "csv"
    with pytest.raises(DataError, match="unknown format 'xlsx'"):
        read_table(src, "xlsx")
    pq_path = write_parquet(tmp_path / "d.pq", HEADER, ROWS)  # type: ignore[arg-type]
    assert read_table(pq_path)[1].format == "parquet"


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (b"a,b\n1,2\n3\n", 3, "row 2 has 1 cells but the header names 2 columns"),
        (b'a,b\n"multi\nline",2\n1,2,3\n', 4, "row 2 has 3 cells"),
        (b"a,b\n1,2\n\n\n4,5,6\n", 5, "row 2 has 3 cells"),
        (b"a,b\n1,2\n3,\xff\xfe\n", 3, "not valid UTF-8"),
        (b"\xef\xbb\xbfa,b\n1,\xc3\n", 2, "not valid UTF-8"),
        (b"a,a\n1,2\n", 1, "duplicate column name 'a'"),
        (b"a,,c\n1,2,3\n", 1, "column 2 of the header has no name"),
        (b'a,b\n1,"unterminated\n', 2, "malformed CSV"),
        (b'a,b\n1,"x"y\n', 2, "malformed CSV"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path: Path, content: bytes, line: int, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as exc:
        read_table(path)
    text = str(exc.value)
    assert str(path) in text
    assert f"line {line}" in text
    assert message in text
    assert exc.value.line == line


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf", b"\n\n", b"\r\n"])
def test_empty_csv_is_an_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        read_table(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="not found"):
        read_table(tmp_path / "nope.parquet")


def test_truncated_or_fake_parquet_is_a_data_error(tmp_path: Path) -> None:
    good = write_parquet(tmp_path / "good.parquet", HEADER, ROWS)  # type: ignore[arg-type]
    data = good.read_bytes()
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"truncated\.parquet: not a readable Parquet file") as exc:
        read_table(truncated)
    assert exc.value.path == str(truncated)
    corrupt = tmp_path / "corrupt.parquet"  # footer intact, data pages garbled
    body = bytearray(data)
    for i in range(4, min(len(body) - 8, 200)):
        body[i] = 0xAB
    corrupt.write_bytes(bytes(body))
    with pytest.raises(DataError, match=r"corrupt\.parquet"):
        read_table(corrupt)
    fake = tmp_path / "fake.parquet"
    fake.write_text("id,name\n1,a\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"fake\.parquet: not a readable Parquet file"):
        read_table(fake)


def test_duplicate_parquet_column_names_are_an_error(tmp_path: Path) -> None:
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(["1"]), pa.array(["2"])], names=["x", "x"]), path)
    with pytest.raises(DataError, match="duplicate column name 'x'"):
        read_table(path)


# -- the fingerprint --------------------------------------------------------------------------


def test_row_salt_is_the_specified_aes_block_pair() -> None:
    for i in (0, 1, 255, 2**40 + 3):
        assert row_salt(SALT, i) == ref_row_salt(SALT, i)
    assert row_salt(SALT, 0) != row_salt(SALT, 1)
    assert row_salt(SALT, 0) != row_salt(OTHER_SALT, 0)


def test_root_matches_a_literal_computation_with_odd_promotion() -> None:
    rows: list[list[str | None]] = [["a", "1"], ["b", None], ["c", "3"]]
    leaves = [ref_leaf(SALT, i, r) for i, r in enumerate(rows)]
    # three leaves: (l0, l1) are paired, l2 is promoted unchanged (not hashed with itself)
    expected = ref_node(ref_node(leaves[0], leaves[1]), leaves[2])
    assert table_root(table_of(rows), SALT) == expected
    five = [*rows, ["d", "4"], ["e", "5"]]
    lv = [ref_leaf(SALT, i, r) for i, r in enumerate(five)]
    expected5 = ref_node(ref_node(ref_node(lv[0], lv[1]), ref_node(lv[2], lv[3])), lv[4])
    assert table_root(table_of(five), SALT) == expected5


def test_single_row_root_is_its_leaf() -> None:
    assert table_root(table_of([["x"]]), SALT) == row_leaf(ref_row_salt(SALT, 0), encode_row(["x"]))


def test_fingerprint_fields(tmp_path: Path) -> None:
    table, schema = read_table(write_csv(tmp_path / "d.csv", HEADER, ROWS))
    meta = {"name": "customers", "owner": "bank"}
    fp = fingerprint_table(table, schema, SALT, meta)
    assert fp.schema_hash == schema.hash
    assert fp.metadata_hash == json_hash(meta)
    assert fp.row_count == len(ROWS)
    assert fp.merkle_root == table_root(table, SALT)
    assert fingerprint_table(table, schema, SALT, {"name": "other"}).metadata_hash != fp.metadata_hash
    with pytest.raises(DataError, match="metadata"):
        fingerprint_table(table, schema, SALT, {"bad": float("nan")})
    other_schema = schema_from_pairs([("x", "string")], "csv")
    with pytest.raises(DataError, match="schema names columns"):
        fingerprint_table(table, other_schema, SALT, meta)


def test_salt_changes_the_root(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", HEADER, ROWS)
    a = fingerprint_file(path, "csv", SALT, {})
    b = fingerprint_file(path, "csv", OTHER_SALT, {})
    assert a.merkle_root != b.merkle_root
    assert (a.schema_hash, a.row_count) == (b.schema_hash, b.row_count)


def test_one_changed_byte_changes_the_root(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", HEADER, ROWS)
    original = fingerprint_file(path, None, SALT, {}).merkle_root
    data = path.read_bytes()
    pos = data.index(b"Bob")
    changed = tmp_path / "e.csv"
    changed.write_bytes(data[:pos] + b"Bpb" + data[pos + 3 :])
    assert fingerprint_file(changed, None, SALT, {}).merkle_root != original
    # moving a comma keeps the concatenated text but changes the cells
    shifted = [["ab", "c"]], [["a", "bc"]]
    assert table_root(table_of(shifted[0]), SALT) != table_root(table_of(shifted[1]), SALT)


def test_row_order_matters() -> None:
    rows: list[list[str | None]] = [["1", "x"], ["2", "y"], ["3", "z"]]
    swapped = [rows[1], rows[0], rows[2]]
    assert table_root(table_of(rows), SALT) != table_root(table_of(swapped), SALT)


def test_new_dataset_salt() -> None:
    a, b = new_dataset_salt(), new_dataset_salt()
    assert len(a) == 32 and isinstance(a, bytes)
    assert a != b


def test_a_million_rows_is_fast(tmp_path: Path) -> None:
    import time

    n = 1_000_000
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write("id,age,city,score\n")
        f.writelines(f"C{i:07d},{i % 90},{'Zürich' if i % 3 else 'Paris'},{i * 0.5}\n" for i in range(n))
    start = time.perf_counter()
    fp = fingerprint_file(path, None, SALT, {})
    elapsed = time.perf_counter() - start
    assert fp.row_count == n
    assert elapsed < 30, f"1M rows took {elapsed:.1f}s"


# -- inclusion proofs -------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_every_row_proof_verifies(n: int) -> None:
    table = table_of([[str(i), f"v{i}", None if i % 3 == 0 else "é"] for i in range(n)])
    root = table_root(table, SALT)
    proofs = inclusion_proofs(table, SALT, list(range(n)))
    for i, proof in enumerate(proofs):
        assert proof.index == i
        assert proof.row_count == n
        assert proof.row_salt == ref_row_salt(SALT, i)
        assert verify_row_proof(root, proof)
        assert verify_row_proof(root, proof, row_count=n)
        assert verify_row_proof("0x" + root.hex(), proof)
        assert not verify_row_proof(root, proof, row_count=n + 1)
        assert not verify_row_proof(table_root(table, OTHER_SALT), proof)
        assert proof == inclusion_proof(table, SALT, i)


def test_tampered_proofs_fail() -> None:
    table = table_of([[str(i), f"name{i}"] for i in range(6)])
    root = table_root(table, SALT)
    proof = inclusion_proof(table, SALT, 2)
    assert verify_row_proof(root, proof)
    tampered = [
        RowProof(proof.index, proof.row_count, ("2", "name3"), proof.row_salt, proof.siblings),
        RowProof(proof.index, proof.row_count, ("2", "name2", ""), proof.row_salt, proof.siblings),
        RowProof(proof.index, proof.row_count, proof.cells, row_salt(SALT, 3), proof.siblings),
        RowProof(proof.index, proof.row_count, proof.cells, bytes(32), proof.siblings),
        RowProof(3, proof.row_count, proof.cells, proof.row_salt, proof.siblings),
        RowProof(0, proof.row_count, proof.cells, proof.row_salt, proof.siblings),
        RowProof(proof.index, 5, proof.cells, proof.row_salt, proof.siblings),
        RowProof(proof.index, proof.row_count, proof.cells, proof.row_salt, proof.siblings[:-1]),
        RowProof(proof.index, proof.row_count, proof.cells, proof.row_salt, proof.siblings[::-1]),
    ]
    first = proof.siblings[0]
    flipped = bytes([first.hash[0] ^ 1]) + first.hash[1:]
    tampered.append(
        RowProof(
            proof.index,
            proof.row_count,
            proof.cells,
            proof.row_salt,
            (Sibling(first.side, flipped), *proof.siblings[1:]),
        )
    )
    other_side = "left" if first.side == "right" else "right"
    tampered.append(
        RowProof(
            proof.index,
            proof.row_count,
            proof.cells,
            proof.row_salt,
            (Sibling(other_side, first.hash), *proof.siblings[1:]),
        )
    )
    tampered.append(RowProof(proof.index, proof.row_count, proof.cells, proof.row_salt, (Sibling("up", first.hash),)))
    tampered.append(RowProof(proof.index, proof.row_count, proof.cells, proof.row_salt[:16], proof.siblings))
    count_tampered = RowProof(proof.index, 5, proof.cells, proof.row_salt, proof.siblings)
    for bad in tampered:
        assert not verify_row_proof(root, bad, row_count=6), bad
        assert not verify_against_fingerprint(Fingerprint(root, b"s" * 32, b"m" * 32, 6), bad), bad
        if bad != count_tampered:  # 5 and 6 rows happen to share row 2's path shape
            assert not verify_row_proof(root, bad), bad
    assert verify_against_fingerprint(Fingerprint(root, b"s" * 32, b"m" * 32, 6), proof)
    assert not verify_row_proof(root[:31], proof)
    assert not verify_row_proof("0xnothex", proof)


def test_the_registered_row_count_pins_the_index() -> None:
    # Row 2 of 3 is promoted at the bottom level, so its path has the shape of row 1 of 2:
    # without the row count a proof could be re-labelled; with the on-chain count it cannot.
    table = table_of([["a"], ["b"], ["c"]])
    root = table_root(table, SALT)
    proof = inclusion_proof(table, SALT, 2)
    relabelled = RowProof(1, 2, proof.cells, proof.row_salt, proof.siblings)
    assert verify_row_proof(root, relabelled)  # documented: the count must come from the chain
    assert not verify_row_proof(root, relabelled, row_count=3)
    assert verify_row_proof(root, proof, row_count=3)


def test_a_leaf_cannot_pose_as_an_inner_node() -> None:
    # Take rows 0 and 1's parent node; claiming it is a leaf of a 1-row tree must fail
    # because leaves and inner nodes are hashed with different prefixes.
    table = table_of([["a"], ["b"]])
    root = table_root(table, SALT)
    proof = inclusion_proof(table, SALT, 0)
    fake = RowProof(0, 1, proof.cells, proof.row_salt, ())
    assert not verify_row_proof(root, fake)


def test_proof_json_round_trip_and_file(tmp_path: Path) -> None:
    table = table_of([["1", None], ["2", "ü"], ["3", 'q"uote']])
    root = table_root(table, SALT)
    proof = inclusion_proof(table, SALT, 1)
    text = proof.to_json()
    data = json.loads(text)
    assert data["row_salt"] == "0x" + proof.row_salt.hex()
    assert data["cells"] == ["2", "ü"]
    assert all(s["side"] in ("left", "right") for s in data["siblings"])
    path = tmp_path / "proof.json"
    path.write_text(text, encoding="utf-8")
    again = RowProof.from_json(path.read_text(encoding="utf-8"))
    assert again == proof
    assert verify_row_proof(root, again)
    null_proof = RowProof.from_json(inclusion_proof(table, SALT, 0).to_json())
    assert null_proof.cells == ("1", None)
    assert verify_row_proof(root, null_proof)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: "not json {",
        lambda d: json.dumps([1, 2]),
        lambda d: json.dumps({k: v for k, v in d.items() if k != "row_salt"}),
        lambda d: json.dumps({**d, "extra": 1}),
        lambda d: json.dumps({**d, "version": "pcn/row-proof/v0"}),
        lambda d: json.dumps({**d, "index": -1}),
        lambda d: json.dumps({**d, "index": "1"}),
        lambda d: json.dumps({**d, "index": 9}),
        lambda d: json.dumps({**d, "row_salt": "zz"}),
        lambda d: json.dumps({**d, "row_salt": "0x1234"}),
        lambda d: json.dumps({**d, "cells": [1, 2]}),
        lambda d: json.dumps({**d, "siblings": [{"side": "up", "hash": "0x" + "00" * 32}]}),
        lambda d: json.dumps({**d, "siblings": [{"side": "left"}]}),
        lambda d: json.dumps({**d, "siblings": "0x00"}),
    ],
)
def test_malformed_proof_json_is_a_data_error(mutate: object) -> None:
    table = table_of([["1"], ["2"], ["3"]])
    good = json.loads(inclusion_proof(table, SALT, 1).to_json())
    with pytest.raises(DataError, match="row proof"):
        RowProof.from_json(mutate(good), source="proof.json")  # type: ignore[operator]


def test_proof_index_out_of_range_is_an_error() -> None:
    table = table_of([["1"], ["2"]])
    with pytest.raises(DataError, match="outside"):
        inclusion_proof(table, SALT, 2)
    with pytest.raises(DataError, match="outside"):
        inclusion_proof(table, SALT, -1)


cell_text = st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", ",", '"', "\n", "e\u0301", "é"]))


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda w: st.lists(st.lists(cell_text, min_size=w, max_size=w), min_size=1, max_size=20)
    ),
    st.binary(min_size=1, max_size=40),
)
def test_property_every_row_proof_verifies(rows: list[list[str | None]], salt: bytes) -> None:
    table = table_of(rows)
    root = table_root(table, salt)
    leaves = [ref_leaf(salt, i, r) for i, r in enumerate(rows)]
    while len(leaves) > 1:  # the literal level-by-level construction
        nxt = [ref_node(leaves[i], leaves[i + 1]) for i in range(0, len(leaves) - 1, 2)]
        leaves = nxt + ([leaves[-1]] if len(leaves) % 2 else [])
    assert root == leaves[0]
    for proof in inclusion_proofs(table, salt, list(range(len(rows)))):
        assert verify_row_proof(root, proof, row_count=len(rows))
        assert verify_row_proof(root, RowProof.from_json(proof.to_json()))
        if len(rows) > 1:
            moved = RowProof(
                (proof.index + 1) % len(rows), proof.row_count, proof.cells, proof.row_salt, proof.siblings
            )
            assert not verify_row_proof(root, moved)


header_name = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6).filter(
    lambda s: s.strip() != ""
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(header_name, min_size=1, max_size=3, unique_by=lambda s: unicodedata.normalize("NFC", s)).flatmap(
        lambda names: st.tuples(
            st.just(names),
            st.lists(st.lists(st.text(max_size=6), min_size=len(names), max_size=len(names)), max_size=8),
        )
    )
)
def test_property_csv_and_parquet_agree(data: tuple[list[str], list[list[str]]]) -> None:
    names, rows = data
    with tempfile.TemporaryDirectory() as d:
        # "\r\n" (RFC 4180) so that csv.writer quotes fields holding a bare "\r" too
        c = write_csv(Path(d) / "x.csv", names, rows, newline="\r\n")
        p = write_parquet(Path(d) / "x.parquet", names, rows)  # type: ignore[arg-type]
        tc, sc = read_table(c)
        tp, sp = read_table(p)
    assert tc.names == tp.names
    for n in tc.names:
        assert tc.column(n) == tp.column(n)
    assert sc.hash == sp.hash
    assert table_root(tc, SALT) == table_root(tp, SALT)


# -- the Arrow CSV fast path agrees with Python's csv module ----------------------------------


def csv_outcome(read: Callable[[], tuple[Table, Schema] | None]) -> object:
    """What a reader gives: names, cells and schema hash, or the DataError (None: declined)."""
    try:
        result = read()
    except DataError as exc:
        return ("error", str(exc), exc.line)
    if result is None:
        return None
    table, schema = result
    return (table.names, [table.column(n) for n in table.names], schema.hash)


TRICKY_CSV = [
    b'id,note\n1,"says ""hi"", twice"\n2,"comma, inside"\n',  # escaped quotes, embedded comma
    b'id,note\r\n1,"line one\nline two"\r\n2,"bare\rcr"\r\n3,"\n\r"\r\n',  # newlines in values
    b"id,note\r1,x\r\r2,y",  # CR line ends, blank CR line, no final line end
    b"\n\r\nid,note\n\n1,\n\n,2\n,\n\r\n",  # blank lines before and between records
    b'id,note\n1,\n,2\n,\n"",""\n',  # empty cells, quoted empty cells
    b'a\n""\n\nx\n\n',  # a single empty field is a record; a blank line is not
    b'id,note\n1,x"y\n2,"z""w"\n3,ab""\n',  # quotes inside unquoted fields are literal
    b"id,note\n1, padded \n2,\t\n3, \n",  # whitespace is kept
    b"id,note\n1,a\x00b\n",  # NUL
    "pr\u0065\u0301nom,b\nZo\u0065\u0308,x\n\u00e9,\u1e69\n".encode(),  # NFD names and cells
    '"k\u00f6\u0301r",b\n"\u0065\u0301, quoted",x\n'.encode(),
    "id,\u674e\n1,\u00f8laf\n2,\U0001f600\n".encode(),  # non-Latin, astral
    b'"multi\nline header",b\n1,2\n',
    b'id,note\n1,"ends with quote"""\n2,""""\n',
]


@pytest.mark.parametrize("content", TRICKY_CSV)
@pytest.mark.parametrize("bom", [False, True])
def test_csv_fast_path_gives_the_cells_of_python_csv(tmp_path: Path, content: bytes, bom: bool) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + content)
    fast = _read_csv_arrow(content, path)
    assert fast is not None, "this file should take the Arrow path"
    expected = csv_outcome(lambda: _read_csv_python(content.decode("utf-8"), path))
    assert csv_outcome(lambda: fast) == expected
    assert csv_outcome(lambda: read_table(path)) == expected
    table, schema = read_table(path)
    slow_table, slow_schema = _read_csv_python(content.decode("utf-8"), path)
    assert fingerprint_table(table, schema, SALT, {}) == fingerprint_table(slow_table, slow_schema, SALT, {})


@pytest.mark.parametrize(
    "content",
    [
        b'a,b\n"x"y,2\n',  # Arrow would read xy; strict csv refuses it
        b'a,b\n"x" ,2\n',
        b'a,b\n1,"open\n',
        b"a,b\n1,2\n3\n",  # ragged: Arrow refuses, csv words the error
    ],
)
def test_csv_fast_path_leaves_doubtful_files_to_python_csv(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    assert _read_csv_arrow(content, path) is None
    with pytest.raises(DataError, match=r"line \d"):
        read_table(path)


def test_csv_with_crlf_inside_a_quoted_field_is_read_by_python_csv(tmp_path: Path) -> None:
    # Arrow drops the LF of a quoted CRLF that straddles one of its blocks (apache/arrow#51368)
    path = write_csv(tmp_path / "crlf.csv", ["id", "note"], [["1", "line one\r\nline two"]], newline="\r\n")
    data = path.read_bytes()
    assert _read_csv_arrow(data, path) is None
    assert read_table(path)[0].column("note") == ["line one\r\nline two"]


def test_csv_fast_path_across_arrow_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # tiny blocks: quoted newlines and CRLF line ends straddle Arrow's block boundaries everywhere
    monkeypatch.setattr(readers, "_ARROW_BLOCK_BYTES", 512)
    rows = [[f"{i}", f"multi\nline {i}\rvalue\n\r" if i % 3 else 'q"uote, é', "e\u0301" * (i % 4)] for i in range(2000)]
    path = write_csv(tmp_path / "blocks.csv", ["id", "note", "acc"], rows, newline="\r\n")
    data = path.read_bytes()
    fast = _read_csv_arrow(data, path)
    assert fast is not None
    assert csv_outcome(lambda: fast) == csv_outcome(lambda: _read_csv_python(data.decode("utf-8"), path))
    assert fast[0].column("acc")[1] == "\u00e9"


csv_piece = st.sampled_from(["a", "b", "\u00e9", "e\u0301", "\u0301", ",", '"', '"', "\r", "\n", "\r\n", " ", "\x00"])


@settings(max_examples=400, deadline=None)
@given(st.lists(csv_piece, max_size=60).map("".join), st.sampled_from([16, 32, 64, 1 << 22]))
def test_property_csv_fast_path_never_differs(text: str, block: int) -> None:
    # any text, any Arrow block size: when the Arrow path answers (cells or an error),
    # Python's csv answers the same
    data = text.encode("utf-8")
    path = Path("p.csv")
    default = readers._ARROW_BLOCK_BYTES
    readers._ARROW_BLOCK_BYTES = block
    try:
        fast = csv_outcome(lambda: _read_csv_arrow(data, path))
    finally:
        readers._ARROW_BLOCK_BYTES = default
    if fast is not None:
        assert fast == csv_outcome(lambda: _read_csv_python(text, path))


written_cell = st.one_of(
    st.text(max_size=5),
    st.lists(st.sampled_from(["a", "é", "e\u0301", ",", '"', "\r", "\n", " ", ""]), max_size=5).map("".join),
)


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=3).flatmap(
        lambda w: st.lists(st.lists(written_cell, min_size=w, max_size=w), min_size=1, max_size=8)
    ),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    st.sampled_from(["\r\n", "\n"]),
)
def test_property_written_csv_takes_the_fast_path(rows: list[list[str]], quoting: int, newline: str) -> None:
    header = [f"c{i}" for i in range(len(rows[0]))]
    buf = io.StringIO()
    csv.writer(buf, quoting=quoting, lineterminator=newline).writerows([header, *rows])
    text = buf.getvalue()
    data = text.encode("utf-8")
    path = Path("w.csv")
    expected = csv_outcome(lambda: _read_csv_python(text, path))
    fast = csv_outcome(lambda: _read_csv_arrow(data, path))
    joined = "\x1f".join(c for r in rows for c in r)
    # csv.writer leaves a bare CR unquoted unless it is part of the line terminator, and a
    # quoted CRLF is left to the csv path on purpose (see readers._STRICT_CSV)
    if "\r\n" not in joined and ("\r" not in joined or newline == "\r\n"):
        assert fast is not None  # what csv.writer writes is read by Arrow...
    if fast is not None:
        assert fast == expected  # ...and always to the same cells


# -- tables held as Arrow arrays -------------------------------------------------------------


def test_arrow_table_is_nfc_and_agrees_with_a_list_table() -> None:
    cells = [unicodedata.normalize("NFD", "Zoë"), None, "", "plain", "\u0301x"]
    other = ["1", "2", None, "4", "5"]
    arrow = Table(
        {
            "a": pa.chunked_array([pa.array(cells[:2]), pa.array(cells[2:])]),
            "b": pa.chunked_array([pa.array(other[:3], pa.large_string()), pa.array(other[3:], pa.large_string())]),
        }
    )
    listed = Table({"a": cells, "b": other})
    assert arrow.column("a") == ["Zoë", None, "", "plain", "\u0301x"]
    assert arrow.cell("a", 0) == "Zoë" and arrow.cell("b", 2) is None
    assert arrow.arrow_column("a") is not None and listed.arrow_column("a") is None
    assert (
        canonical_rows(arrow) == canonical_rows(listed) == [encode_row(list(r)) for r in zip(cells, other, strict=True)]
    )
    assert table_root(arrow, SALT) == table_root(listed, SALT)
    assert inclusion_proofs(arrow, SALT, [0, 4]) == inclusion_proofs(listed, SALT, [0, 4])
    with pytest.raises(TypeError, match="strings"):
        Table({"n": pa.array([1, 2])})


@pytest.mark.parametrize("count", [1, 11, 16, 37])
@pytest.mark.parametrize("window", [1, 2, 4, 8, 16])
def test_root_does_not_depend_on_the_hashing_window(window: int, count: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """table_root hashes a window of rows at a time and reduces each window to its subtree
    root (memory bounded by one window): the same root as the whole tree at every
    power-of-two window, with full and partial last windows."""
    rows: list[list[str | None]] = [[str(i), None if i % 4 == 0 else "é" * (i % 3), "x" * i] for i in range(count)]
    expected = [ref_leaf(SALT, i, r) for i, r in enumerate(rows)]
    while len(expected) > 1:
        nxt = [ref_node(expected[i], expected[i + 1]) for i in range(0, len(expected) - 1, 2)]
        expected = nxt + ([expected[-1]] if len(expected) % 2 else [])
    monkeypatch.setattr(fingerprint, "_WINDOW", window)
    chunked = Table(
        {
            f"c{j}": pa.chunked_array(
                [pa.array([r[j] for r in rows[:5]], pa.string()), pa.array([r[j] for r in rows[5:]], pa.string())]
            )
            for j in range(3)
        }
    )
    assert table_root(table_of(rows), SALT) == expected[0]
    assert table_root(chunked, SALT) == expected[0]


def test_bulk_row_salts_equal_single_ones() -> None:
    stream = fingerprint._row_salt_stream(SALT).update(bytes(32 * 300))
    assert [stream[32 * i : 32 * i + 32] for i in range(300)] == [row_salt(SALT, i) for i in range(300)]
    assert row_salt(SALT, 2**64 - 1) == ref_row_salt(SALT, 2**64 - 1)
    with pytest.raises(DataError, match="outside"):
        row_salt(SALT, 2**64)
    with pytest.raises(DataError, match="salt"):
        row_salt(b"", 0)


# -- policy files -----------------------------------------------------------------------------

NOW = 1_800_000_000  # 2027-01-15
ALGO_HASH = "0x" + "ab" * 32
BANK = "0x" + "11" * 20
INSURER = "0x2222222222222222222222222222222222222222"
BUILTINS = {"stats": b"\x05" * 32}
ORGS = {"bank": BANK, "insurer": INSURER}


def resolve_algorithm(name: str) -> bytes:
    return BUILTINS[name]


def resolve_org(name: str) -> str:
    return ORGS[name]


def write_policy(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_policy_good(tmp_path: Path) -> None:
    path = write_policy(
        tmp_path,
        f"""
algorithms = ["stats", "{ALGO_HASH}"]
requesters = ["{BANK}", "insurer", "bank"]   # bank twice (name and address) is one grant
recipients = ["{BANK.upper().replace("0X", "0x")}"]
max_uses = 100
expires = "2027-06-30T00:00:00Z"
epsilon_total = 5.25
""",
    )
    policy = load_policy(path)
    assert policy.max_uses == 100
    assert policy.algorithms == ("stats", ALGO_HASH)
    limits, grants = policy.resolve(resolve_algorithm, resolve_org, NOW)
    assert limits.max_uses == 100
    assert limits.expiry == int(dt.datetime(2027, 6, 30, tzinfo=dt.UTC).timestamp())
    assert limits.epsilon_total == epsilon_to_fixed(5.25) == 5_250_000
    assert grants.algorithms == [b"\x05" * 32, bytes.fromhex("ab" * 32)]
    assert grants.requesters == [BANK, INSURER]
    assert grants.recipients == [BANK]


def test_policy_expires_in_days_and_defaults(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "max_uses = 0\nexpires_in_days = 90\n")
    limits, grants = load_policy(path).resolve(resolve_algorithm, resolve_org, NOW)
    assert limits.expiry == NOW + 90 * 86_400
    assert limits.epsilon_total == 0
    assert limits.max_uses == 0
    assert (grants.algorithms, grants.requesters, grants.recipients) == ([], [], [])


def test_policy_toml_datetime_with_offset(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "max_uses = 1\nexpires = 2027-06-30T02:00:00+02:00\n")
    limits, _ = load_policy(path).resolve(resolve_algorithm, resolve_org, NOW)
    assert limits.expiry == int(dt.datetime(2027, 6, 30, tzinfo=dt.UTC).timestamp())


EXPIRES = 'expires = "2027-06-30T00:00:00Z"\n'


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("max_uses = 1\n" + EXPIRES + "colour = 'red'\n", "colour", "unknown key"),
        ("max_uses = 1\n" + EXPIRES + "algorithms = 'stats'\n", "algorithms", "must be a list"),
        ("max_uses = 1\n" + EXPIRES + "algorithms = [1]\n", "algorithms[0]", "must be a string"),
        ("max_uses = 1\n" + EXPIRES + "algorithms = ['0x1234']\n", "algorithms[0]", "not a code hash"),
        ("max_uses = 1\n" + EXPIRES + f"algorithms = ['0x{'zz' * 32}']\n", "algorithms[0]", "not a code hash"),
        ("max_uses = 1\n" + EXPIRES + "requesters = ['0x1234']\n", "requesters[0]", "not an account address"),
        (
            "max_uses = 1\n" + EXPIRES + "recipients = ['0x52908400098527886e0F7030069857D2E4169EE7']\n",
            "recipients[0]",
            "checksum",
        ),
        ("max_uses = 1\n" + EXPIRES + f"recipients = ['0x{'00' * 20}']\n", "recipients[0]", "zero address"),
        ("max_uses = 1\n" + EXPIRES + "requesters = ['bank', 'bank']\n", "requesters[1]", "listed twice"),
        ("max_uses = 1\n" + EXPIRES + "requesters = ['']\n", "requesters[0]", "is empty"),
        (
            "max_uses = 1\n"
            + EXPIRES
            + f"requesters = {json.dumps([f'org{i}' for i in range(MAX_POLICY_ENTRIES + 1)])}\n",
            "requesters",
            "at most 32",
        ),
        ("max_uses = -1\n" + EXPIRES, "max_uses", "negative"),
        ("max_uses = 1.5\n" + EXPIRES, "max_uses", "must be an integer"),
        ("max_uses = true\n" + EXPIRES, "max_uses", "must be an integer"),
        ("max_uses = 18446744073709551616\n" + EXPIRES, "max_uses", "too large"),
        (EXPIRES, "max_uses", "missing"),
        ("max_uses = 1\n", "expires", "missing"),
        ("max_uses = 1\n" + EXPIRES + "expires_in_days = 3\n", "expires_in_days", "not both"),
        ("max_uses = 1\nexpires_in_days = 0\n", "expires_in_days", "below 1"),
        ("max_uses = 1\nexpires_in_days = -5\n", "expires_in_days", "negative"),
        ("max_uses = 1\nexpires = 'next year'\n", "expires", "not an RFC 3339"),
        ("max_uses = 1\nexpires = '2027-06-30T00:00:00'\n", "expires", "offset"),
        ("max_uses = 1\nexpires = 2027-06-30\n", "expires", "not a bare date"),
        ("max_uses = 1\nexpires = 5\n", "expires", "must be a date-time"),
        ("max_uses = 1\n" + EXPIRES + "epsilon_total = -0.5\n", "epsilon_total", "negative"),
        ("max_uses = 1\n" + EXPIRES + "epsilon_total = 'lots'\n", "epsilon_total", "must be a number"),
        ("max_uses = 1\n" + EXPIRES + "epsilon_total = inf\n", "epsilon_total", "finite"),
    ],
)
def test_policy_bad(tmp_path: Path, text: str, key: str, message: str) -> None:
    path = write_policy(tmp_path, text)
    with pytest.raises(DataError) as exc:
        load_policy(path)
    assert str(exc.value).startswith(f"{path}: {key}: "), str(exc.value)
    assert message in str(exc.value)


def test_policy_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    path = write_policy(tmp_path, "max_uses = = 3\n")
    with pytest.raises(DataError, match=r"policy\.toml: invalid TOML.*line 1"):
        load_policy(path)
    with pytest.raises(DataError, match="not found"):
        load_policy(tmp_path / "absent.toml")


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ('max_uses = 1\nexpires = "2020-01-01T00:00:00Z"\n', "expires", "not in the future"),
        ("max_uses = 1\nexpires_in_days = 1\nalgorithms = ['kmeans']\n", "algorithms[0]", "unknown algorithm 'kmeans'"),
        ("max_uses = 1\nexpires_in_days = 1\nrequesters = ['hospital']\n", "requesters[0]", "unknown organisation"),
        ("max_uses = 1\nexpires_in_days = 1\nrecipients = ['insurer', 'ghost']\n", "recipients[1]", "'ghost'"),
    ],
)
def test_policy_resolve_errors(tmp_path: Path, text: str, key: str, message: str) -> None:
    policy = load_policy(write_policy(tmp_path, text))
    with pytest.raises(DataError) as exc:
        policy.resolve(resolve_algorithm, resolve_org, NOW)
    assert str(exc.value).startswith(f"{tmp_path / 'policy.toml'}: {key}: "), str(exc.value)
    assert message in str(exc.value)


def test_policy_resolver_returning_garbage_is_an_error(tmp_path: Path) -> None:
    policy = load_policy(write_policy(tmp_path, "max_uses = 1\nexpires_in_days = 1\nalgorithms = ['stats']\n"))
    with pytest.raises(DataError, match="32-byte code hash"):
        policy.resolve(lambda name: b"short", resolve_org, NOW)
    policy = load_policy(write_policy(tmp_path, "max_uses = 1\nexpires_in_days = 1\nrequesters = ['bank']\n"))
    with pytest.raises(DataError, match="not an account address"):
        policy.resolve(resolve_algorithm, lambda name: "bank.example", NOW)


# -- a node's fingerprint cache ---------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_read_table_digest_hashes_the_bytes_it_parsed(tmp_path: Path, suffix: str) -> None:
    from pcn.data.readers import read_table_digest

    path = tmp_path / f"d.{suffix}"
    (write_csv if suffix == "csv" else write_parquet)(path, HEADER, ROWS)  # type: ignore[operator]
    table, schema, digest = read_table_digest(path)
    want_table, want_schema = read_table(path)
    assert digest == hashlib.sha256(path.read_bytes()).digest()
    assert schema.hash == want_schema.hash and canonical_rows(table) == canonical_rows(want_table)
    path.write_bytes(b"")
    with pytest.raises(DataError):
        read_table_digest(path)


def test_the_fingerprint_cache_gives_a_root_only_for_the_same_bytes_salt_and_code(tmp_path: Path) -> None:
    from pcn.data.readers import read_table_digest
    from pcn.runtime import cache as cache_mod
    from pcn.runtime.cache import FileCache, fingerprint_with_cache

    cache = FileCache(tmp_path / "cache")
    path = write_csv(tmp_path / "d.csv", HEADER, ROWS)

    def cached(salt: bytes = SALT) -> Fingerprint:
        table, schema, digest = read_table_digest(path)
        return fingerprint_with_cache(cache, table, schema, salt, digest, "csv", {"name": "d"})

    def fresh(salt: bytes = SALT) -> Fingerprint:
        return fingerprint_file(path, None, salt, {"name": "d"})

    first = cached()
    assert first == fresh() and (cache.hits, cache.misses) == (0, 1)
    assert cached() == first and (cache.hits, cache.misses) == (1, 1)
    # one cell changed: another file digest, a miss, the new root
    write_csv(path, HEADER, [*ROWS[:-1], ["5", "李", "8", "comma, inside"]])
    changed = cached()
    assert changed == fresh() and changed.merkle_root != first.merkle_root and cache.misses == 2
    # another salt: a miss (the key is keyed by the salt), its own root
    assert cached(OTHER_SALT) == fresh(OTHER_SALT) and cache.misses == 3
    # a damaged entry is recomputed, never trusted
    for entry in (tmp_path / "cache").glob("*.bin"):
        entry.write_bytes(b'{"root": "00", "schema": "zz"')
    assert cached() == changed
    assert cached() == changed  # rewritten by the recomputation
    # other data code (a reader or encoding change): every entry is a miss
    misses = cache.misses
    cache_mod._data_code = hashlib.sha256(b"another pcn.data").digest()
    try:
        assert cached() == changed and cache.misses == misses + 1
    finally:
        cache_mod._data_code = None
