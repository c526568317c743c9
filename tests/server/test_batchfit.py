"""The pass size of training fitted to the device (jobspec/server/batchfit.py).

No GPU can be had here, so the measuring is checked in two parts: the arithmetic as pure
functions, from recorded measurements to the choice, and the retry of a step that ran out of
memory, on the tiny model of SmolLM2's shape (tests/conftest.py) trained on the CPU, with
``FakeSmallGpu`` raising torch.cuda.OutOfMemoryError as CUDA's allocator does.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from jobspec.server.batchfit import (ROUNDING, FitError, FittedSteps, Measurement, choose_tokens,
                                     fit_cost, halved, measures)
from jobspec.server.models import ModelRegistry, load_base
from jobspec.server.recipe import RECIPE
from jobspec.server.trainer import DEFAULT_MAX_BATCH_TOKENS, micro_batches, train
from tests.conftest import NUMBER_EXAMPLES

GIB, MIB = 2**30, 2**20

# Peaks of a model whose passes cost 1 GiB plus 1 MiB a token, as two passes would record them.
RECORDED = [Measurement(2048, 3 * GIB), Measurement(4096, 5 * GIB)]


# The arithmetic: recorded measurements to the choice.

def test_the_cost_is_the_line_through_the_measured_peaks():
    cost = fit_cost(RECORDED)
    assert (cost.fixed_bytes, cost.bytes_per_token) == (1 * GIB, 1 * MIB)
    assert cost.peak(10_240) == 11 * GIB
    # More passes: the least-squares line (these three lie on one line, plus and minus noise).
    noisy = [Measurement(1024, 2 * GIB + 4 * MIB), Measurement(2048, 3 * GIB - 8 * MIB),
             Measurement(4096, 5 * GIB + 4 * MIB)]
    fitted = fit_cost(noisy)
    assert abs(fitted.bytes_per_token - MIB) < 0.01 * MIB
    assert abs(fitted.fixed_bytes - GIB) < 0.01 * GIB


def test_passes_of_one_size_determine_no_cost_per_token():
    with pytest.raises(FitError, match="two different sizes"):
        fit_cost([Measurement(2048, 3 * GIB), Measurement(2048, 3 * GIB + MIB)])


def test_the_most_tokens_whose_predicted_peak_fits_the_free_memory_is_chosen():
    # 1 GiB in use (inside the peaks) + 85% of 40 GiB free = 35 GiB for the peak: 34 GiB above
    # the fixed 1 GiB at 1 MiB a token is 34,816 tokens, a multiple of 256.
    choice = choose_tokens(RECORDED, free_bytes=40 * GIB, in_use_bytes=1 * GIB)
    assert choice.tokens == 34_816
    assert choice.how == ("passes of 2,048 tokens peaked at 3.00 GiB and 4,096 tokens peaked at "
                          "5.00 GiB: 1.00 MiB a token over 1.00 GiB; 40.00 GiB free: predicted "
                          "peak 35.00 GiB, within 85% of it")
    # The optimiser's state, still to come, takes its share first; then rounded down to 256.
    with_state = choose_tokens(RECORDED, free_bytes=40 * GIB, in_use_bytes=1 * GIB,
                               extra_bytes=int(0.3 * GIB))
    assert with_state.tokens == 34_304 == (34_816 - 307) // ROUNDING * ROUNDING
    assert choose_tokens(RECORDED, free_bytes=40 * GIB, in_use_bytes=1 * GIB,
                         fraction=0.5).tokens == 20_480


def test_never_below_the_default_even_where_less_fits():
    choice = choose_tokens(RECORDED, free_bytes=2 * GIB, in_use_bytes=1 * GIB)
    assert choice.tokens == DEFAULT_MAX_BATCH_TOKENS
    assert choice.how.endswith("1,740 tokens fit within 85% of it, fewer than the default "
                               "2,048, which stays (a step that runs out of memory is run again "
                               "in halves)")
    flat = [Measurement(2048, 3 * GIB), Measurement(4096, 3 * GIB)]
    assert choose_tokens(flat, free_bytes=40 * GIB, in_use_bytes=GIB).tokens == 2048
    assert "no cost per token showed; the default stays" in choose_tokens(
        flat, free_bytes=40 * GIB, in_use_bytes=GIB).how


def test_only_a_cuda_device_without_a_size_given_is_measured():
    assert measures("cuda:0", None)
    assert not measures("cuda:0", 4096)  # the operator's --max-batch-tokens stands
    assert not measures("cpu", None)  # the whole machine's memory: nothing to read
    fitted = FittedSteps("cpu", None, print)
    assert (fitted.measuring, fitted.tokens) == (False, DEFAULT_MAX_BATCH_TOKENS)


def test_halving_stops_where_every_row_is_a_pass_of_its_own():
    assert halved(4096, [40, 50, 45]) == 2048
    assert halved(100, [40, 50, 45]) == 50  # rows of 50 and 45 can still share a pass
    assert halved(89, [40, 50, 45]) is None  # 2 × 45 > 89: one row a pass already


# The retry, on a GPU that cannot be had here.

class FakeSmallGpu:
    """Stands for a GPU that cannot be had here: a training pass (gradients on) of more than
    ``capacity`` tokens (rows × padded length) raises torch.cuda.OutOfMemoryError, as CUDA's
    allocator does, before the pass computes anything; so do the passes numbered in
    ``taken_at`` (1-based, counting training passes), once each: memory another process took
    meanwhile. Installed as a forward pre-hook on the model's input embeddings."""

    def __init__(self, network, capacity: int = 10**9, taken_at: tuple[int, ...] = ()) -> None:
        self.capacity, self.taken_at = capacity, set(taken_at)
        self.passes = 0
        self.refused: list[int] = []  # the tokens of each pass refused
        self.largest = 0  # the tokens of the largest pass since FakeGpuMemory.reset_peak
        # A function, not a bound method: the trainer's deep copy of the model then shares it.
        self.handle = network.get_input_embeddings().register_forward_pre_hook(
            lambda module, inputs: self.allocate(module, inputs))

    def allocate(self, module, inputs) -> None:
        if not torch.is_grad_enabled():
            return  # validation: no gradients, not counted
        self.passes += 1
        tokens = inputs[0].numel()
        self.largest = max(self.largest, tokens)
        if tokens > self.capacity or self.passes in self.taken_at:
            self.taken_at.discard(self.passes)
            self.refused.append(tokens)
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {tokens} tokens' worth (fake)")

    def remove(self) -> None:
        self.handle.remove()


