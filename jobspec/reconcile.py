"""Plan and apply: compare the job files with what the tuning service holds, and make it so.

Every step is idempotent and resumable, in the manner of a Kubernetes operator's handlers: a
backend finds a job's model by what jobspec recorded on it (job, fingerprint and owner, in its
description or labels), so re-running apply adopts what an interrupted run created or polls what
is still training, and never pays for a second model; another owner's model is never taken for
this workspace's. Nothing here knows which backend it talks to.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import ownership
from .backends.base import ACTIVE, CREATING, FAILED, Backend, Progress, RemoteModel
from .errors import Interrupted, JobSpecError, PermanentBackendError
from .identity import Identity, identify_many
from .retrying import PollPolicy
from .spec import Job
from .workspace import Owner

CREATE, UNCHANGED, IN_PROGRESS, FAILED_ACTION, RECREATE = (
    "create", "unchanged", "in progress", "failed", "recreate")


@dataclass(frozen=True)
class JobPlan:
    job: Job
    identity: Identity
    action: str
    model_name: str  # the current model's name, or what the backend will call the new one
    current: RemoteModel | None = None
    superseded: tuple[RemoteModel, ...] = ()  # this workspace's older models of the job
    foreign: tuple[RemoteModel, ...] = ()  # the job's models another workspace (or none) owns
    reasons: tuple[str, ...] = ()
    progress_percent: float | None = None
    expected_steps: int | None = None  # the backend's count, when known before it trains
    hyperparameters: dict[str, Any] | None = None  # what the backend applies, snake_case

    @property
    def changes(self) -> bool:
        return self.action in (CREATE, RECREATE)


@dataclass(frozen=True)
class Plan:
    backend: str
    endpoint: str
    owner: Owner
    jobs: tuple[JobPlan, ...]
    models: tuple[RemoteModel, ...] = ()  # the listing the plan was made from

    def count(self, action: str) -> int:
        return sum(1 for j in self.jobs if j.action == action)

    @property
    def superseded(self) -> list[RemoteModel]:
        return [m for j in self.jobs for m in j.superseded]

    @property
    def has_changes(self) -> bool:
        return any(j.changes for j in self.jobs)


def _why(job: Job, wanted: dict[str, Any], old: RemoteModel) -> tuple[str, ...]:
    """What changed since ``old``: its base model, or what the backend applies of the
    hyperparameters (``wanted``), else the examples."""
    reasons = []
    if old.base_model != job.base_model:
        reasons.append(f"base model {old.base_model} → {job.base_model}")
    for key in sorted(set(wanted) | set(old.hyperparameters)):
        before, after = old.hyperparameters.get(key), wanted.get(key)
        if before != after and not (before is None and after is None):
            reasons.append(f"{key} {_show(before)} → {_show(after)}")
    if not reasons:
        reasons.append("training examples changed")
    return tuple(reasons)


def _show(value: object) -> str:
    return "unset" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class Naming(Protocol):
    """What comparing jobs with a service's models needs of its backend: how it names and
    trains a job's model, all known without asking the service (a ``Backend`` is one)."""

    name: str  # the backend's, for the plan's header
    endpoint: str
    owner: Owner  # the workspace whose plan it is

    def legacy_name(self, identity: Identity) -> str | None: ...
    def planned_name(self, identity: Identity, taken: frozenset[str] = frozenset()) -> str: ...
    def expected_steps(self, job: Job, identity: Identity) -> int | None: ...
    def hyperparameters(self, job: Job) -> dict[str, Any]: ...


def plan(jobs: list[tuple[Job, Identity]], backend: Backend, *,
         recreate_failed: bool = False) -> Plan:
    """One paginated listing of the service's models, compared with every job."""
    return compare(jobs, backend.list_models(), backend, recreate_failed=recreate_failed)


def compare(jobs: Sequence[tuple[Job, Identity]], models: Sequence[RemoteModel],
            naming: Naming, *, recreate_failed: bool = False) -> Plan:
    """Every job compared with ``models``, the service's listing; no I/O.

    A job's current model is this workspace's own (``ownership.job_models``): another owner's
    model of the same job and examples is not used, even under the same id. Only models this
    workspace owns can be superseded (and so pruned); a model of the same job name that another
    repository, checkout or older jobspec created is listed as foreign and left alone.
    """
    # Once, not per job: each job then looks at its own models, and at the names taken.
    grouped, taken = ownership.by_job(models), frozenset(m.name for m in models)
    planned = tuple(_compare_job(job, identity, grouped.get(job.name, []), taken, naming,
                                 recreate_failed)
                    for job, identity in jobs)
    return Plan(naming.name, naming.endpoint, naming.owner, planned, tuple(models))


