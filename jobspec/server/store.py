"""SQLite state of the local service: tuned models and their training snapshots.

The database itself (schema, records, connections, transactions) is storedb.py; the training
side of a run's life in it is storeruns.py; ``Store`` adds what the HTTP API does with it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import time
from typing import Any

from ..wire import ACTIVE, CREATING, FAILED
from .storedb import Snapshot, TunedModelRecord
from .storeruns import RunLedger

__all__ = ["ACTIVE", "CREATING", "FAILED", "AlreadyExists", "Snapshot", "Store",
           "TunedModelRecord"]


class AlreadyExists(Exception):
    pass


def _random_id(length: int = 12) -> str:
    alphabet = string.ascii_lowercase + string.digits
    return secrets.choice(string.ascii_lowercase) + "".join(
        secrets.choice(alphabet) for _ in range(length - 1))


class Store(RunLedger):
    """The state database as the service's HTTP API and its workers use it."""

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
