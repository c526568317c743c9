"""How many tokens one training pass may take (``max_batch_tokens``, the size of the micro-batches
trainer.py splits a batch into): measured on a GPU when the operator gave no
``--max-batch-tokens``, and a step that runs out of GPU memory run again in smaller passes.

Measured, not guessed: before a run's first step, ``FittedSteps`` runs a training pass (forward
and backward, every position scored: the most a pass of that size can cost) of the run's own LoRA
model at two sizes, reads ``torch.cuda.max_memory_allocated`` for each, fits the peak as a fixed
part plus a cost per token (``fit_cost``: the activations, logits and their gradients grow
linearly with the rows of a pass), and takes the largest token count whose predicted peak, with
the optimiser's state still to come, stays within ``SAFETY_FRACTION`` of the device's free
memory (``choose_tokens``), rounded down to a multiple of ``ROUNDING``, never below the default.
Rows are as long as the longest example the service takes (``min(context, default)``; the
service refuses longer ones at create), and attention grows faster than linearly with a row's
length, so shorter rows cost no more per token than the measured ones.

The measuring passes change nothing of the run: their gradients are zeroed, and the random
state they draw from (dropout, NEFTune's noise) is put back, so a measured run trains as one
that was not measured.

The free memory is read once per run. Another process (a second worker with
``--max-concurrent-jobs``, another program) may take some of it later; then a step can run out
of memory, and it is run again with the passes halved (``FittedSteps.__call__``): its partial
gradients are zeroed and its random state put back first, which is safe only until the optimiser
has begun to step, so an error from the optimiser's step is not retried.

On a CPU nothing is measured and the default stays: the memory there is the whole machine's,
shared with every other process and paged rather than refused, so there is neither a number to
read (torch keeps no peak of CPU allocations) nor an error to recover from; the default keeps a
worker near 7 GB (trainer.DEFAULT_MAX_BATCH_TOKENS).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .losses import collate, summed_loss
from .trainer import DEFAULT_MAX_BATCH_TOKENS, micro_batches

# The share of the free memory a run's predicted peak may take: the fit is of two passes, and
# the caching allocator's fragmentation takes some memory that no tensor holds.
SAFETY_FRACTION = 0.85
ROUNDING = 256  # tokens; a chosen size is a multiple of it
MEASURED_ROWS = (1, 2)  # rows of the two measuring passes

StepFunction = Callable[[Any, list[int]], tuple[float, int]]  # trainer._train_step's shape


@dataclass(frozen=True)
class Measurement:
    """One measuring pass: its tokens (rows × row length) and the peak of allocated memory."""

    tokens: int
    peak_bytes: int


@dataclass(frozen=True)
class Cost:
    """A training pass's peak memory as a line: ``fixed_bytes + bytes_per_token × tokens``."""

    fixed_bytes: float
    bytes_per_token: float

    def peak(self, tokens: int) -> float:
        return self.fixed_bytes + self.bytes_per_token * tokens


@dataclass(frozen=True)
class Choice:
    """The tokens a pass may take, and how that was arrived at, in words."""

    tokens: int
    how: str


class FitError(ValueError):
    """The measurements do not determine a cost per token."""


