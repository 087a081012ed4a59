"""How long a node takes to read and fingerprint its dataset (the step before every task).

Writes a ROWS-row CSV of (customer_id, income, region) exactly as the devnet does
(`pcn.devnet.localnet.write_dataset`) into a temporary directory, then times `read_table`
and `fingerprint_table` on it, REPEAT times each, and prints one JSON line with the
medians (seconds) and the process's peak resident memory. `columns_to_lists_s` is the time
to then turn every column into a Python list, which a protocol pays (on first use) for the
columns it reads.

Variants: "devnet" (the file as the devnet writes it), "quoted" (the same cells, every
field quoted), "unicode" (region names that need NFC normalisation, written decomposed).

    .venv/bin/python bench/data_read.py [--rows N] [--repeat R] [--variant devnet|quoted|unicode]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

from pcn.data.fingerprint import fingerprint_table
from pcn.data.readers import read_table

SALT = bytes(range(32))


def write_dataset(path: Path, rows: int, seed: int = 1, variant: str = "devnet") -> None:
    if variant != "devnet":
        import csv
        import unicodedata

        plain = path.with_suffix(".plain.csv")
        write_dataset(plain, rows, seed)
        with plain.open(newline="", encoding="utf-8") as src, path.open("w", newline="", encoding="utf-8") as dst:
            if variant == "quoted":
                w = csv.writer(dst, quoting=csv.QUOTE_ALL)
                w.writerows(csv.reader(src))
            else:
                nfd = {r: unicodedata.normalize("NFD", f"{r}-é") for r in ("north", "south", "east", "west")}
                w = csv.writer(dst)
                for i, row in enumerate(csv.reader(src)):
                    w.writerow(row if i == 0 else [*row[:2], nfd[row[2]]])
        plain.unlink()
        return
    try:
        from pcn.devnet.localnet import write_dataset as devnet_write
    except ImportError:  # the devnet package is optional here: a file of the same shape
        import csv

        import numpy as np

        rng = np.random.default_rng(seed)
        income = np.round(rng.lognormal(10, 0.6, rows), 2)
        region = rng.choice(["north", "south", "east", "west"], rows)
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["customer_id", "income", "region"])
            for i in range(rows):
                w.writerow([f"C{seed:02d}{i:07d}", f"{income[i]:.2f}", region[i]])
        return
    devnet_write(path, rows, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", choices=["devnet", "quoted", "unicode"], default="devnet")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        write_dataset(path, args.rows, variant=args.variant)
        size = path.stat().st_size
        reads: list[float] = []
        prints: list[float] = []
        lists: list[float] = []
        root = b""
        for _ in range(args.repeat):
            gc.collect()
            start = time.perf_counter()
            table, schema = read_table(path)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            fp = fingerprint_table(table, schema, SALT, {})
            prints.append(time.perf_counter() - start)
            root = fp.merkle_root
            start = time.perf_counter()
            for name in table.names:
                table.column(name)
            lists.append(time.perf_counter() - start)
            del table, schema, fp
    read_s = statistics.median(reads)
    fp_s = statistics.median(prints)
    print(
        json.dumps(
            {
                "benchmark": "data_read",
                "rows": args.rows,
                "variant": args.variant,
                "file_bytes": size,
                "repeat": args.repeat,
                "read_table_s": round(read_s, 4),
                "fingerprint_table_s": round(fp_s, 4),
                "total_s": round(read_s + fp_s, 4),
                "columns_to_lists_s": round(statistics.median(lists), 4),
                "read_table_runs": [round(x, 4) for x in reads],
                "fingerprint_table_runs": [round(x, 4) for x in prints],
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "root": "0x" + root.hex(),
                "python": sys.version.split()[0],
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
