"""Where tuned adapters live on disk, written atomically and removed with their model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def adapter_dir(state_dir: Path, model_id: str) -> Path:
    return state_dir / "adapters" / model_id


def save_adapter(model: Any, state_dir: Path, model_id: str) -> None:
    """Write beside, then rename: a kill mid-write never leaves a half adapter in place."""
    target = adapter_dir(state_dir, model_id)
    partial = target.with_name(f".{model_id}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def remove_adapter(state_dir: Path, model_id: str) -> None:
    shutil.rmtree(adapter_dir(state_dir, model_id), ignore_errors=True)
