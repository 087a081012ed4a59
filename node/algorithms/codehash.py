"""The canonical hash of an algorithm's code, computed from the files that will run.

sha256 over the sorted relative paths and contents of every source file of the
algorithm's package plus the shared protocol framework it runs on (the top-level files of
`pcn/algorithms/`, under `_framework/`), line endings normalised to LF, each entry
length-prefixed so no two different trees hash alike. Byte-code caches are not source.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SOURCE_SUFFIXES = {".py", ".json", ".toml", ".txt", ".md", ".sql"}
DOMAIN = b"pcn/algorithm-code/v1\n"
ALGORITHMS_DIR = Path(__file__).resolve().parent


def source_files(package_dir: Path, recursive: bool = True) -> list[Path]:
    root = Path(package_dir)
    candidates = root.rglob("*") if recursive else root.glob("*")
    files = [p for p in candidates if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def tree_hash(entries: list[tuple[str, bytes]]) -> bytes:
    h = hashlib.sha256(DOMAIN)
    for rel, content in sorted(entries):
        name = rel.encode()
        body = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        h.update(len(name).to_bytes(8, "big") + name)
        h.update(len(body).to_bytes(8, "big") + body)
    return h.digest()


def package_entries(package_dir: Path, prefix: str = "", recursive: bool = True) -> list[tuple[str, bytes]]:
    root = Path(package_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"algorithm package {root} does not exist")
    return [(prefix + p.relative_to(root).as_posix(), p.read_bytes()) for p in source_files(root, recursive)]


def algorithm_code_hash(name: str, algorithms_dir: Path = ALGORITHMS_DIR) -> bytes:
    """Hash of built-in algorithm `name` as it is on disk now (read at run time)."""
    package = algorithms_dir / name.replace("-", "_")
    entries = package_entries(package, f"{name}/")
    entries += package_entries(algorithms_dir, "_framework/", recursive=False)
    return tree_hash(entries)
