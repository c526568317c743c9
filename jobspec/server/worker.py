"""The training worker process: takes queued tuning jobs from the store, one after another,
trains each (``trainer.train``) and publishes its adapter.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adapters import discard_partial, partial_dir, publish, save_partial
from .store import ACTIVE, Snapshot, Store, TunedModelRecord
from .trainer import DEFAULT_MAX_BATCH_TOKENS, StepResult, train

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (pickled across the spawn)."""

    state_dir: str
    model_paths: tuple[str, ...]
    alias_specs: tuple[str, ...]
    threads: int
    max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS


class Worker:
    """Takes CREATING jobs from the store, one at a time, and trains them.

    ``pid`` is the owner recorded in the store: this process's pid, except in tests that run
    two workers in one process.
    """

    def __init__(self, state_dir: Path, registry: Any, *,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS, pid: int | None = None) -> None:
        self.state_dir = state_dir
        self.store = Store(state_dir / "state.db")
        self.registry = registry
        self.max_batch_tokens = max_batch_tokens
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
        from .models import load_base  # noqa: PLC0415

        if local_model not in self.loaded:
            self.loaded[local_model] = load_base(self.registry.models[local_model],
                                                 self.state_dir / "models")
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
        log(f"train {name}: started ({record.example_count} examples, {record.total_steps} steps)")
        try:
            network, tokenizer = self.base(record.local_model)
            hp = record.hyperparameters
            started = time.time()

            def on_step(result: StepResult) -> bool:
                self.check_parent()
                split = (f" ({result.micro_batches} micro-batches of at most "
                         f"{self.max_batch_tokens} tokens)" if result.micro_batches > 1 else "")
                log(f"train {name}: step {result.step}/{record.total_steps} "
                    f"epoch {result.epoch} loss {result.loss:.4f}{split}")
                return self.store.record_step(record.id, record.operation_id, self.pid, Snapshot(
                    result.step, result.epoch, result.loss, time.time()))

            model = train(network, tokenizer, self.store.examples(record.id),
                          epochs=int(hp["epochCount"]), batch_size=int(hp["batchSize"]),
                          learning_rate=record.effective_lr,
                          max_batch_tokens=self.max_batch_tokens, on_step=on_step)
            if model is None:  # cancelled, deleted, or no longer this worker's job
                state = self.store.finish(record.id, record.operation_id, self.pid, error_code=1,
                                          error_message="Operation cancelled.")
                log(f"train {name}: " + ("cancelled" if state else "stopped: the job was deleted "
                                         "or is no longer this worker's"))
                return
            self.check_parent()
            partial = partial_dir(self.state_dir, record.id, record.operation_id, self.pid)
            try:
                save_partial(model, partial)
                state = self.store.finish(record.id, record.operation_id, self.pid,
                                          publish=lambda: publish(partial, self.state_dir,
                                                                  record.id, record.operation_id))
            finally:
                discard_partial(partial)  # gone already when published
            if state == ACTIVE:
                log(f"train {name}: ACTIVE after {time.time() - started:.1f}s")
            elif state is None:
                log(f"train {name}: trained, but the job was deleted or is no longer this "
                    "worker's (the service restarted meanwhile); its adapter is discarded")
            else:
                log(f"train {name}: cancelled after its last step")
        except Exception as exc:  # noqa: BLE001 - a bad job must not take the worker down
            traceback.print_exc(file=sys.stderr)
            self.store.finish(record.id, record.operation_id, self.pid, error_code=13,
                              error_message=f"Training failed: {type(exc).__name__}: {exc}")


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)


def worker_main(config: WorkerConfig, ready: Any) -> None:
    """Entry point of a training worker process; sets ``ready`` (an Event) once it is set up,
    so that the service can tell a worker that cannot start from one that died training."""
    import torch  # noqa: PLC0415

    from .models import ModelRegistry, quiet_libraries  # noqa: PLC0415

    quiet_libraries()
    # The parent handles Ctrl-C and then terminates its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(config.threads)
    registry = ModelRegistry.build(list(config.model_paths), list(config.alias_specs))
    worker = Worker(Path(config.state_dir), registry, max_batch_tokens=config.max_batch_tokens)
    ready.set()
    worker.run_forever()
