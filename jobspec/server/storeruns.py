"""The training side of the store: a run's life in the state database, from its claim to its
end (the local worker processes and `serve --ray`'s dispatcher), each change only while the run
is its owner's (the pid recorded when it was claimed).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from ..wire import ACTIVE, CREATING, FAILED
from .storedb import Database, Snapshot, TunedModelRecord


class RunLedger(Database):
    """Claiming, starting, recording, checkpointing and ending runs."""

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

    def name_ray_run(self, model_id: str, operation_id: str, owner: int,
                     run: str | None) -> bool:
        """Record that the Ray Train run ``run`` trains the job (a standby run it was handed to),
        so that a restarted service finds that run, and a new one resumes from its checkpoints
        (None: the job's own run does); False when the job is no longer ``owner``'s."""
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
