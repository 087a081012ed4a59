"""The auditor's SQL store: every fact the chain states, as SQLAlchemy 2.0 ORM tables.

A SQLite file by default; PostgreSQL by URL (``postgresql+psycopg://…``) for real
deployments. The schema is created and upgraded by the versioned migrations in
``pcn.auditor.migrations``; the models below always describe the newest version.

Conventions:
- addresses are EIP-55 checksum strings, hashes ``0x``-prefixed lower-case hex;
- times are unix seconds of the block that carried the event (the chain's own clock);
- every row derived from an event carries that event's position (block number, block
  timestamp, transaction hash, log index), so any fact links back to the transaction;
- on-chain ``uint64`` values (deadlines, expiries, quotas, ε, sequences) use ``UInt64``,
  which keeps the full range on both databases (PostgreSQL NUMERIC(20); see the class).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeEngine, UserDefinedType

from pcn import paths

U64_MAX = 2**64 - 1
_I64_MAX = 2**63 - 1

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StoreError(Exception):
    """The auditor's store cannot be opened or used."""


# ---------------------------------------------------------------------------- column types


class _SqliteU64(UserDefinedType[Any]):
    """A column SQLite gives no type affinity (the declared name contains BLOB), so a value
    above 2^63-1, which we bind as 20-digit text, is stored as given instead of being turned
    into a lossy REAL. Smaller values are stored as INTEGER; SQLite orders every INTEGER
    before every TEXT, and the text is zero-padded, so ORDER BY and comparisons stay exact."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "U64BLOB"


class UInt64(TypeDecorator[int]):
    """An on-chain uint64: NUMERIC(20, 0) on PostgreSQL (BIGINT stops at 2^63-1, and an
    expiry of 2^64-1, "never", is a legitimate policy), exact on SQLite as well."""

    impl = Numeric(20, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteU64())
        return dialect.type_descriptor(Numeric(20, 0))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        number = int(value)
        if not 0 <= number <= U64_MAX:
            raise ValueError(f"{number} is not a uint64")
        if dialect.name == "sqlite" and number > _I64_MAX:
            return f"{number:020d}"
        return number

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


# An autoincrementing 64-bit key (SQLite only autoincrements INTEGER PRIMARY KEY).
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

Address = String(42)
Hash = String(66)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class _Located:
    """The position of the event a row was derived from."""

    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(Hash)
    log_index: Mapped[int] = mapped_column(Integer)

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


# ---------------------------------------------------------------------------- bookkeeping


class SchemaVersion(Base):
    """Applied migrations (see pcn.auditor.migrations)."""

    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(128))
    applied_at: Mapped[int] = mapped_column(BigInteger)


class IndexState(Base):
    """The indexer's cursor, stored with the rows it produced (one transaction per batch)."""

    __tablename__ = "index_state"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    task_manager: Mapped[str] = mapped_column(Address)
    deploy_block: Mapped[int] = mapped_column(BigInteger)
    next_block: Mapped[int] = mapped_column(BigInteger)
    recent: Mapped[str] = mapped_column(Text)  # JSON {block: hash} for reorg detection
    indexed_block: Mapped[int | None] = mapped_column(BigInteger)  # last block fully read
    indexed_hash: Mapped[str | None] = mapped_column(Hash)
    indexed_timestamp: Mapped[int | None] = mapped_column(BigInteger)
    batches: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[int] = mapped_column(BigInteger)


