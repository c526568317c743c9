"""Data-parallel training: one job's every global batch split across ``world`` processes
(torch DDP), each training rows ``rank, rank + world, ...`` of it, so that a step is the step one
process would take on the whole batch, up to float rounding.

Every rank holds all the examples and the same batch plan (trainer.batches), so every rank can
count the target tokens of the whole global batch: each micro-batch's summed loss is divided by
that count, as in one process. DDP averages the ranks' gradients; the loss is multiplied by
``world`` so that the average is the sum, the one process's gradient. The reported loss is each
rank's share all-reduced (summed): the global batch's mean loss. Validation examples are split
the same way and their summed loss and target count all-reduced, so every rank gets the same
validation loss and early stopping decides alike on every rank.

DDP's collectives run in the backward pass of the last micro-batch (the others accumulate locally
under ``no_sync``), and every rank must run as many backward passes per step as the others, or
they wait on each other forever. So each rank works out every rank's micro-batches (the same
arithmetic everywhere) and runs as many passes as the rank with the most; a rank with fewer (or
no rows at all: a last batch smaller than the world) runs zero-weighted passes (loss × 0) on the
batch's shortest row.

What differs from one process beyond rounding: noise drawn while training (NEFTune's, LoRA
dropout's) is drawn per rank, for its rows, so it is not the noise one process would draw. The
recipe (recipe.py) has both off.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .losses import collate, micro_batches, summed_loss, validation_sums

Encoded = tuple[list[int], list[int]]


@dataclass(frozen=True)
class Shard:
    """This process's place among the data-parallel processes of one run."""

    rank: int
    world: int

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"a shard is rank 0 to world - 1 of a world of at least 1, got "
                             f"rank {self.rank} of {self.world}")

    def rows(self, count: int) -> list[int]:
        """Positions (of ``count``) this rank trains on."""
        return list(range(self.rank, count, self.world))


def passes_per_rank(lengths: Sequence[int], world: int, max_tokens: int) -> list[list[list[int]]]:
    """For every rank, its micro-batches as positions in the global batch whose rows are
    ``lengths`` tokens long (the same answer on every rank)."""
    plan = []
    for rank in range(world):
        mine = Shard(rank, world).rows(len(lengths))
        groups = micro_batches([lengths[i] for i in mine], max_tokens) if mine else []
        plan.append([[mine[position] for position in group] for group in groups])
    return plan


def wrap(model: Any, device: str, label_smoothing: float) -> Any:
    """The PEFT ``model`` behind torch DDP, as a module whose forward is the summed loss of a
    collated batch (so every forward goes through DDP, which is what arms its gradient
    all-reduce). The adapter's weights are broadcast from rank 0 so every rank starts alike; the
    frozen base is every rank's own copy of the same files, so DDP need not send it."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    class SummedLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, batch: dict[str, Any]) -> Any:
            return summed_loss(self.model, batch, label_smoothing)

    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                dist.broadcast(parameter.data, src=0)
    device_ids = [torch.device(device).index or 0] if device.startswith("cuda") else None
    ddp = torch.nn.parallel.DistributedDataParallel
    # Buffers (rotary tables) are the same on every rank: no need to send them each forward
    # (torch 2.13 renamed the switch; init_sync=False already skips the start-up broadcast).
    no_buffer_sync = ({"forward_sync_buffers": False}
                      if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters
                      else {"broadcast_buffers": False})
    return ddp(SummedLoss(), device_ids=device_ids, init_sync=False, **no_buffer_sync)


def sharded_step(parallel: Any, shard: Shard, rows: list[Encoded], targets: int,
                 max_tokens: int, pad_id: int, device: str, autocast: Any) -> tuple[float, int]:
    """This rank's part of one optimiser step's gradients on the global batch ``rows``
    (``targets`` target tokens in all); (the global batch's mean loss, passes each rank ran).
    The optimiser step itself is the caller's, after this."""
    import contextlib  # noqa: PLC0415

    plan = passes_per_rank([len(ids) for ids, _ in rows], shard.world, max_tokens)
    mine = plan[shard.rank]
    count = max(len(groups) for groups in plan)
    filler = min(range(len(rows)), key=lambda i: len(rows[i][0]))
    total = 0.0
    for index in range(count):
        real = index < len(mine)
        group = mine[index] if real else [filler]
        batch = collate([rows[i] for i in group], pad_id, device)
        # Gradients add up locally; DDP all-reduces them in the last pass's backward.
        sync = index == count - 1
        with contextlib.nullcontext() if sync else parallel.no_sync():
            with autocast:
                loss = parallel(batch) / max(targets, 1)
            (loss * shard.world if real else loss * 0.0).backward()
        if real:
            total += float(loss.detach())
    return all_reduce_sum([total], device)[0], count


def sharded_validation(model: Any, held_out: list[Encoded], shard: Shard, pad_id: int,
                       device: str, max_tokens: int, autocast: Any) -> float:
    """Mean loss per target token over all ``held_out``, each rank measuring its share: the
    same value on every rank."""
    total, count = validation_sums(model, [held_out[i] for i in shard.rows(len(held_out))],
                                   pad_id, device, max_tokens, autocast)
    total, count = all_reduce_sum([total, float(count)], device)
    return total / max(count, 1.0)


def all_reduce_sum(values: list[float], device: str) -> list[float]:
    """``values`` summed over the ranks (in float64), the same on every rank."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(value) for value in tensor.tolist()]


def from_rank0(value: float, device: str) -> float:
    """Rank 0's ``value`` on every rank (a clock reading, say, that each rank reads apart)."""
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value`` (picklable), in rank order, on every rank."""
    import torch.distributed as dist  # noqa: PLC0415

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered
