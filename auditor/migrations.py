"""Versioned schema migrations for the auditor's store (a small, explicit runner).

Alembic is not among pcn's dependencies, so the store carries its own runner: a
``schema_version`` table records every applied migration; ``MIGRATIONS`` lists the
migrations in order, each a function of one connection run in its own transaction
(PostgreSQL and SQLite both have transactional DDL), serialised between processes by an
advisory lock on PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite.

Rules for changing the schema:
- never edit a released migration: each one is frozen history, which is why migration 1
  spells its tables out instead of calling ``Base.metadata.create_all``;
- change the models in ``store.py`` and append a migration that brings version N-1 to N;
- ``schema_diff`` compares a migrated database with the models, and the test suite runs it
  on SQLite and PostgreSQL, so a model change without its migration fails the tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    inspect,
    select,
    sql,
    text,
    update,
)

from pcn.auditor.store import NAMING_CONVENTION, Base, BigIntPK, SchemaVersion, StoreError, UInt64

ADVISORY_LOCK_KEY = 0x70636E_617564  # "pcn" "aud": serialises migrations on PostgreSQL


class MigrationError(StoreError):
    """The store's schema cannot be brought to the version this code needs."""


Migration = tuple[int, str, Callable[[Connection], None]]


def _v1_initial(conn: Connection) -> None:
    """Version 1: every table of the first auditor release."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    Table(
        "algorithms",
        md,
        Column("code_hash", String(66), primary_key=True),
        Column("publisher", String(42), nullable=False, index=True),
        Column("kind", String(32), nullable=False),
        Column("version", String(32), nullable=False),
        Column("description_hash", String(66), nullable=False),
        Column("registered_block", BigInteger(), nullable=False),
        Column("registered_at", BigInteger(), nullable=False),
        Column("registered_tx", String(66), nullable=False),
        Column("deprecated", Boolean(), nullable=False),
        Column("deprecated_by", String(42), nullable=True),
        Column("deprecated_block", BigInteger(), nullable=True),
        Column("deprecated_at", BigInteger(), nullable=True),
        Column("deprecated_tx", String(66), nullable=True),
    )
    Table(
        "anomalies",
        md,
        Column("key", String(200), primary_key=True),
        Column("kind", String(40), nullable=False, index=True),
        Column("severity", String(16), nullable=False),
        Column("message", Text(), nullable=False),
        Column("task_id", BigInteger(), nullable=True, index=True),
        Column("dataset_id", BigInteger(), nullable=True, index=True),
        Column("org", String(42), nullable=True, index=True),
        Column("tx_hashes", JSON(), nullable=False),
        Column("detail", JSON(), nullable=False),
        Column("block_number", BigInteger(), nullable=True),
        Column("occurred_at", BigInteger(), nullable=True),
        Column("first_seen", BigInteger(), nullable=False),
        Column("last_seen", BigInteger(), nullable=False),
        Column("resolved_at", BigInteger(), nullable=True, index=True),
    )
    Table(
        "datasets",
        md,
        Column("id", BigInteger(), primary_key=True, autoincrement=False),
        Column("owner", String(42), nullable=False, index=True),
        Column("version", BigInteger(), nullable=False),
        Column("max_uses", UInt64(), nullable=False),
        Column("uses", UInt64(), nullable=False),
        Column("expiry", UInt64(), nullable=False),
        Column("epsilon_total", UInt64(), nullable=False),
        Column("epsilon_spent", UInt64(), nullable=False),
        Column("registered_block", BigInteger(), nullable=False),
        Column("registered_at", BigInteger(), nullable=False),
        Column("registered_tx", String(66), nullable=False),
    )
    Table(
        "events",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("contract", String(32), nullable=False),
        Column("name", String(64), nullable=False, index=True),
        Column("args", JSON(), nullable=False),
        Column("block_number", BigInteger(), nullable=False),
        Column("block_hash", String(66), nullable=False),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        Column("tx_from", String(42), nullable=True),
        Column("task_id", BigInteger(), nullable=True, index=True),
        Column("dataset_id", BigInteger(), nullable=True, index=True),
        Column("actor", String(42), nullable=True, index=True),
        UniqueConstraint("tx_hash", "log_index"),
        Index("ix_events_position", "block_number", "log_index"),
    )
    Table(
        "index_state",
        md,
        Column("name", String(32), primary_key=True),
        Column("chain_id", BigInteger(), nullable=False),
        Column("task_manager", String(42), nullable=False),
        Column("deploy_block", BigInteger(), nullable=False),
        Column("next_block", BigInteger(), nullable=False),
        Column("recent", Text(), nullable=False),
        Column("indexed_block", BigInteger(), nullable=True),
        Column("indexed_hash", String(66), nullable=True),
        Column("indexed_timestamp", BigInteger(), nullable=True),
        Column("batches", BigInteger(), nullable=False),
        Column("updated_at", BigInteger(), nullable=False),
    )
    Table(
        "log_anchors",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("org", String(42), nullable=False, index=True),
        Column("sequence", UInt64(), nullable=False),
        Column("head_hash", String(66), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
        UniqueConstraint("org", "sequence"),
    )
    Table(
        "log_checks",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("org", String(42), nullable=False, index=True),
        Column("checked_at", BigInteger(), nullable=False),
        Column("ok", Boolean(), nullable=False),
        Column("entries", BigInteger(), nullable=False),
        Column("head_seq", BigInteger(), nullable=False),
        Column("head_hash", String(66), nullable=False),
        Column("indexed_block", BigInteger(), nullable=False),
        Column("problems", JSON(), nullable=False),
    )
    Table(
        "organisations",
        md,
        Column("account", String(42), primary_key=True),
        Column("name", String(64), nullable=False),
        Column("encryption_key", String(66), nullable=False),
        Column("endpoint", String(256), nullable=False),
        Column("status", Integer(), nullable=False),
        Column("admitted_block", BigInteger(), nullable=False),
        Column("admitted_at", BigInteger(), nullable=False),
        Column("admitted_tx", String(66), nullable=False),
        Column("status_changed_block", BigInteger(), nullable=False),
        Column("status_changed_at", BigInteger(), nullable=False),
    )
    Table(
        "role_changes",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("role", String(66), nullable=False, index=True),
        Column("role_name", String(32), nullable=False),
        Column("account", String(42), nullable=False, index=True),
        Column("sender", String(42), nullable=False),
        Column("granted", Boolean(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
    )
    Table(
        "tasks",
        md,
        Column("id", BigInteger(), primary_key=True, autoincrement=False),
        Column("requester", String(42), nullable=False, index=True),
        Column("algorithm_hash", String(66), nullable=False, index=True),
        Column("params_hash", String(66), nullable=False),
        Column("result_recipient", String(42), nullable=False),
        Column("deadline", UInt64(), nullable=False),
        Column("epsilon", UInt64(), nullable=False),
        Column("status", Integer(), nullable=False, index=True),
        Column("refusal_reason", Integer(), nullable=False),
        Column("result_hash", String(66), nullable=True),
        Column("required_approvals", Integer(), nullable=False),
        Column("approvals", Integer(), nullable=False),
        Column("started_count", Integer(), nullable=False),
        Column("receipt_count", Integer(), nullable=False),
        Column("submitted_block", BigInteger(), nullable=False),
        Column("submitted_at", BigInteger(), nullable=False, index=True),
        Column("submit_tx", String(66), nullable=False),
        Column("authorised_block", BigInteger(), nullable=True),
        Column("authorised_at", BigInteger(), nullable=True),
        Column("authorise_tx", String(66), nullable=True),
        Column("first_started_block", BigInteger(), nullable=True),
        Column("first_started_at", BigInteger(), nullable=True),
        Column("closed_block", BigInteger(), nullable=True),
        Column("closed_at", BigInteger(), nullable=True),
        Column("close_tx", String(66), nullable=True),
        Column("closed_by", String(42), nullable=True),
    )
    Table(
        "approvals",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("task_id", BigInteger(), ForeignKey("tasks.id"), nullable=False, index=True),
        Column("owner", String(42), nullable=False, index=True),
        Column("relayer", String(42), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("task_id", "owner"),
        UniqueConstraint("tx_hash", "log_index"),
    )
    Table(
        "dataset_uses",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("dataset_id", BigInteger(), ForeignKey("datasets.id"), nullable=False, index=True),
        Column("task_id", BigInteger(), nullable=False, index=True),
        Column("uses", UInt64(), nullable=False),
        Column("epsilon_spent", UInt64(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
        UniqueConstraint("dataset_id", "task_id"),
    )
    Table(
        "dataset_versions",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("dataset_id", BigInteger(), ForeignKey("datasets.id"), nullable=False, index=True),
        Column("version", BigInteger(), nullable=False),
        Column("merkle_root", String(66), nullable=False),
        Column("schema_hash", String(66), nullable=False),
        Column("metadata_hash", String(66), nullable=False),
        Column("row_count", UInt64(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
        UniqueConstraint("dataset_id", "version"),
    )
    Table(
        "org_status_changes",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("account", String(42), ForeignKey("organisations.account"), nullable=False, index=True),
        Column("change", String(16), nullable=False),
        Column("status", Integer(), nullable=False),
        Column("by", String(42), nullable=True),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
    )
    Table(
        "policy_grants",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("dataset_id", BigInteger(), ForeignKey("datasets.id"), nullable=False),
        Column("kind", String(16), nullable=False),
        Column("subject", String(66), nullable=False),
        Column("allowed", Boolean(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
        Index("ix_policy_grants_subject", "dataset_id", "kind", "subject"),
    )
    Table(
        "policy_limits",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("dataset_id", BigInteger(), ForeignKey("datasets.id"), nullable=False, index=True),
        Column("max_uses", UInt64(), nullable=False),
        Column("expiry", UInt64(), nullable=False),
        Column("epsilon_total", UInt64(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
    )
    Table(
        "receipts",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("task_id", BigInteger(), ForeignKey("tasks.id"), nullable=False, index=True),
        Column("participant", String(42), nullable=False, index=True),
        Column("result_hash", String(66), nullable=False),
        Column("transcript_hash", String(66), nullable=False),
        Column("input_fingerprint", String(66), nullable=False),
        Column("algorithm_hash", String(66), nullable=False),
        Column("deletion_hash", String(66), nullable=False),
        Column("started_at", UInt64(), nullable=False),
        Column("finished_at", UInt64(), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
        UniqueConstraint("task_id", "participant"),
    )
    Table(
        "refusals",
        md,
        Column("id", BigIntPK, primary_key=True),
        Column("task_id", BigInteger(), ForeignKey("tasks.id"), nullable=False, index=True),
        Column("participant", String(42), nullable=False, index=True),
        Column("reason", Integer(), nullable=False, index=True),
        Column("detail_hash", String(66), nullable=False),
        Column("block_number", BigInteger(), nullable=False, index=True),
        Column("block_timestamp", BigInteger(), nullable=False),
        Column("tx_hash", String(66), nullable=False),
        Column("log_index", Integer(), nullable=False),
        UniqueConstraint("tx_hash", "log_index"),
    )
    Table(
        "task_datasets",
        md,
        Column("task_id", BigInteger(), ForeignKey("tasks.id"), primary_key=True),
        Column("position", Integer(), primary_key=True, autoincrement=False),
        Column("dataset_id", BigInteger(), ForeignKey("datasets.id"), nullable=False, index=True),
        Column("version", BigInteger(), nullable=False),
    )
    Table(
        "task_participants",
        md,
        Column("task_id", BigInteger(), ForeignKey("tasks.id"), primary_key=True),
        Column("account", String(42), primary_key=True, index=True),
        Column("position", Integer(), nullable=False),
        Column("state", Integer(), nullable=False),
        Column("started_block", BigInteger(), nullable=True),
        Column("started_at", BigInteger(), nullable=True),
        Column("start_tx", String(66), nullable=True),
        Column("start_log_index", Integer(), nullable=True),
    )
    md.create_all(conn)


DROPPED_STATE = 5  # pcn.chain.types.ParticipantState.DROPPED, frozen here like the tables


def _v2_dropouts(conn: Connection) -> None:
    """Version 2: participant dropouts (TaskManager.reportDropout, event ParticipantDropped).

    Each participant row gets where it was reported dropped and by whom, each task its
    dropped count. A store written by an older pcn may already hold ParticipantDropped
    events (stored, never projected): they are projected here, as the projection now does,
    so the store needs no re-indexing."""
    for ddl in (
        "ALTER TABLE task_participants ADD COLUMN dropped_block BIGINT",
        "ALTER TABLE task_participants ADD COLUMN dropped_at BIGINT",
        "ALTER TABLE task_participants ADD COLUMN drop_tx VARCHAR(66)",
        "ALTER TABLE task_participants ADD COLUMN drop_log_index INTEGER",
        "ALTER TABLE task_participants ADD COLUMN dropped_by VARCHAR(42)",
        "ALTER TABLE tasks ADD COLUMN dropped_count INTEGER DEFAULT 0 NOT NULL",
    ):
        conn.execute(text(ddl))
    events = sql.table(
        "events",
        sql.column("id", BigInteger()),
        sql.column("name", String()),
        sql.column("args", JSON()),
        sql.column("actor", String()),
        sql.column("block_number", BigInteger()),
        sql.column("block_timestamp", BigInteger()),
        sql.column("tx_hash", String()),
        sql.column("log_index", Integer()),
    )
    parts = sql.table(
        "task_participants",
        sql.column("task_id", BigInteger()),
        sql.column("account", String()),
        sql.column("state", Integer()),
        sql.column("dropped_block", BigInteger()),
        sql.column("dropped_at", BigInteger()),
        sql.column("drop_tx", String()),
        sql.column("drop_log_index", Integer()),
        sql.column("dropped_by", String()),
    )
    tasks = sql.table("tasks", sql.column("id", BigInteger()), sql.column("dropped_count", Integer()))
    stored = conn.execute(
        select(events).where(events.c.name == "ParticipantDropped").order_by(events.c.block_number, events.c.log_index)
    ).all()
    for ev in stored:
        args = ev.args if isinstance(ev.args, dict) else json.loads(ev.args)
        task_id, reporter = int(args["taskId"]), str(args["reportedBy"])
        conn.execute(update(events).where(events.c.id == ev.id).values(actor=reporter))
        if conn.execute(select(tasks.c.id).where(tasks.c.id == task_id)).first() is None:
            continue  # like the projection: no task row, nothing derived
        conn.execute(
            update(parts)
            .where(parts.c.task_id == task_id, parts.c.account == str(args["participant"]))
            .values(
                state=DROPPED_STATE,
                dropped_block=ev.block_number,
                dropped_at=ev.block_timestamp,
                drop_tx=ev.tx_hash,
                drop_log_index=ev.log_index,
                dropped_by=reporter,
            )
        )
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(dropped_count=tasks.c.dropped_count + 1))


MIGRATIONS: list[Migration] = [
    (1, "initial schema", _v1_initial),
    (2, "participant dropouts", _v2_dropouts),
]
LATEST_VERSION = MIGRATIONS[-1][0]


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})


def _begin(engine: Engine) -> Connection:
    return engine.connect().execution_options(sqlite_begin="IMMEDIATE")


def current_version(conn: Connection) -> int:
    """The newest applied migration (0 for an empty database)."""
    if not inspect(conn).has_table(SchemaVersion.__tablename__):
        return 0
    newest = conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.version.desc()).limit(1)).scalar()
    return int(newest or 0)


def migrate(engine: Engine, target: int | None = None) -> list[int]:
    """Apply every pending migration up to `target` (default: the newest); return those applied."""
    target = LATEST_VERSION if target is None else target
    versions = Base.metadata.tables[SchemaVersion.__tablename__]
    with _begin(engine) as conn, conn.begin():
        _lock(conn)
        versions.create(conn, checkfirst=True)
    applied: list[int] = []
    for version, name, step in MIGRATIONS:
        if version > target:
            break
        with _begin(engine) as conn, conn.begin():
            _lock(conn)
            have = current_version(conn)
            if have >= version:
                continue
            if have != version - 1:
                raise MigrationError(f"the store is at schema version {have}; migration {version} needs {version - 1}")
            step(conn)
            conn.execute(versions.insert().values(version=version, name=name, applied_at=int(time.time())))
        applied.append(version)
    with engine.connect() as conn:
        have = current_version(conn)
    if have > LATEST_VERSION:
        raise MigrationError(
            f"the store is at schema version {have}, newer than this pcn knows ({LATEST_VERSION}): upgrade pcn"
        )
    return applied


def _index_columns(names: Sequence[str | None]) -> tuple[str, ...]:
    """A reflected index's columns, sorted; the database names no column for an expression
    (None), which no model index has."""
    return tuple(sorted("<expression>" if name is None else name for name in names))


def schema_diff(engine: Engine) -> list[str]:
    """Differences between the database's schema and the ORM models (empty when they agree):
    tables, columns, nullability, primary keys, unique constraints and indexes."""
    insp = inspect(engine)
    problems: list[str] = []
    live_tables = set(insp.get_table_names())
    for table in Base.metadata.sorted_tables:
        if table.name not in live_tables:
            problems.append(f"table {table.name} is missing")
            continue
        live_cols = {c["name"]: c for c in insp.get_columns(table.name)}
        for col in table.columns:
            live = live_cols.pop(col.name, None)
            if live is None:
                problems.append(f"column {table.name}.{col.name} is missing")
            elif bool(live["nullable"]) != bool(col.nullable) and not col.primary_key:
                problems.append(
                    f"column {table.name}.{col.name}: nullable {live['nullable']}, model says {col.nullable}"
                )
        problems += [f"column {table.name}.{name} is not in the model" for name in live_cols]
        live_pk = set(insp.get_pk_constraint(table.name)["constrained_columns"])
        if live_pk != {c.name for c in table.primary_key.columns}:
            problems.append(f"table {table.name}: primary key {sorted(live_pk)} differs from the model")
        model_uq = {
            tuple(sorted(c.name for c in con.columns)) for con in table.constraints if isinstance(con, UniqueConstraint)
        }
        live_uq = {tuple(sorted(u["column_names"])) for u in insp.get_unique_constraints(table.name)}
        live_ix = {_index_columns(i["column_names"]): bool(i["unique"]) for i in insp.get_indexes(table.name)}
        live_uq |= {cols for cols, unique in live_ix.items() if unique}
        if model_uq != live_uq:
            problems.append(f"table {table.name}: unique constraints {sorted(live_uq)} != model {sorted(model_uq)}")
        model_ix = {tuple(sorted(c.name for c in ix.columns)) for ix in table.indexes}
        missing_ix = model_ix - set(live_ix)
        if missing_ix:
            problems.append(f"table {table.name}: indexes {sorted(missing_ix)} are missing")
    known = {t.name for t in Base.metadata.sorted_tables}
    problems += [f"table {name} is not in the model" for name in sorted(live_tables - known)]
    return problems