class EventRow(Base):
    """Every decoded event of every pcn contract, as read (the source of all other rows)."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index"),
        Index("ix_events_position", "block_number", "log_index"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    contract: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(Hash)
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(Hash)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_from: Mapped[str | None] = mapped_column(Address)  # the transaction's sender
    task_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    dataset_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    actor: Mapped[str | None] = mapped_column(Address, index=True)  # the organisation that acted

    @property
    def position(self) -> tuple[int, int]:
        return (self.block_number, self.log_index)


# ---------------------------------------------------------------------------- consortium


class Organisation(Base):
    __tablename__ = "organisations"
    account: Mapped[str] = mapped_column(Address, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    encryption_key: Mapped[str] = mapped_column(Hash)
    endpoint: Mapped[str] = mapped_column(String(256))
    status: Mapped[int] = mapped_column(Integer)  # pcn.chain.types.OrgStatus
    admitted_block: Mapped[int] = mapped_column(BigInteger)
    admitted_at: Mapped[int] = mapped_column(BigInteger)
    admitted_tx: Mapped[str] = mapped_column(Hash)
    status_changed_block: Mapped[int] = mapped_column(BigInteger)
    status_changed_at: Mapped[int] = mapped_column(BigInteger)


class OrgStatusChange(_Located, Base):
    """Admission, suspensions and reinstatements, in order."""

    __tablename__ = "org_status_changes"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    account: Mapped[str] = mapped_column(Address, ForeignKey("organisations.account"), index=True)
    change: Mapped[str] = mapped_column(String(16))  # admitted | suspended | reinstated
    status: Mapped[int] = mapped_column(Integer)  # status after the change
    by: Mapped[str | None] = mapped_column(Address)


class RoleChange(_Located, Base):
    """AccessControl grants and revocations on the Consortium (admin, auditor roles)."""

    __tablename__ = "role_changes"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    role: Mapped[str] = mapped_column(Hash, index=True)
    role_name: Mapped[str] = mapped_column(String(32))  # admin | auditor | the role hash
    account: Mapped[str] = mapped_column(Address, index=True)
    sender: Mapped[str] = mapped_column(Address)
    granted: Mapped[bool] = mapped_column(Boolean)


# ---------------------------------------------------------------------------- algorithms


class Algorithm(Base):
    __tablename__ = "algorithms"
    code_hash: Mapped[str] = mapped_column(Hash, primary_key=True)
    publisher: Mapped[str] = mapped_column(Address, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    version: Mapped[str] = mapped_column(String(32))
    description_hash: Mapped[str] = mapped_column(Hash)
    registered_block: Mapped[int] = mapped_column(BigInteger)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(Hash)
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)
    deprecated_by: Mapped[str | None] = mapped_column(Address)
    deprecated_block: Mapped[int | None] = mapped_column(BigInteger)
    deprecated_at: Mapped[int | None] = mapped_column(BigInteger)
    deprecated_tx: Mapped[str | None] = mapped_column(Hash)


# ---------------------------------------------------------------------------- datasets


class Dataset(Base):
    """A dataset's current state: owner, current version, policy limits and consumption."""

    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(Address, index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    max_uses: Mapped[int] = mapped_column(UInt64, default=0)
    uses: Mapped[int] = mapped_column(UInt64, default=0)
    expiry: Mapped[int] = mapped_column(UInt64, default=0)
    epsilon_total: Mapped[int] = mapped_column(UInt64, default=0)
    epsilon_spent: Mapped[int] = mapped_column(UInt64, default=0)
    registered_block: Mapped[int] = mapped_column(BigInteger)
    registered_at: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(Hash)


class DatasetVersion(_Located, Base):
    """Every fingerprint a dataset ever had (version 1 at registration)."""

    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version"), UniqueConstraint("tx_hash", "log_index"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    merkle_root: Mapped[str] = mapped_column(Hash)
    schema_hash: Mapped[str] = mapped_column(Hash)
    metadata_hash: Mapped[str] = mapped_column(Hash)
    row_count: Mapped[int] = mapped_column(UInt64)


class PolicyLimitsChange(_Located, Base):
    """History of a dataset's policy limits (uses, expiry, ε budget)."""

    __tablename__ = "policy_limits"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("datasets.id"), index=True)
    max_uses: Mapped[int] = mapped_column(UInt64)
    expiry: Mapped[int] = mapped_column(UInt64)
    epsilon_total: Mapped[int] = mapped_column(UInt64)


class PolicyGrant(_Located, Base):
    """History of a dataset's allow-lists: kind is algorithm, requester or recipient."""

    __tablename__ = "policy_grants"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index"),
        Index("ix_policy_grants_subject", "dataset_id", "kind", "subject"),
    )
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(Hash)  # an algorithm hash or an address
    allowed: Mapped[bool] = mapped_column(Boolean)


