"""The chain toolchain below the CLI: the solc-js adapter, the cached compiler and anvil control."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import solcx
import solcx.wrapper

from pcn import paths
from pcn.devnet import anvil, compiler
from pcn.devnet.anvil import DevnetError

REPO = Path(__file__).resolve().parents[1]
ADAPTER = REPO / "chain-devnet" / "solc-adapter.js"
NODE_MODULES = REPO / "chain-devnet" / "node_modules"
NATIVE_VERSION = "Version: 0.8.37+commit.f401782d.Linux.g++"

TINY = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
contract Tiny {
    uint256 public x;
    function set(uint256 v) external { x = v; }
}
"""

USES_OZ = """// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;
import "@openzeppelin/contracts/utils/Strings.sol";
contract UsesStrings {
    function show(uint256 v) external pure returns (string memory) { return Strings.toString(v); }
}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def std_input(sources: dict[str, str], selection: list[str] | None = None) -> dict[str, Any]:
    return {
        "language": "Solidity",
        "sources": {name: {"content": text} for name, text in sources.items()},
        "settings": {"outputSelection": {"*": {"*": selection or ["abi", "evm.bytecode.object"]}}},
    }


def adapter(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(ADAPTER), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def errors_of(output: dict[str, Any]) -> list[str]:
    return [e.get("formattedMessage", e["message"]) for e in output.get("errors", []) if e["severity"] == "error"]


# ---------------------------------------------------------------------------- solc adapter


def test_adapter_version_looks_like_native_solc() -> None:
    proc = adapter("--version")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert lines[1] == NATIVE_VERSION
    # py-solc-x (what compile_contracts uses) parses it.
    assert str(solcx.wrapper.get_solc_version(ADAPTER, with_commit_hash=True)) == "0.8.37+commit.f401782d"


def test_adapter_compiles_standard_json_from_stdin(tmp_path: Path) -> None:
    # Run from an unrelated directory: the adapter must find solc-js next to itself.
    proc = adapter("--standard-json", stdin=json.dumps(std_input({"Tiny.sol": TINY})), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert errors_of(out) == []
    tiny = out["contracts"]["Tiny.sol"]["Tiny"]
    assert len(tiny["evm"]["bytecode"]["object"]) > 100
    assert {e["name"] for e in tiny["abi"] if e["type"] == "function"} == {"x", "set"}


def test_adapter_reads_input_file_argument(tmp_path: Path) -> None:
    infile = tmp_path / "input.json"
    infile.write_text(json.dumps(std_input({"Tiny.sol": TINY})))
    proc = adapter("--standard-json", str(infile))
    assert proc.returncode == 0, proc.stderr
    assert "Tiny" in json.loads(proc.stdout)["contracts"]["Tiny.sol"]


@pytest.mark.parametrize("garbage", ["{ this is not json", ""])
def test_adapter_invalid_json_is_an_error_entry_not_a_crash(garbage: str) -> None:
    proc = adapter("--standard-json", stdin=garbage)
    assert "at Object" not in proc.stderr and "node:internal" not in proc.stderr, proc.stderr
    out = json.loads(proc.stdout)
    assert out["errors"], out
    assert out["errors"][0]["severity"] == "error"
    assert out["errors"][0]["message"]


def test_adapter_accepts_flags_py_solc_x_and_forge_pass(tmp_path: Path) -> None:
    """`--flag=value` spellings, comma-separated --allow-paths, and flags it does not need."""
    proc = adapter(
        "--standard-json",
        f"--base-path={tmp_path}",
        f"--allow-paths={tmp_path},{REPO}",
        "--allow-paths",
        f"{tmp_path},{NODE_MODULES}",
        "--include-path",
        str(tmp_path),
        "--output-dir",
        str(tmp_path / "out"),
        "--overwrite",
        "--evm-version=cancun",
        "--optimize",
        stdin=json.dumps(std_input({"Tiny.sol": TINY})),
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert errors_of(out) == []
    assert out["contracts"]["Tiny.sol"]["Tiny"]["evm"]["bytecode"]["object"]


def test_adapter_standard_json_equals_file_is_not_silently_dropped(tmp_path: Path) -> None:
    """The adapter splits every `--flag=value`. `--standard-json=FILE` must either compile FILE
    (its documented `--standard-json [file]`) or be refused, never ignore FILE and read stdin."""
    infile = tmp_path / "input.json"
    infile.write_text(json.dumps(std_input({"Tiny.sol": TINY})))
    proc = adapter(f"--standard-json={infile}")
    if proc.returncode != 0:
        assert "--standard-json" in proc.stderr
        return
    out = json.loads(proc.stdout)
    assert errors_of(out) == [], out
    assert "Tiny" in out["contracts"]["Tiny.sol"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--base-path", str(NODE_MODULES)],
        [f"--base-path={NODE_MODULES}"],
        ["--base-path", "/nonexistent", "--include-path", str(NODE_MODULES)],
        ["--allow-paths", f"/nonexistent,{NODE_MODULES}"],
    ],
    ids=["base-path", "base-path=", "include-path", "allow-paths"],
)
def test_adapter_import_callback_reads_library_sources(flags: list[str], tmp_path: Path) -> None:
    inp = std_input({"UsesStrings.sol": USES_OZ})
    assert "@openzeppelin/contracts/utils/Strings.sol" not in inp["sources"]
    proc = adapter("--standard-json", *flags, stdin=json.dumps(inp), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert errors_of(out) == []
    assert "@openzeppelin/contracts/utils/Strings.sol" in out["sources"]
    assert out["contracts"]["UsesStrings.sol"]["UsesStrings"]["evm"]["bytecode"]["object"]


def test_adapter_missing_import_is_a_compiler_error(tmp_path: Path) -> None:
    proc = adapter(
        "--standard-json",
        "--base-path",
        str(tmp_path),
        stdin=json.dumps(std_input({"UsesStrings.sol": USES_OZ})),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    errors = errors_of(json.loads(proc.stdout))
    assert any("Strings.sol" in e for e in errors), errors


def test_adapter_large_output_is_not_truncated(tmp_path: Path) -> None:
    inp = std_input({"UsesStrings.sol": USES_OZ}, selection=["*"])
    inp["settings"]["outputSelection"]["*"][""] = ["ast"]
    proc = adapter("--standard-json", "--base-path", str(NODE_MODULES), stdin=json.dumps(inp), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.encode()) > 131072, "output too small to exercise the 128 KiB pipe limit"
    out = json.loads(proc.stdout)  # a truncated document would not parse
    assert errors_of(out) == []
    assert out["contracts"]["UsesStrings.sol"]["UsesStrings"]["evm"]["deployedBytecode"]["object"]
    assert "ast" in out["sources"]["@openzeppelin/contracts/utils/Strings.sol"]


def test_adapter_rejects_unsupported_modes() -> None:
    proc = adapter("--bin", "Tiny.sol")
    assert proc.returncode != 0
    assert "standard-json" in proc.stderr


# ---------------------------------------------------------------------------- compiler cache


def test_compile_is_cached_by_source_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    real_compile, runs = solcx.compile_standard, []

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return real_compile(*args, **kwargs)

    # Two compiles at once (parallel test workers, a demo beside a test run): one compiler run.
    monkeypatch.setattr(solcx, "compile_standard", counted)
    with ThreadPoolExecutor(2) as both:
        first, also = both.map(lambda _: compiler.compile_contracts(cache_dir=cache), range(2))
    assert len(runs) == 1 and also == first
    assert first.compiler_version.startswith("0.8.37")
    assert set(first.artifacts) == set(compiler.CONTRACTS)
    for art in first.artifacts.values():
        assert art.source.startswith("src/")
        assert art.bytecode.startswith("0x") and len(art.bytecode) > 100
        assert art.abi
    cache_file = cache / f"{first.source_hash}.json"
    assert cache_file.is_file()
    assert [p.name for p in cache.iterdir()] == [cache_file.name], "temporary files left behind"
    mtime = cache_file.stat().st_mtime_ns

    def no_compiler(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("compiled again although the cache holds this source hash")

    monkeypatch.setattr(solcx, "compile_standard", no_compiler)
    second = compiler.compile_contracts(cache_dir=cache)
    assert second == first
    assert cache_file.stat().st_mtime_ns == mtime
    # The cached build is what the session deployment was made from.
    assert second.source_hash == compiler.source_hash(compiler.collect_sources(), compiler.compiler_version())


def test_source_hash_covers_content_names_and_version() -> None:
    sources = compiler.collect_sources()
    version = compiler.compiler_version()
    digest = compiler.source_hash(sources, version)
    assert digest == compiler.source_hash(dict(sources), version)
    unit = "src/Consortium.sol"
    assert unit in sources
    assert any(u.startswith("@openzeppelin/contracts/") for u in sources), "imports not collected"

    changed = {**sources, unit: sources[unit] + "\n// a comment\n"}
    assert compiler.source_hash(changed, version) != digest
    renamed = {("src/Renamed.sol" if u == unit else u): t for u, t in sources.items()}
    assert compiler.source_hash(renamed, version) != digest
    fewer = {u: t for u, t in sources.items() if u != unit}
    assert compiler.source_hash(fewer, version) != digest
    assert compiler.source_hash(sources, "0.8.36+commit.00000000") != digest


def test_editing_a_contract_changes_the_collected_hash(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(paths.contracts_dir() / "src", src)
    version = compiler.compiler_version()
    original = compiler.source_hash(compiler.collect_sources(), version)
    assert compiler.source_hash(compiler.collect_sources(src), version) == original
    target = src / "AuditLog.sol"
    target.write_text(target.read_text() + "\n// edited\n")
    assert compiler.source_hash(compiler.collect_sources(src), version) != original


@pytest.fixture
def scratch_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PCN_ROOT with a copy of the contracts and the real chain toolchain."""
    root = tmp_path / "root"
    (root / "contracts").mkdir(parents=True)
    shutil.copytree(paths.contracts_dir() / "src", root / "contracts" / "src")
    (root / "chain-devnet").symlink_to(paths.chain_devnet_dir(), target_is_directory=True)
    monkeypatch.setenv("PCN_ROOT", str(root))
    return root