def fit_cost(measurements: Sequence[Measurement]) -> Cost:
    """The least-squares line through the measurements (two of them: the line through both).
    FitError without two different token counts."""
    if len({m.tokens for m in measurements}) < 2:
        raise FitError("a cost per token needs passes of two different sizes")
    n = len(measurements)
    mean_t = sum(m.tokens for m in measurements) / n
    mean_p = sum(m.peak_bytes for m in measurements) / n
    slope = (sum((m.tokens - mean_t) * (m.peak_bytes - mean_p) for m in measurements)
             / sum((m.tokens - mean_t) ** 2 for m in measurements))
    return Cost(mean_p - slope * mean_t, slope)


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def choose_tokens(measurements: Sequence[Measurement], *, free_bytes: int, in_use_bytes: int,
                  extra_bytes: int = 0, fraction: float = SAFETY_FRACTION,
                  floor: int = DEFAULT_MAX_BATCH_TOKENS) -> Choice:
    """The most tokens a pass may take: the largest multiple of ``ROUNDING`` whose predicted peak
    (``fit_cost``), plus ``extra_bytes`` still to be allocated (the optimiser's state), stays
    within ``in_use_bytes`` (what the run holds now, inside the measured peaks) and ``fraction``
    of ``free_bytes``; never below ``floor``."""
    cost = fit_cost(measurements)
    shown = " and ".join(f"{m.tokens:,} tokens peaked at {_gib(m.peak_bytes)}"
                         for m in measurements)
    if cost.bytes_per_token <= 0:  # the passes' own cost was lost in the fixed part
        return Choice(floor, f"passes of {shown}: no cost per token showed; the default stays")
    allowed = in_use_bytes + fraction * free_bytes - extra_bytes
    fits = math.floor((allowed - cost.fixed_bytes) / cost.bytes_per_token)
    rounded = fits // ROUNDING * ROUNDING
    how = (f"passes of {shown}: {cost.bytes_per_token / 2**20:.2f} MiB a token over "
           f"{_gib(cost.fixed_bytes)}; {_gib(free_bytes)} free")
    if rounded < floor:
        return Choice(floor, f"{how}: {max(fits, 0):,} tokens fit within {fraction:.0%} of it, "
                             f"fewer than the default {floor:,}, which stays (a step that runs "
                             "out of memory is run again in halves)")
    return Choice(rounded, f"{how}: predicted peak {_gib(cost.peak(rounded) + extra_bytes)}, "
                           f"within {fraction:.0%} of it")


