"""One tuning job as a Ray Train run: what runs on the Ray workers (``train_loop``) and the
TorchTrainer that runs it (``build_trainer``).

Each worker loads the base model on its own node, reads the job's examples from the run's storage
(raystorage.py) with the service's own reader, and trains with the service's trainer
(trainer.train), data-parallel behind torch DDP when the job has several workers
(data_parallel.py). Everything the service learns comes through Ray Train's own API:
``ray.train.report`` with a metrics dict for each event (below), a checkpoint riding on the report
of the step it was taken at, and ``ray.train.get_checkpoint`` when a restarted worker group
resumes. Whether it resumes is ``training_state.resume``'s decision, as in the local worker.

Reports (every rank reports the same metrics; only rank 0 passes a checkpoint):

    {"event": "start", "from_step", "trained_on", "node_ip", "node_id", "workers", "resumed"}
        each time the worker group (re)starts
    {"event": "steps", "steps": [{"step", "epoch", "loss", "micro_batches", "completed_epoch",
                                  "validation_loss", "time"}, ...]}
        the optimiser steps since the last report, at least every REPORT_SECONDS, at every
        epoch's end and at the last step; at epoch ends and every ``checkpoint_seconds`` (never
        after the last step) with the run's state as a checkpoint (training_state's format, in
        ``CHECKPOINT_FILE``), which then rides on the report whose last step it was taken at
    {"event": "done", "steps", "kept_epoch", "stop_reason", "adapter": "adapter"}
        once rank 0 has put the adapter in the run's storage (RunStorage.upload_dir)

The service cancels a run by stopping it; the loop never looks at the store.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .models import BaseModel

CHECKPOINT_FILE = "training_state.pt"  # in a Ray checkpoint's folder: TrainingState.to_checkpoint()
ADAPTER = "adapter"  # the adapter's folder in the run's storage
# A worker group that dies (a node lost, a process killed) is restarted this many times, each
# resuming from the run's last checkpoint, before the run fails.
MAX_FAILURES = 3
CHECKPOINTS_KEPT = 2  # the last one is what a restart resumes from
# Steps are reported together, at least this often (and at epoch ends, checkpoints and the
# last step): each report is a barrier of all workers and waits for the controller to collect
# the last one (POLL_INTERVAL_SECONDS), so one a step held steps shorter than that to one a poll
# (the tiny test model's 38 steps took 4 s instead of 0.5 s).
REPORT_SECONDS = 1.0
# A standby run's workers ask for their job this often (each ask waits this long for one).
STANDBY_WAIT_SECONDS = 5.0
# Ray Train's controller takes the workers' reports when it polls them (every 2 s by default),
# one report per worker per poll, and a worker's next report waits until its last was taken: a
# job whose steps take less than the interval would be held to one step per interval. Polling
# every 0.1 s keeps a report's wait under a step of any real job. The variable is read, and
# handed to the controller, by fit() in the process that calls it; a value set there wins.
POLL_INTERVAL_VARIABLE = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
POLL_INTERVAL_SECONDS = "0.1"


@dataclass(frozen=True)
class RayTrainJob:
    """All a Ray Train run needs to train one job (pickled to the workers)."""

    model_id: str
    operation_id: str
    base: BaseModel  # its source path must exist on every node
    epochs: int
    batch_size: int
    learning_rate: float  # the record's effective rate
    patience: int | None
    has_validation: bool
    max_batch_tokens: int
    checkpoint_seconds: float
    storage: str
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads: int = 1  # torch threads per worker
    # The Ray Train run's name where it is not ``run_name``'s (a standby run's: raystandby.py).
    ray_run: str | None = None

    @property
    def run(self) -> str:
        return self.ray_run or run_name(self.model_id, self.operation_id)


@dataclass(frozen=True)
class StandbyRun:
    """A run started before its job is known (raystandby.py): its workers start, import what
    training needs and load ``base``, then ask the actor ``host`` (in ``namespace``) for their
    job, which must ask for the same workers and resources."""

    name: str  # the Ray Train run's (and its actor's)
    namespace: str
    host: str
    base: BaseModel
    storage: str
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads: int = 1

    @property
    def run(self) -> str:
        return self.name

    def fits(self, job: RayTrainJob) -> bool:
        return ((job.workers, job.gpus_per_worker, job.cpus_per_worker, job.threads, job.storage)
                == (self.workers, self.gpus_per_worker, self.cpus_per_worker, self.threads,
                    self.storage))


def run_name(model_id: str, operation_id: str) -> str:
    """The Ray Train run's name (and the service's actor's): the same job and operation always
    get the same one, so a new fit() of it resumes from its last checkpoint."""
    return f"jobspec-{model_id}-{operation_id}"


def build_trainer(job: RayTrainJob | StandbyRun, callbacks: Sequence[Any] = ()) -> Any:
    """The TorchTrainer of ``job`` (or of a standby run, whose workers get their job later):
    ``job.workers`` workers, each with its CPUs (and GPUs), its run named ``job.run`` under
    ``ray_storage_path(job.storage)``, restarted from its last checkpoint up to MAX_FAILURES
    times. Same name and storage: a new fit() resumes the run.
    Sets POLL_INTERVAL_VARIABLE in this process's environment unless it is set already."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # noqa: PLC0415
    from ray.train.torch import TorchTrainer  # noqa: PLC0415

    from .raystorage import ray_storage_path  # noqa: PLC0415

    if job.workers < 1:
        raise ValueError(f"workers must be at least 1, got {job.workers}")
    os.environ.setdefault(POLL_INTERVAL_VARIABLE, POLL_INTERVAL_SECONDS)
    resources: dict[str, float] = {"CPU": job.cpus_per_worker}
    if job.gpus_per_worker > 0:
        resources["GPU"] = job.gpus_per_worker
    standby = isinstance(job, StandbyRun)
    return TorchTrainer(
        train_loop,
        train_loop_config={"standby": job} if standby else {"job": job},
        scaling_config=ScalingConfig(num_workers=job.workers, use_gpu=job.gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=job.run,
                             storage_path=ray_storage_path(job.storage),
                             failure_config=FailureConfig(max_failures=MAX_FAILURES),
                             checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
                             callbacks=list(callbacks)))


