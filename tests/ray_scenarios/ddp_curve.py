"""Scenario (run by tests/server/test_data_parallel.py inside a loopback-only namespace): one
local Ray instance, three Ray Train runs of the same job through raytrain.build_trainer(...).fit():

    single       1 worker, checkpoints at epoch ends
    ddp          2 workers (torch DDP over gloo), same global batches
    ddp3         3 workers: a batch's rows split 2/1/1, and the last batch (2 rows) leaves a
                 rank with none (it runs a zero-weighted pass)
    interrupted  1 worker, a checkpoint after every step; the worker process is killed (SIGKILL)
                 once, when its CHECKPOINT_TO_KILL_AT-th checkpoint reaches Ray Train's
                 controller, and Ray Train restarts it (FailureConfig), resuming from the last
                 checkpoint it has
    again        the single run's job fitted again (same run name and storage), after it ended

Before Ray starts, the same job is trained without Ray, as the local service's worker does
(trainer.train in this process), for the single run to be compared with.

Usage: ddp_curve.py TINY_MODEL_FOLDER WORK_FOLDER. Prints one JSON object (the last line): per
run, every report each rank made (as a callback on the Ray Train controller saw them), how many
checkpoints came with them, the SHA-256 of the adapter it stored, its wall time; and the largest
difference between each data-parallel run's adapter weights and the single one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path

from ray.train import UserCallback

from jobspec import wire
from jobspec.conversation import Conversation
from jobspec.server.models import BaseModel
from jobspec.server.raystorage import RunStorage
from jobspec.server.raytrain import RayTrainJob, build_trainer

CHECKPOINT_TO_KILL_AT = 4
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


def examples() -> list[Conversation]:
    """29 examples, 1 to 40 words of input: in the tiny model's tokenizer some global batches of 4
    fit a pass of MAX_BATCH_TOKENS and some do not, and per rank (2 rows) likewise."""
    return [Conversation.one_turn(f"item {i}: " + " ".join(WORDS[(i + j) % len(WORDS)]
                                                          for j in range(1 + (i * 7) % 40)),
                                  f"answer {i} " + "x " * (i % 5)) for i in range(29)]


VALIDATION = [Conversation.one_turn("item 100: alpha beta", "answer 100"),
              Conversation.one_turn("item 101: " + "gamma " * 20, "answer 101 x x")]
MAX_BATCH_TOKENS = 160


class Collect(UserCallback):
    """Runs on the Ray Train controller: appends every report (all ranks' metrics, whether a
    checkpoint came with it) to a JSON-lines file; with ``kill_at``, kills the run's worker
    process(es) once, when that many checkpoints have been reported."""

    def __init__(self, path: str, kill_at: int = 0) -> None:
        self.path, self.kill_at, self.checkpoints, self.killed = path, kill_at, 0, False

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as out:
            out.write(json.dumps({"metrics": metrics, "checkpoint": checkpoint is not None})
                      + "\n")
        self.checkpoints += checkpoint is not None
        if self.kill_at and self.checkpoints == self.kill_at and not self.killed:
            self.killed = True
            for pid in train_worker_pids():
                os.kill(pid, signal.SIGKILL)


def train_worker_pids() -> list[int]:
    """Ray Train's worker processes on this machine (Ray titles them ray::RayTrainWorker...)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if command.startswith(b"ray::RayTrainWorker"):
                found.append(int(entry.name))
    return found


def run(name: str, job: RayTrainJob, work: Path, kill_at: int = 0) -> dict:
    storage = RunStorage(job.storage, job.model_id, job.operation_id)
    storage.write_examples("training", (wire.conversation_line(c) for c in examples()))
    storage.write_examples("validation", (wire.conversation_line(c) for c in VALIDATION))
    reports = work / f"{name}.jsonl"
    started = time.monotonic()
    error = None
    try:
        build_trainer(job, callbacks=[Collect(str(reports), kill_at)]).fit()
    except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
        error = f"{type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    lines = [json.loads(line) for line in reports.read_text().splitlines()]
    adapter = work / f"{name}-adapter"
    storage.download_dir("adapter", adapter)
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    return {"reports": lines, "error": error, "seconds": round(seconds, 1),
            "checkpoints": sum(line["checkpoint"] for line in lines),
            "adapter_sha256": hashlib.sha256(weights).hexdigest(),
            "adapter_files": sorted(p.name for p in adapter.iterdir()),
            "adapter": str(adapter)}


def max_weight_difference(first: Path, second: Path) -> float:
    from safetensors.torch import load_file

    a = load_file(first / "adapter_model.safetensors")
    b = load_file(second / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def without_ray(base: BaseModel, work: Path) -> dict:
    """The same job trained as the local service's worker trains it (trainer.train in this
    process, one torch thread as each Ray worker has): its step losses and adapter."""
    import torch

    from jobspec.server.models import load_base
    from jobspec.server.trainer import train

    torch.set_num_threads(1)
    network, tokenizer = load_base(base, work / "cache")
    losses = {}

    def on_step(result) -> bool:
        losses[result.step] = [result.loss, result.validation_loss]
        return True

    result = train(network, tokenizer, examples(), epochs=2, batch_size=4, learning_rate=1e-2,
                   max_batch_tokens=MAX_BATCH_TOKENS, on_step=on_step, validation=VALIDATION,
                   patience=1)
    result.model.save_pretrained(work / "local-adapter")
    weights = (work / "local-adapter" / "adapter_model.safetensors").read_bytes()
    return {"losses": losses, "kept_epoch": result.kept_epoch,
            "adapter_sha256": hashlib.sha256(weights).hexdigest()}


def main(tiny_model: str, work_folder: str) -> None:
    import ray

    work = Path(work_folder)
    local = without_ray(BaseModel("tiny-smollm2", Path(tiny_model)), work)
    started = time.monotonic()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    init_seconds = time.monotonic() - started
    base = BaseModel("tiny-smollm2", Path(tiny_model))

    def job(operation: str, **changes) -> RayTrainJob:
        settings = dict(model_id="tiny-tuned", operation_id=operation, base=base, epochs=2,
                        batch_size=4, learning_rate=1e-2, patience=1, has_validation=True,
                        max_batch_tokens=MAX_BATCH_TOKENS, checkpoint_seconds=3600.0,
                        storage=str(work / "storage"))
        return RayTrainJob(**{**settings, **changes})

    runs = {"single": run("single", job("op-single"), work),
            "ddp": run("ddp", job("op-ddp", workers=2), work),
            "ddp3": run("ddp3", job("op-ddp3", workers=3), work),
            "interrupted": run("interrupted", job("op-interrupted", checkpoint_seconds=0.0),
                               work, kill_at=CHECKPOINT_TO_KILL_AT),
            # A new fit() of a run of the same name and storage: it goes on from the run's
            # latest checkpoint (a restarted service starting a job's run again).
            "again": run("again", job("op-single"), work)}
    difference = {name: max_weight_difference(Path(runs["single"]["adapter"]),
                                              Path(runs[name]["adapter"]))
                  for name in ("ddp", "ddp3")}
    ray.shutdown()
    print(json.dumps({"runs": runs, "adapter_max_difference": difference, "local": local,
                      "init_seconds": round(init_seconds, 1),
                      "total_seconds": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
