"""SQLite state of the local service: tuned models and their training snapshots.

Every change is one transaction, and SQLite's write-ahead log makes each commit atomic, so a
``kill -9`` at any moment leaves the database as it was before or after a change, never between.
The HTTP process and the training workers share the file; each opens its own connection.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..wire import ACTIVE, CREATING, FAILED

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


class AlreadyExists(Exception):
    pass


def _random_id(length: int = 12) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(length - 1))


class Store:
    """Thread-safe access to the state database (one connection per thread)."""

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

    def page(self, after_seq: int, size: int) -> tuple[list[TunedModelRecord], int | None]:
        """Up to ``size`` models created after ``after_seq``; and the seq to continue from."""
        rows = self._connection().execute(
            "SELECT * FROM tuned_models WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, size + 1)).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        records = [self._record(row, with_snapshots=True) for row in rows]
        return records, (rows[-1]["seq"] if more else None)

    def has_training(self) -> bool:
        return self._connection().execute(
            "SELECT 1 FROM tuned_models WHERE state = ? LIMIT 1", (CREATING,)).fetchone() is not None

    def examples(self, model_id: str) -> list[tuple[str, str]]:
        row = self._connection().execute("SELECT data FROM examples WHERE model_id = ?",
                                          (model_id,)).fetchone()
        return [] if row is None else [tuple(pair) for pair in json.loads(row["data"])]

    def uploads(self, model_id: str) -> tuple[str | None, str | None]:
        """The SHA-256 of the uploads that hold the job's (training, validation) examples,
        each None where the examples came inline."""
        row = self._connection().execute(
            "SELECT upload, validation_upload FROM examples WHERE model_id = ?",
            (model_id,)).fetchone()
        return (None, None) if row is None else (row["upload"], row["validation_upload"])

    def validation_examples(self, model_id: str) -> list[tuple[str, str]]:
        row = self._connection().execute("SELECT validation FROM examples WHERE model_id = ?",
                                          (model_id,)).fetchone()
        if row is None or row["validation"] is None:
            return []
        return [tuple(pair) for pair in json.loads(row["validation"])]

    # -- changing ------------------------------------------------------------------------------

    def create(self, *, model_id: str | None, display_name: str | None, description: str | None,
               base_model: str, local_model: str, temperature: float | None,
               top_p: float | None, top_k: int | None, hyperparameters: dict[str, Any],
               effective_lr: float, examples: list[tuple[str, str]],
               total_steps: int, validation: list[tuple[str, str]] | None = None,
               early_stopping_patience: int | None = None,
               upload: tuple[str, int] | None = None,
               validation_upload: tuple[str, int] | None = None,
               workers: int | None = None,
               gpus_per_worker: float | None = None) -> TunedModelRecord:
        """``upload`` and ``validation_upload``: (SHA-256, example count) of an upload that
        holds the training (validation) examples, given instead of them. ``workers`` and
        ``gpus_per_worker``: what the job asked of its run (None: the service's default)."""
        now = time.time()
        example_count = upload[1] if upload else len(examples)
        validation_count = validation_upload[1] if validation_upload else len(validation or ())
        with self._transaction() as db:
            if model_id is None:
                model_id = self._generated_id(db, display_name)
            elif db.execute("SELECT 1 FROM tuned_models WHERE id = ?", (model_id,)).fetchone():
                raise AlreadyExists(model_id)
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM tuned_models").fetchone()[0]
            db.execute(
                "INSERT INTO tuned_models (id, seq, operation_id, display_name, description, "
                "base_model, local_model, temperature, top_p, top_k, state, create_time, "
                "update_time, hyperparameters, effective_lr, example_count, total_steps, "
                "validation_count, early_stopping_patience, workers, gpus_per_worker) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (model_id, seq, _random_id(), display_name, description, base_model, local_model,
                 temperature, top_p, top_k, CREATING, now, now, json.dumps(hyperparameters),
                 effective_lr, example_count, total_steps, validation_count,
                 early_stopping_patience, workers, gpus_per_worker))
            db.execute("INSERT INTO examples (model_id, data, validation, upload, "
                       "validation_upload) VALUES (?, ?, ?, ?, ?)",
                       (model_id, json.dumps([] if upload else examples, ensure_ascii=False),
                        json.dumps(validation, ensure_ascii=False)
                        if validation and not validation_upload else None,
                        upload[0] if upload else None,
                        validation_upload[0] if validation_upload else None))
        record = self.get(model_id)
        assert record is not None
        return record

    @staticmethod
    def _generated_id(db: sqlite3.Connection, display_name: str | None) -> str:
        words = "".join(c if c.isalnum() and c.isascii() else " "
                        for c in (display_name or "").lower()).split()
        stem = "-".join(words)[:26].strip("-")
        while True:
            suffix = _random_id()
            candidate = f"{stem}-{suffix}" if stem and stem[0].isalpha() else suffix
            if not db.execute("SELECT 1 FROM tuned_models WHERE id = ?", (candidate,)).fetchone():
                return candidate

    def update_fields(self, model_id: str, changes: dict[str, Any]) -> TunedModelRecord | None:
        allowed = {"display_name", "description", "temperature", "top_p", "top_k"}
        assert set(changes) <= allowed, changes
        with self._transaction() as db:
            if changes:
                assignments = ", ".join(f"{name} = ?" for name in changes)
                db.execute(f"UPDATE tuned_models SET {assignments}, update_time = ? WHERE id = ?",
                           (*changes.values(), time.time(), model_id))
        return self.get(model_id)

    def delete(self, model_id: str) -> bool:
        with self._transaction() as db:
            return db.execute("DELETE FROM tuned_models WHERE id = ?", (model_id,)).rowcount > 0

    def request_cancel(self, model_id: str) -> TunedModelRecord | None:
        now = time.time()
        with self._transaction() as db:
            # Not yet picked up by a worker: nothing runs, so it is cancelled at once.
            db.execute("UPDATE tuned_models SET state = ?, error_code = 1, error_message = ?, "
                       "complete_time = ?, update_time = ?, cancel_requested = 1 "
                       "WHERE id = ? AND state = ? AND worker_pid IS NULL",
                       (FAILED, "Operation cancelled.", now, now, model_id, CREATING))
            # Training: its worker sees the flag at the next step and stops.
            db.execute("UPDATE tuned_models SET cancel_requested = 1 WHERE id = ? AND state = ?",
                       (model_id, CREATING))
        return self.get(model_id)

    # -- the training worker's side ------------------------------------------------------------

    def claim_next(self, worker_pid: int) -> TunedModelRecord | None:
        """Atomically take the oldest waiting job for this worker (None when there is none)."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT id FROM tuned_models WHERE state = ? AND worker_pid IS NULL "
                "AND cancel_requested = 0 ORDER BY seq LIMIT 1", (CREATING,)).fetchone()
            if row is None:
                return None
            now = time.time()
            # The start time of the first attempt stays: a resumed run is one run.
            db.execute(
                "UPDATE tuned_models SET worker_pid = ?, start_time = COALESCE(start_time, ?), "
                "update_time = ?, attempts = attempts + 1 WHERE id = ?",
                (worker_pid, now, now, row["id"]))
        return self.get(row["id"])

    def start_run(self, model_id: str, operation_id: str, worker_pid: int, from_step: int,
                  device: str) -> bool:
        """The owner starts (``from_step`` 0) or resumes (from its checkpoint's step) training:
        what an interrupted attempt recorded past that step is dropped, so the snapshots stay
        one continuous series. False when the run is no longer this worker's."""
        with self._transaction() as db:
            if not self._owns(db, model_id, operation_id, worker_pid):
                return False
            for table in ("snapshots", "validation_snapshots"):
                db.execute(f"DELETE FROM {table} WHERE model_id = ? AND step > ?",
                           (model_id, from_step))
            db.execute("UPDATE tuned_models SET completed_steps = ?, device = ?, "
                       "checkpoint_step = ?, update_time = ? WHERE id = ?",
                       (from_step, device, from_step or None, time.time(), model_id))
        return True

    @staticmethod
    def _owns(db: sqlite3.Connection, model_id: str, operation_id: str, worker_pid: int) -> bool:
        row = db.execute("SELECT cancel_requested FROM tuned_models WHERE id = ? "
                         "AND operation_id = ? AND state = ? AND worker_pid = ?",
                         (model_id, operation_id, CREATING, worker_pid)).fetchone()
        return row is not None and not row["cancel_requested"]

    def checkpoint(self, model_id: str, operation_id: str, worker_pid: int, step: int,
                   publish: Callable[[], None]) -> bool:
        """Put a checkpoint in place (``publish``), only while this worker owns the run; it
        made progress, so the attempts it was charged are forgiven. False: not ours."""
        with self._transaction() as db:
            if not self._owns(db, model_id, operation_id, worker_pid):
                return False
            publish()
            db.execute("UPDATE tuned_models SET checkpoint_step = ?, attempts = 0, "
                       "update_time = ? WHERE id = ?", (step, time.time(), model_id))
        return True

    def record_step(self, model_id: str, operation_id: str, worker_pid: int,
                    snapshot: Snapshot, validation: Snapshot | None = None) -> bool:
        """Save one step's loss; False when the run should stop: the model was deleted or
        cancelled meanwhile, or this worker no longer owns the job.

        The operation id tells this training run from a later model created with the same id;
        the worker's pid tells it from a later run of the same operation (the service restarted,
        requeued the job and gave it to another worker).
        """
        with self._transaction() as db:
            row = db.execute("SELECT cancel_requested FROM tuned_models WHERE id = ? "
                             "AND operation_id = ? AND state = ? AND worker_pid = ?",
                             (model_id, operation_id, CREATING, worker_pid)).fetchone()
            if row is None or row["cancel_requested"]:
                return False
            db.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?)",
                       (model_id, snapshot.step, snapshot.epoch, snapshot.mean_loss,
                        snapshot.compute_time))
            if validation is not None:
                db.execute("INSERT OR REPLACE INTO validation_snapshots VALUES (?, ?, ?, ?, ?)",
                           (model_id, validation.step, validation.epoch, validation.mean_loss,
                            validation.compute_time))
            db.execute("UPDATE tuned_models SET completed_steps = ?, update_time = ? WHERE id = ?",
                       (snapshot.step, time.time(), model_id))
        return True

    def finish(self, model_id: str, operation_id: str, worker_pid: int, *,
               error_code: int | None = None, error_message: str | None = None,
               publish: Callable[[], None] | None = None, kept_epoch: int | None = None,
               stop_reason: str | None = None,
               completed_steps: int | None = None) -> str | None:
        """End a training run: ACTIVE, or FAILED with an error; returns the state it ended in.
        Only the worker that owns the job may (same operation, still training, ``worker_pid``
        its owner); None otherwise, and then nothing changes.

        ``publish`` (moving the adapter into place) runs inside the transaction, once ownership
        is confirmed: the adapter is in place the moment the model is ACTIVE, and no other
        worker can finish the job meanwhile. A cancel that arrived after the last step wins:
        the run ends FAILED, cancelled, and publishes nothing.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT cancel_requested FROM tuned_models WHERE id = ? "
                             "AND operation_id = ? AND state = ? AND worker_pid = ?",
                             (model_id, operation_id, CREATING, worker_pid)).fetchone()
            if row is None:
                return None
            if error_code is None and row["cancel_requested"]:
                error_code, error_message = 1, "Operation cancelled."
            if error_code is None and publish is not None:
                publish()
            state = FAILED if error_code is not None else ACTIVE
            db.execute(
                "UPDATE tuned_models SET state = ?, complete_time = ?, update_time = ?, "
                "error_code = ?, error_message = ?, worker_pid = NULL, kept_epoch = ?, "
                "stop_reason = ?, checkpoint_step = NULL, "
                "completed_steps = COALESCE(?, completed_steps) WHERE id = ?",
                (state, now, now, error_code, error_message, kept_epoch, stop_reason,
                 completed_steps, model_id))
        return state

    def fail_queued(self, error_message: str) -> list[str]:
        """Fail every job still waiting for a worker (used when no worker can start)."""
        now = time.time()
        with self._transaction() as db:
            rows = db.execute("SELECT id FROM tuned_models WHERE state = ? AND worker_pid IS NULL "
                              "ORDER BY seq", (CREATING,)).fetchall()
            db.execute("UPDATE tuned_models SET state = ?, error_code = 13, error_message = ?, "
                       "complete_time = ?, update_time = ? WHERE state = ? AND worker_pid IS NULL",
                       (FAILED, error_message, now, now, CREATING))
        return [row["id"] for row in rows]

    def owned_runs(self) -> list[TunedModelRecord]:
        """The jobs a training run holds (CREATING, with an owner), oldest first: at the start
        of a service that trains on Ray, the runs its predecessor left on the cluster."""
        rows = self._connection().execute(
            "SELECT * FROM tuned_models WHERE state = ? AND worker_pid IS NOT NULL ORDER BY seq",
            (CREATING,)).fetchall()
        return [self._record(row, with_snapshots=False) for row in rows]

    def adopt(self, model_id: str, operation_id: str, previous_owner: int, owner: int) -> bool:
        """Make ``owner`` the owner of a run ``previous_owner`` held (a restarted service takes
        over the Ray run its predecessor started, which still trains); False when the run is no
        longer that one's (it ended, was deleted, or another owner took it)."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE tuned_models SET worker_pid = ?, update_time = ? WHERE id = ? "
                "AND operation_id = ? AND state = ? AND worker_pid = ?",
                (owner, time.time(), model_id, operation_id, CREATING,
                 previous_owner)).rowcount > 0

    def name_ray_run(self, model_id: str, operation_id: str, owner: int, run: str) -> bool:
        """Record that the Ray Train run ``run`` trains the job (a standby run it was handed to),
        so that a restarted service finds that run, and a new one resumes from its checkpoints;
        False when the job is no longer ``owner``'s."""
        with self._transaction() as db:
            if not self._owns(db, model_id, operation_id, owner):
                return False
            db.execute("UPDATE tuned_models SET ray_run = ? WHERE id = ?", (run, model_id))
        return True

    def release_orphans(self, live_pids: set[int], *, max_attempts: int = 3,
                        charge_attempt: bool = True) -> list[str]:
        """Jobs whose worker died go back to the queue; after max_attempts they fail.

        With ``charge_attempt`` false (a clean shutdown), the interrupted run is not counted.
        """
        released = []
        with self._transaction() as db:
            rows = db.execute("SELECT id, worker_pid, attempts, cancel_requested FROM tuned_models "
                              "WHERE state = ? AND worker_pid IS NOT NULL", (CREATING,)).fetchall()
            now = time.time()
            for row in rows:
                if row["worker_pid"] in live_pids:
                    continue
                if row["cancel_requested"]:
                    db.execute("UPDATE tuned_models SET state = ?, worker_pid = NULL, "
                               "error_code = 1, error_message = ?, complete_time = ?, "
                               "update_time = ? WHERE id = ?",
                               (FAILED, "Operation cancelled.", now, now, row["id"]))
                elif charge_attempt and row["attempts"] >= max_attempts:
                    db.execute("UPDATE tuned_models SET state = ?, worker_pid = NULL, "
                               "error_code = 13, error_message = ?, complete_time = ?, "
                               "update_time = ? WHERE id = ?",
                               (FAILED, f"Training was interrupted {row['attempts']} times "
                                "(the service or its worker stopped); giving up.", now, now,
                                row["id"]))
                else:
                    db.execute("UPDATE tuned_models SET worker_pid = NULL, update_time = ?, "
                               "attempts = MAX(attempts - ?, 0) WHERE id = ?",
                               (now, 0 if charge_attempt else 1, row["id"]))
                released.append(row["id"])
        return released
