"""What every backend is: the backend-neutral view of tuned models and tuning runs, and the
``Backend`` protocol that the reconciler, evaluation and reports talk to.

A backend maps a job to its service's requests and its service's answers to these values. It
names its own resources (``tunedModels/x`` on the Gemini API, ``projects/.../tuningJobs/123`` on
Vertex AI), records who made a model its own way (a description marker, labels) and exposes it
as fields, and normalises its states to three: CREATING (in progress, whatever the service calls
it), ACTIVE (usable) and FAILED (will not become usable). Nothing outside ``jobspec/backends/``
knows a backend's name, resource naming, wire format or states.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from .. import data
from ..auth import Credentials
from ..conversation import MODEL, Conversation, texts
from ..data import DataLimits, Example
from ..errors import ConfigError
from ..identity import Identity
from ..retrying import PollDefaults, PollPolicy, RetryPolicy
from ..spec import Job
from ..workspace import Owner
from .endpoints import Endpoint

CREATING, ACTIVE, FAILED = "CREATING", "ACTIVE", "FAILED"
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class Snapshot:
    step: int
    epoch: int
    mean_loss: float
    compute_time: str | None = None


@dataclass(frozen=True)
class DataStats:
    """What the service measured of the training data (Vertex AI's tuningDataStats), when it
    says; each figure None when it does not."""

    examples: int | None = None
    billable_tokens: int | None = None
    steps: int | None = None
    characters: int | None = None

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in (("examples", self.examples),
                                  ("billable_tokens", self.billable_tokens),
                                  ("steps", self.steps), ("characters", self.characters))
                if v is not None}


@dataclass(frozen=True)
class TokenCount:
    """A job's training examples in tokens, per example in order, as a backend counted (or
    estimated) them: ``inputs[i]`` and ``outputs[i]`` add up to example i's tokens."""

    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    exact: bool  # counted with the base model's tokenizer, as training encodes the examples
    method: str  # how, for people: "the local service's tokenizer of models/x"
    limit: int | None = None  # the most tokens one example may have on this backend, if known

    @classmethod
    def estimated(cls, examples: Sequence[Example], *, limit: int | None = None,
                  why: str = "this backend does not count tuning examples") -> "TokenCount":
        """Google's rule of thumb for Gemini models: a token is about four characters. Every
        text of a conversation counts: the trained model turns as output, the rest (system
        instruction, user turns, model turns of weight 0) as input."""
        sizes = [(len(e.pair[0]), len(e.pair[1])) if e.pair is not None
                 else _characters(e.conversation) for e in examples]
        return cls(tuple(math.ceil(given / CHARS_PER_TOKEN) for given, _ in sizes),
                   tuple(math.ceil(trained / CHARS_PER_TOKEN) for _, trained in sizes),
                   exact=False, method=f"estimated at {CHARS_PER_TOKEN} characters per token "
                                       f"({why})", limit=limit)

    @property
    def input_tokens(self) -> int:
        return sum(self.inputs)

    @property
    def output_tokens(self) -> int:
        return sum(self.outputs)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def longest(self) -> tuple[int, int]:
        """(index, tokens) of the longest example."""
        sizes = [i + o for i, o in zip(self.inputs, self.outputs)]
        index = max(range(len(sizes)), key=sizes.__getitem__)
        return index, sizes[index]

    def over_limit(self) -> list[int]:
        """Indices of the examples longer than ``limit``."""
        if self.limit is None:
            return []
        return [n for n, (i, o) in enumerate(zip(self.inputs, self.outputs)) if i + o > self.limit]


def _characters(conversation: Conversation) -> tuple[int, int]:
    """(characters the model is given, characters it learns to say) of a conversation."""
    trained = sum(len(turn.text) for turn in conversation.turns
                  if turn.role == MODEL and turn.trained)
    return sum(map(len, texts(conversation))) - trained, trained