class FakeGpuMemory:
    """Stands for the memory counters of a GPU that cannot be had here: the peak since
    ``reset_peak`` is 1 GiB plus 1 MiB a token of the largest pass ``gpu`` saw; 1 GiB in use,
    40 GiB free."""

    def __init__(self, gpu: FakeSmallGpu) -> None:
        self.gpu = gpu
        self.released = 0

    def reset_peak(self) -> None:
        self.gpu.largest = 0

    def peak(self) -> int:
        return GIB + MIB * self.gpu.largest

    def release_cache(self) -> None:
        self.released += 1

    def free(self) -> int:
        return 40 * GIB

    def in_use(self) -> int:
        return GIB


@pytest.fixture(scope="module")
def tiny(tiny_model, tmp_path_factory):
    registry = ModelRegistry.build([str(tiny_model)], [])
    return load_base(registry.models["tiny-smollm2"], tmp_path_factory.mktemp("models"))


def train_tiny(tiny, max_batch_tokens: int, fitted: FittedSteps | None = None,
               recipe=RECIPE):
    """8 steps of 4 examples (2 epochs: rows of 33 to 51 tokens); each step's loss and
    micro-batches, and the adapter."""
    network, tokenizer = tiny
    steps = []

    def on_step(step):
        steps.append((step.loss, step.micro_batches))
        return True

    result = train(network, tokenizer, NUMBER_EXAMPLES, epochs=2, batch_size=4,
                   learning_rate=1e-2, max_batch_tokens=max_batch_tokens, on_step=on_step,
                   recipe=recipe, step_wrapper=fitted.wrap if fitted else None)
    weights = {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}
    return steps, weights


def same_weights(one: dict, other: dict) -> bool:
    return one.keys() == other.keys() and all(torch.equal(one[n], other[n]) for n in one)


@pytest.mark.timeout(120)
def test_a_step_that_runs_out_of_memory_is_run_again_in_halved_passes(tiny):
    network, _ = tiny
    said: list[str] = []
    # The first step's 4 rows (144 tokens padded) fit no pass of 130 tokens; at 128 tokens every
    # step's passes (at most 123) fit.
    gpu = FakeSmallGpu(network, capacity=130)
    try:
        fitted = FittedSteps("cpu", 4096, said.append)
        steps, weights = train_tiny(tiny, 4096, fitted)
    finally:
        gpu.remove()
    halvings = [4096, 2048, 1024, 512, 256, 128]
    assert said == [f"cpu ran out of memory in passes of at most {before:,} tokens; the step's "
                    f"gradients were zeroed and it runs again in passes of at most {after:,}"
                    for before, after in zip(halvings, halvings[1:])]
    assert fitted.tokens == 128
    assert gpu.refused == [144] * 5  # step 1 at 4,096 down to 256: one pass of its 4 rows
    assert len(steps) == 8 and steps[0][1] == 2  # step 1 at 128 tokens: 3 rows, then 1
    # The same training as a run given that size from the start, bit for bit.
    reference, reference_weights = train_tiny(tiny, 128)
    assert steps == reference
    assert same_weights(weights, reference_weights)