def test_compile_error_is_reported_and_not_cached(scratch_root: Path, tmp_path: Path) -> None:
    broken = scratch_root / "contracts" / "src" / "AuditLog.sol"
    broken.write_text(broken.read_text() + "\ncontract Broken { function f( }\n")
    cache = tmp_path / "cache"
    with pytest.raises(compiler.CompileError, match=r"AuditLog\.sol"):
        compiler.compile_contracts(cache_dir=cache)
    assert not cache.exists() or not any(cache.iterdir())


def test_missing_import_is_a_compile_error(scratch_root: Path, tmp_path: Path) -> None:
    target = scratch_root / "contracts" / "src" / "AuditLog.sol"
    target.write_text('import "@openzeppelin/contracts/DoesNotExist.sol";\n' + target.read_text())
    with pytest.raises(compiler.CompileError, match=r"DoesNotExist\.sol"):
        compiler.compile_contracts(cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------- anvil control


@pytest.fixture
def own_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    run = tmp_path / "run"
    monkeypatch.setenv("PCN_RUN_DIR", str(run))
    return run


def test_down_with_nothing_running_is_harmless(own_run_dir: Path) -> None:
    port = free_port()
    st = anvil.down(port)
    assert st.running is False and st.pid is None and st.chain_id is None
    assert st.port == port
    assert anvil.status(port).running is False


def test_down_with_a_stale_pid_file_is_harmless(own_run_dir: Path) -> None:
    port = free_port()
    dead = subprocess.Popen(["true"])
    dead.wait()
    own_run_dir.mkdir(parents=True)
    pid_file = own_run_dir / f"anvil-{port}.json"
    pid_file.write_text(json.dumps({"pid": dead.pid, "state_file": "/nonexistent/state.json"}))
    assert anvil.status(port).pid is None
    st = anvil.down(port)
    assert st.running is False
    assert not pid_file.exists()


def test_up_refuses_a_different_chain_id_on_a_running_port(own_run_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    st = anvil.up(port=port, chain_id=4242, state_file=tmp_path / "state.json")
    try:
        assert st.running and st.chain_id == 4242
        assert anvil.up(port=port, chain_id=4242).pid == st.pid  # same chain: idempotent
        with pytest.raises(DevnetError, match="4242"):
            anvil.up(port=port, chain_id=31337)
        after = anvil.status(port)
        assert after.running and after.chain_id == 4242 and after.pid == st.pid
    finally:
        down = anvil.down(port)
    assert down.running is False
    assert st.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(st.pid, 0)
