"""What a batch costs: rows padded into a batch (``collate``), the cross-entropy summed over
its target tokens (``summed_loss``, what training steps on), and the mean per target token over
the validation examples (``mean_loss``, what early stopping compares), and how a batch too
large for one pass is split (``micro_batches``).

A prompt's tokens are context, never targets (``chat.IGNORE_INDEX`` labels): the loss is on the
answer.
"""

from __future__ import annotations

from typing import Any

from .chat import IGNORE_INDEX


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


def target_count(labels: list[int]) -> int:
    """Tokens a row is scored on: each label after the first predicts from what precedes it."""
    return sum(1 for label in labels[1:] if label != IGNORE_INDEX)


def _heads(model: Any) -> tuple[Any, Any] | None:
    """(the transformer body, the output layer) of a causal LM, PEFT-wrapped or not; None when
    the model does not expose them (then the whole model runs)."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        body, head = causal.get_decoder(), causal.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if body is None or head is None or getattr(causal, "_jobspec_no_split", False):
        return None
    return body, head


def summed_loss(model: Any, batch: dict[str, Any], label_smoothing: float = 0.0) -> Any:
    """Cross-entropy summed over the batch's target tokens (each predicted from the tokens
    before it). Summed, not averaged, so micro-batches can be weighted by their share.

    Only the positions that are scored go through the output layer: for SmolLM2 that layer is
    576 × 49,152, about a fifth of the model's work per token, and a prompt's tokens need none
    of it (the loss is on the answer). The loss is the same as from the whole model's logits.
    """
    import torch  # noqa: PLC0415

    # Shift the labels, not the logits: each position predicts the next token.
    targets = torch.nn.functional.pad(batch["labels"], (0, 1), value=IGNORE_INDEX)[:, 1:]
    heads = _heads(model)
    if heads is None:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits
        return torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
            ignore_index=IGNORE_INDEX, reduction="sum", label_smoothing=label_smoothing)
    body, head = heads
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  use_cache=False).last_hidden_state
    scored = targets != IGNORE_INDEX
    logits = head(hidden[scored])
    return torch.nn.functional.cross_entropy(logits.float(), targets[scored], reduction="sum",
                                             label_smoothing=label_smoothing)


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


def mean_loss(model: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int, device: str,
              max_batch_tokens: int, autocast: Any) -> float:
    """Mean cross-entropy per target token over ``encoded`` (the validation examples)."""
    total, count = validation_sums(model, encoded, pad_id, device, max_batch_tokens, autocast)
    return total / max(count, 1)


def validation_sums(model: Any, encoded: list[tuple[list[int], list[int]]], pad_id: int,
                    device: str, max_batch_tokens: int, autocast: Any) -> tuple[float, int]:
    """(cross-entropy summed over the target tokens of ``encoded``, how many there are): the
    parts of a mean that data-parallel ranks add up across their shares."""
    import torch  # noqa: PLC0415

    groups: list[list[int]] = []
    for index in sorted(range(len(encoded)), key=lambda i: len(encoded[i][0])):
        # Shortest first, so a group's last row is its longest: little padding.
        if groups and (len(groups[-1]) + 1) * len(encoded[index][0]) <= max_batch_tokens:
            groups[-1].append(index)
        else:
            groups.append([index])
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for group in groups:
            rows = [encoded[i] for i in group]
            with autocast:
                total += float(summed_loss(model, collate(rows, pad_id, device)))
            count += sum(target_count(labels) for _, labels in rows)
    if was_training:
        model.train()
    return total, count
