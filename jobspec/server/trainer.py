"""LoRA fine-tuning of one job: batches, the training loop, the adapter it produces.

Steps are counted the way the Gemini API counts them: the examples, reshuffled each epoch, form
one stream that is cut into batches, so there are ceil(examples × epochs ÷ batch size) steps and
a batch may straddle two epochs. Shuffling uses a fixed seed: the same job trains the same way.

Memory grows with a batch's padded size (rows × its longest row), so a batch larger than
``max_batch_tokens`` is run as several micro-batches whose gradients add up before the one
optimiser step. Each micro-batch's loss is a sum over its target tokens divided by the target
tokens of the whole batch, so the gradient, the step and the reported loss (the mean over all
target tokens of the batch) are those of the unsplit batch, up to float rounding.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .chat import IGNORE_INDEX, encode_example

# What was seen to work for SmolLM2-135M on two CPU cores: r=8, alpha=16 on every linear layer.
LORA_RANK = 8
LORA_ALPHA = 16
SEED = 0
# Tokens (rows × longest row) in one forward pass. Training SmolLM2-135M on a CPU takes about
# 1.5 GB plus 2.8 MB per token of the pass (measured: 2,048 tokens peak at 7.0 GB, 4,096 at
# 12.7 GB), so this keeps a worker near 7 GB: within a developer's laptop.
DEFAULT_MAX_BATCH_TOKENS = 2048


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


def micro_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Positions of a batch's rows, grouped so that each group's padded size (rows × longest
    row) is at most ``max_tokens``; a row longer than that is a group of its own. A batch that
    fits stays one group, in order; one that does not is packed longest first, which wastes the
    least padding."""
    if len(lengths) * max(lengths) <= max_tokens:
        return [list(range(len(lengths)))]
    groups: list[list[int]] = []
    for position in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        # Longest first: a group's first row is its longest, so its padded size is known.
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= max_tokens:
            groups[-1].append(position)
        else:
            groups.append([position])
    return groups


def target_count(labels: list[int]) -> int:
    """Tokens a row is scored on: each label after the first predicts from what precedes it."""
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


def summed_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Cross-entropy summed over the batch's target tokens (each predicted from the tokens
    before it). Summed, not averaged, so micro-batches can be weighted by their share."""
    import torch  # noqa: PLC0415

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Shift the labels, not the logits: slicing the logits would copy the largest tensor.
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum")


@dataclass(frozen=True)
class StepResult:
    step: int
    epoch: int
    loss: float
    micro_batches: int = 1  # how many passes the batch took under max_batch_tokens


def train(base: Any, tokenizer: Any, examples: list[tuple[str, str]], *, epochs: int,
          batch_size: int, learning_rate: float,
          max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
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
        rows = [encoded[i] for i in indices]
        targets = sum(target_count(labels) for _, labels in rows)
        groups = micro_batches([len(ids) for ids, _ in rows], max_batch_tokens)
        total = 0.0
        for group in groups:
            batch = collate([rows[i] for i in group], pad_id, str(device))
            loss = summed_loss(model, batch) / max(targets, 1)
            loss.backward()  # gradients add up across the micro-batches of this step
            total += float(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not on_step(StepResult(step, epoch, total, len(groups))):
            return None
    model.eval()
    return model
