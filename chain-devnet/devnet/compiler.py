"""Compile pcn's contracts with solc-js through py-solc-x, cached by source hash.

All sources (ours and the OpenZeppelin files they import) are resolved in Python and put
into the standard-JSON input, so the cache key is the hash of exactly what is compiled.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import solcx
import solcx.wrapper

from pcn import paths

CONTRACTS = ("Consortium", "AlgorithmRegistry", "DatasetRegistry", "TaskManager", "AuditLog")
_IMPORT_RE = re.compile(r'^\s*import\s+(?:[^"\']*?\s+from\s+)?["\']([^"\']+)["\']\s*;', re.MULTILINE)
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "evmVersion": "cancun",
    "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
}


class CompileError(RuntimeError):
    """The Solidity compiler reported errors."""


@dataclass(frozen=True)
class Artifact:
    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str


@dataclass(frozen=True)
class Build:
    compiler_version: str
    source_hash: str
    artifacts: dict[str, Artifact]


def _resolve(import_path: str, importer: str, src_root: Path) -> tuple[str, Path]:
    """Map an import to (source unit name, file): ours live under src/, libraries in node_modules."""
    unit = _normalise((Path(importer).parent / import_path).as_posix()) if import_path.startswith(".") else import_path
    if unit.startswith("src/"):
        return unit, src_root.parent / unit
    return unit, paths.node_modules() / unit


def _normalise(unit: str) -> str:
    parts: list[str] = []
    for p in unit.split("/"):
        if p == "..":
            parts.pop()
        elif p not in (".", ""):
            parts.append(p)
    return "/".join(parts)


def collect_sources(src_root: Path | None = None) -> dict[str, str]:
    """Every source unit reachable from contracts/src, keyed by its unit name."""
    src_root = src_root or paths.contracts_dir() / "src"
    pending = [(f"src/{p.relative_to(src_root).as_posix()}", p) for p in sorted(src_root.rglob("*.sol"))]
    sources: dict[str, str] = {}
    while pending:
        unit, file = pending.pop()
        if unit in sources:
            continue
        if not file.is_file():
            raise CompileError(f"import not found: {unit} (looked at {file}); run `make deps`")
        text = file.read_text()
        sources[unit] = text
        for imp in _IMPORT_RE.findall(text):
            pending.append(_resolve(imp, unit, src_root))
    return dict(sorted(sources.items()))


def compiler_version() -> str:
    return str(solcx.wrapper.get_solc_version(paths.solc_adapter(), with_commit_hash=True))


def source_hash(sources: dict[str, str], version: str) -> str:
    h = hashlib.sha256()
    h.update(version.encode())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    for unit, text in sources.items():
        h.update(unit.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def compile_contracts(cache_dir: Path | None = None) -> Build:
    """Compile (or load from cache) and return ABI + bytecode of every pcn contract."""
    sources = collect_sources()
    version = compiler_version()
    digest = source_hash(sources, version)
    cache_dir = cache_dir or paths.chain_devnet_dir() / "build"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache_file = cache_dir / f"{digest}.json"
    # One compiler run per source version even when several processes start at once (parallel
    # test workers, a demo beside a test run): the others wait here, then read the cache.
    # The lock is on the cache directory itself, so the cache holds nothing but builds.
    lock = os.open(cache_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        output = _cached_or_compiled(sources, cache_file)
    finally:
        os.close(lock)  # closing releases the lock
    artifacts: dict[str, Artifact] = {}
    for unit, contracts in output["contracts"].items():
        for name, data in contracts.items():
            if name in CONTRACTS and unit.startswith("src/"):
                artifacts[name] = Artifact(name, unit, data["abi"], "0x" + data["evm"]["bytecode"]["object"])
    missing = set(CONTRACTS) - set(artifacts)
    if missing:
        raise CompileError(f"compiler output lacks {sorted(missing)}")
    return Build(compiler_version=version, source_hash=digest, artifacts=artifacts)


def _cached_or_compiled(sources: dict[str, str], cache_file: Path) -> dict[str, Any]:
    if cache_file.is_file():
        return json.loads(cache_file.read_text())
    std_input = {
        "language": "Solidity",
        "sources": {unit: {"content": text} for unit, text in sources.items()},
        "settings": SETTINGS,
    }
    root = paths.repo_root()
    try:
        output = solcx.compile_standard(
            std_input,
            solc_binary=paths.solc_adapter(),
            base_path=str(root),
            allow_paths=[str(paths.node_modules())],
        )
    except solcx.exceptions.SolcError as exc:
        raise CompileError(str(exc)) from exc
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("\n".join(e.get("formattedMessage", e["message"]) for e in errors))
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(output))
    tmp.replace(cache_file)
    return output
