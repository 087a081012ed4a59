"""The registered code hash covers every pcn module an algorithm imports and pins the
third-party distributions and Python it runs on (issue #13 item 11).

Each test copies the pcn package, changes the copy as an attacker with write access to a
node's code would, and hashes the copy: the hash names files by their path under `pcn/`,
so an unchanged copy hashes like the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pcn.algorithms import BUILTIN, codehash
from pcn.algorithms.codehash import PACKAGE_ROOT, CodeHashError, algorithm_code_hash, algorithm_manifest

PCN = Path(sys.executable).with_name("pcn")
SBT = ("hetero-sbt", "hetero-sbt-predict")  # training and scoring share the trees module


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    copy = tmp_path / "pcn"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def flip_one_byte(path: Path) -> None:
    """Change one letter of the module's docstring: still valid Python, one byte different."""
    data = bytearray(path.read_bytes())
    i = next(i for i in range(3, len(data)) if chr(data[i]).isalpha())
    data[i] ^= 0x20  # swap its case
    path.write_bytes(bytes(data))


def hashes(root: Path) -> dict[str, bytes]:
    return {name: algorithm_code_hash(name, package_root=root) for name in BUILTIN}


def append_line(path: Path, line: str) -> None:
    path.write_text(path.read_text() + "\n" + line + "\n")


def test_a_copy_of_the_package_hashes_like_the_installed_one(pkg: Path) -> None:
    assert hashes(pkg) == hashes(PACKAGE_ROOT)
    assert len(set(hashes(pkg).values())) == len(BUILTIN)


@pytest.mark.parametrize(
    ("module", "affected"),
    [
        ("crypto/paillier.py", {"hetero-lr", "hetero-sbt"}),
        ("data/table.py", {"stats", "private-query", "hetero-lr", "hetero-lr-predict", *SBT}),
        ("jsonsafe.py", {"private-query", "hetero-lr", "hetero-lr-predict", *SBT}),
        ("data/errors.py", {"stats", "private-query", "fedavg", "hetero-lr", "hetero-lr-predict", *SBT}),
        ("algorithms/vertical.py", {"hetero-lr", "hetero-lr-predict", *SBT}),
        ("algorithms/hetero_lr/common.py", {"hetero-lr", "hetero-sbt"}),
        ("algorithms/hetero_sbt/trees.py", set(SBT)),
        ("algorithms/psi/protocol.py", {"psi", "psi-ot"}),
        ("algorithms/psi_ot/kkrt.py", {"psi-ot"}),
        ("algorithms/base.py", set(BUILTIN)),
        ("__init__.py", set(BUILTIN)),
    ],
)
def test_one_byte_in_an_imported_module_outside_the_algorithm_changes_exactly_its_importers(
    pkg: Path, module: str, affected: set[str]
) -> None:
    before = hashes(pkg)
    flip_one_byte(pkg / module)
    after = hashes(pkg)
    assert {name for name in BUILTIN if before[name] != after[name]} == affected
    listed = {e.name for e in algorithm_manifest(next(iter(affected)), pkg).entries}
    assert f"pcn/{module}" in listed


@pytest.mark.parametrize(
    "module",
    ["runtime/execute.py", "cli/node_cmds.py", "data/readers.py", "crypto/sealed.py", "algorithms/codehash.py"],
)
def test_modules_outside_every_closure_do_not_change_any_hash(pkg: Path, module: str) -> None:
    before = hashes(pkg)
    flip_one_byte(pkg / module)
    (pkg / "crypto" / "unrelated.py").write_text("VALUE = 1\n")
    assert hashes(pkg) == before


def test_imports_are_followed_in_every_form(pkg: Path) -> None:
    """Relative, `from pkg import module`, inside a function, and import_module with a literal."""
    local = pkg / "algorithms" / "stats" / "local.py"
    cases = {
        "from ...crypto import paillier": "pcn/crypto/paillier.py",
        "from pcn.crypto import keys": "pcn/crypto/keys.py",
        "def later() -> None:\n    import pcn.runtime.peers": "pcn/runtime/peers.py",
        "import importlib\nimportlib.import_module('pcn.data.fingerprint')": "pcn/data/fingerprint.py",
    }
    for code, path in cases.items():
        original = local.read_text()
        before = algorithm_code_hash("stats", pkg)
        assert path not in {e.name for e in algorithm_manifest("stats", pkg).entries}
        append_line(local, code)
        files = {e.name for e in algorithm_manifest("stats", pkg).entries}
        assert path in files and f"{path.rsplit('/', 1)[0]}/__init__.py" in files
        flip_one_byte(pkg / path.removeprefix("pcn/"))
        assert algorithm_code_hash("stats", pkg) != before
        local.write_text(original)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("import importlib\nNAME = 'pcn.crypto.paillier'\nimportlib.import_module(NAME)", "import_module"),
        ("X = __import__(''.join(['pc', 'n']))", "__import__"),
        ("import importlib.util\nimportlib.util.spec_from_file_location('x', '/tmp/x.py')", "spec_from_file_location"),
        ("import pcn.no_such_module", "pcn.no_such_module"),
        ("from ..... import x", "beyond the top-level package"),
        ("import surely_not_installed_anywhere", "belongs to no installed distribution"),
        ("def broken(:", "does not parse"),
    ],
)
def test_code_the_hash_cannot_pin_is_an_error(pkg: Path, code: str, error: str) -> None:
    append_line(pkg / "algorithms" / "stats" / "local.py", code)
    with pytest.raises(CodeHashError, match=error):
        algorithm_code_hash("stats", pkg)


def test_a_dynamic_import_marked_with_the_pragma_is_accepted(pkg: Path) -> None:
    local = pkg / "algorithms" / "stats" / "local.py"
    append_line(local, "import importlib\nNAME = 'json'\nimportlib.import_module(NAME)  # codehash: stdlib only")
    algorithm_code_hash("stats", pkg)


