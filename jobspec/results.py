"""What a run came to, job by job, as frozen values, and the rules that decide them.

After apply (or `jobspec eval`, `jobspec report`) each planned job has a ``JobStatus`` (where it
stands), and then one ``JobResult``: its model, what it trained on (``Tokens``), its loss curve
and its eval (evaloutcome.EvalOutcome: the statistics and the gate). Whether an earlier eval may
stand in for asking again is decided here and nowhere else (``decide_eval``). report.py,
reportmd.py and charts.py only show these values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import timestamps
from .backends.base import ACTIVE, CREATING, RemoteModel, Snapshot, TokenCount
from .evaloutcome import EvalOutcome
from .evaluate import deterministic, generation_config
from .identity import Identity
from .reconcile import FAILED_ACTION, IN_PROGRESS, JobPlan, Outcome
from .spec import Job

# States a job can have beside the service's own: a request about it failed; never created.
NOT_CREATED, ERROR = "NOT_CREATED", "ERROR"

# How a job's eval came to be in its result.
ASKED, REUSED, KEPT, SKIPPED, NO_EVAL, NOT_RUN, NOT_DEPLOYED = (
    "asked", "reused", "kept", "skipped", "none", "not_run", "not_deployed")
# The eval was to be asked, but the model could not be served for it (a deployment for the
# eval failed); the result's ``eval_note`` says why. The run is then not complete.
DEPLOY_FAILED = "deploy_failed"


class EvalMode(enum.Enum):
    """How the command that writes the results wants each eval to come about."""

    ASK = "ask"  # `jobspec eval`: ask every prompt again
    REUSE = "reuse"  # `jobspec apply`: ask, unless an earlier eval is known to give the same
    SKIP = "skip"  # `apply --skip-eval`: no eval results at all, and no gate
    KEEP = "keep"  # `jobspec report`: keep the last eval of the same asks, ask nothing


@dataclass(frozen=True)
class JobStatus:
    """Where one planned job stands at the end of a run (made by ``job_status`` only)."""

    job: Job
    identity: Identity
    state: str  # ACTIVE, CREATING, FAILED, ERROR (a request about it failed), NOT_CREATED
    model: RemoteModel | None = None  # as last read from the service, when it was
    reason: str | None = None  # why it is not ACTIVE, in words
    snapshots: tuple[Snapshot, ...] = ()  # progress seen after the model was read, if any
    model_name: str = ""  # the model's name on the backend (or what it will be)
    expected_steps: int | None = None  # the backend's step count, when known before training
    hyperparameters: Mapping[str, Any] | None = None  # as the backend applies them (else the job's)


def job_status(job_plan: JobPlan, state: str, model: RemoteModel | None = None, *,
               reason: str | None = None, snapshots: tuple[Snapshot, ...] = (),
               model_name: str | None = None) -> JobStatus:
    """The one builder of a ``JobStatus``: the plan says which job, its identity, its step count
    and hyperparameters as the backend applies them, and (unless told) the model's name."""
    return JobStatus(job_plan.job, job_plan.identity, state, model, reason, snapshots,
                     model_name=job_plan.model_name if model_name is None else model_name,
                     expected_steps=job_plan.expected_steps,
                     hyperparameters=job_plan.hyperparameters)


def status_after_apply(outcome: Outcome, still_training: str) -> JobStatus:
    """Where a job stands after apply; ``still_training`` says why a model still CREATING was
    not waited for to the end."""
    job_plan = outcome.job_plan
    model = outcome.model
    if model is None and job_plan.action in (FAILED_ACTION, IN_PROGRESS):
        model = job_plan.current  # the model as planned: a FAILED one left alone, or training
    # The name the service gave it (a backend that names its own runs does so at create).
    name = (model.name if model else outcome.progress.model_name if outcome.progress
            else job_plan.model_name)
    if outcome.state == ACTIVE:
        return job_status(job_plan, ACTIVE, model, model_name=name)
    reason = outcome.error
    if reason is None and outcome.state == CREATING:
        reason = still_training
    snapshots = outcome.progress.snapshots if outcome.progress else ()  # newer than the plan's
    return job_status(job_plan, outcome.state, model, reason=reason or "not ACTIVE",
                      snapshots=snapshots, model_name=name)


