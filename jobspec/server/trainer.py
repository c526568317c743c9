"""LoRA fine-tuning of one job: batches, the step loop, validation, snapshots, the adapter.

Steps are counted the way the Gemini API counts them: the examples, reshuffled each epoch, form
one stream that is cut into batches, so there are ceil(examples × epochs ÷ batch size) steps and
a batch may straddle two epochs. Shuffling uses a fixed seed: the same job trains the same way.
An epoch ends at the step whose batch holds that epoch's last example; validation loss (when the
job has validation examples) is measured there, so the last step always has one.

Memory grows with a batch's padded size (rows × its longest row), so a batch larger than
``max_batch_tokens`` is run as several micro-batches whose gradients add up before the one
optimiser step. Each micro-batch's loss is a sum over its target tokens divided by the target
tokens of the whole batch, so the gradient, the step and the reported loss (the mean over all
target tokens of the batch) are those of the unsplit batch, up to float rounding.

Data-parallel (``shard``: this process is one rank of a torch process group, as a Ray Train
worker is), each rank trains its part of every batch behind torch DDP and the step is the one
process's, up to float rounding (data_parallel.py); a world of one is the one process, exactly.

Everything the service (not the job) decides about training is one ``Recipe`` (recipe.py):
the prompt layout, the LoRA shape, the learning-rate schedule, the precision. What a batch costs
(its padding, its loss) is losses.py's.

A run can be checkpointed (``Checkpoints``) and resumed: its state (training_state.py: adapter,
optimiser, scheduler, RNG, early-stopping state, step) is saved at every epoch's end and every
few minutes, and a run resumed from a checkpoint ends with the same adapter, bit for bit, as one
never interrupted (same machine, same thread count: the arithmetic is then the same, in the same
order). Whether it resumes is not decided here: ``train`` is handed ``training_state.resume``'s
decision.

    train        _prepare (the run's live objects), then restore or start fresh
      _steps     the step loop: _train_step, _evaluate (epoch ends: validation, early
                 stopping), on_step, _Snapshots.after (checkpoints)
      _keep_best with early stopping, the best epoch's weights
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .chat import EncodedExamples, Example, as_conversation, encode_conversation
from .data_parallel import Shard, sharded_step, sharded_validation, wrap
from .losses import collate, mean_loss, micro_batches, summed_loss, target_count
from .models import is_quantized
from .recipe import (RECIPE, SEED, Recipe, lora_config, parameter_groups, precision_for,
                     schedule)
from .training_state import Checkpoints, Progress, Resume, snapshot

# Tokens (rows × longest row) in one forward pass. Training SmolLM2-135M on a CPU takes about
# 1.5 GB plus 2.8 MB per token of the pass (measured: 2,048 tokens peak at 7.0 GB, 4,096 at
# 12.7 GB), so this keeps a worker near 7 GB: within a developer's laptop.
DEFAULT_MAX_BATCH_TOKENS = 2048
CHECKPOINT_SECONDS = 180.0  # besides every epoch's end


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


def completed_epochs(step: int, example_count: int, epochs: int, batch_size: int) -> int:
    """Epochs whose every example has been trained on after ``step`` steps."""
    return min(step * batch_size, example_count * epochs) // example_count


def lora_model(base: Any, recipe: Recipe = RECIPE, precision: str = "fp32") -> Any:
    """A LoRA on a copy of ``base``. In bf16 the frozen copy is bf16 (its matmuls run in bf16
    without casting 135M weights every step); the adapter's own weights stay fp32."""
    import torch  # noqa: PLC0415
    from peft import get_peft_model  # noqa: PLC0415

    torch.manual_seed(recipe.seed)
    if is_quantized(base):
        # 4-bit weights can be neither copied nor cast: the run trains on the base itself, which
        # its worker loaded for this run alone (Worker.base).
        frozen = base
    else:
        frozen = copy.deepcopy(base)
        if precision == "bf16":
            frozen = frozen.to(torch.bfloat16)
    return get_peft_model(frozen, lora_config(recipe))