def test_the_cache_sees_a_change_that_keeps_size_and_mtime(pkg: Path) -> None:
    target = pkg / "data" / "table.py"
    before = algorithm_code_hash("stats", pkg)
    st = target.stat()
    flip_one_byte(target)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the writer hides its edit's time
    assert target.stat().st_size == st.st_size and target.stat().st_mtime_ns == st.st_mtime_ns
    assert algorithm_code_hash("stats", pkg) != before


# ------------------------------------------------------------------ third-party distributions


@pytest.fixture
def fakelib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed distribution `fakelib` 1.0 with a native library in its RECORD."""
    site = tmp_path / "site"
    (site / "fakelib").mkdir(parents=True)
    (site / "fakelib" / "__init__.py").write_text("")
    info = site / "fakelib-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.0\n")
    (info / "top_level.txt").write_text("fakelib\n")
    write_record(info, "sha256=AAAA")
    monkeypatch.syspath_prepend(str(site))
    codehash._module_distributions.cache_clear()
    yield info
    codehash._module_distributions.cache_clear()


def write_record(info: Path, so_hash: str) -> None:
    (info / "RECORD").write_text(
        "fakelib/__init__.py,sha256=47DEQpj8HBSa-_TI,0\n"
        f"fakelib/_native.cpython-311-x86_64-linux-gnu.so,{so_hash},4096\n"
        "fakelib-1.0.dist-info/METADATA,sha256=BBBB,50\n"
        "fakelib-1.0.dist-info/RECORD,,\n"
    )


def test_a_changed_distribution_version_or_record_changes_the_hash(pkg: Path, fakelib: Path) -> None:
    append_line(pkg / "algorithms" / "psi" / "protocol.py", "import fakelib.sub  # noqa")
    first = algorithm_manifest("psi", pkg)
    (dist,) = [e for e in first.entries if e.name == "fakelib"]
    assert (dist.kind, dist.version) == ("dist", "1.0")

    write_record(fakelib, "sha256=CCCC")  # the native library was replaced
    second = algorithm_code_hash("psi", pkg)
    assert second != first.digest()

    (fakelib / "METADATA").write_text("Metadata-Version: 2.1\nName: fakelib\nVersion: 1.1\n")
    assert algorithm_code_hash("psi", pkg) not in {first.digest(), second}
    assert algorithm_code_hash("stats", pkg) == algorithm_code_hash("stats")  # stats does not import it


def test_a_record_pins_alike_wherever_the_wheel_is_installed() -> None:
    record = "pkg/__init__.py,sha256=AAAA,1\npkg/_x.so,sha256=BBBB,2\n"
    here = record + "../../../bin/tool,sha256=SHEBANG1,9\npkg-1.dist-info/INSTALLER,sha256=PIP,4\n"
    there = "pkg/_x.so,sha256=BBBB,2\npkg/__init__.py,sha256=AAAA,1\n../../../bin/tool,sha256=SHEBANG2,9\n"
    assert codehash.record_digest(here) == codehash.record_digest(there)
    assert codehash.record_digest(record) != codehash.record_digest(record.replace("BBBB", "BBBC"))


def test_the_python_version_is_pinned() -> None:
    manifest = algorithm_manifest("stats")
    python = [e for e in manifest.entries if e.kind == "python"]
    assert [(e.name, e.version) for e in python] == [(sys.implementation.name, sys.version.split()[0])]
    dists = {e.name for e in manifest.entries if e.kind == "dist"}
    assert {"numpy", "cryptography", "pyarrow"} <= dists


# ------------------------------------------------------------------------------ CLI and worker


def test_pcn_algo_hash_prints_the_hash_and_its_manifest() -> None:
    proc = subprocess.run(
        [str(PCN), "algo", "hash", "hetero-lr", "--manifest", "--json"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["code_hash"] == "0x" + algorithm_code_hash("hetero-lr").hex()
    names = {e["name"]: e for e in out["manifest"]}
    assert names["pcn/crypto/paillier.py"]["kind"] == "file" and len(names["pcn/crypto/paillier.py"]["digest"]) == 64
    assert names["gmpy2"]["kind"] == "dist" and names["gmpy2"]["version"]
    text = subprocess.run([str(PCN), "algo", "hash", "stats", "--manifest"], capture_output=True, text=True)
    assert text.returncode == 0 and "pcn/data/table.py" in text.stdout and "numpy" in text.stdout
    bad = subprocess.run([str(PCN), "algo", "hash", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no built-in algorithm 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_a_worker_process_warms_the_cache_when_it_starts() -> None:
    from pcn.runtime.worker import warm_code_hashes

    codehash._CACHE.clear()
    warm_code_hashes()
    assert {name for name, _ in codehash._CACHE} == set(BUILTIN)


def test_a_worker_process_imports_the_task_code_when_it_starts() -> None:
    """In a fresh interpreter (nothing imported yet), the worker's start imports the task
    runner and every built-in protocol module, so the first task does not wait for them."""
    script = (
        "import sys, json\n"
        "from pcn.runtime.worker import warm_code_hashes\n"
        "from pcn.algorithms import BUILTIN\n"
        "before = [m for m, _ in BUILTIN.values() if m in sys.modules]\n"
        "warm_code_hashes()\n"
        "after = [m for m, _ in BUILTIN.values() if m in sys.modules]\n"
        "print(json.dumps([before, after, 'pcn.runtime.execute' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    before, after, runner = json.loads(proc.stdout.strip().splitlines()[-1])
    assert before == [] and sorted(after) == sorted(m for m, _ in BUILTIN.values()) and runner
