"""One configuration file per organisation (TOML).

Everything a node needs to run lives here — RPC URL, deployment file, Redis URL, data
directory, keystore directory, mailbox endpoint, worker count — so organisations on
different hosts with their own Redis work by configuration alone. Secrets (the keystore
password) are never in this file nor on the command line: $PCN_KEYSTORE_PASSWORD or a
password file named here.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from urllib.parse import urlparse

DEVNET_CHAIN_IDS = frozenset({31337})  # local test chains: private endpoints and http are expected there


class ConfigError(ValueError):
    """The organisation's configuration file is missing or invalid."""


@dataclass
class OrgConfig:
    name: str
    rpc_url: str
    deployment: str
    redis_url: str
    data_dir: str
    endpoint: str  # the mailbox URL registered on chain, as peers reach it
    listen_host: str = "127.0.0.1"
    listen_port: int = 0  # 0: the port of `endpoint`
    workers: int = 2
    compute_processes: int = 0  # processes for a protocol's heavy parallel parts; 0: one per CPU core
    confirmations: int = 1
    password_file: str = ""
    poll_interval: float = 0.5
    message_timeout: float = 120.0  # seconds to wait for a peer before refusing PeerUnreachable
    sweep_interval: float = 10.0  # how often the watcher looks for open tasks whose run message was lost
    dropout_after: float = 0.0  # aggregator's wait before reporting a silent party dropped; 0: message_timeout / 2
    requeue_after: float = 60.0  # silence (no progress, no worker, not queued) after which it queues one again
    recheck_every: float = 5.0  # while a task runs: re-check suspensions, policy grants, deprecation this often
    # Peers' endpoints come from the chain: only test networks may aim this node at loopback,
    # private or link-local addresses or plain http (`pcn org init` sets both on the devnet).
    allow_private_endpoints: bool = False
    allow_http_endpoints: bool = False
    mailbox_task_quota: int = 1024 * 1024 * 1024  # bytes of messages one task may hold in this node's Redis
    mailbox_sender_quota: int = 256 * 1024 * 1024  # bytes of messages one participant may hold there per task
    mailbox_max_inflight: int = 64  # concurrent mailbox requests; more are answered 503 with Retry-After
    mailbox_ttl_margin: int = 3600  # an inbox expires this many seconds after its task's deadline
    # Pull mode: a node that accepts no inbound connection registers `<relay_url>/o/<address>`
    # as its endpoint and fetches from the relay; its mailbox listens on listen_host:listen_port
    # for the puller only. Empty: peers deliver to `endpoint` directly.
    relay_url: str = ""
    relay_proxy: str = ""  # pull mode through an outbound HTTP(S) proxy: its URL ("" connects directly)
    path: str = ""  # where this config was loaded from (not written)

    @property
    def data_path(self) -> Path:
        return self._resolve(self.data_dir)

    @property
    def keystore_dir(self) -> Path:
        return self.data_path / "keys"

    @property
    def deployment_path(self) -> Path:
        return self._resolve(self.deployment)

    @property
    def port(self) -> int:
        return self.listen_port or int(urlparse(self.endpoint).port or 80)

    @property
    def local_mailbox_url(self) -> str:
        """Where this node's own processes reach its mailbox: the registered endpoint, or in
        pull mode the loopback address the puller hands fetched envelopes to."""
        if not self.relay_url:
            return self.endpoint
        return f"http://{self.listen_host}:{self.listen_port}"

    def _resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        if not p.is_absolute() and self.path:
            p = Path(self.path).parent / p
        return p.resolve()

    def validate(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ \t"):
            raise ConfigError(f"invalid organisation name {self.name!r}")
        for key in ("rpc_url", "endpoint"):
            u = urlparse(getattr(self, key))
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ConfigError(f"{key} must be an http(s) URL, got {getattr(self, key)!r}")
        if urlparse(self.redis_url).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(f"redis_url must be a redis:// URL, got {self.redis_url!r}")
        if not 1 <= self.workers <= 64:
            raise ConfigError("workers must be between 1 and 64")
        if not 0 <= self.compute_processes <= 256:
            raise ConfigError("compute_processes must be between 0 (one per core) and 256")
        for key in ("poll_interval", "message_timeout", "sweep_interval", "requeue_after", "recheck_every"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"{key} must be a positive number of seconds")
        for key in ("allow_private_endpoints", "allow_http_endpoints"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"{key} must be true or false")
        for key in ("mailbox_task_quota", "mailbox_sender_quota", "mailbox_max_inflight", "mailbox_ttl_margin"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{key} must be a positive integer")
        if self.mailbox_sender_quota > self.mailbox_task_quota:
            raise ConfigError("mailbox_sender_quota must not exceed mailbox_task_quota")
        if self.relay_url:
            u = urlparse(self.relay_url)
            if u.scheme not in ("http", "https") or not u.hostname or u.query or u.fragment:
                raise ConfigError(f"relay_url must be an http(s) URL, got {self.relay_url!r}")
            if not self.endpoint.startswith(self.relay_url.rstrip("/") + "/o/"):
                raise ConfigError("with relay_url, endpoint must be <relay_url>/o/<this organisation's address>")
            if not self.listen_port:
                raise ConfigError("with relay_url, listen_port must name the loopback port of the mailbox")
            if self.listen_host not in ("127.0.0.1", "::1", "localhost"):
                raise ConfigError("with relay_url, the mailbox listens on loopback only (listen_host 127.0.0.1)")
        if self.relay_proxy:
            u = urlparse(self.relay_proxy)
            if not self.relay_url:
                raise ConfigError("relay_proxy is for pull mode: set relay_url too")
            if u.scheme not in ("http", "https") or not u.hostname or u.path not in ("", "/"):
                raise ConfigError(f"relay_proxy must be an http(s)://host:port URL, got {self.relay_proxy!r}")
        if not self.dropout_after >= 0:
            raise ConfigError("dropout_after must be 0 (half the message timeout) or a positive number of seconds")

    def to_toml(self) -> str:
        lines = [f"# pcn node configuration for organisation {self.name}"]
        for k, v in asdict(self).items():
            if k == "path":
                continue
            if isinstance(v, str):
                lines.append(f'{k} = "{v}"'.replace("\\", "\\\\"))
            elif isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            else:
                lines.append(f"{k} = {v}")
        return "\n".join(lines) + "\n"

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_toml())
        self.path = str(path.resolve())
        return path


def load_config(path: Path | str) -> OrgConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"configuration file {path} not found (create it with `pcn org init`)")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    known = {f.name for f in fields(OrgConfig)} - {"path"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{path}: unknown settings {sorted(unknown)}")
    try:
        cfg = OrgConfig(**raw, path=str(path.resolve()))
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    cfg.validate()
    return cfg
