"""LoRA fine-tuning, and the worker process that runs queued tuning jobs one after another.

Steps are counted the way the Gemini API counts them: the examples, reshuffled each epoch, form
one stream that is cut into batches, so there are ceil(examples × epochs ÷ batch size) steps and
a batch may straddle two epochs. Shuffling uses a fixed seed: the same job trains the same way.
"""

from __future__ import annotations

import copy
import math
import os
import random
import shutil
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chat import IGNORE_INDEX, encode_example
from .store import Snapshot, Store, TunedModelRecord

# What was seen to work for SmolLM2-135M on two CPU cores: r=8, alpha=16 on every linear layer.
LORA_RANK = 8
LORA_ALPHA = 16
SEED = 0
POLL_SECONDS = 0.2


def total_steps(example_count: int, epochs: int, batch_size: int) -> int:
    return math.ceil(example_count * epochs / batch_size)


def batches(example_count: int, epochs: int, batch_size: int,
            seed: int = SEED) -> Iterator[tuple[int, list[int]]]:
    """(epoch, example indices) per step; epoch is 1-based, that of the batch's last example."""
    batch: list[int] = []
    for epoch in range(1, epochs + 1):
        order = list(range(example_count))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        for index in order:
            batch.append(index)
            if len(batch) == batch_size:
                yield epoch, batch
                batch = []
    if batch:
        yield epochs, batch


def collate(encoded: list[tuple[list[int], list[int]]], pad_id: int, device: str) -> dict[str, Any]:
    """Right-pad a batch. Padding is masked by the attention mask and IGNORE_INDEX labels, never
    by the pad id: SmolLM2's pad token is its end-of-turn token, which must stay a target."""
    import torch  # noqa: PLC0415

    width = max(len(ids) for ids, _ in encoded)
    input_ids, labels, mask = [], [], []
    for ids, targets in encoded:
        padding = width - len(ids)
        input_ids.append(ids + [pad_id] * padding)
        labels.append(targets + [IGNORE_INDEX] * padding)
        mask.append([1] * len(ids) + [0] * padding)
    return {name: torch.tensor(value, device=device) for name, value in
            (("input_ids", input_ids), ("labels", labels), ("attention_mask", mask))}


def lora_model(base: Any) -> Any:
    import torch  # noqa: PLC0415
    from peft import LoraConfig, get_peft_model  # noqa: PLC0415

    torch.manual_seed(SEED)
    config = LoraConfig(r=LORA_RANK, lora_alpha=LORA_ALPHA, lora_dropout=0.0,
                        target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(copy.deepcopy(base), config)


@dataclass(frozen=True)
class StepResult:
    step: int
    epoch: int
    loss: float


def train(base: Any, tokenizer: Any, examples: list[tuple[str, str]], *, epochs: int,
          batch_size: int, learning_rate: float,
          on_step: Callable[[StepResult], bool]) -> Any | None:
    """Train a LoRA adapter; return the PEFT model, or None when on_step asked to stop."""
    import torch  # noqa: PLC0415

    model = lora_model(base)
    model.train()
    device = next(model.parameters()).device
    encoded = [encode_example(tokenizer, text_input, output) for text_input, output in examples]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    for step, (epoch, indices) in enumerate(batches(len(encoded), epochs, batch_size), start=1):
        batch = collate([encoded[i] for i in indices], pad_id, str(device))
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not on_step(StepResult(step, epoch, float(loss.detach()))):
            return None
    model.eval()
    return model


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
