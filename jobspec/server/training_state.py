"""Where a training run stands, as one value: what it has done (``Progress``), all it needs to
go on from there bit for bit (``TrainingState``), and the one decision whether a run starts
fresh or resumes from its checkpoint (``resume``).

A checkpoint is a ``TrainingState`` as a dict of tensors and plain values (``to_checkpoint``),
in the layout the service has always written (format 1), so checkpoints written before this
module existed still resume:

    {"format": 1, "key": run_key(...), "step": int,
     "adapter": {name: tensor}, "optimizer": state_dict, "scheduler": state_dict,
     "rng": {"torch": tensor, "noise": tensor},
     "validation": [(step, epoch, mean loss), ...],
     "best": {"epoch": int, "loss": float, "weights": {name: tensor}} | None,
     "bad_epochs": int}

``resume`` is the only place a checkpoint is loaded and the only place that decides: the worker
asks it once, records and logs its answer, and hands it to ``trainer.train``, which restores it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..conversation import Conversation, to_contents
from .recipe import Recipe

FORMAT = 1
_KEYS = ("key", "step", "adapter", "optimizer", "scheduler", "rng", "validation", "best",
         "bad_epochs")
FRESH = "training from the start"


class Checkpoints(Protocol):
    """Where a run's checkpoints go (the worker's is atomic and owner-checked)."""

    def load(self) -> dict[str, Any] | None:
        """The last checkpoint put in place, None when there is none; raises when it cannot
        be read."""

    def save(self, state: dict[str, Any]) -> bool:
        """Save ``state``; False when the run should stop (it lost its job)."""


def run_key(examples: Sequence[Conversation | tuple[str, str]],
            validation: Sequence[Conversation | tuple[str, str]],
            epochs: int, batch_size: int, learning_rate: float, patience: int | None,
            recipe: Recipe) -> str:
    """What a checkpoint must match to be resumed: the same job trained the same way. The
    SHA-256 of ``json.dumps([examples, validation, epochs, ...])``, fed an example at a time
    (the examples may be an upload of hundreds of MB, never held whole). A one-turn example is
    ``[text_input, output]``, as every example was before conversations (so their checkpoints
    still resume); any other conversation is its contents form with weights (an object, never
    equal to a pair)."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()

    def feed(text: str) -> None:
        digest.update(text.encode("utf-8", "surrogatepass"))

    feed("[[")
    for index, example in enumerate(examples):
        feed((", " if index else "") + json.dumps(_keyed(example), ensure_ascii=False))
    rest = json.dumps([[_keyed(example) for example in validation], epochs, batch_size,
                       learning_rate, patience, recipe.as_dict()], ensure_ascii=False)
    feed("], " + rest[1:])
    return digest.hexdigest()


def _keyed(example: Conversation | tuple[str, str]) -> Any:
    if not isinstance(example, Conversation):
        return list(example)
    if example.is_one_turn:
        return [turn.text for turn in example.turns]
    return to_contents(example, weights=True)


@dataclass(frozen=True)
class Best:
    """Early stopping's best epoch so far, with the adapter weights it had then."""

    epoch: int
    loss: float
    weights: dict[str, Any]


@dataclass
class EarlyStopping:
    """Early stopping's bookkeeping: the best validation loss and how many epochs since it.
    With ``patience`` None nothing is kept (the last weights are the result)."""

    patience: int | None
    best: Best | None = None
    bad_epochs: int = 0  # epochs since the best one

    def record(self, epoch: int, loss: float, weights: Callable[[], dict[str, Any]]) -> None:
        """Take the validation loss measured at ``epoch``'s end; ``weights`` copies the
        adapter's, called only when this epoch is the best so far."""
        if self.patience is None:
            return
        if self.best is None or loss < self.best.loss:
            self.best = Best(epoch, loss, weights())
            self.bad_epochs = 0
        else:
            self.bad_epochs += 1

    @property
    def patience_left(self) -> int | None:
        """Epochs without improvement still allowed; None without early stopping."""
        return None if self.patience is None else max(self.patience - self.bad_epochs, 0)

    @property
    def exhausted(self) -> bool:
        return self.patience is not None and self.best is not None \
            and self.bad_epochs >= self.patience

    def reason(self, epoch: int | None, step: int, total_steps: int) -> str:
        """Why the run stopped after ``step``, in words (once ``exhausted``)."""
        assert self.best is not None
        plural = "s" if self.bad_epochs != 1 else ""
        return (f"early stopping: the validation loss did not improve for {self.bad_epochs} "
                f"epoch{plural} after epoch {self.best.epoch} (best {self.best.loss:.4f}); "
                f"stopped after epoch {epoch}, step {step} of {total_steps}")


