"""The training worker process: takes queued tuning jobs from the store, one after another,
trains each (``trainer.train``) and publishes its adapter. Whether a run resumes from a
checkpoint is decided once, before it starts (``training_state.resume``).

A worker owns the job it claimed for as long as the store's row names its pid. When the service
restarts meanwhile, the job is requeued and may be claimed by another worker; the first one then
can no longer record a step or finish the job (``Store.record_step`` and ``Store.finish`` check
the owner), so it stops and removes only its own partial adapter.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import batchfit, datasets
from . import recipe as recipes
from . import trainer
from .adapters import discard_partial, partial_dir, publish, save_partial
from .checkpoints import WorkerCheckpoints, remove_checkpoints
from .store import ACTIVE, Snapshot, Store, TunedModelRecord
from .trainer import DEFAULT_MAX_BATCH_TOKENS, StepResult, train
from .training_state import resume, run_key
from .uploads import Uploads

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (pickled across the spawn)."""

    state_dir: str
    models: tuple[Any, ...]  # models.BaseModel, resolved by the service (hub ids included)
    alias_specs: tuple[str, ...]
    threads: int
    max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS  # None: measured on a GPU
    checkpoint_seconds: float = trainer.CHECKPOINT_SECONDS


class Worker:
    """Takes CREATING jobs from the store, one at a time, and trains them.

    ``pid`` is the owner recorded in the store: this process's pid, except in tests that run
    two workers in one process.
    """

    def __init__(self, state_dir: Path, registry: Any, *,
                 max_batch_tokens: int | None = DEFAULT_MAX_BATCH_TOKENS, pid: int | None = None,
                 checkpoint_seconds: float = trainer.CHECKPOINT_SECONDS) -> None:
        self.state_dir = state_dir
        self.store = Store(state_dir / "state.db")
        self.registry = registry
        self.max_batch_tokens = max_batch_tokens
        self.checkpoint_seconds = checkpoint_seconds
        self.pid = pid if pid is not None else os.getpid()
        self.loaded: dict[str, tuple[Any, Any]] = {}
        self.parent_pid = os.getppid()

    def check_parent(self) -> None:
        """Exit when the service that started this worker is gone (killed with -9, say): its
        successor requeues the job, and an orphan must not keep training."""
        if os.getppid() != self.parent_pid:
            log("the service is gone; training worker exiting")
            os._exit(1)

    def base(self, local_model: str) -> tuple[Any, Any]:
        """The base model a run trains on: kept for the next run, except a 4-bit one, which a
        run trains its LoRA into in place (trainer.lora_model) and so is loaded for each run."""
        from .models import load_base  # noqa: PLC0415

        model = self.registry.models[local_model]
        if model.quantize:
            return load_base(model, self.state_dir / "models")
        if local_model not in self.loaded:
            self.loaded[local_model] = load_base(model, self.state_dir / "models")
        return self.loaded[local_model]

    def run_forever(self) -> None:
        while True:
            self.check_parent()
            record = self.store.claim_next(self.pid)
            if record is None:
                time.sleep(POLL_SECONDS)
                continue
            self.run(record)

    def run(self, record: TunedModelRecord) -> None:
        name = f"tunedModels/{record.id}"
        # From the database, or read a line at a time from the job's uploads (datasets.py).
        examples, validation = datasets.stored(self.store, Uploads(self.state_dir), record.id,
                                               with_validation=bool(record.validation_count))
        held_out = f", {len(validation)} validation examples" if validation else ""
        patience = record.early_stopping_patience
        stopping = f", early stopping after {patience} epoch(s) without improvement" \
            if patience else ""
        try:
            network, tokenizer = self.base(record.local_model)
            device = str(next(network.parameters()).device)
            recipe = recipes.RECIPE
            trained_on = trained_on_text(device, recipes.precision_for(recipe, device),
                                         self.registry.models[record.local_model].quantize)
            checkpoints = WorkerCheckpoints(self.state_dir, self.store, record.id,
                                            record.operation_id, self.pid)
            key = run_key(examples, validation, int(record.hyperparameters["epochCount"]),
                          int(record.hyperparameters["batchSize"]), record.effective_lr,
                          patience, recipe)
            start = resume(checkpoints, key, record.total_steps, patience)
            if start.found and start.state is None:
                log(f"train {name}: {start.reason}")
            if not self.store.start_run(record.id, record.operation_id, self.pid, start.step,
                                        trained_on):
                log(f"train {name}: not started: it was cancelled, deleted, or is no longer "
                    "this worker's")
                self._stopped(record, name)
                return
            where = start.reason if start.state is not None else "started"
            if (record.workers or 1) > 1:
                log(f"train {name}: asks for {record.workers} data-parallel workers; this "
                    "service trains in one process, with the same steps (start it with --ray "
                    "ADDRESS to train on a Ray cluster)")
            log(f"train {name}: {where} ({record.example_count} examples{held_out}, "
                f"{record.total_steps} steps{stopping}) on {trained_on}")
            hp = record.hyperparameters
            started = time.time()
            passes = batchfit.FittedSteps(device, self.max_batch_tokens,
                                          lambda text: log(f"train {name}: {text}"))

            def on_step(result: StepResult) -> bool:
                self.check_parent()
                return record_step(self.store, record, self.pid, result, passes.tokens)

            result = train(network, tokenizer, examples,
                           epochs=int(hp["epochCount"]), batch_size=int(hp["batchSize"]),
                           learning_rate=record.effective_lr,
                           max_batch_tokens=passes.tokens, on_step=on_step,
                           recipe=recipe, validation=validation, patience=patience,
                           checkpoints=checkpoints, resume=start,
                           checkpoint_seconds=self.checkpoint_seconds,
                           step_wrapper=passes.wrap)
            if result is None:  # cancelled, deleted, or no longer this worker's job
                self._stopped(record, name)
                return
            self.check_parent()

            def save(partial: Path) -> None:
                save_partial(result.model, partial)
                recipes.write_layout(partial, recipe)

            state = finish_trained(self.store, self.state_dir, record, self.pid, save,
                                   kept_epoch=result.kept_epoch, stop_reason=result.stop_reason,
                                   steps=result.steps)
            log_finished(name, state, time.time() - started, trained_on,
                         f" ({checkpoints.saved} checkpoints)" if checkpoints.saved else "")
        except Exception as exc:  # noqa: BLE001 - a bad job must not take the worker down
            traceback.print_exc(file=sys.stderr)
            fail_run(self.store, self.state_dir, record, self.pid,
                     f"Training failed: {type(exc).__name__}: {exc}")

    def _stopped(self, record: TunedModelRecord, name: str) -> None:
        stop_run(self.store, self.state_dir, record, self.pid, name)


