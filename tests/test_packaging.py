"""A wheel must carry every package of the tree: pyproject's explicit list names them all."""

from __future__ import annotations

import tomllib

from pcn import paths


def test_every_python_package_is_listed_in_pyproject() -> None:
    root = paths.repo_root()
    cfg = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in cfg["package-dir"].items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if "__pycache__" not in rel.parts:
                found.add(".".join([name, *rel.parts]))
    missing = found - set(cfg["packages"])
    assert not missing, f"packages missing from pyproject's list: {sorted(missing)}"
