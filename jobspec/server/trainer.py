"""LoRA fine-tuning of one job: batches, the training loop, the adapter it produces.

Steps are counted the way the Gemini API counts them: the examples, reshuffled each epoch, form
one stream that is cut into batches, so there are ceil(examples × epochs ÷ batch size) steps and
a batch may straddle two epochs. Shuffling uses a fixed seed: the same job trains the same way.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .chat import IGNORE_INDEX, encode_example

# What was seen to work for SmolLM2-135M on two CPU cores: r=8, alpha=16 on every linear layer.
LORA_RANK = 8
LORA_ALPHA = 16
SEED = 0


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
