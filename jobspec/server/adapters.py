"""Tuned adapters on disk: one folder per training operation, published atomically.

    adapters/<model id>/<operation id>/             the adapter a finished operation produced
    adapters/<model id>/.<operation id>.partial-<pid>  being written by worker <pid>
    adapters/<model id>/adapter_model.safetensors   the layout before adapters were kept per
                                                    operation (still found, for old state dirs)

A training run writes its adapter beside the final place and moves it there only while the store
confirms, in the same transaction that marks the model ACTIVE, that the run still owns its job
(``Store.finish(publish=...)``). So a worker that lost its job (the service restarted and gave it
to another worker) can never replace or remove the adapter of the run that did finish it; it
removes only its own partial folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

PARTIAL = ".partial-"
CONFIG_FILE = "adapter_config.json"  # what PEFT's save_pretrained writes with the weights


def adapters_root(state_dir: Path) -> Path:
    return state_dir / "adapters"


def adapter_dir(state_dir: Path, model_id: str, operation_id: str) -> Path:
    return adapters_root(state_dir) / model_id / operation_id


def find_adapter(state_dir: Path, model_id: str, operation_id: str) -> Path | None:
    """The adapter folder of this operation; or the one folder an earlier version kept per
    model (an ACTIVE model from then has exactly that one); None when there is neither."""
    current = adapter_dir(state_dir, model_id, operation_id)
    if (current / CONFIG_FILE).is_file():
        return current
    legacy = adapters_root(state_dir) / model_id
    if (legacy / CONFIG_FILE).is_file():
        return legacy
    return None


def partial_dir(state_dir: Path, model_id: str, operation_id: str, worker_pid: int) -> Path:
    """Where the run of ``worker_pid`` writes its adapter, visible to no one until published."""
    return adapters_root(state_dir) / model_id / f".{operation_id}{PARTIAL}{worker_pid}"


def save_partial(model: Any, partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)


def publish(partial: Path, state_dir: Path, model_id: str, operation_id: str) -> None:
    """Move a finished run's adapter into place. Only the run that owns the job calls this
    (inside Store.finish), so whatever is there is a leftover of an earlier, interrupted run of
    the same operation: it is moved aside first, because a folder cannot be renamed onto a
    non-empty one."""
    target = adapter_dir(state_dir, model_id, operation_id)
    if target.exists():
        aside = target.with_name(f".{operation_id}{PARTIAL}replaced")
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(target, aside)
        shutil.rmtree(aside, ignore_errors=True)
    os.replace(partial, target)


def discard_partial(partial: Path) -> None:
    """Remove this run's partial folder, and its model's folder if that leaves it empty (the
    model was deleted while the run saved)."""
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.parent.rmdir()
    except OSError:
        pass  # not empty: other operations' adapters, or another run's partial


def remove_model_adapters(state_dir: Path, model_id: str) -> None:
    """Every adapter of a model, of every operation and layout: the model is deleted."""
    shutil.rmtree(adapters_root(state_dir) / model_id, ignore_errors=True)


def remove_stale_partials(state_dir: Path) -> list[Path]:
    """Partial folders left by a worker killed mid-save; call it only while no worker runs."""
    root = adapters_root(state_dir)
    if not root.is_dir():
        return []
    stale = [*root.glob(f".*{PARTIAL}*"), *root.glob(f"*/.*{PARTIAL}*")]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