@dataclass(frozen=True)
class StepResult:
    step: int
    epoch: int
    loss: float
    # How many passes the batch took under max_batch_tokens (data-parallel: on each rank).
    micro_batches: int = 1
    # Set at the step that ends an epoch: which epoch, and (with validation examples) the mean
    # loss on them after this step.
    completed_epoch: int | None = None
    validation_loss: float | None = None


@dataclass(frozen=True)
class TrainResult:
    model: Any  # the PEFT model, with the kept weights
    steps: int  # steps trained (fewer than planned when early stopping stopped it)
    validation: tuple[tuple[int, int, float], ...] = ()  # (step, epoch, mean loss) per epoch
    kept_epoch: int | None = None  # with early stopping: the epoch whose weights were kept
    stop_reason: str | None = None  # why it stopped before its last step, in words
    device: str = "cpu"
    precision: str = "fp32"
    resumed_from: int | None = None  # the checkpoint's step, when it resumed from one


class Cancelled(Exception):
    """on_step (or a checkpoint save) said to stop: cancelled, deleted, or no longer ours."""


def _adamw(groups: list[dict[str, Any]], learning_rate: float) -> Any:
    """AdamW, fused where torch has it for these parameters (on the shipped job it took the
    step from 439 to 415 ms, measured interleaved with the unfused one in one process: the
    unfused one runs a dozen small ops per parameter tensor, 420 tensors a step)."""
    import torch  # noqa: PLC0415

    try:
        return torch.optim.AdamW(groups, lr=learning_rate, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=learning_rate)