# -- what a training run does with the store, whoever trains it (this worker, or a Ray run that
# -- raydispatch.py follows): one step, the end, a cancel, a failure.

def record_step(store: Store, record: TunedModelRecord, owner: int, result: StepResult,
                max_batch_tokens: int, *, at: float | None = None, logged: bool = True) -> bool:
    """Log one step and save its losses, as of ``at`` (default: now); False when the run
    should stop (Store.record_step). ``logged`` false: a step logged before (a restarted
    service replays the steps of a run it re-attached to)."""
    name = f"tunedModels/{record.id}"
    split = (f" ({result.micro_batches} micro-batches of at most {max_batch_tokens} tokens)"
             if result.micro_batches > 1 else "")
    measured = (f"; validation loss {result.validation_loss:.4f} after epoch "
                f"{result.completed_epoch}" if result.validation_loss is not None else "")
    if logged:
        log(f"train {name}: step {result.step}/{record.total_steps} "
            f"epoch {result.epoch} loss {result.loss:.4f}{split}{measured}")
    now = time.time() if at is None else at
    held = None if result.validation_loss is None else Snapshot(
        result.step, result.completed_epoch or result.epoch, result.validation_loss, now)
    return store.record_step(record.id, record.operation_id, owner, Snapshot(
        result.step, result.epoch, result.loss, now), held)