def _compare_job(job: Job, identity: Identity, job_models: Sequence[RemoteModel],
                 taken: frozenset[str], naming: Naming, recreate_failed: bool) -> JobPlan:
    """``job_models``: the models recording this job (``ownership.by_job``); ``taken``: the
    names of every model listed, for the name a new model will take."""
    owner_id = naming.owner.id
    found = ownership.job_models(job_models, owner_id, job.name, identity.fingerprint,
                                 naming.legacy_name(identity))
    current, superseded = found.current, found.superseded
    percent = None
    if current is None:
        action = CREATE
    elif current.state == ACTIVE:
        action = UNCHANGED
    elif current.state == CREATING:
        action = IN_PROGRESS
        steps = current.snapshots[-1].step if current.snapshots else 0
        expected = current.total_steps or naming.expected_steps(job, identity)
        percent = 100.0 * steps / expected if expected else None
    elif recreate_failed and ownership.recreate(current, owner_id).allowed:
        action = RECREATE
    else:
        action = FAILED_ACTION
    reasons: tuple[str, ...] = ()
    if action == FAILED_ACTION and recreate_failed and current is not None:
        reasons = (f"--recreate-failed leaves it: {ownership.recreate(current, owner_id).reason}",)
    if action == CREATE and superseded:
        newest = max(superseded, key=lambda m: m.create_time or "")
        reasons = _why(job, naming.hyperparameters(job), newest)
    name = current.name if current else naming.planned_name(identity, taken)
    return JobPlan(job, identity, action, name, current, superseded, found.foreign, reasons,
                   percent, naming.expected_steps(job, identity), naming.hyperparameters(job))


@dataclass(frozen=True)
class Event:
    job: str
    kind: str  # created, adopted, deleted, progress, active, failed, timeout, error
    message: str = ""
    progress: Progress | None = None


@dataclass
class Outcome:
    job_plan: JobPlan
    state: str = CREATING  # ACTIVE, FAILED, CREATING (not waited for, or timed out), ERROR
    model: RemoteModel | None = None
    progress: Progress | None = None
    error: str | None = None


@dataclass
class ApplyOptions:
    parallel: int = 4
    wait: bool = True
    poll: PollPolicy = field(default_factory=lambda: PollPolicy(0.5, 5.0))
    prune: bool = False