def _trainable(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


@dataclass
class _Run:
    """One run's live objects: the model and what steps it, the batches, the examples."""

    model: Any
    params: dict[str, Any]  # the adapter's weights, by name
    optimizer: Any
    scheduler: Any
    noise: Any  # NEFTune's generator
    hook: Any  # NEFTune's, removed when the run ends
    autocast: Any
    device: str
    precision: str
    pad_id: int
    encoded: EncodedExamples
    held_out: list[tuple[list[int], list[int]]]  # the validation examples, encoded
    plan: list[tuple[int, list[int]]]  # (epoch, example indices) per step
    epochs: int
    batch_size: int
    max_batch_tokens: int
    recipe: Recipe
    shard: Shard | None = None  # data-parallel: this process's rank (None: one process)
    parallel: Any = None  # data-parallel: the model behind DDP (data_parallel.wrap)

    def completed_epochs(self, step: int) -> int:
        return completed_epochs(step, len(self.encoded), self.epochs, self.batch_size)


def _prepare(base: Any, tokenizer: Any, examples: Sequence[Example],
             validation: list[Example], epochs: int, batch_size: int,
             learning_rate: float, max_batch_tokens: int, recipe: Recipe,
             shard: Shard | None = None) -> _Run:
    """A fresh run: the LoRA, its optimiser and schedule, the batches of every step; with a
    ``shard``, the model behind DDP as well."""
    import torch  # noqa: PLC0415

    device = str(next(base.parameters()).device)
    precision = precision_for(recipe, device)
    model = lora_model(base, recipe, precision)
    model.train()
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16")
    system, chat = recipe.system_prompt, recipe.chat_template
    # Each batch's examples are encoded when it is trained, so that a data set of hundreds of MB
    # (an upload, read a line at a time) is never held whole, in text or in tokens.
    encoded = EncodedExamples(examples, lambda conversation: encode_conversation(
        tokenizer, conversation, system, chat))
    held_out = [encode_conversation(tokenizer, as_conversation(example), system, chat)
                for example in validation]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    params = _trainable(model)
    optimizer = _adamw(parameter_groups(params, recipe, learning_rate), learning_rate)
    plan = list(batches(len(encoded), epochs, batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(recipe, len(plan)))
    noise = torch.Generator().manual_seed(recipe.seed)
    hook = _neftune(model, recipe.neftune, noise) if recipe.neftune else None
    parallel = wrap(model, device, recipe.label_smoothing) if shard is not None else None
    return _Run(model, params, optimizer, scheduler, noise, hook, autocast, device, precision,
                pad_id, encoded, held_out, plan, epochs, batch_size, max_batch_tokens, recipe,
                shard, parallel)


def _train_step(run: _Run, indices: list[int]) -> tuple[float, int]:
    """One optimiser step on the batch of ``indices``: (its mean loss, micro-batches run)."""
    rows = [run.encoded[i] for i in indices]
    targets = sum(target_count(labels) for _, labels in rows)
    if run.shard is not None:
        total, passes = sharded_step(run.parallel, run.shard, rows, targets,
                                     run.max_batch_tokens, run.pad_id, run.device, run.autocast)
    else:
        groups = micro_batches([len(ids) for ids, _ in rows], run.max_batch_tokens)
        total, passes = 0.0, len(groups)
        for group in groups:
            batch = collate([rows[i] for i in group], run.pad_id, run.device)
            with run.autocast:
                loss = summed_loss(run.model, batch, run.recipe.label_smoothing) / max(targets, 1)
            loss.backward()  # gradients add up across the micro-batches of this step
            total += float(loss.detach())
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return total, passes


def _evaluate(run: _Run, progress: Progress) -> tuple[int | None, float | None]:
    """At the step that ends an epoch: (that epoch, with validation examples the mean loss on
    them), recorded in ``progress`` and its early stopping; (None, None) at other steps."""
    step = progress.step
    done = run.completed_epochs(step)
    ended = done if done > run.completed_epochs(step - 1) else None
    if ended is None or not run.held_out:
        return ended, None
    if run.shard is not None:
        value = sharded_validation(run.model, run.held_out, run.shard, run.pad_id, run.device,
                                   run.max_batch_tokens, run.autocast)
    else:
        value = mean_loss(run.model, run.held_out, run.pad_id, run.device,
                          run.max_batch_tokens, run.autocast)
    progress.validation.append((step, ended, value))
    progress.stopping.record(ended, value, lambda: {n: p.detach().clone()
                                                    for n, p in run.params.items()})
    return ended, value


class _Snapshots:
    """Saves the run's state at every epoch's end and every ``seconds`` (never after its last
    step: a run that ended needs none). Data-parallel, every rank holds the same state and only
    rank 0 saves it."""

    def __init__(self, checkpoints: Checkpoints, key: str, seconds: float) -> None:
        self.checkpoints, self.key, self.seconds = checkpoints, key, seconds
        self.last_saved = time.monotonic()

    def after(self, run: _Run, progress: Progress, ended_epoch: int | None) -> None:
        """Called after each step; raises Cancelled when the save says the run lost its job."""
        periodic = time.monotonic() - self.last_saved >= self.seconds
        if progress.step >= len(run.plan) or (ended_epoch is None and not periodic):
            return
        if run.shard is not None and run.shard.rank != 0:
            return
        state = snapshot(self.key, progress, run.params, run.optimizer, run.scheduler,
                         run.noise)
        if not self.checkpoints.save(state.to_checkpoint()):
            raise Cancelled
        self.last_saved = time.monotonic()


def _steps(run: _Run, progress: Progress, on_step: Callable[[StepResult], bool],
           snapshots: _Snapshots | None,
           after_step: Callable[[StepResult], None] | None = None) -> str | None:
    """Train the steps after ``progress.step`` to the last; why early stopping stopped it
    before, or None. Raises Cancelled when on_step (or a save) says to stop. ``after_step`` is
    called once a step is wholly done, its checkpoint (if one was due) saved."""
    total = len(run.plan)
    for step, (epoch, indices) in enumerate(run.plan[progress.step:], start=progress.step + 1):
        loss, passes = _train_step(run, indices)
        progress.step = step
        ended, value = _evaluate(run, progress)
        result = StepResult(step, epoch, loss, passes, ended, value)
        if not on_step(result):
            raise Cancelled
        if progress.stopping.exhausted and step < total:
            if after_step is not None:
                after_step(result)
            return progress.stopping.reason(ended, step, total)
        if snapshots is not None:
            snapshots.after(run, progress, ended)
        if after_step is not None:
            after_step(result)
    return None


def _keep_best(run: _Run, progress: Progress) -> int | None:
    """With early stopping, put the best epoch's weights back; that epoch."""
    import torch  # noqa: PLC0415

    best = progress.stopping.best
    if best is None:
        return None
    with torch.no_grad():
        for name, value in best.weights.items():
            run.params[name].copy_(value)
    return best.epoch


def train(base: Any, tokenizer: Any, examples: Sequence[Example], *, epochs: int,
          batch_size: int, learning_rate: float,
          max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
          on_step: Callable[[StepResult], bool], recipe: Recipe = RECIPE,
          validation: Sequence[Example] | None = None, patience: int | None = None,
          checkpoints: Checkpoints | None = None, resume: Resume | None = None,
          checkpoint_seconds: float = CHECKPOINT_SECONDS, shard: Shard | None = None,
          after_step: Callable[[StepResult], None] | None = None) -> TrainResult | None:
    """Train a LoRA adapter on ``examples`` (conversations; a (text_input, output) pair is a
    one-turn one); None when on_step (or a checkpoint) asked to stop.

    With ``patience`` (early stopping; needs validation examples) training stops once the
    validation loss has not improved for that many epochs, and the weights of the best epoch
    are kept (also when it runs to its end). ``resume`` (``training_state.resume``'s decision)
    says where to start; with ``checkpoints`` the run's state is saved there as it goes.

    ``shard`` trains data-parallel (data_parallel.py): this process is one rank of a torch
    process group already set up, and trains its part of every batch. ``after_step`` is told
    each step once it is wholly done, its checkpoint saved if one was due (so a report made there
    can carry that checkpoint)."""
    validation = list(validation or [])
    if patience is not None and not validation:
        raise ValueError("early stopping needs validation examples")
    if checkpoints is not None and resume is None:
        raise ValueError("checkpoints need the decision to resume (training_state.resume)")
    if shard is not None and shard.world == 1:
        shard = None  # one process: today's arithmetic, bit for bit
    run = _prepare(base, tokenizer, examples, validation, epochs, batch_size, learning_rate,
                   max_batch_tokens, recipe, shard)
    try:
        if resume is not None and resume.step > len(run.plan):
            raise ValueError(f"resuming at step {resume.step} of a run of {len(run.plan)}")
        progress = (resume.state.restore(run.params, run.optimizer, run.scheduler, run.noise)
                    if resume is not None and resume.state is not None
                    else Progress.fresh(patience))
        snapshots = None if checkpoints is None or resume is None else _Snapshots(
            checkpoints, resume.key, checkpoint_seconds)
        stop_reason = _steps(run, progress, on_step, snapshots, after_step)
    except Cancelled:
        return None
    finally:
        if run.hook is not None:
            run.hook.remove()
    kept = _keep_best(run, progress)
    run.model.eval()
    return TrainResult(run.model, progress.step, tuple(progress.validation), kept, stop_reason,
                       run.device, run.precision, (resume.step or None) if resume else None)


def _neftune(model: Any, alpha: float, generator: Any) -> Any:
    """NEFTune (Jain et al. 2023): uniform noise of scale alpha / sqrt(length × width) on the
    input embeddings while training, from ``generator`` (checkpointed with the run)."""
    import torch  # noqa: PLC0415

    embeddings = model.get_input_embeddings()

    def add_noise(module: Any, inputs: Any, output: Any) -> Any:
        if not module.training:
            return output
        scale = alpha / math.sqrt(output.size(1) * output.size(2))
        noise = torch.rand(output.shape, generator=generator, dtype=output.dtype)
        return output + (noise.to(output.device) * 2 - 1) * scale

    return embeddings.register_forward_hook(add_noise)
