"""Helpers every benchmark script shares (run as `python bench/<name>.py`, so importable as `common`)."""

from __future__ import annotations

from pathlib import Path


def replace_row(readme: Path, prefix: str, row: str) -> None:
    """Replace the row starting with `prefix` in place (or append it), leaving every other line."""
    lines = readme.read_text().splitlines(keepends=True)
    for i, ln in enumerate(lines):
        if ln.startswith(prefix):
            lines[i] = row
            break
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(row)
    readme.write_text("".join(lines))