@dataclass
class Progress:
    """What a run has done: its last step, the validation loss of each epoch (step, epoch,
    mean loss), early stopping's bookkeeping. The training loop advances it."""

    step: int
    validation: list[tuple[int, int, float]]
    stopping: EarlyStopping

    @classmethod
    def fresh(cls, patience: int | None) -> Progress:
        return cls(0, [], EarlyStopping(patience))

    def copy(self) -> Progress:
        """A copy the loop can advance without changing this one (the best epoch's weights,
        never changed in place, are shared)."""
        stopping = self.stopping
        return Progress(self.step, list(self.validation),
                        EarlyStopping(stopping.patience, stopping.best, stopping.bad_epochs))


@dataclass(frozen=True)
class TrainingState:
    """A run after ``progress.step`` steps, with everything needed to go on from there and
    end as a run never interrupted would: the adapter, optimiser, scheduler and RNG states."""

    key: str  # run_key of the job it belongs to
    progress: Progress
    adapter: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]  # {"torch": the global RNG state, "noise": NEFTune's generator's}

    @property
    def step(self) -> int:
        return self.progress.step

    def to_checkpoint(self) -> dict[str, Any]:
        best = self.progress.stopping.best
        return {"format": FORMAT, "key": self.key, "step": self.step,
                "adapter": self.adapter, "optimizer": self.optimizer,
                "scheduler": self.scheduler, "rng": self.rng,
                "validation": self.progress.validation,
                "best": None if best is None else {"epoch": best.epoch, "loss": best.loss,
                                                   "weights": best.weights},
                "bad_epochs": self.progress.stopping.bad_epochs}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any], patience: int | None) -> TrainingState:
        """The state a checkpoint holds; ValueError when it is not a whole one."""
        if not isinstance(saved, dict):
            raise ValueError(f"not a checkpoint: a {type(saved).__name__}")
        missing = [k for k in _KEYS if k not in saved]
        if missing:
            raise ValueError(f"an incomplete checkpoint: it lacks {', '.join(missing)}")
        if saved.get("format", FORMAT) != FORMAT:
            raise ValueError(f"checkpoint format {saved['format']!r}, not {FORMAT}")
        best = saved["best"]
        stopping = EarlyStopping(patience, None if best is None else Best(
            best["epoch"], best["loss"], best["weights"]), saved["bad_epochs"])
        progress = Progress(saved["step"], [tuple(v) for v in saved["validation"]], stopping)
        return cls(saved["key"], progress, saved["adapter"], saved["optimizer"],
                   saved["scheduler"], saved["rng"])

    def restore(self, params: dict[str, Any], optimizer: Any, scheduler: Any,
                noise: Any) -> Progress:
        """Put this state into a run's live objects; its progress, to go on from."""
        import torch  # noqa: PLC0415

        with torch.no_grad():
            for name, value in self.adapter.items():
                params[name].copy_(value)
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        torch.set_rng_state(self.rng["torch"])
        noise.set_state(self.rng["noise"])
        return self.progress.copy()


def snapshot(key: str, progress: Progress, params: dict[str, Any], optimizer: Any,
             scheduler: Any, noise: Any) -> TrainingState:
    """A run's state now: the adapter copied, the rest as their state dicts (which
    ``torch.save`` copies when it writes them)."""
    import torch  # noqa: PLC0415

    return TrainingState(key, progress.copy(), {n: p.detach().clone() for n, p in params.items()},
                         optimizer.state_dict(), scheduler.state_dict(),
                         {"torch": torch.get_rng_state(), "noise": noise.get_state()})


@dataclass(frozen=True)
class Resume:
    """How a run starts: fresh (``state`` None) or from ``state``; ``reason`` says which and
    why, in words for the log; ``found`` whether there was a checkpoint at all."""

    key: str
    state: TrainingState | None = None
    reason: str = f"no checkpoint; {FRESH}"
    found: bool = False

    @property
    def step(self) -> int:
        """The step it resumes after; 0 when fresh."""
        return 0 if self.state is None else self.state.step


def resume(checkpoints: Checkpoints | None, key: str, total_steps: int,
           patience: int | None) -> Resume:
    """The one decision: resume from the run's checkpoint when it is whole, made for this job
    (``key``) and within its ``total_steps``; otherwise start fresh, saying why. A checkpoint
    half-written when a run was cut short is never the one in place (``Checkpoints.save``
    renames a whole one into place), so the one read is the last good one, or none."""
    if checkpoints is None:
        return Resume(key)
    try:
        saved = checkpoints.load()
        if saved is None:
            return Resume(key)
        state = TrainingState.from_checkpoint(saved, patience)
    except Exception as exc:  # noqa: BLE001 - unreadable: start over rather than fail
        return Resume(key, None, f"its checkpoint cannot be read ({type(exc).__name__}: "
                                 f"{exc}); {FRESH}", True)
    if state.key != key:
        return Resume(key, None, f"its checkpoint was made for another job or recipe; {FRESH}",
                      True)
    if not 0 < state.step <= total_steps:
        return Resume(key, None, f"its checkpoint is at step {state.step}, outside this run's "
                                 f"steps 1 to {total_steps}; {FRESH}", True)
    return Resume(key, state, f"resuming from its checkpoint at step {state.step}", True)
