"""Helpers every benchmark script shares (run as `python bench/<name>.py`, so importable as `common`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


@contextlib.contextmanager
def devnet(prefix: str) -> Iterator[tuple[Path, Any]]:
    """A fresh work directory (the nodes' run directory inside it) and a devnet with pcn's
    contracts deployed: yields (work directory, deployment); the devnet stops on exit."""
    from pcn.devnet import anvil
    from pcn.devnet.deploy import deploy
    from pcn.devnet.localnet import free_port

    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["PCN_RUN_DIR"] = str(work / "run")
    port = free_port()
    st = anvil.up(port=port, state_file=work / "anvil.json")
    try:
        yield work, deploy(st.rpc_url, out=work / "deployment.json")
    finally:
        anvil.down(port)
