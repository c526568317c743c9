"""The state database of the local service (SQLite): its schema, its rows as records, and the
connection and transaction every change goes through (store.py builds on it).

Every change is one transaction, and SQLite's write-ahead log makes each commit atomic, so a
``kill -9`` at any moment leaves the database as it was before or after a change, never between.
The HTTP process and the training workers share the file; each opens its own connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tuned_models (
    id                TEXT PRIMARY KEY,
    seq               INTEGER NOT NULL,          -- creation order, for stable paging
    operation_id      TEXT NOT NULL,
    display_name      TEXT,
    description       TEXT,
    base_model        TEXT NOT NULL,             -- as requested (an alias stays an alias)
    local_model       TEXT NOT NULL,             -- the local model it resolves to
    temperature       REAL,
    top_p             REAL,
    top_k             INTEGER,
    state             TEXT NOT NULL,
    create_time       REAL NOT NULL,
    update_time       REAL NOT NULL,
    start_time        REAL,
    complete_time     REAL,
    hyperparameters   TEXT NOT NULL,             -- JSON, as requested (camelCase)
    effective_lr      REAL NOT NULL,
    example_count     INTEGER NOT NULL,
    total_steps       INTEGER NOT NULL,
    completed_steps   INTEGER NOT NULL DEFAULT 0,
    error_code        INTEGER,
    error_message     TEXT,
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    worker_pid        INTEGER,                   -- set while a worker trains it
    attempts          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS examples (
    model_id  TEXT PRIMARY KEY REFERENCES tuned_models(id) ON DELETE CASCADE,
    data      TEXT NOT NULL                      -- JSON list of [input, output]
);
CREATE TABLE IF NOT EXISTS snapshots (
    model_id      TEXT NOT NULL REFERENCES tuned_models(id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,
    epoch         INTEGER NOT NULL,
    mean_loss     REAL NOT NULL,
    compute_time  REAL NOT NULL,
    PRIMARY KEY (model_id, step)
);
CREATE TABLE IF NOT EXISTS validation_snapshots (
    model_id      TEXT NOT NULL REFERENCES tuned_models(id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,              -- the step that ended the epoch
    epoch         INTEGER NOT NULL,
    mean_loss     REAL NOT NULL,                 -- over the validation examples' target tokens
    compute_time  REAL NOT NULL,
    PRIMARY KEY (model_id, step)
);
"""

# Columns added after the first release: a state directory made before them gets them at start
# (each with its default), so that it keeps working.
_ADDED_COLUMNS = {
    "tuned_models": (
        ("validation_count", "INTEGER NOT NULL DEFAULT 0"),
        ("early_stopping_patience", "INTEGER"),  # epochs without improvement; NULL: off
        ("kept_epoch", "INTEGER"),  # early stopping: the epoch whose weights were kept
        ("stop_reason", "TEXT"),  # why training stopped before its last step
        ("device", "TEXT"),  # what trained it, e.g. "cpu (bf16)"
        ("checkpoint_step", "INTEGER"),  # the last checkpoint's step, while training
        # What the job asked of its run (wire.RESOURCES_FIELD); NULL: the service's default.
        ("workers", "INTEGER"),
        ("gpus_per_worker", "REAL"),
        # `serve --ray`: the Ray Train run that trains it, where its name is not the job's own
        # (a standby run, started before its job was known: raystandby.py); NULL: the job's.
        ("ray_run", "TEXT"),
    ),
    # JSON list of [input, output], or NULL; and the uploads (uploads.py) that hold the
    # examples instead, by SHA-256, when they were uploaded (``data`` is then []).
    "examples": (("validation", "TEXT"), ("upload", "TEXT"), ("validation_upload", "TEXT")),
}


@dataclass(frozen=True)
class Snapshot:
    step: int
    epoch: int
    mean_loss: float
    compute_time: float


@dataclass(frozen=True)
class TunedModelRecord:
    id: str
    operation_id: str
    display_name: str | None
    description: str | None
    base_model: str
    local_model: str
    temperature: float | None
    top_p: float | None
    top_k: int | None
    state: str
    create_time: float
    update_time: float
    start_time: float | None
    complete_time: float | None
    hyperparameters: dict[str, Any]
    effective_lr: float
    example_count: int
    total_steps: int
    completed_steps: int
    error_code: int | None
    error_message: str | None
    cancel_requested: bool
    worker_pid: int | None
    attempts: int
    validation_count: int = 0
    early_stopping_patience: int | None = None
    kept_epoch: int | None = None
    stop_reason: str | None = None
    device: str | None = None
    checkpoint_step: int | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    ray_run: str | None = None
    snapshots: tuple[Snapshot, ...] = field(default=())
    validation_snapshots: tuple[Snapshot, ...] = field(default=())


class Database:
    """Thread-safe access to the state database (one connection per thread), and reading a
    tuned model's record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connection().executescript(_SCHEMA)  # idempotent; runs its own transaction
        self._add_columns()

    def _add_columns(self) -> None:
        """Bring a state directory made by an earlier version up to this schema. In one
        transaction, so that the HTTP process and a worker starting together add each once."""
        with self._transaction() as db:
            for table, columns in _ADDED_COLUMNS.items():
                present = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                for name, declaration in columns:
                    if name not in present:
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            self._local.db = db
        return db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    # -- reading -------------------------------------------------------------------------------

    def _record(self, row: sqlite3.Row, with_snapshots: bool) -> TunedModelRecord:
        values = dict(row)
        values.pop("seq")
        values["hyperparameters"] = json.loads(values["hyperparameters"])
        values["cancel_requested"] = bool(values["cancel_requested"])
        if with_snapshots:
            values["snapshots"] = self.snapshots(row["id"])
            values["validation_snapshots"] = self.snapshots(row["id"], "validation_snapshots")
        return TunedModelRecord(**values)

    def snapshots(self, model_id: str, table: str = "snapshots") -> tuple[Snapshot, ...]:
        assert table in ("snapshots", "validation_snapshots")
        rows = self._connection().execute(
            f"SELECT step, epoch, mean_loss, compute_time FROM {table} WHERE model_id = ? "
            "ORDER BY step", (model_id,))
        return tuple(Snapshot(*row) for row in rows)

    def get(self, model_id: str, *, with_snapshots: bool = True) -> TunedModelRecord | None:
        row = self._connection().execute("SELECT * FROM tuned_models WHERE id = ?",
                                          (model_id,)).fetchone()
        return None if row is None else self._record(row, with_snapshots)
