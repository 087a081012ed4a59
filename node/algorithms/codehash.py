"""The canonical hash of an algorithm's code: every file and library that runs for it.

The hash is sha256 over a *manifest* (format `pcn/codehash/v2`) of:

- every source file of the algorithm's package (recursive, byte-code caches excluded);
- every pcn module in the static import closure of that package, found with `ast`:
  `import pcn.x`, `from pcn.x import y` (y too when it is a module), relative imports,
  imports inside functions or under `TYPE_CHECKING`, and the `__init__` of every package
  on the way. A dynamic import that cannot be resolved statically (`import_module(var)`,
  `__import__(var)`, loading from a file path) is an error — fail closed — unless its line
  (or the line above) carries a `# codehash:` pragma saying why it loads nothing this algorithm runs;
- for each top-level third-party module imported in the closure, its distribution's name,
  version and a hash of its RECORD (the installer's list of every installed file with its
  sha256, native `.so` files included); a module with no distribution, or a distribution
  without a RECORD, is an error;
- the Python implementation and version (which pins the standard library).

Files are hashed with line endings normalised to LF and named by their path under the pcn
package (`pcn/crypto/paillier.py`), so the hash does not depend on where pcn is installed.
Every field is length-prefixed and the entries sorted, so no two manifests encode alike.

Leakage/assumptions: third-party files are trusted to match their RECORD (a file edited in
site-packages without rewriting RECORD is not seen); only direct third-party imports are
pinned, not their own dependencies; system libraries outside wheels (libc, the OpenSSL
behind stdlib `hashlib`/`ssl`) are pinned only through the Python version; data files read
at run time by modules outside the algorithm's package are not covered.

Computing the manifest parses a few dozen files; it is cached per process and reused while
the mtime, ctime, inode and size of every file, directory and RECORD it read are unchanged.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FORMAT = b"pcn/codehash/v2"
SOURCE_SUFFIXES = {".py", ".json", ".toml", ".txt", ".md", ".sql"}
PACKAGE = "pcn"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent
ALGORITHMS_DIR = PACKAGE_ROOT / "algorithms"
PRAGMA = "# codehash:"
# calls that load code named at run time; import_module / __import__ with a literal are followed
LITERAL_LOADERS = {"import_module", "__import__"}
OPAQUE_LOADERS = {"spec_from_file_location", "module_from_spec", "load_module", "exec_module", "run_path", "run_module"}
# RECORD rows written by the installer about itself, not the distribution's code
INSTALLER_NOTES = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}


class CodeHashError(ValueError):
    """The code an algorithm runs cannot be pinned (fail closed rather than hash too little)."""


@dataclass(frozen=True, order=True)
class ManifestEntry:
    kind: str  # "file", "dist" or "python"
    name: str  # pcn/… path, distribution name, or Python implementation
    version: str  # distribution or Python version; "" for files
    digest: str  # sha256 hex of the file or the canonical RECORD; "" for Python

    def line(self) -> str:
        return "  ".join(x for x in (self.kind, self.name, self.version, self.digest) if x)


@dataclass(frozen=True)
class Manifest:
    algorithm: str
    entries: tuple[ManifestEntry, ...]

    def digest(self) -> bytes:
        h = hashlib.sha256()
        fields = [FORMAT, self.algorithm.encode()]
        for e in sorted(self.entries):
            fields += [e.kind.encode(), e.name.encode(), e.version.encode(), e.digest.encode()]
        for f in fields:
            h.update(len(f).to_bytes(8, "big") + f)
        return h.digest()


def algorithm_code_hash(name: str, package_root: Path = PACKAGE_ROOT) -> bytes:
    """The registered hash of built-in algorithm `name` as it is on disk and installed now."""
    return algorithm_manifest(name, package_root).digest()


# (algorithm, package root) -> (the stats of everything read, the manifest built from it)
_CACHE: dict[tuple[str, Path], tuple[tuple[tuple[str, int, int, int, int], ...], Manifest]] = {}


def algorithm_manifest(name: str, package_root: Path = PACKAGE_ROOT) -> Manifest:
    root = Path(package_root).resolve()
    key = (name, root)
    hit = _CACHE.get(key)
    if hit is not None and _stats(stat[0] for stat in hit[0]) == hit[0]:
        return hit[1]
    manifest, watched = _build(name, root)
    _CACHE[key] = (_stats(watched), manifest)
    return manifest


def warm(names: list[str]) -> None:
    """Compute and cache the manifests now (a worker calls this when it starts)."""
    for name in names:
        algorithm_manifest(name)


def _stats(paths: Iterable[Path | str]) -> tuple[tuple[str, int, int, int, int], ...]:
    # ctime and inode too: a writer can set mtime back, but not ctime, and a swap changes the inode
    out = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((str(p), st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size))
        except OSError:
            out.append((str(p), -1, -1, -1, -1))
    return tuple(sorted(out))


def _build(name: str, root: Path) -> tuple[Manifest, set[Path]]:
    package_dir = root / "algorithms" / name.replace("-", "_")
    if not package_dir.is_dir():
        raise FileNotFoundError(f"algorithm package {package_dir} does not exist")
    own = [p for p in package_dir.rglob("*") if p.is_file() and p.suffix in SOURCE_SUFFIXES]
    own = [p for p in own if "__pycache__" not in p.parts]
    roots = [_module_name(p, root) for p in own if p.suffix == ".py"]
    modules, third_party = _closure(roots, root)
    files = set(own) | set(modules.values())
    watched: set[Path] = files | {p.parent for p in files} | {package_dir}
    watched |= {d for p in own for d in p.parents if package_dir in d.parents}
    entries = [ManifestEntry("file", _rel(p, root), "", _file_digest(p)) for p in files]
    for top in sorted(third_party):
        for dist_entry, info_dir in _distributions(top, sorted(third_party[top])):
            entries.append(dist_entry)
            if info_dir is not None:
                watched |= {info_dir, info_dir / "RECORD", info_dir / "METADATA"}
    impl = sys.implementation.name
    entries.append(ManifestEntry("python", impl, platform.python_version(), ""))
    return Manifest(name, tuple(sorted(set(entries)))), watched


def _rel(path: Path, root: Path) -> str:
    return f"{PACKAGE}/{path.relative_to(root).as_posix()}"


def _file_digest(path: Path) -> str:
    body = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return hashlib.sha256(body).hexdigest()


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])


def _module_file(module: str, root: Path) -> Path | None:
    """The file of pcn module `module` under `root`; a package's `__init__.py` wins, as in Python."""
    base = root.joinpath(*module.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if module != PACKAGE and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_pcn(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _closure(roots: list[str], root: Path) -> tuple[dict[str, Path], dict[str, set[str]]]:
    """pcn modules (name -> file) reachable from `roots`, and third-party top-level modules
    (name -> the pcn files importing them)."""
    modules: dict[str, Path] = {}
    third_party: dict[str, set[str]] = {}
    todo = [(m, "the algorithm package") for m in roots]
    while todo:
        module, importer = todo.pop()
        if module in modules:
            continue
        path = _module_file(module, root)
        if path is None:
            raise CodeHashError(f"{importer} imports {module}, which is not a module under {root}")
        modules[module] = path
        parts = module.split(".")
        todo += [(".".join(parts[:i]), module) for i in range(1, len(parts))]
        for imported in _imports(module, path, root):
            if _is_pcn(imported):
                todo.append((imported, _rel(path, root)))
            elif imported.split(".")[0] not in sys.stdlib_module_names:
                third_party.setdefault(imported.split(".")[0], set()).add(_rel(path, root))
    return modules, third_party


def _imports(module: str, path: Path, root: Path) -> set[str]:
    source = path.read_bytes()
    rel = _rel(path, root)
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as e:
        raise CodeHashError(f"{rel} does not parse: {e.msg} (line {e.lineno})") from None
    lines = source.decode("utf-8", "replace").splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package, rel)
            found.add(base)
            # `from pkg import name` runs pkg.name too when it is a module
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if alias.name != "*" and _is_pcn(sub) and _module_file(sub, root) is not None:
                    found.add(sub)
        elif isinstance(node, ast.Call):
            target = _dynamic_import(node, lines, rel)
            if target is not None:
                found.add(target)
    return found


def _absolute(node: ast.ImportFrom, package: str, rel: str) -> str:
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")
    if node.level > len(parts):
        raise CodeHashError(f"{rel}:{node.lineno}: relative import beyond the top-level package")
    base = ".".join(parts[: len(parts) - node.level + 1])
    return f"{base}.{node.module}" if node.module else base


def _dynamic_import(node: ast.Call, lines: list[str], rel: str) -> str | None:
    func = node.func
    called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    if called not in LITERAL_LOADERS | OPAQUE_LOADERS:
        return None
    literal = node.args[0].value if len(node.args) == 1 and isinstance(node.args[0], ast.Constant) else None
    # an absolute module named by a literal is followed like an import statement
    if called in LITERAL_LOADERS and isinstance(literal, str) and not literal.startswith("."):
        return literal
    # the pragma sits on the call's lines or on a comment line just above it
    if any(PRAGMA in lines[i - 1] for i in range(max(node.lineno - 1, 1), (node.end_lineno or node.lineno) + 1)):
        return None
    raise CodeHashError(
        f"{rel}:{node.lineno}: {called}(...) loads code the hash cannot see; import it statically "
        f"or mark the line '{PRAGMA} <why it loads nothing this algorithm runs>'"
    )


@cache
def _module_distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distributions(top: str, importers: list[str]) -> list[tuple[ManifestEntry, Path | None]]:
    """The manifest entries of the distributions providing module `top`, each with its
    metadata directory (None when the distribution is not on the file system)."""
    names = _module_distributions().get(top)
    if not names:
        raise CodeHashError(f"module {top!r} (imported by {', '.join(importers)}) belongs to no installed distribution")
    out = []
    for dist_name in sorted(set(names)):
        dist = importlib.metadata.distribution(dist_name)
        record = dist.read_text("RECORD")
        if record is None:
            raise CodeHashError(f"distribution {dist_name} (module {top!r}) has no RECORD to pin its files")
        entry = ManifestEntry("dist", dist.metadata["Name"].lower(), dist.version, record_digest(record))
        base = getattr(dist, "_path", None)  # the .dist-info directory, watched to notice a reinstall
        out.append((entry, Path(base) if base is not None else None))
    return out


def record_digest(record: str) -> str:
    """sha256 over a RECORD's (path, file hash) rows, sorted. Rows outside the install
    directory (scripts whose first line names the local interpreter) and the installer's
    notes about itself are left out, so one wheel pins alike wherever it is installed."""
    rows = []
    for row in csv.reader(record.splitlines()):
        if len(row) < 2 or not row[1] or row[0].startswith(("../", "/")):
            continue
        if Path(row[0]).parent.name.endswith(".dist-info") and Path(row[0]).name in INSTALLER_NOTES:
            continue
        rows.append(f"{row[0]},{row[1]}")
    return hashlib.sha256("\n".join(sorted(rows)).encode()).hexdigest()
