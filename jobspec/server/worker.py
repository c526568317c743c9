"""The training worker process: takes queued tuning jobs from the store, one after another,
trains each (``trainer.train``) and saves its adapter."""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .adapters import remove_adapter, save_adapter
from .store import Snapshot, Store, TunedModelRecord
from .trainer import StepResult, train

POLL_SECONDS = 0.2


class Worker:
    """Takes CREATING jobs from the store, one at a time, and trains them."""

    def __init__(self, state_dir: Path, registry: Any) -> None:
        self.state_dir = state_dir
        self.store = Store(state_dir / "state.db")
        self.registry = registry
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
            record = self.store.claim_next(os.getpid())
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
                log(f"train {name}: step {result.step}/{record.total_steps} "
                    f"epoch {result.epoch} loss {result.loss:.4f}")
                return self.store.record_step(record.id, record.operation_id, Snapshot(
                    result.step, result.epoch, result.loss, time.time()))

            model = train(network, tokenizer, self.store.examples(record.id),
                          epochs=int(hp["epochCount"]), batch_size=int(hp["batchSize"]),
                          learning_rate=record.effective_lr, on_step=on_step)
            if model is None:
                log(f"train {name}: cancelled")
                self.store.finish(record.id, record.operation_id, error_code=1,
                                  error_message="Operation cancelled.")
                return
            save_adapter(model, self.state_dir, record.id)
            if not self.store.finish(record.id, record.operation_id):
                remove_adapter(self.state_dir, record.id)  # deleted while we saved it
                return
            log(f"train {name}: ACTIVE after {time.time() - started:.1f}s")
        except Exception as exc:  # noqa: BLE001 - a bad job must not take the worker down
            traceback.print_exc(file=sys.stderr)
            self.store.finish(record.id, record.operation_id, error_code=13,
                              error_message=f"Training failed: {type(exc).__name__}: {exc}")


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)


def worker_main(state_dir: str, model_paths: list[str], alias_specs: list[str],
                threads: int) -> None:
    """Entry point of a training worker process."""
    import torch  # noqa: PLC0415

    from .models import ModelRegistry, quiet_libraries  # noqa: PLC0415

    quiet_libraries()
    # The parent handles Ctrl-C and then terminates its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    Worker(Path(state_dir), ModelRegistry.build(model_paths, alias_specs)).run_forever()
