"""Everything one organisation's node processes share: config, keys, chain, Redis, store, log.

Redis keys are namespaced per organisation (`pcn:<account>:…`) and each organisation has
its own Celery queue, so several organisations may share one Redis server in the demo
while production gives each its own server by configuration alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import redis

from pcn.chain.deployment import load_deployment
from pcn.chain.ledger import Ledger
from pcn.crypto.keys import OrgKeys, password_from_env_or_file
from pcn.runtime.actionlog import ActionLog
from pcn.runtime.cache import FileCache
from pcn.runtime.config import OrgConfig, load_config
from pcn.runtime.store import DatasetStore


@dataclass
class NodeContext:
    config: OrgConfig

    @classmethod
    def from_env(cls) -> NodeContext:
        path = os.environ.get("PCN_CONFIG")
        if not path:
            raise RuntimeError("PCN_CONFIG is not set: the node's processes need their organisation's config file")
        return cls(load_config(path))

    @cached_property
    def keys(self) -> OrgKeys:
        pw_file = Path(self.config.password_file) if self.config.password_file else None
        if pw_file is not None and not pw_file.is_absolute() and self.config.path:
            pw_file = Path(self.config.path).parent / pw_file
        return OrgKeys.load(self.config.keystore_dir, password_from_env_or_file(file=pw_file))

    @property
    def address(self) -> str:
        return self.keys.address

    @cached_property
    def ledger(self) -> Ledger:
        dep = load_deployment(self.config.deployment_path)
        return Ledger(
            dep,
            self.config.rpc_url,
            self.keys.account,
            confirmations=self.config.confirmations,
            nonce_dir=self.config.data_path / "nonces",
        )

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.config.redis_url)

    @cached_property
    def store(self) -> DatasetStore:
        return DatasetStore(self.config.data_path)

    @cached_property
    def fingerprints(self) -> FileCache:
        """Fingerprints already computed, by the bytes of the file (`fingerprint_with_cache`)."""
        return FileCache(self.config.data_path / "cache" / "fingerprints", max_bytes=16 << 20)

    @cached_property
    def log(self) -> ActionLog:
        return ActionLog(self.config.data_path / "actions.jsonl")

    @property
    def queue(self) -> str:
        return f"pcn.{self.config.name}"

    def key(self, *parts: object) -> str:
        return "pcn:" + self.address.lower() + ":" + ":".join(str(p) for p in parts)

    def task_dir(self, task_id: int) -> Path:
        """Scratch space of one task: deleted, and the deletion attested, before the receipt."""
        return self.config.data_path / "tasks" / str(task_id)

    def results_dir(self) -> Path:
        return self.config.data_path / "results"