@dataclass(frozen=True)
class RemoteModel:
    """A tuned model (or tuning run) as the service holds it."""

    name: str  # the backend's resource name, e.g. tunedModels/number-generator-19bdb71b
    state: str  # CREATING, ACTIVE or FAILED
    base_model: str
    display_name: str | None = None
    description: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # snake_case keys
    create_time: str | None = None
    start_time: str | None = None
    complete_time: str | None = None
    snapshots: tuple[Snapshot, ...] = ()
    # What jobspec recorded when it created the model (each backend records it its own way);
    # all None for a model jobspec did not create, which it never prunes or deletes (whose a
    # model is, and what jobspec may do with it: ownership.py).
    job: str | None = None
    fingerprint: str | None = None
    owner: str | None = None  # the owning workspace's id (workspace.Owner.id); None: unrecorded
    service_state: str | None = None  # the service's own name for its state, when it differs
    error: str | None = None  # why it FAILED, in the service's words
    target: str | None = None  # what generateContent addresses once ACTIVE (default: name)
    stats: DataStats | None = None
    total_steps: int | None = None  # as the service counts them, when it says
    # Mean loss on the job's validation examples, as the service measured it (per epoch, and at
    # the end); empty when the job has none or the service does not say.
    validation: tuple[Snapshot, ...] = ()
    kept_epoch: int | None = None  # the epoch whose weights were kept (early stopping)
    stop_reason: str | None = None  # why training ended before its last epoch, in words
    device: str | None = None  # what trained it, when the service says (e.g. "cpu", "cuda")

    @property
    def model_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def managed(self) -> bool:
        """Whether jobspec created this model."""
        return self.job is not None

    @property
    def generation_target(self) -> str:
        return self.target or self.name

    @property
    def state_label(self) -> str:
        """The state as the service names it, for people: ``CREATING (JOB_STATE_RUNNING)``."""
        if self.service_state and self.service_state != self.state:
            return f"{self.state} ({self.service_state})"
        return self.state


@dataclass(frozen=True)
class Progress:
    """A tuning run as last seen. A backend may know no step counts (Vertex AI reports states
    and data statistics, not steps): then ``total_steps`` is None and ``state_label`` says
    where it is."""

    model_name: str
    operation: str | None  # what to poll, when it is not the model itself
    done: bool
    total_steps: int | None = None
    completed_steps: int = 0
    snapshots: tuple[Snapshot, ...] = ()
    error: str | None = None
    model: RemoteModel | None = None  # set once done without error
    adopted: bool = False  # create found the model already there (an earlier run made it)
    state_label: str | None = None  # the service's state, when it tells more than the steps
    stats: DataStats | None = None

    @property
    def percent(self) -> float | None:
        if self.done and self.error is None:
            return 100.0
        if not self.total_steps:
            return None
        return 100.0 * self.completed_steps / self.total_steps


class Backend(Protocol):
    """One tuning service, opened for one workspace (see ``registry.open_backend``). A context
    manager: closing it closes its connections."""

    name: str  # the backend's name in job files and on the command line
    endpoint: str  # where its requests go, for people (reports, plan headers)
    owner: Owner  # whose models it creates, prunes and deletes
    poll: PollDefaults

    def __enter__(self) -> "Backend": ...
    def __exit__(self, *exc: object) -> None: ...

    def list_models(self) -> list[RemoteModel]:
        """Every model that may matter to this workspace's jobs, across all pages: its own and
        (where the service can list them) other workspaces' of the same job names."""
    def legacy_name(self, identity: Identity) -> str | None:
        """The one name a model of ``identity``'s examples could have had when made by a
        jobspec from before owners were recorded (None: no such model can exist here); such a
        model counts as the job's (``ownership.Standing.LEGACY_CURRENT``)."""
    def planned_name(self, identity: Identity, taken: frozenset[str] = frozenset()) -> str:
        """What the model will be called, for plans, given ``taken``, the names of the
        service's models (an id another owner's model holds is not this job's; a backend that
        chooses its own ids says so)."""
    def expected_steps(self, job: Job, identity: Identity) -> int | None:
        """How many steps the service will train, when that is known before it starts."""
    def hyperparameters(self, job: Job) -> dict[str, Any]:
        """What of the job's hyperparameters the service applies (snake_case), as plans and
        reports show them: a value the service does not take is not shown as if it did."""
    def get_model(self, name: str) -> RemoteModel | None: ...
    def create(self, job: Job, identity: Identity) -> Progress:
        """Start tuning ``job`` (its examples read from ``job.training_data``, streamed where the
        service allows), or adopt the run an earlier, interrupted create already started."""
    def progress(self, model: str, operation: str | None = None) -> Progress: ...
    def remove(self, model: RemoteModel, kind: str = "") -> str:
        """Delete ``model`` (or, where the service cannot delete it, stop it and say what is left
        and how to remove it); returns what was done, for people: "deleted {kind} {name}"."""
    def generate(self, target: str, prompt: Conversation, config: dict[str, Any]) -> str:
        """Ask ``target`` (a model's ``generation_target``, or ``base_target``) for the next
        turn of ``prompt`` (its system instruction and turns, the last the user's); ``config``
        is the job's generation config, snake_case."""
    def base_target(self, job: Job) -> str: ...
    def why_not_served(self, job: Job) -> str | None:
        """Why ``job``'s tuned model cannot be asked its eval prompts here (None: it can),
        said in the report instead of an eval."""
    def serving(self, job: Job, model: "RemoteModel", poll: PollPolicy,
                say: Callable[[str], None]) -> ContextManager[str]:
        """``model``'s generation target, served for as long as the ``with`` lasts: where the
        service serves a tuned model only once deployed (and bills for it), deployed on
        entering and removed on leaving, however it is left; ``say`` hears each step."""
    def counting_digest(self, base_model: str) -> str | None:
        """What identifies how this service counts ``base_model``'s examples (a digest that
        changes whenever a count of the same examples could); None when it does not say, and
        then its counts are not kept between commands."""
    def count_tokens(self, base_model: str,
                     example_sets: Sequence[Sequence[Example]]) -> list[TokenCount] | None:
        """Each set of examples (a job's, in order) in ``base_model``'s tokens as this service
        will train on them, with its limit on one example, in as few requests as the service
        allows; None when the backend cannot count them (jobspec then estimates from their
        characters, and plans say so)."""
    def request_count(self) -> int: ...
    def interrupt(self) -> None:
        """Cut every retry wait short (Ctrl-C)."""
    def close(self) -> None: ...