def status_now(job_plan: JobPlan) -> JobStatus:
    """Where a job stands as the service holds it now (eval and report train nothing)."""
    current = job_plan.current
    if current is None:
        return job_status(job_plan, NOT_CREATED,
                          reason="not created yet; run `jobspec apply` first")
    if current.state == ACTIVE:
        return job_status(job_plan, ACTIVE, current)
    why = ("still training; run `jobspec apply` to wait for it" if current.state == CREATING
           else "its tuning failed; `jobspec apply --recreate-failed` trains it again")
    return job_status(job_plan, current.state, current, reason=why)


@dataclass(frozen=True)
class Tokens:
    """What a job trains on, in tokens, as the backend counted (or estimated) them."""

    examples: int
    input: int
    output: int
    total: int  # one pass over the examples
    epochs: int
    trained: int  # total x epochs
    exact: bool
    method: str


@dataclass(frozen=True)
class Timings:
    created: str | None  # RFC 3339, as the service wrote them
    started: str | None
    completed: str | None
    duration_seconds: float | None  # from started to completed


@dataclass(frozen=True)
class LossPoint:
    step: int
    epoch: int
    mean_loss: float


@dataclass(frozen=True)
class JobResult:
    """Everything a run's reports say of one planned job, whatever became of it."""

    job: str
    file: str
    fingerprint: str
    tuned_model: str
    state: str
    service_state: str | None
    reason: str | None  # why it is not ACTIVE; None when it is
    backend: str
    endpoint: str  # without user info, query or fragment (public_endpoint)
    base_model: str
    hyperparameters: Mapping[str, Any]
    example_count: int
    total_steps: int | None
    data_stats: Mapping[str, int] | None
    tokens: Tokens | None
    timings: Timings
    loss_curve: tuple[LossPoint, ...]
    validation_curve: tuple[LossPoint, ...]
    kept_epoch: int | None
    stop_reason: str | None
    device: str | None
    eval_status: str  # ASKED, REUSED, ... or DEPLOY_FAILED (the constants above)
    evaluation: EvalOutcome | None
    eval_note: str | None = None  # why the eval was not run, in words, beyond its status

    @property
    def gate_passed(self) -> bool:
        """Whether its eval's gate passed; True when no gate was judged."""
        return self.evaluation is None or self.evaluation.gate_passed

    @property
    def eval_missing(self) -> bool:
        """Whether the eval this run set out to ask could not be run (DEPLOY_FAILED)."""
        return self.eval_status == DEPLOY_FAILED

    @property
    def ok(self) -> bool:
        return self.state == ACTIVE and self.gate_passed and not self.eval_missing


