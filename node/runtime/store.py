"""The node's record of its own datasets: where each file is, how to read it, its secret
salt and the fingerprint it registered. Lives in the organisation's data directory; salts
are files readable by the node's user only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock


class UnknownLocalDataset(LookupError):
    """This node holds no dataset with that id."""


@dataclass
class LocalDataset:
    dataset_id: int
    name: str
    path: str
    fmt: str
    id_column: str
    version: int
    merkle_root: str
    schema_hash: str
    metadata_hash: str
    row_count: int
    registered_tx: str = ""


class DatasetStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir)
        self.index = self.dir / "datasets.json"
        self.salts = self.dir / "salts"
        self._lock = FileLock(str(self.index) + ".lock")

    def _read(self) -> dict[str, dict]:
        if not self.index.is_file():
            return {}
        return json.loads(self.index.read_text())

    def put(self, ds: LocalDataset) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            data = self._read()
            data[str(ds.dataset_id)] = asdict(ds)
            tmp = self.index.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
            tmp.replace(self.index)

    def get(self, dataset_id: int) -> LocalDataset:
        raw = self._read().get(str(dataset_id))
        if raw is None:
            raise UnknownLocalDataset(f"this node holds no dataset {dataset_id}")
        return LocalDataset(**raw)

    def has(self, dataset_id: int) -> bool:
        return str(dataset_id) in self._read()

    def all(self) -> list[LocalDataset]:
        return [LocalDataset(**v) for _, v in sorted(self._read().items(), key=lambda kv: int(kv[0]))]

    def save_salt(self, key: str, salt: bytes) -> None:
        self.salts.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.salts / f"{key}.salt"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(salt)

    def salt(self, key: str) -> bytes:
        path = self.salts / f"{key}.salt"
        if not path.is_file():
            raise UnknownLocalDataset(f"salt for {key} is missing from {self.salts}")
        return path.read_bytes()