def finish_trained(store: Store, state_dir: Path, record: TunedModelRecord, owner: int,
                   save: Callable[[Path], None], *, kept_epoch: int | None,
                   stop_reason: str | None, steps: int) -> str | None:
    """End a run that trained every step it will: ``save`` writes the adapter into a partial
    folder, which is published in the transaction that makes the model ACTIVE (Store.finish).
    The state it ended in; None when the job is no longer ``owner``'s."""
    name = f"tunedModels/{record.id}"
    if stop_reason:
        log(f"train {name}: {stop_reason}; keeping epoch {kept_epoch}")
    elif kept_epoch is not None:
        log(f"train {name}: keeping epoch {kept_epoch}, whose validation loss was the lowest")
    partial = partial_dir(state_dir, record.id, record.operation_id, owner)
    try:
        save(partial)
        state = store.finish(
            record.id, record.operation_id, owner,
            publish=lambda: publish(partial, state_dir, record.id, record.operation_id),
            kept_epoch=kept_epoch, stop_reason=stop_reason, completed_steps=steps)
    finally:
        discard_partial(partial)  # gone already when published
    if state is not None:
        remove_checkpoints(state_dir, record.id, record.operation_id)
    return state


def log_finished(name: str, state: str | None, seconds: float, trained_on: str,
                 detail: str = "") -> None:
    if state == ACTIVE:
        log(f"train {name}: ACTIVE after {seconds:.1f}s on {trained_on}{detail}")
    elif state is None:
        log(f"train {name}: trained, but the job was deleted or is no longer this "
            "worker's (the service restarted meanwhile); its adapter is discarded")
    else:
        log(f"train {name}: cancelled after its last step")


def fail_run(store: Store, state_dir: Path, record: TunedModelRecord, owner: int,
             message: str) -> str | None:
    """End a run FAILED with ``message`` (error 13); None when it is no longer ``owner``'s."""
    state = store.finish(record.id, record.operation_id, owner, error_code=13,
                         error_message=message)
    if state is not None:
        remove_checkpoints(state_dir, record.id, record.operation_id)
    return state


def stop_run(store: Store, state_dir: Path, record: TunedModelRecord, owner: int,
             name: str) -> None:
    """End a run that stopped early: cancelled, or no longer ``owner``'s (then unchanged)."""
    state = store.finish(record.id, record.operation_id, owner, error_code=1,
                         error_message="Operation cancelled.")
    if state is not None:
        remove_checkpoints(state_dir, record.id, record.operation_id)
    log(f"train {name}: " + ("cancelled" if state else "stopped: the job was deleted "
                             "or is no longer this worker's"))


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)


def trained_on_text(device: str, precision: str, quantize: str | None) -> str:
    """What the operation and the report say trained a model (the ``device`` extension field):
    ``cpu (fp32)``, ``cuda:0 (bf16)``, ``cuda:0 (bf16, 4-bit NF4 base weights)``."""
    quantized = ", 4-bit NF4 base weights" if quantize == "4bit" else ""
    return f"{device} ({precision}{quantized})"


def worker_main(config: WorkerConfig, ready: Any) -> None:
    """Entry point of a training worker process; sets ``ready`` (an Event) once it is set up,
    so that the service can tell a worker that cannot start from one that died training."""
    import torch  # noqa: PLC0415

    from .models import ModelRegistry, quiet_libraries  # noqa: PLC0415

    quiet_libraries()
    # The parent handles Ctrl-C and then terminates its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(config.threads)
    registry = ModelRegistry.of(list(config.models), list(config.alias_specs))
    worker = Worker(Path(config.state_dir), registry, max_batch_tokens=config.max_batch_tokens,
                    checkpoint_seconds=config.checkpoint_seconds)
    ready.set()
    worker.run_forever()
