"""Checkpoints of training runs on disk, so that a run cut short by a crash resumes mid-run.

    checkpoints/<model id>/<operation id>.pt              the last checkpoint of that operation
    checkpoints/<model id>/.<operation id>.partial-<pid>  being written by worker <pid>

A checkpoint (a ``training_state.TrainingState``: adapter, optimiser, scheduler, RNG,
early-stopping state, step) is written beside its place, flushed to disk, and renamed into
place only inside the store transaction that confirms the run still belongs to this worker
(``Store.checkpoint``), so a rename is atomic and a worker that lost its job can never replace
the owner's checkpoint.
It is removed when the run ends, or its model is deleted. Whether a run resumes from it is
decided in one place, ``training_state.resume``: one that cannot be read, or was made for
another job or recipe (``training_state.run_key``), is ignored, and the run starts over.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

PARTIAL = ".partial-"


def checkpoints_root(state_dir: Path) -> Path:
    return state_dir / "checkpoints"


def checkpoint_path(state_dir: Path, model_id: str, operation_id: str) -> Path:
    return checkpoints_root(state_dir) / model_id / f"{operation_id}.pt"


def remove_checkpoints(state_dir: Path, model_id: str, operation_id: str | None = None) -> None:
    """An operation's checkpoint (it ended), or every one of a model (it was deleted)."""
    folder = checkpoints_root(state_dir) / model_id
    if operation_id is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    checkpoint_path(state_dir, model_id, operation_id).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def remove_stale_partials(state_dir: Path) -> list[Path]:
    """Half-written checkpoints a kill -9 left; call it only while no worker runs."""
    root = checkpoints_root(state_dir)
    stale = sorted(root.glob(f"*/.*{PARTIAL}*")) if root.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class WorkerCheckpoints:
    """``training_state.Checkpoints`` for one run of a worker: reads the operation's checkpoint
    and saves new ones atomically, only while the store says the run is this worker's."""

    def __init__(self, state_dir: Path, store: Any, model_id: str, operation_id: str,
                 worker_pid: int) -> None:
        self.state_dir = state_dir
        self.store = store
        self.model_id = model_id
        self.operation_id = operation_id
        self.worker_pid = worker_pid
        self.path = checkpoint_path(state_dir, model_id, operation_id)
        self.saved = 0  # checkpoints this run wrote

    def load(self) -> dict[str, Any] | None:
        """The checkpoint in place (tens of MB for SmolLM2), None when there is none; raises
        when it cannot be read. Only ``training_state.resume`` calls it, once per run."""
        import torch  # noqa: PLC0415

        if not self.path.is_file():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def save(self, state: dict[str, Any]) -> bool:
        import torch  # noqa: PLC0415

        partial = self.path.with_name(f".{self.operation_id}{PARTIAL}{self.worker_pid}")
        partial.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as out:
            torch.save(state, out)
            out.flush()
            os.fsync(out.fileno())
        try:
            kept = self.store.checkpoint(self.model_id, self.operation_id, self.worker_pid,
                                         state["step"], lambda: os.replace(partial, self.path))
        finally:
            partial.unlink(missing_ok=True)  # gone already when it was put in place
        if kept:
            self.saved += 1
            _sync_folder(self.path.parent)
        return kept


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (a crash of the machine, not only of the process)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