class DatasetUse(_Located, Base):
    """One use of a dataset by a task, consumed at authorisation (cumulative values after it)."""

    __tablename__ = "dataset_uses"
    __table_args__ = (UniqueConstraint("dataset_id", "task_id"), UniqueConstraint("tx_hash", "log_index"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("datasets.id"), index=True)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    uses: Mapped[int] = mapped_column(UInt64)
    epsilon_spent: Mapped[int] = mapped_column(UInt64)


# ---------------------------------------------------------------------------- tasks


class TaskRow(Base):
    """A task's request and its current state, derived from its events."""

    __tablename__ = "tasks"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    requester: Mapped[str] = mapped_column(Address, index=True)
    algorithm_hash: Mapped[str] = mapped_column(Hash, index=True)
    params_hash: Mapped[str] = mapped_column(Hash)
    result_recipient: Mapped[str] = mapped_column(Address)
    deadline: Mapped[int] = mapped_column(UInt64)
    epsilon: Mapped[int] = mapped_column(UInt64)
    status: Mapped[int] = mapped_column(Integer, index=True)  # pcn.chain.types.TaskStatus
    refusal_reason: Mapped[int] = mapped_column(Integer, default=0)  # pcn.chain.types.RefusalReason
    result_hash: Mapped[str | None] = mapped_column(Hash)
    required_approvals: Mapped[int] = mapped_column(Integer)
    approvals: Mapped[int] = mapped_column(Integer, default=0)
    started_count: Mapped[int] = mapped_column(Integer, default=0)
    receipt_count: Mapped[int] = mapped_column(Integer, default=0)
    dropped_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # reported dropped
    submitted_block: Mapped[int] = mapped_column(BigInteger)
    submitted_at: Mapped[int] = mapped_column(BigInteger, index=True)
    submit_tx: Mapped[str] = mapped_column(Hash)
    authorised_block: Mapped[int | None] = mapped_column(BigInteger)
    authorised_at: Mapped[int | None] = mapped_column(BigInteger)
    authorise_tx: Mapped[str | None] = mapped_column(Hash)
    first_started_block: Mapped[int | None] = mapped_column(BigInteger)
    first_started_at: Mapped[int | None] = mapped_column(BigInteger)
    closed_block: Mapped[int | None] = mapped_column(BigInteger)  # completed/disputed/refused/cancelled/expired
    closed_at: Mapped[int | None] = mapped_column(BigInteger)
    close_tx: Mapped[str | None] = mapped_column(Hash)
    closed_by: Mapped[str | None] = mapped_column(Address)  # who cancelled, expired or refused


class TaskDataset(Base):
    __tablename__ = "task_datasets"
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    dataset_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(BigInteger)  # pinned at submission


class TaskParticipant(Base):
    __tablename__ = "task_participants"
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id"), primary_key=True)
    account: Mapped[str] = mapped_column(Address, primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[int] = mapped_column(Integer)  # pcn.chain.types.ParticipantState
    started_block: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    start_tx: Mapped[str | None] = mapped_column(Hash)
    start_log_index: Mapped[int | None] = mapped_column(Integer)
    # Set when the task's result recipient reported the participant dropped (it stopped
    # answering mid-protocol; TaskManager.reportDropout): it then owes no receipt.
    dropped_block: Mapped[int | None] = mapped_column(BigInteger)
    dropped_at: Mapped[int | None] = mapped_column(BigInteger)
    drop_tx: Mapped[str | None] = mapped_column(Hash)
    drop_log_index: Mapped[int | None] = mapped_column(Integer)
    dropped_by: Mapped[str | None] = mapped_column(Address)  # the reporter: the task's result recipient


class Approval(_Located, Base):
    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("task_id", "owner"), UniqueConstraint("tx_hash", "log_index"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id"), index=True)
    owner: Mapped[str] = mapped_column(Address, index=True)
    relayer: Mapped[str] = mapped_column(Address)  # the sender; differs from owner for EIP-712 approvals


class ReceiptRow(_Located, Base):
    __tablename__ = "receipts"
    __table_args__ = (UniqueConstraint("task_id", "participant"), UniqueConstraint("tx_hash", "log_index"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id"), index=True)
    participant: Mapped[str] = mapped_column(Address, index=True)
    result_hash: Mapped[str] = mapped_column(Hash)
    transcript_hash: Mapped[str] = mapped_column(Hash)
    input_fingerprint: Mapped[str] = mapped_column(Hash)
    algorithm_hash: Mapped[str] = mapped_column(Hash)
    deletion_hash: Mapped[str] = mapped_column(Hash)
    started_at: Mapped[int] = mapped_column(UInt64)  # as reported by the node
    finished_at: Mapped[int] = mapped_column(UInt64)


class Refusal(_Located, Base):
    __tablename__ = "refusals"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tasks.id"), index=True)
    participant: Mapped[str] = mapped_column(Address, index=True)
    reason: Mapped[int] = mapped_column(Integer, index=True)  # pcn.chain.types.RefusalReason
    detail_hash: Mapped[str] = mapped_column(Hash)


class LogAnchor(_Located, Base):
    """(sequence, head hash) of an organisation's local action log, anchored on chain."""

    __tablename__ = "log_anchors"
    __table_args__ = (UniqueConstraint("org", "sequence"), UniqueConstraint("tx_hash", "log_index"))
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org: Mapped[str] = mapped_column(Address, index=True)
    sequence: Mapped[int] = mapped_column(UInt64)
    head_hash: Mapped[str] = mapped_column(Hash)


# ---------------------------------------------------------------------------- audit results


class AnomalyRow(Base):
    """A detected anomaly, keyed by a stable key: re-detection updates, never duplicates."""

    __tablename__ = "anomalies"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    task_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    dataset_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    org: Mapped[str | None] = mapped_column(Address, index=True)
    tx_hashes: Mapped[list[str]] = mapped_column(JSON)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    block_number: Mapped[int | None] = mapped_column(BigInteger)  # when it happened on chain
    occurred_at: Mapped[int | None] = mapped_column(BigInteger)
    first_seen: Mapped[int] = mapped_column(BigInteger)
    last_seen: Mapped[int] = mapped_column(BigInteger)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger, index=True)


class LogCheck(Base):
    """A stored result of verifying an organisation's exported local log against the chain."""

    __tablename__ = "log_checks"
    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    org: Mapped[str] = mapped_column(Address, index=True)
    checked_at: Mapped[int] = mapped_column(BigInteger)
    ok: Mapped[bool] = mapped_column(Boolean)
    entries: Mapped[int] = mapped_column(BigInteger)
    head_seq: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(Hash)
    indexed_block: Mapped[int] = mapped_column(BigInteger)
    problems: Mapped[list[dict[str, Any]]] = mapped_column(JSON)


#: Tables derived from the events table (emptied and rebuilt after a reorg), children first.
DERIVED_TABLES: tuple[type[Base], ...] = (
    LogAnchor,
    Refusal,
    ReceiptRow,
    Approval,
    TaskParticipant,
    TaskDataset,
    DatasetUse,
    TaskRow,
    PolicyGrant,
    PolicyLimitsChange,
    DatasetVersion,
    Dataset,
    Algorithm,
    RoleChange,
    OrgStatusChange,
    Organisation,
)


# ---------------------------------------------------------------------------- engine


def default_store_url() -> str:
    """``PCN_AUDITOR_DB`` when set, else a SQLite file in pcn's run directory."""
    env = os.environ.get("PCN_AUDITOR_DB")
    if env:
        return env
    return f"sqlite:///{paths.run_dir() / 'auditor.sqlite'}"


def normalise_url(url: str | Path) -> str:
    """Accept a SQLAlchemy URL or a plain file path (a SQLite file); PostgreSQL URLs without a
    driver use psycopg (version 3)."""
    text = str(url)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    for prefix in ("postgres://", "postgresql://"):
        if text.startswith(prefix):
            return "postgresql+psycopg://" + text[len(prefix) :]
    return text


def _sqlite_pragmas(engine: Engine, in_memory: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin, so DDL and
        # reads are transactional too (the pysqlite recipe of the SQLAlchemy docs).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        if not in_memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers ask for BEGIN IMMEDIATE: they take the write lock up front instead of
        # failing with "database is locked" when upgrading a read transaction.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_engine(url: str | Path) -> Engine:
    text = normalise_url(url)
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise StoreError(f"not a database URL: {url!r}") from exc
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        in_memory = db in ("", ":memory:") or "mode=memory" in text
        if not in_memory:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = create_engine(text, **kwargs)
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        hint = " (install psycopg: pip install 'psycopg[binary]')" if parsed.get_backend_name() == "postgresql" else ""
        raise StoreError(f"no database driver for {parsed.drivername}{hint}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        _sqlite_pragmas(engine, in_memory)
    return engine


class Store:
    """An open auditor store: an engine plus a session factory, migrated to the newest schema."""

    def __init__(self, url: str | Path | None = None, *, migrate: bool = True) -> None:
        self.url = normalise_url(url or default_store_url())
        self.engine = make_engine(self.url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False, autoflush=True)
        if migrate:
            from pcn.auditor.migrations import migrate as run_migrations

            run_migrations(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self._sessions()

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session in one write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        with self._sessions() as session:
            session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session, rolled back at the end; the objects read stay usable (detached)."""
        with self._sessions() as session:
            try:
                yield session
            finally:
                session.expunge_all()
                session.rollback()

    def index_state(self) -> IndexState | None:
        with self.read() as s:
            return s.get(IndexState, "main")

    def dispose(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()


def open_store(store: Store | str | Path | None) -> Store:
    """The given Store, or a new one for a URL or path (the caller disposes it)."""
    return store if isinstance(store, Store) else Store(store)


@contextmanager
def using_store(store: Store | str | Path | None) -> Iterator[Store]:
    """The given Store as is, or a Store opened for a URL or path and disposed afterwards."""
    if isinstance(store, Store):
        yield store
        return
    opened = Store(store)
    try:
        yield opened
    finally:
        opened.dispose()


def table_contents(store: Store, include_audit: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every chain-derived table (and the events table), without surrogate ids,
    sorted: two stores that indexed the same chain compare equal. For tests and consistency
    checks."""
    tables: list[type[Base]] = [EventRow, *reversed(DERIVED_TABLES)]
    if include_audit:
        tables += [AnomalyRow, LogCheck]
    out: dict[str, list[tuple[Any, ...]]] = {}
    with store.read() as s:
        for model in tables:
            cols = [c for c in model.__table__.columns if not (c.name == "id" and c.autoincrement is not False)]
            rows = s.execute(select(*cols)).all()
            out[model.__tablename__] = sorted((tuple(r) for r in rows), key=repr)
    return out
