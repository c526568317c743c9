"""`jobspec serve --ray`'s standby run: a Ray Train run started ahead of the next job.

Starting a Ray Train run costs seconds before its first step, whatever the job: Ray Train starts
a controller, a worker group and their processes, and each worker imports torch, transformers
and peft and loads the base model (about 11 s on two cores, where the shipped job trains in 13 s).
A standby run pays that while the service is idle: its workers load the service's default base
model and wait for a job (raytrain.StandbyRun, rayrun.RunActor.wait_job). The next job whose
workers and resources match it is handed to it (``take``); the service records the run's name
on the job first (Store.name_ray_run), so a restarted service finds the run, and a new run
resumes from its checkpoints. A job that does not match releases it (its resources free for the
job's own run).

One standby at most, started only while the service trains nothing: it holds one run's
resources (a worker's CPUs, and GPUs where the workers take them) while it waits, and must not
take them from a run that a lost node makes restart. `--no-ray-standby` turns it off.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from .raytrain import RayTrainJob, StandbyRun

PREFIX = "jobspec-standby-"  # its actor's and its Ray Train run's name: PREFIX + a random part
CHECK_SECONDS = 2.0  # how often an idle service asks its standby how it is
ANSWER_SECONDS = 10.0  # a standby that does not answer within this is given up
RETRY_SECONDS = 60.0  # after a standby failed, the next starts no sooner


class Standby:
    """The service's standby run (or none): started, checked, handed a job, or released."""

    def __init__(self, options: Any, registry: Any, namespace: str, node_id: str,
                 gpus_per_worker: float, log: Any) -> None:
        self.options = options
        self.registry = registry
        self.namespace = namespace
        self.node_id = node_id
        self.gpus_per_worker = gpus_per_worker
        self.log = log
        self.run: StandbyRun | None = None
        self.actor: Any = None
        self.ready = False
        self.checked = 0.0
        self.failed_at: float | None = None

    def start(self) -> None:
        """Start one unless there is one, or one failed less than RETRY_SECONDS ago."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: PLC0415

        from .rayrun import remote_run_actor  # noqa: PLC0415

        if self.run is not None or (self.failed_at is not None
                                    and time.monotonic() - self.failed_at < RETRY_SECONDS):
            return
        name = PREFIX + uuid.uuid4().hex[:12]
        cpus = self.options.cpus_per_worker
        run = StandbyRun(name=name, namespace=self.namespace, host=name,
                         base=self.registry.default, storage=self.options.storage,
                         workers=self.options.workers, gpus_per_worker=self.gpus_per_worker,
                         cpus_per_worker=cpus, threads=max(1, int(cpus)))
        try:
            self.actor = remote_run_actor().options(
                name=name, namespace=self.namespace, lifetime="detached", num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            ).remote(None, run)
        except Exception as exc:  # noqa: BLE001 - jobs then start their own runs
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        self.run, self.ready, self.checked = run, False, time.monotonic()
        self.log(f"standby Ray Train run {name} starting for the next job ({run.workers} "
                 f"worker(s), {run.cpus_per_worker:g} CPU"
                 f"{f', {run.gpus_per_worker:g} GPU' if run.gpus_per_worker else ''} each, "
                 f"base model {run.base.id})")

    def check(self) -> None:
        """Every CHECK_SECONDS: say when it is ready; drop it when its run ended (it failed)."""
        import ray  # noqa: PLC0415

        if self.run is None or time.monotonic() - self.checked < CHECK_SECONDS:
            return
        self.checked = time.monotonic()
        try:
            state = ray.get(self.actor.standby_state.remote(), timeout=ANSWER_SECONDS)
            ended = (ray.get(self.actor.poll.remote(0), timeout=ANSWER_SECONDS)[1]
                     if state == "ended" else None)
        except Exception as exc:  # noqa: BLE001 - a dead or unanswering actor: given up
            self._drop()
            self._failed(f"{type(exc).__name__}: {exc}")
            return
        if state == "ready" and not self.ready:
            self.ready = True
            self.log(f"standby Ray Train run {self.run.name} ready: the next job starts on it")
        elif state == "ended":
            self._drop()
            self._failed(str((ended or {}).get("error") or "its run ended"))

    def take(self, job: RayTrainJob, record_name: Any) -> tuple[str, Any] | None:
        """Hand ``job`` to the standby run: its name and actor; None when there is none, or it
        does not fit the job (then it is released) or is gone. ``record_name(name)`` records the
        run on the job first (None: takes it back); False from it (the job is no longer ours)
        keeps the standby."""
        import ray  # noqa: PLC0415

        if self.run is None:
            return None
        run, actor = self.run, self.actor
        if not run.fits(job):
            self.log(f"standby Ray Train run {run.name} released: the job asks for other "
                     "workers or resources")
            self.release()
            return None
        if not record_name(run.name):
            return None
        self.run = self.actor = None
        try:
            if ray.get(actor.assign.remote(job), timeout=ANSWER_SECONDS):
                return run.name, actor
        except Exception as exc:  # noqa: BLE001 - the job starts a run of its own
            self.log(f"standby Ray Train run {run.name} could not take the job: "
                     f"{type(exc).__name__}: {exc}")
        kill_run(actor, self.options.storage, run.name, self.log)
        record_name(None)  # the job's own run, of its own name, trains it instead
        return None

    def release(self) -> None:
        """End the standby run without a job (its workers return, freeing their resources)."""
        import ray  # noqa: PLC0415

        if self.run is None:
            return
        run, actor = self.run, self.actor
        self.run = self.actor = None
        try:
            ray.get(actor.release.remote(), timeout=ANSWER_SECONDS)
            # Its fit() returns within a few seconds; waiting lets Ray Train remove the run's
            # placement group itself before the actor goes.
            deadline = time.monotonic() + ANSWER_SECONDS
            while (time.monotonic() < deadline
                   and ray.get(actor.standby_state.remote(), timeout=ANSWER_SECONDS) != "ended"):
                time.sleep(0.1)
        except Exception:  # noqa: BLE001 - killed below either way
            pass
        kill_run(actor, self.options.storage, run.name, self.log)

    def _drop(self) -> None:
        assert self.run is not None
        run, actor = self.run, self.actor
        self.run = self.actor = None
        kill_run(actor, self.options.storage, run.name, self.log)

    def _failed(self, why: str) -> None:
        self.failed_at = time.monotonic()
        self.log(f"standby Ray Train run failed ({why[:500]}); jobs start runs of their own, "
                 f"and another standby is tried in {RETRY_SECONDS:g}s")


def kill_run(actor: Any, storage: str, name: str, log: Any) -> None:
    """Kill a run's actor (its Ray Train run with it) and remove the run's folder."""
    import ray  # noqa: PLC0415

    from .raystorage import remove_ray_run  # noqa: PLC0415

    try:
        ray.kill(actor, no_restart=True)
    except Exception as exc:  # noqa: BLE001 - gone already, or the cluster is
        log(f"Ray actor {name} could not be killed: {exc}")
    try:
        remove_ray_run(storage, name)
    except OSError as exc:
        log(f"Ray Train run folder of {name} was not removed: {exc}")


def orphans(namespace_actors: list[str], recorded: set[str]) -> list[str]:
    """The standby runs a previous service left (named, but on no job the store has): killed
    at start, since a restarted service starts its own."""
    return sorted(name for name in namespace_actors
                  if name.startswith(PREFIX) and name not in recorded)