@pytest.mark.timeout(120)
def test_a_step_cut_short_after_some_of_its_gradients_trains_as_one_cut_short_before(tiny):
    """Out of memory at a step's second pass (its first pass's gradients and random draws are
    in) or at its first: both are zeroed and put back, so the two runs are the same, bit for
    bit; with dropout and NEFTune noise, which draw random numbers every pass."""
    network, _ = tiny
    noisy = dataclasses.replace(RECIPE, dropout=0.1, neftune=5.0)
    runs = []
    for taken_at in (2, 1):  # at 80 tokens the first step is 2 passes: rows 36+33, 33+33
        gpu = FakeSmallGpu(network, taken_at=(taken_at,))
        said: list[str] = []
        try:
            steps, weights = train_tiny(tiny, 80, FittedSteps("cpu", 80, said.append), noisy)
        finally:
            gpu.remove()
        assert said == ["cpu ran out of memory in passes of at most 80 tokens; the step's "
                        "gradients were zeroed and it runs again in passes of at most 40"]
        assert gpu.passes == taken_at + 30  # the refused one last, then 30 of one row each
        runs.append((steps, weights))
    (first, first_weights), (second, second_weights) = runs
    assert first == second and same_weights(first_weights, second_weights)
    assert [passes for _, passes in first] == [4] * 7 + [2]  # 40 tokens: one row a pass


def test_an_error_once_the_optimiser_began_to_step_is_not_retried():
    """Weights may then be half updated: there is nothing safe to run again from."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([weight], lr=0.1)
    run = SimpleNamespace(optimizer=optimizer, max_batch_tokens=4096, device="cpu",
                          noise=torch.Generator(), encoded=[([1] * 10, [1] * 10)] * 4)
    tries = []

    def step(run, indices):
        tries.append(run.max_batch_tokens)
        weight.sum().backward()
        optimizer.step()
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake, in the optimiser's step)")

    said: list[str] = []
    with pytest.raises(torch.cuda.OutOfMemoryError):
        FittedSteps("cpu", 4096, said.append).wrap(step)(run, [0, 1, 2, 3])
    assert tries == [4096] and said == []


def test_an_error_with_every_row_a_pass_of_its_own_is_not_retried():
    run = SimpleNamespace(optimizer=torch.optim.AdamW([torch.nn.Parameter(torch.ones(1))]),
                          max_batch_tokens=16, device="cpu", noise=torch.Generator(),
                          encoded=[([1] * 10, [1] * 10)] * 4)
    tries = []

    def step(run, indices):
        tries.append(run.max_batch_tokens)
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        FittedSteps("cpu", 16, print).wrap(step)(run, [0, 1, 2, 3])
    assert tries == [16]
    assert len(micro_batches([10] * 4, 16)) == 4


@pytest.mark.timeout(120)
def test_the_measured_size_is_chosen_before_the_first_step_and_changes_nothing_else(tiny):
    """Two measuring passes (1 and 2 rows of the tiny model's 512-token context, every position
    scored), the choice logged, and then the same training, bit for bit, as a run given that
    size: the passes' gradients are zeroed and their random draws (dropout, NEFTune) put back."""
    network, _ = tiny
    noisy = dataclasses.replace(RECIPE, dropout=0.1, neftune=5.0)
    gpu = FakeSmallGpu(network)
    memory = FakeGpuMemory(gpu)
    said: list[str] = []
    try:
        fitted = FittedSteps("cpu", None, said.append, memory)
        steps, weights = train_tiny(tiny, DEFAULT_MAX_BATCH_TOKENS, fitted, noisy)
    finally:
        gpu.remove()
    # 35 GiB for the peak, less AdamW's moments of the adapter (a few hundred KB): 34,815 and a
    # fraction tokens, rounded down to 34,560.
    assert said == ["micro-batches of at most 34,560 tokens, measured on cpu: passes of 512 "
                    "tokens peaked at 1.50 GiB and 1,024 tokens peaked at 2.00 GiB: 1.00 MiB a "
                    "token over 1.00 GiB; 40.00 GiB free: predicted peak 34.75 GiB, within 85% "
                    "of it"]
    assert fitted.tokens == 34_560 and memory.released == 1
    assert gpu.passes == 2 + 8  # the two measuring passes, then one a step
    reference, reference_weights = train_tiny(tiny, 34_560, recipe=noisy)
    assert steps == reference
    assert same_weights(weights, reference_weights)