# -- a kind of backend, and opening one (registry.py knows them by name) ----------------------


@dataclass(frozen=True)
class BackendOptions:
    """What the operator chose for the backend, on the command line (None: not given)."""

    endpoint: str | None = None
    owner: str | None = None
    project: str | None = None
    location: str | None = None
    staging_bucket: str | None = None


@dataclass(frozen=True)
class OpenRequest:
    """Everything a backend needs to open: the operator's options, the jobs in scope, the
    endpoint the operator named (trusted) and the one the job files name (untrusted)."""

    backend: str  # the type being opened
    options: BackendOptions
    jobs: list[Job]
    owner: Owner
    retry: RetryPolicy
    operator: Endpoint | None
    declared: Endpoint | None
    notify: Callable[[str], None]  # the CLI's, for what a user should know (a service started)
    known_types: tuple[str, ...]  # every backend type, which JOBSPEC_ALLOWED_ENDPOINTS may name

    @property
    def chosen_endpoint(self) -> Endpoint | None:
        """The operator's endpoint, else the job files' (trusted only if allowed)."""
        return self.operator or self.allowed_declared

    @property
    def allowed_declared(self) -> Endpoint | None:
        """The job files' endpoint, trusted if the operator allowed it for this backend type."""
        if self.declared is None:
            return None
        return self.declared.allowed_by_operator(self.backend, self.known_types)


@dataclass(frozen=True)
class BackendType:
    """A kind of backend, as its module describes itself to the registry."""

    name: str
    summary: str  # one line, for --help
    limits: DataLimits  # what one job's data may be, checked by validate and plan
    open: Callable[[OpenRequest], Backend]
    poll: PollDefaults
    credentials: Callable[[], Credentials]  # what `jobspec auth` shows
    default_endpoint: Callable[[BackendOptions, list[Job]], str]
    # Rules of the backend that the job-file schema cannot state (checked before anything is
    # sent): each a ConfigError at the job file's line.
    check_job: Callable[[Job], list[ConfigError]] = field(default=lambda job: [])
    # The job file's `backend` settings that only this type takes (beyond type and endpoint):
    # another type's job that gives one is refused at its line.
    job_settings: tuple[str, ...] = ()
    # One training example as the service receives it (`jobspec data preview`; preview.py):
    # (job, example, a way to open the backend) -> preview.ExamplePreview.
    preview: Callable[..., Any] | None = None


@dataclass(frozen=True)
class ExampleStreams:
    """A job's examples as they go to its backend: the training examples and the validation
    examples (None without any), each a function that reads them afresh, one at a time, so that
    a data set of hundreds of MB is streamed, never held whole."""

    training: Callable[[], Iterator[Example]]
    validation: Callable[[], Iterator[Example]] | None


def example_streams(job: Job, identity: Identity) -> ExampleStreams:
    """The examples a job trains on, and those it holds out for validation: its
    validation_data, or the two sides of its validation split, as identify drew it
    (``identity.split``, split.py)."""
    def training() -> Iterator[Example]:
        return data.iter_examples(job.training_data)

    if job.validation_data is not None:
        validation_data = job.validation_data
        return ExampleStreams(training, lambda: data.iter_examples(validation_data))
    if identity.split is None:
        return ExampleStreams(training, None)
    # identify (through spec.examples_problems) has refused examples that cannot be split
    assert identity.split.held, "a validation split was drawn from examples that cannot give one"
    return ExampleStreams(*identity.split.sides(training))