class Applier:
    def __init__(self, backend: Backend, options: ApplyOptions,
                 on_event: Callable[[Event], None]) -> None:
        self.backend = backend
        self.options = options
        self.on_event = on_event
        self.stop = threading.Event()

    def _sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise Interrupted()

    def _failed(self, outcome: Outcome, error: JobSpecError) -> None:
        """A request about the job failed: its outcome is ERROR, with why, and it is said."""
        outcome.state, outcome.error = "ERROR", str(error)
        self.on_event(Event(outcome.job_plan.job.name, "error", str(error)))

    def _submit(self, outcome: Outcome) -> None:
        job_plan = outcome.job_plan
        name = job_plan.job.name
        try:
            if job_plan.action == RECREATE:
                self._delete_failed(job_plan)
            progress = self.backend.create(job_plan.job, job_plan.identity)
        except JobSpecError as exc:
            self._failed(outcome, exc)
            return
        outcome.progress = progress
        total = f", {progress.total_steps} steps" if progress.total_steps else ""
        if progress.adopted:
            self.on_event(Event(name, "adopted", f"adopted {progress.model_name}, which an "
                                "earlier request already created", progress))
        else:
            self.on_event(Event(name, "created", f"created {progress.model_name}{total}", progress))
        self._settle(outcome, progress)

    def _delete_failed(self, job_plan: JobPlan) -> None:
        """Remove the job's FAILED model, having read it again just before: between plan and
        now it may have been replaced, and only a FAILED model this workspace made may go."""
        model = self.backend.get_model(job_plan.model_name)
        if model is not None:
            decision = ownership.recreate(model, self.backend.owner.id)
            if not decision.allowed:
                raise PermanentBackendError(f"{model.name}: not deleted: {decision.reason}")
            self.on_event(Event(job_plan.job.name, "deleted",
                                self.backend.remove(model, "failed")))

    def _settle(self, outcome: Outcome, progress: Progress) -> None:
        name = outcome.job_plan.job.name
        outcome.progress = progress
        if not progress.done:
            return
        if progress.error:
            outcome.state, outcome.error = FAILED, progress.error
            self.on_event(Event(name, "failed", progress.error, progress))
        else:
            outcome.state = ACTIVE
            outcome.model = progress.model or self.backend.get_model(progress.model_name)
            self.on_event(Event(name, "active", f"{progress.model_name} is ACTIVE", progress))

    def _poll(self, outcome: Outcome) -> None:
        name = outcome.job_plan.job.name
        seen = outcome.progress
        model = seen.model_name if seen else outcome.job_plan.model_name
        operation = seen.operation if seen else None
        last_seen: list[tuple] = [()]

        def check() -> Progress:
            progress = self.backend.progress(model, operation)
            # A new step, or (for a backend that counts none) a new state or statistics.
            now = (progress.completed_steps, progress.state_label, progress.stats)
            if now != last_seen[0] and not progress.done:
                last_seen[0] = now
                self.on_event(Event(name, "progress", "", progress))
            return progress

        policy = self.options.poll
        try:
            progress = policy.poll(check, lambda seen: seen.done, sleep=self._sleep)
        except JobSpecError as exc:
            self._failed(outcome, exc)
            return
        if not progress.done:
            outcome.progress = progress
            self.on_event(Event(name, "timeout", f"still training after {policy.timeout:g}s",
                                progress))
            return
        self._settle(outcome, progress)

    def _prune(self, outcomes: list[Outcome]) -> None:
        """Delete superseded models that ``ownership.prune`` allows: only of jobs whose
        replacement is ACTIVE, so that a job whose new model failed or still trains keeps the
        model that works. Those kept are told once per job and reason."""
        for outcome in outcomes:
            job_plan = outcome.job_plan
            kept: list[str] = []
            for model in job_plan.superseded:
                decision = ownership.prune(model, self.backend.owner.id, job_plan.job.name,
                                           job_plan.identity.fingerprint, job_plan.model_name,
                                           outcome.state)
                if not decision.allowed:
                    kept += [decision.reason] if decision.reason not in kept else []
                    continue
                self.on_event(Event(job_plan.job.name, "deleted",
                                    self.backend.remove(model, "superseded")))
            for reason in kept:
                self.on_event(Event(job_plan.job.name, "kept",
                                    f"kept superseded models: {reason}"))

    def run(self, plan: Plan) -> list[Outcome]:
        outcomes = [Outcome(j) for j in plan.jobs]
        for outcome in outcomes:
            current = outcome.job_plan.current
            if outcome.job_plan.action == UNCHANGED:
                outcome.state, outcome.model = ACTIVE, current
            elif outcome.job_plan.action == FAILED_ACTION:
                outcome.state = FAILED
                outcome.error = ("the model's tuning failed; " + (
                    outcome.job_plan.reasons[0] if outcome.job_plan.reasons
                    else "re-run with --recreate-failed to retry"))
        workers = max(1, self.options.parallel)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="submit") as pool:
            futures = [pool.submit(self._submit, o) for o in outcomes if o.job_plan.changes]
            self._wait_all(futures)
        pending = [o for o in outcomes if o.state == CREATING
                   and (o.progress is None or not o.progress.done)]
        if self.options.wait and pending:
            with ThreadPoolExecutor(max_workers=min(64, len(pending)),
                                    thread_name_prefix="poll") as pool:
                self._wait_all([pool.submit(self._poll, o) for o in pending])
        if self.options.prune:
            self._prune(outcomes)
        return outcomes

    def _wait_all(self, futures: list) -> None:
        try:
            for future in futures:
                while True:
                    try:
                        future.result(timeout=0.2)
                        break
                    except TimeoutError:
                        continue
        except BaseException:  # Ctrl-C, or a bug: tell the other threads to stop waiting
            self.stop.set()
            raise


def identify_all(jobs: list[Job]) -> list[tuple[Job, Identity]]:
    """Each job with its identity (a data file jobs share read once: identify_many)."""
    return list(zip(jobs, identify_many(jobs)))