def halved(tokens: int, lengths: Sequence[int]) -> int | None:
    """The pass size after running out of memory with ``tokens``: half of it; None when halving
    cannot make the passes of a batch of rows of ``lengths`` any smaller (each row is already a
    pass of its own)."""
    if len(micro_batches(list(lengths), tokens)) == len(lengths):
        return None
    return max(tokens // 2, 1)


def measures(device: str, given: int | None) -> bool:
    """Whether the pass size is measured: on a CUDA device, unless the operator gave one."""
    return given is None and device.startswith("cuda")


class DeviceMemory(Protocol):
    """What the measuring reads of a device's memory (``CudaMemory``)."""

    def reset_peak(self) -> None: ...
    def peak(self) -> int: ...  # the most allocated since reset_peak
    def release_cache(self) -> None: ...  # what the allocator holds unused, given back
    def free(self) -> int: ...
    def in_use(self) -> int: ...


class CudaMemory:
    """A CUDA device's memory as torch.cuda counts it."""

    def __init__(self, device: str) -> None:
        import torch  # noqa: PLC0415

        self.torch, self.device = torch, torch.device(device)

    def reset_peak(self) -> None:
        self.torch.cuda.synchronize(self.device)
        self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        self.torch.cuda.synchronize(self.device)
        return int(self.torch.cuda.max_memory_allocated(self.device))

    def release_cache(self) -> None:
        self.torch.cuda.empty_cache()

    def free(self) -> int:
        return int(self.torch.cuda.mem_get_info(self.device)[0])

    def in_use(self) -> int:
        return int(self.torch.cuda.memory_allocated(self.device))


def _measure(run: Any, row_tokens: int, memory: DeviceMemory) -> list[Measurement]:
    """Two training passes of the run's model (``MEASURED_ROWS`` rows of ``row_tokens``), their
    peaks; gradients zeroed and random state put back after."""
    import torch  # noqa: PLC0415

    noise = run.noise.get_state()
    devices = [torch.device(run.device)] if run.device.startswith("cuda") else []
    found = []
    try:
        with torch.random.fork_rng(devices=devices):
            for rows in MEASURED_ROWS:
                ids = [run.pad_id] * row_tokens
                batch = collate([(ids, ids)] * rows, run.pad_id, run.device)
                memory.reset_peak()
                with run.autocast:
                    loss = summed_loss(run.model, batch, run.recipe.label_smoothing)
                loss.backward()
                found.append(Measurement(rows * row_tokens, memory.peak()))
                del loss, batch
                run.optimizer.zero_grad(set_to_none=True)
    finally:
        run.optimizer.zero_grad(set_to_none=True)
        run.noise.set_state(noise)
    return found


def _optimizer_state_bytes(run: Any) -> int:
    """What AdamW allocates at its first step (two moments per trainable weight), when it has
    not yet: the measuring passes come before it."""
    if run.optimizer.state:
        return 0
    return 2 * sum(p.numel() * p.element_size() for p in run.params.values())


class FittedSteps:
    """trainer.train's ``step_wrapper``: each step is the trainer's own, with the pass size
    measured before the first (``measures``) and halved when a step runs out of GPU memory.
    ``tokens`` is the pass size in force; ``say`` hears what was chosen and why."""

    def __init__(self, device: str, given: int | None, say: Callable[[str], None],
                 memory: DeviceMemory | None = None) -> None:
        self.device = device
        self.measuring = given is None and (memory is not None or measures(device, given))
        self.memory = memory or (CudaMemory(device) if self.measuring else None)
        self.tokens = DEFAULT_MAX_BATCH_TOKENS if given is None else given
        self.say = say
        self._optimizer: Any = None  # the one whose steps are watched
        self._stepping = False  # whether the optimiser began this step

    def wrap(self, step: StepFunction) -> StepFunction:
        def fitted(run: Any, indices: list[int]) -> tuple[float, int]:
            self._watch(run.optimizer)
            if self.measuring:
                self.measuring = False
                self._fit(run)
            run.max_batch_tokens = self.tokens
            return self._step(step, run, indices)

        return fitted

    def _watch(self, optimizer: Any) -> None:
        if optimizer is not self._optimizer:
            self._optimizer = optimizer

            def began(*_: Any) -> None:
                self._stepping = True

            optimizer.register_step_pre_hook(began)

    def _fit(self, run: Any) -> None:
        import torch  # noqa: PLC0415

        memory = self.memory
        assert memory is not None  # measuring
        config = run.model.get_base_model().config
        row_tokens = min(int(getattr(config, "max_position_embeddings", self.tokens)),
                         DEFAULT_MAX_BATCH_TOKENS)
        measured: list[Measurement] | None = None
        try:
            measured = _measure(run, row_tokens, memory)
        except torch.cuda.OutOfMemoryError:
            pass  # said below, once the failed pass's tensors are freed with its traceback
        memory.release_cache()  # what the passes cached is free for the run
        if measured is None:
            self.say(f"micro-batches of at most {self.tokens:,} tokens (the default): measuring "
                     f"passes of {row_tokens:,} and {2 * row_tokens:,} tokens ran out of memory "
                     f"on {self.device}")
            return
        choice = choose_tokens(measured, free_bytes=memory.free(), in_use_bytes=memory.in_use(),
                               extra_bytes=_optimizer_state_bytes(run))
        self.tokens = choice.tokens
        self.say(f"micro-batches of at most {choice.tokens:,} tokens, measured on {self.device}: "
                 f"{choice.how}")

    def _step(self, step: StepFunction, run: Any, indices: list[int]) -> tuple[float, int]:
        """``step``, run again with halved passes while it runs out of memory before the
        optimiser began to step."""
        import torch  # noqa: PLC0415

        while True:
            self._stepping = False
            randomness = _random_state(run)
            try:
                return step(run, indices)
            except torch.cuda.OutOfMemoryError:
                if self._stepping:  # weights may be half updated: nothing to retry from
                    raise
                smaller = halved(self.tokens, [len(run.encoded[i][0]) for i in indices])
                if smaller is None:
                    raise
            # Out of the except clause the failed pass's tensors, which its traceback held, are
            # freed, and what they took can be given back.
            run.optimizer.zero_grad(set_to_none=True)  # this step's partial gradients
            _restore(run, randomness)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self.say(f"{self.device} ran out of memory in passes of at most {self.tokens:,} "
                     f"tokens; the step's gradients were zeroed and it runs again in passes of "
                     f"at most {smaller:,}")
            self.tokens = run.max_batch_tokens = smaller


def _random_state(run: Any) -> tuple[Any, Any, Any]:
    """The random state a step draws from: torch's (dropout), the device's, NEFTune's."""
    import torch  # noqa: PLC0415

    cuda = (torch.cuda.get_rng_state(torch.device(run.device))
            if run.device.startswith("cuda") else None)
    return torch.get_rng_state(), cuda, run.noise.get_state()


def _restore(run: Any, state: tuple[Any, Any, Any]) -> None:
    import torch  # noqa: PLC0415

    cpu, cuda, noise = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, torch.device(run.device))
    run.noise.set_state(noise)