def public_endpoint(url: str) -> str:
    """``url`` without user info, query or fragment: what a result may hold."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _curve(snapshots: tuple[Snapshot, ...]) -> tuple[LossPoint, ...]:
    return tuple(LossPoint(s.step, s.epoch, s.mean_loss) for s in snapshots)


def job_result(status: JobStatus, backend: str, endpoint: str,
               evaluation: EvalOutcome | None, eval_status: str,
               tokens: Tokens | None = None, eval_note: str | None = None) -> JobResult:
    """One job's result, from where it stands and how its eval went (``eval_note``: why it
    was not run, where its status does not say all)."""
    job, identity, model = status.job, status.identity, status.model
    snapshots = status.snapshots or (model.snapshots if model is not None else ())
    started = model.start_time if model else None
    completed = model.complete_time if model else None
    return JobResult(
        job=job.name, file=job.path, fingerprint=identity.fingerprint,
        tuned_model=status.model_name, state=status.state,
        service_state=model.service_state if model else None,
        reason=None if status.state == ACTIVE else status.reason,
        backend=backend, endpoint=public_endpoint(endpoint), base_model=job.base_model,
        hyperparameters=(status.hyperparameters if status.hyperparameters is not None
                         else job.hyperparameters.as_dict()),
        example_count=identity.example_count,
        total_steps=(model.total_steps if model and model.total_steps
                     else status.expected_steps),
        data_stats=model.stats.as_dict() if model and model.stats else None,
        tokens=tokens,
        timings=Timings(model.create_time if model else None, started, completed,
                        timestamps.seconds_between(started, completed)),
        loss_curve=_curve(snapshots),
        validation_curve=_curve(model.validation if model else ()),
        kept_epoch=model.kept_epoch if model else None,
        stop_reason=model.stop_reason if model else None,
        device=model.device if model else None,
        eval_status=eval_status, evaluation=evaluation, eval_note=eval_note)


def eval_trouble(built: Sequence[JobResult]) -> str:
    """What went wrong with a run's evals, as the run's last line says it ("" when nothing
    did): a gate that failed, and evals that could not be run."""
    notes = []
    if not all(result.gate_passed for result in built):
        notes.append("an eval gate failed")
    missing = [result.job for result in built if result.eval_missing]
    if missing:
        notes.append(f"the eval of {', '.join(missing)} could not be run")
    return "; ".join(notes)


def matching_eval(earlier: JobResult | None, status: JobStatus, backend: str,
                  endpoint: str) -> EvalOutcome | None:
    """The eval of an earlier result when it asked exactly what the job asks now (prompts,
    each with its system instruction and history, expectations, gate, compare_base, generation
    config, samples) of the same model (name and fingerprint) on the same backend and
    endpoint; else None."""
    spec = status.job.eval
    if earlier is None or spec is None or earlier.evaluation is None:
        return None
    same_model = (earlier.tuned_model == status.model_name
                  and earlier.fingerprint == status.identity.fingerprint
                  and earlier.backend == backend
                  and earlier.endpoint == public_endpoint(endpoint))
    old = earlier.evaluation
    system = status.job.system_instruction
    asked = [p.asked for p in old.prompts]
    wanted = [(p.input, p.expect.as_dict(), p.conversation(system).system, p.history)
              for p in spec.prompts]
    same_asks = (asked == wanted and old.min_pass_rate == spec.min_pass_rate
                 and (old.base_pass_rate is not None) == spec.compare_base
                 and old.generation_config == generation_config(spec)
                 and old.samples == spec.samples
                 and old.require_improvement == spec.require_improvement
                 and old.significance == spec.significance)
    return old if same_model and same_asks else None


def reuse_refusal(earlier: EvalOutcome) -> str | None:
    """Why an earlier eval that asked the same (``matching_eval``) must not stand in for asking
    again, or None when it may: asking again must give the same answers, so generation is
    deterministic, and no prompt's request failed (an error says nothing of the model)."""
    config = earlier.generation_config or {}
    if not deterministic(config):
        return f"generation is not deterministic (temperature {config.get('temperature')})"
    failed = sum(p.unasked for p in earlier.prompts)
    if failed or earlier.errors:
        return f"{failed or earlier.errors} prompt(s) could not be asked last time"
    return None


@dataclass(frozen=True)
class EvalDecision:
    """How a job's eval comes about in this run, decided before anything is asked."""

    how: str  # ASKED, REUSED, KEPT, SKIPPED, NO_EVAL, NOT_RUN or NOT_DEPLOYED
    earlier: EvalOutcome | None = None  # the eval REUSED or KEPT
    refusal: str | None = None  # why an earlier eval of the same asks is asked again

    @property
    def asks(self) -> bool:
        return self.how == ASKED


def decide_eval(status: JobStatus, mode: EvalMode, earlier: JobResult | None, backend: str,
                endpoint: str) -> EvalDecision:
    """Whether the job's eval is asked now, taken from its ``earlier`` result, or absent."""
    if mode is EvalMode.SKIP:
        return EvalDecision(SKIPPED)
    if status.job.eval is None:
        return EvalDecision(NO_EVAL)
    if status.state != ACTIVE or status.model is None:
        return EvalDecision(NOT_RUN)
    if mode is EvalMode.ASK:
        return EvalDecision(ASKED)
    same = matching_eval(earlier, status, backend, endpoint)
    if mode is EvalMode.KEEP:
        return EvalDecision(NOT_RUN) if same is None else EvalDecision(KEPT, same)
    if same is None:
        return EvalDecision(ASKED)
    refusal = reuse_refusal(same)
    return EvalDecision(REUSED, same) if refusal is None else EvalDecision(ASKED, refusal=refusal)


def earlier_tokens(earlier: JobResult | None, status: JobStatus, backend: str) -> Tokens | None:
    """The tokens the earlier result counted, when it is of the same model on the same backend:
    counting them again would give the same."""
    if (earlier is not None and earlier.tokens is not None and earlier.backend == backend
            and earlier.fingerprint == status.identity.fingerprint):
        return earlier.tokens
    return None


def counted_tokens(counted: TokenCount, epochs: int) -> Tokens:
    """The tokens of a job as a backend counted (or estimated) them, trained ``epochs`` times."""
    return Tokens(examples=len(counted.inputs), input=counted.input_tokens,
                  output=counted.output_tokens, total=counted.total, epochs=epochs,
                  trained=counted.total * epochs, exact=counted.exact, method=counted.method)