def node_cache_dir() -> Path:
    """Where this node keeps its fp32 conversions of GGUF models: the user's own cache on this
    node (not the service's state directory, which another node may not have)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "jobspec" / "models"


class RayCheckpoints:
    """``training_state.Checkpoints`` over Ray Train: loads the run's latest checkpoint
    (``ray.train.get_checkpoint``); a save is held and goes out with the report of the step it
    was taken at (``StepReporter``), from rank 0 only."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        import ray.train  # noqa: PLC0415
        import torch  # noqa: PLC0415

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as folder:
            return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu",
                              weights_only=True)

    def save(self, state: dict[str, Any]) -> bool:
        self.pending = state
        return True

    def take(self) -> dict[str, Any] | None:
        state, self.pending = self.pending, None
        return state


def report(metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
    """``ray.train.report`` of ``metrics``, with ``state`` (a checkpoint dict) as a checkpoint
    when given; the local copy is removed once Ray Train has stored it."""
    import ray.train  # noqa: PLC0415
    import torch  # noqa: PLC0415

    if state is None:
        ray.train.report(metrics)
        return
    folder = Path(tempfile.mkdtemp(prefix="jobspec-checkpoint-"))
    try:
        torch.save(state, folder / CHECKPOINT_FILE)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(folder)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class StepReports:
    """The "steps" reports of a worker: each step is held until REPORT_SECONDS passed since the
    last report, an epoch ended, a checkpoint was taken (it rides on the report) or the last
    step came. Data-parallel, every rank must report as often as the others (a report waits
    for all): rank 0 decides, on its own clock and checkpoints, and tells the others."""

    def __init__(self, total: int, checkpoints: RayCheckpoints, data_parallel: bool,
                 device: str) -> None:
        self.total, self.checkpoints = total, checkpoints
        self.data_parallel, self.device = data_parallel, device
        self.held: list[dict[str, Any]] = []
        self.reported = time.monotonic()

    def after_step(self, result: Any) -> None:
        from .data_parallel import from_rank0  # noqa: PLC0415

        now, state = time.time(), self.checkpoints.take()
        due = (state is not None or result.completed_epoch is not None
               or result.step >= self.total
               or time.monotonic() - self.reported >= REPORT_SECONDS)
        if self.data_parallel:
            now, due = from_rank0(now, self.device), bool(from_rank0(float(due), self.device))
        self.held.append({"step": result.step, "epoch": result.epoch, "loss": result.loss,
                          "micro_batches": result.micro_batches,
                          "completed_epoch": result.completed_epoch,
                          "validation_loss": result.validation_loss, "time": now})
        if due:
            self.flush(state)

    def flush(self, state: dict[str, Any] | None = None) -> None:
        if self.held:
            report({"event": "steps", "steps": self.held}, state)
            self.held, self.reported = [], time.monotonic()


def _total_steps(example_count: int, epochs: int, batch_size: int) -> int:
    return math.ceil(example_count * epochs / batch_size)


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: train ``config["job"]`` (a RayTrainJob) on this worker, or
    the job a standby run (``config["standby"]``, a StandbyRun) is handed."""
    import ray  # noqa: PLC0415
    import ray.train  # noqa: PLC0415

    from .. import wire  # noqa: PLC0415
    from . import recipe as recipes  # noqa: PLC0415
    from .datasets import TRAINING_DATA, VALIDATION_DATA  # noqa: PLC0415
    from .data_parallel import Shard, gather_objects  # noqa: PLC0415
    from .models import load_base, quiet_libraries  # noqa: PLC0415
    from .raystorage import RunStorage  # noqa: PLC0415
    from .trainer import train  # noqa: PLC0415
    from .training_state import resume, run_key  # noqa: PLC0415
    from .uploads import StoredExamples  # noqa: PLC0415
    from .worker import trained_on_text  # noqa: PLC0415

    quiet_libraries()
    job, loaded = _job_and_model(config)
    if job is None:  # a standby run released before it got a job
        return
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    shard = Shard(rank, world) if world > 1 else None
    storage = RunStorage(job.storage, job.model_id, job.operation_id)
    with tempfile.TemporaryDirectory(prefix="jobspec-run-") as scratch:
        local = Path(scratch)
        # Named as the service names an upload's examples, should a line fail to read.
        examples = StoredExamples(storage.local_examples("training", local),
                                  f"{TRAINING_DATA}.{wire.UPLOAD_FIELD}")
        validation = (StoredExamples(storage.local_examples("validation", local),
                                     f"{VALIDATION_DATA}.{wire.UPLOAD_FIELD}")
                      if job.has_validation else [])
        # On a GPU worker "cuda" is the device Ray Train made this worker's current one.
        network, tokenizer = loaded or load_base(job.base, node_cache_dir())
        recipe = recipes.RECIPE
        device = str(next(network.parameters()).device)
        total = _total_steps(len(examples), job.epochs, job.batch_size)
        key = run_key(examples, validation, job.epochs, job.batch_size, job.learning_rate,
                      job.patience, recipe)
        checkpoints = RayCheckpoints()
        start = resume(checkpoints, key, total, job.patience)
        # Where each rank runs (every rank reports rank 0's node and all ranks' addresses), and
        # where it resumes: ranks that would resume at different steps (one could not read the
        # checkpoint) would wait on each other's collectives for ever, so that fails the group,
        # which Ray Train then restarts.
        here = (ray.util.get_node_ip_address(), ray.get_runtime_context().get_node_id(),
                start.step)
        places = gather_objects(here) if shard is not None else [here]
        if len({step for _, _, step in places}) > 1:
            raise RuntimeError("the workers would resume at different steps: "
                               + ", ".join(f"rank {r} at {p[2]}" for r, p in enumerate(places)))
        addresses = sorted({ip for ip, _, _ in places})
        plural = "s" if world != 1 else ""
        precision = recipes.precision_for(recipe, device)
        trained_on = (f"{trained_on_text(device, precision, job.base.quantize)}, "
                      f"{world} worker{plural} on {', '.join(addresses)}")
        report({"event": "start", "from_step": start.step, "trained_on": trained_on,
                "node_ip": places[0][0], "node_id": places[0][1], "workers": world,
                "resumed": start.reason})

        steps = StepReports(total, checkpoints, shard is not None, device)
        result = train(network, tokenizer, examples, epochs=job.epochs,
                       batch_size=job.batch_size, learning_rate=job.learning_rate,
                       max_batch_tokens=job.max_batch_tokens, on_step=lambda _: True,
                       recipe=recipe, validation=validation, patience=job.patience,
                       checkpoints=checkpoints, resume=start,
                       checkpoint_seconds=job.checkpoint_seconds, shard=shard,
                       after_step=steps.after_step)
        if result is None:  # on_step and save never stop it: the service stops the run
            raise RuntimeError("training stopped without being asked to")
        steps.flush()  # early stopping ended it before its last step
        if rank == 0:
            _upload_adapter(result.model, recipe, storage, local / ADAPTER)
        report({"event": "done", "steps": result.steps, "kept_epoch": result.kept_epoch,
                "stop_reason": result.stop_reason, "adapter": ADAPTER})


def _job_and_model(config: dict[str, Any]) -> tuple[RayTrainJob | None, Any]:
    """This worker's job, and its base model when already loaded (None: load it). A standby
    run's worker loads the base it was started with, then waits for its job from the run's
    actor (rayrun.RunActor.wait_job): None when the run was released instead."""
    import ray  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from .models import load_base  # noqa: PLC0415

    if "job" in config:
        torch.set_num_threads(config["job"].threads)
        return config["job"], None
    standby: StandbyRun = config["standby"]
    torch.set_num_threads(standby.threads)
    loaded = load_base(standby.base, node_cache_dir())
    _warm_up(*loaded)
    host = ray.get_actor(standby.host, namespace=standby.namespace)
    while True:
        answer, job = ray.get(host.wait_job.remote(STANDBY_WAIT_SECONDS))
        if answer == "released":
            return None, None
        if answer == "job":
            return job, (loaded if job.base == standby.base else None)


def _warm_up(network: Any, tokenizer: Any) -> None:
    """Train one throwaway step on a LoRA of a copy of the base (trainer.lora_model), so that
    what a process does the first time it trains (peft's and the tokenizer's first use, the
    first forward and backward pass's allocations) is done before the job comes. The base is
    untouched (a 4-bit one, which a run trains in place, is not warmed), and a run seeds its
    own randomness (trainer.lora_model), so the job trains as in a fresh process."""
    from ..conversation import Conversation  # noqa: PLC0415
    from .models import is_quantized  # noqa: PLC0415
    from .trainer import train  # noqa: PLC0415

    if is_quantized(network):
        return
    examples = [Conversation.one_turn("1", "2"), Conversation.one_turn("2", "3")]
    train(network, tokenizer, examples, epochs=1, batch_size=2, learning_rate=1e-4,
          on_step=lambda _: True)


def _upload_adapter(model: Any, recipe: Any, storage: Any, folder: Path) -> None:
    from .adapters import save_partial  # noqa: PLC0415
    from .recipe import write_layout  # noqa: PLC0415

    save_partial(model, folder)
    write_layout(folder, recipe)
    storage.upload_dir(folder, ADAPTER)
