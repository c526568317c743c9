"""`jobspec serve --ray`: each tuning job trains as a Ray Train run on the cluster, followed
from the service (instead of the local worker processes of supervisor.py).

A thread of the service claims queued jobs from the store (the owner recorded is this service's
pid), stages their examples into the run's storage (raystorage.RunStorage), and starts one
detached, named actor per job on the service's own node (rayrun.RunActor, name
``raytrain.run_name``); the actor runs the Ray Train run and collects its reports through a Ray
Train callback. The thread polls each actor and applies the reports to the store with the same
functions as a local worker (worker.record_step, finish_trained, stop_run, fail_run): "start"
records where the run (re)starts and on which node, "steps" the losses of the steps since the
last report (a cancel or delete kills the run), "done" publishes the adapter from the storage.

What survives what: a node that dies mid-training → Ray Train restarts the worker group
elsewhere from the run's last checkpoint (a new "start" report, from its step). The service
stopped or killed → the actors keep training; the next service finds each by name and
re-attaches, replaying its reports (``RayDispatcher.reattach``). An actor that is gone (the
cluster restarted) → the job is queued again, and its new run, of the same name and storage,
resumes from the checkpoint Ray Train kept. A cluster that stops answering → the runs end
FAILED, saying so.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import wire
from . import datasets
from .store import Store, TunedModelRecord
from .trainer import StepResult
from .uploads import Uploads
from .worker import fail_run, finish_trained, log_finished, record_step, stop_run

POLL_SECONDS = 0.1  # claims, reports and the end of a run are seen this soon
# A cluster that answers no poll of a run for this long has lost it: the run fails, saying so.
LOST_SECONDS = 60.0
POLL_TIMEOUT_SECONDS = 10.0
# After its "done" report a run's fit() still winds down: Ray Train's controller removes the
# run's placement group (the CPUs and GPUs its workers held) and finishes its checkpoints. Killing
# the run's actor then would kill the controller mid-way and could leave the placement group
# holding those resources (its cleaner needs Ray's dashboard), so the next job would wait for
# them for ever. The actor is killed once fit() returned, or after this long.
WIND_DOWN_SECONDS = 30.0


@dataclass(frozen=True)
class RayOptions:
    """How the service uses the cluster (from `jobspec serve`'s flags)."""

    address: str  # "auto", "ray://host:port" or a head's "host:port"
    storage: str  # a folder every node sees, or s3://, gs://
    workers: int = 1  # a job's data-parallel workers, where the job does not say
    cpus_per_worker: float = 1.0
    gpus_per_worker: float | None = None  # None: 1 where the cluster has GPUs, else 0
    max_batch_tokens: int = 0
    checkpoint_seconds: float = 0.0
    standby: bool = True  # keep a run started ahead of the next job (raystandby.py)


@dataclass
class _Run:
    """A run this service follows: its job, its actor, how many of its reports were applied."""

    record: TunedModelRecord
    actor: Any
    ray_name: str  # its Ray Train run's (and actor's) name
    applied: int = 0
    trained_on: str = ""
    started: float = field(default_factory=time.time)
    last_answer: float = field(default_factory=time.monotonic)
    replay_to: int = 0  # steps logged before (a re-attached run): replayed without a log line
    published: float | None = None  # when its "done" was applied (monotonic); then it winds down


class RayDispatcher:
    """Trains the store's queued jobs on the Ray cluster, at most ``max_jobs`` at once."""

    def __init__(self, store: Store, state_dir: Path, registry: Any, options: RayOptions,
                 max_jobs: int, node_id: str, namespace: str,
                 idle: Callable[[], bool] = lambda: False,
                 on_idle: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.state_dir = state_dir
        self.registry = registry
        self.options = options
        self.max_jobs = max_jobs
        self.node_id = node_id
        self.namespace = namespace
        self.idle = idle
        self.on_idle = on_idle
        self.owner = os.getpid()
        self.runs: dict[str, _Run] = {}
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.gpus_per_worker = options.gpus_per_worker
        self.standby: Any = None  # raystandby.Standby with options.standby

    # -- starting and re-attaching -------------------------------------------------------------

    def start(self) -> None:
        import ray  # noqa: PLC0415

        from .raystandby import Standby  # noqa: PLC0415

        if self.gpus_per_worker is None:
            self.gpus_per_worker = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        if self.options.standby:
            self.standby = Standby(self.options, self.registry, self.namespace, self.node_id,
                                   self.gpus_per_worker, log)
        self.reattach()
        self.thread = threading.Thread(target=self._loop, daemon=True, name="ray-dispatch")
        self.thread.start()

    def reattach(self) -> None:
        """Take over the runs a previous service left on the cluster: those whose actor is
        alive are followed again (its reports replayed); the others are queued again (their
        new run resumes from Ray Train's checkpoint). Standby runs it left without a job are
        ended: this service starts its own."""
        import ray  # noqa: PLC0415
        from ray.exceptions import GetTimeoutError, RayActorError  # noqa: PLC0415

        from .raystandby import kill_run, orphans  # noqa: PLC0415

        for record in self.store.owned_runs():
            assert record.worker_pid is not None
            job = self._job(record)
            try:
                actor = ray.get_actor(job.run, namespace=self.namespace)
                # A standby run the last service named on the job, then stopped before
                # handing it over, gets its job now (a run that has the job says so).
                if not ray.get(actor.assign.remote(job), timeout=POLL_TIMEOUT_SECONDS):
                    continue  # it trains another job: this one is queued again (below)
            except (ValueError, RayActorError, GetTimeoutError):
                continue  # no actor of that name (or a dead one): nothing trains it any more
            if self.store.adopt(record.id, record.operation_id, record.worker_pid, self.owner):
                log(f"train tunedModels/{record.id}: re-attached to its Ray run {job.run}, "
                    "still training")
                self.runs[record.id] = _Run(record, actor, job.run,
                                            replay_to=record.completed_steps,
                                            started=record.start_time or time.time())
        recorded = {run.ray_name for run in self.runs.values()}
        for name in orphans(ray.util.list_named_actors(), recorded):
            log(f"ending the standby Ray Train run {name} a previous service left")
            try:
                kill_run(ray.get_actor(name, namespace=self.namespace), self.options.storage,
                         name, log)
            except ValueError:
                pass  # it ended meanwhile
        requeued = self.store.release_orphans({self.owner})
        if requeued:
            log(f"{len(requeued)} interrupted training job(s) queued again: "
                f"{', '.join(requeued)}")

    def _launch(self, record: TunedModelRecord) -> None:
        """Stage the job's examples and hand it to the standby run, or start its own run's
        actor (or find the one that runs)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        from .raystorage import RunStorage  # noqa: PLC0415
        from .rayrun import remote_run_actor  # noqa: PLC0415

        name = f"tunedModels/{record.id}"
        try:
            storage = RunStorage(self.options.storage, record.id, record.operation_id)
            training, validation = datasets.stored(self.store, Uploads(self.state_dir), record.id,
                                                   with_validation=bool(record.validation_count))
            storage.write_examples("training", map(wire.conversation_line, training))
            if record.validation_count:
                storage.write_examples("validation", map(wire.conversation_line, validation))
            job = self._job(record)
            if self.standby is not None and record.ray_run is None:
                taken = self.standby.take(job, lambda run: self.store.name_ray_run(
                    record.id, record.operation_id, self.owner, run))
                if taken is not None:
                    log(f"train {name}: handed to the standby Ray Train run {taken[0]}")
                    self.runs[record.id] = _Run(record, taken[1], taken[0])
                    return
            if self.standby is not None:  # its resources go to this job's own run
                self.standby.release()
            actor = remote_run_actor().options(
                name=job.run, namespace=self.namespace,
                lifetime="detached", get_if_exists=True, num_cpus=0,
                # On the service's node: the run's controller goes where its driver is, so
                # the run lives as long as the service's machine, not a worker node.
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            ).remote(job)
        except Exception as exc:  # noqa: BLE001 - the job fails, the service goes on
            log(f"train {name}: could not start on the Ray cluster: {type(exc).__name__}: {exc}")
            fail_run(self.store, self.state_dir, record, self.owner,
                     f"Training could not start on the Ray cluster: {type(exc).__name__}: {exc}")
            return
        log(f"train {name}: started Ray Train run {job.run} "
            f"({job.workers} worker(s), {self.options.cpus_per_worker:g} CPU"
            f"{f', {job.gpus_per_worker:g} GPU' if job.gpus_per_worker else ''} each)")
        self.runs[record.id] = _Run(record, actor, job.run)

    def _job(self, record: TunedModelRecord) -> Any:
        from .raytrain import RayTrainJob  # noqa: PLC0415

        workers = record.workers or self.options.workers  # the job file's, else the flag's
        gpus = record.gpus_per_worker
        hp = record.hyperparameters
        return RayTrainJob(
            model_id=record.id, operation_id=record.operation_id,
            base=self.registry.models[record.local_model], epochs=int(hp["epochCount"]),
            batch_size=int(hp["batchSize"]), learning_rate=record.effective_lr,
            patience=record.early_stopping_patience, has_validation=bool(record.validation_count),
            max_batch_tokens=self.options.max_batch_tokens,
            checkpoint_seconds=self.options.checkpoint_seconds, storage=self.options.storage,
            workers=workers, gpus_per_worker=self.gpus_per_worker if gpus is None else gpus,
            cpus_per_worker=self.options.cpus_per_worker,
            threads=max(1, int(self.options.cpus_per_worker)), ray_run=record.ray_run)

    # -- following -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            for run in list(self.runs.values()):
                try:
                    self._follow(run)
                except Exception as exc:  # noqa: BLE001 - one run's trouble must not stop all
                    self._end(run, f"Training on the Ray cluster failed: {type(exc).__name__}: "
                                   f"{exc}")
            while len(self.runs) < self.max_jobs and not self.stopping.is_set():
                record = self.store.claim_next(self.owner)
                if record is None:
                    break
                self._launch(record)
            if self.standby is not None and not self.stopping.is_set():
                if not self.runs:  # a run's resources, and its restarts, come first
                    self.standby.start()
                self.standby.check()
            if self.idle():
                self.on_idle()

    def _still_ours(self, run: _Run) -> bool:
        now = self.store.get(run.record.id, with_snapshots=False)
        return (now is not None and now.operation_id == run.record.operation_id
                and now.worker_pid == self.owner and not now.cancel_requested)

    def _follow(self, run: _Run) -> None:
        import ray  # noqa: PLC0415
        from ray.exceptions import GetTimeoutError, RayActorError  # noqa: PLC0415

        name = f"tunedModels/{run.record.id}"
        if run.published is None and not self._still_ours(run):
            self._stop(run)
            return
        try:
            reports, ended = ray.get(run.actor.poll.remote(run.applied),
                                     timeout=POLL_TIMEOUT_SECONDS)
        except GetTimeoutError:
            if run.published is not None:  # trained and published: nothing left to lose
                self._forget(run)
            elif time.monotonic() - run.last_answer > LOST_SECONDS:
                self._end(run, f"The Ray cluster did not answer for {LOST_SECONDS:g}s; the "
                               "run is lost.")
            return
        except RayActorError as exc:
            if run.published is not None:
                self._forget(run)
                return
            self._end(run, "The Ray run's actor on the service's node died "
                           f"({str(exc).strip().splitlines()[0] if str(exc).strip() else exc}); "
                           "create the job again.")
            return
        run.last_answer = time.monotonic()
        if run.published is not None:  # published: forgotten once its fit() has returned
            if ended is not None or time.monotonic() - run.published > WIND_DOWN_SECONDS:
                self._forget(run)
            return
        for report in reports:
            run.applied += 1
            if not self._apply(run, report):
                return
        if ended is not None and run.record.id in self.runs:
            error = ended.get("error") or "the run ended without its result"
            log(f"train {name}: the Ray run failed: {error}")
            self._end(run, f"Training failed on the Ray cluster: {error}")

    def _apply(self, run: _Run, report: dict[str, Any]) -> bool:
        """Apply one report to the store; False when the run ended (then it is forgotten)."""
        record, name = run.record, f"tunedModels/{run.record.id}"
        event = report.get("event")
        if event == "start":
            run.trained_on = (f"{report['trained_on']} (node {str(report['node_id'])[:8]})")
            if not self.store.start_run(record.id, record.operation_id, self.owner,
                                        int(report["from_step"]), run.trained_on):
                self._stop(run)
                return False
            if int(report["from_step"]) >= run.replay_to:
                log(f"train {name}: {report.get('resumed') or 'started'} "
                    f"({record.example_count} examples, {record.total_steps} steps) on "
                    f"{run.trained_on}")
            return True
        if event == "steps":  # applied one by one; none after one that ended the run
            return all(self._apply(run, {"event": "step", **step}) for step in report["steps"])
        if event == "step":
            result = StepResult(int(report["step"]), int(report["epoch"]), float(report["loss"]),
                                int(report.get("micro_batches") or 1),
                                report.get("completed_epoch"), report.get("validation_loss"))
            if not record_step(self.store, record, self.owner, result,
                               self.options.max_batch_tokens, at=report.get("time"),
                               logged=result.step > run.replay_to):
                self._stop(run)
                return False
            return True
        if event == "done":
            self._publish(run, report)
            return False  # nothing after it applies; the run winds down (WIND_DOWN_SECONDS)
        return True  # a report of a later version: nothing this service knows to do

    def _publish(self, run: _Run, report: dict[str, Any]) -> None:
        from .raystorage import RunStorage  # noqa: PLC0415

        record = run.record
        storage = RunStorage(self.options.storage, record.id, record.operation_id)
        state = finish_trained(
            self.store, self.state_dir, record, self.owner,
            lambda partial: storage.download_dir(str(report.get("adapter") or "adapter"),
                                                 partial),
            kept_epoch=report.get("kept_epoch"), stop_reason=report.get("stop_reason"),
            steps=int(report["steps"]))
        log_finished(f"tunedModels/{record.id}", state, time.time() - run.started,
                     run.trained_on)
        run.published = time.monotonic()

    def _stop(self, run: _Run) -> None:
        """The job was cancelled or deleted (or is no longer this service's): kill its run."""
        stop_run(self.store, self.state_dir, run.record, self.owner,
                 f"tunedModels/{run.record.id}")
        self._forget(run)

    def _end(self, run: _Run, message: str) -> None:
        fail_run(self.store, self.state_dir, run.record, self.owner, message)
        self._forget(run)

    def _forget(self, run: _Run) -> None:
        """Kill the run's actor (and with it the Ray Train run) and remove its storage."""
        from .raystandby import kill_run  # noqa: PLC0415
        from .raystorage import RunStorage  # noqa: PLC0415

        self.runs.pop(run.record.id, None)
        record = run.record
        kill_run(run.actor, self.options.storage, run.ray_name, log)
        try:
            RunStorage(self.options.storage, record.id, record.operation_id).remove()
        except OSError as exc:
            log(f"train tunedModels/{record.id}: its storage was not removed: {exc}")

    def stop(self) -> None:
        """Stop following; the runs go on training on the cluster (a restarted service
        re-attaches to them), and their jobs stay this service's in the store."""
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=30)
        if self.standby is not None:
            self.standby.release()
        import ray  # noqa: PLC0415

        ray.shutdown()  # this driver leaves; the detached actors stay
        training = [run for run in self.runs.values() if run.published is None]
        if training:
            log(f"{len(training)} job(s) go on training on the Ray cluster; the next "
                "`jobspec serve --ray` with this state directory re-attaches to them")


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)
