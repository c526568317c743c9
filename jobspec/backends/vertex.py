"""Vertex AI supervised tuning (``projects.locations.tuningJobs``), the contract in
shared/reference/vertex-tuning-api.md.

Vertex chooses a tuning job's id, so jobspec records who made a job, and for which job file and
fingerprint, in the job's ``labels`` (``jobspec-name``, ``jobspec-fingerprint``, the full 64 hex,
and ``jobspec-owner``) and finds its jobs by listing with a label filter, every page. Listing
and creating, which must never make a job twice, are vertexjobs.py's. Another team's jobs (other
labels, or none) are never listed as this workspace's, adopted or cancelled. A tuned open model
is deployed for its eval by vertexdeploy.py.

The training data goes to Cloud Storage first (gcs.py) as Vertex's JSONL, one
``{"systemInstruction"?, "contents": [user turn, model turn, ...]}`` per example (§6), named by
the fingerprint. Vertex trains on every model turn: a turn of weight 0 (context) is refused
where the examples are read (``LIMITS``). Vertex
cannot delete a tuning job: removing one cancels it while it runs, and for a finished one says
what stays (its tuned model and endpoint) and how to remove that.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from .. import auth, data
from ..client import ApiClient
from ..conversation import Conversation
from ..errors import AuthError, Interrupted, PermanentBackendError
from ..identity import Identity
from ..retrying import PollPolicy
from ..spec import Job
from ..workspace import Owner
from . import generate, openmodels, preview, vertexdeploy, vertexopen
from .base import (CREATING, BackendOptions, BackendType, OpenRequest, PollDefaults,
                   Progress, RemoteModel, TokenCount)
from .endpoints import Endpoint, checked_url, check_destination
from .gcs import STORAGE_ENDPOINT, Storage, rechunk
from .tuningjobs import (JSONL_EXAMPLE_BYTES, LABEL_OWNER, applied_hyperparameters,
                         jsonl_line, progress_of, removal_commands, tuning_job_from_wire)
from .vertexjobs import TuningJobs
from .vertexrules import check_job
from .vertexsettings import Settings, location, settings

POLL = PollDefaults(initial=30.0, maximum=300.0)  # Vertex tuning jobs take tens of minutes
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
MAX_EXAMPLE_TOKENS = 131_072  # input and output of one example, Gemini 2.5 and later (§6)
VERTEX_ENDPOINT_VARIABLE, STORAGE_ENDPOINT_VARIABLE = ("JOBSPEC_VERTEX_ENDPOINT",
                                                       "JOBSPEC_STORAGE_ENDPOINT")
API_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

LIMITS = data.DataLimits(
    "vertex", max_examples=1_000_000, max_bytes=data.GB, carrier="training file",
    per_example_bytes=JSONL_EXAMPLE_BYTES, unit_bytes=data.GB, unit="GB",
    weights_elsewhere="local, which takes them",
    stated_by="Vertex AI's published limits for supervised tuning: a JSONL training file of "
              "at most 1 GB and 1M text examples")


class VertexBackend:
    name = "vertex"

    def __init__(self, settings: Settings, client: ApiClient, storage: ApiClient,
                 owner: Owner) -> None:
        self.settings = settings
        self.client = client
        self.storage = Storage(storage, settings.location)
        self.owner = owner
        self.poll = POLL
        self.endpoint = f"{client.base_url}/v1/{settings.parent}"
        self._stop = threading.Event()
        self._deployed: set[str] = set()  # endpoints serving an open model for its eval
        self.jobs = TuningJobs(settings, client, self.storage, owner, self._job_lines,
                               self._sleep)

    def __enter__(self) -> "VertexBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()
        self.storage.client.close()

    def interrupt(self) -> None:
        self._stop.set()
        self.client.interrupt()
        self.storage.client.interrupt()

    def request_count(self) -> int:
        return self.client.request_count + self.storage.client.request_count

    # Finding jobs (vertexjobs.py lists them).

    def list_models(self) -> list[RemoteModel]:
        return self.jobs.labelled(**{LABEL_OWNER: self.owner.id})

    def legacy_name(self, identity: Identity) -> None:
        return None  # every tuning job jobspec made here is labelled with its owner

    def planned_name(self, identity: Identity, taken: frozenset[str] = frozenset()) -> str:
        return f"tuningJobs/(new) {identity.tuned_model_id}"

    def expected_steps(self, job: Job, identity: Identity) -> int | None:
        return None  # Vertex counts its steps once it has read the data

    def hyperparameters(self, job: Job) -> dict[str, Any]:
        """What Vertex AI v1 takes (the batch size is its own choice, so not shown); for an
        open model, what its tuning takes (vertexopen.py)."""
        if openmodels.is_open_model(job.base_model):
            return vertexopen.applied_hyperparameters(job)
        return applied_hyperparameters(job.hyperparameters)

    def _job_name(self, name: str) -> str:
        if name.startswith("projects/"):
            return name
        return f"{self.settings.parent}/tuningJobs/{name.removeprefix('tuningJobs/')}"

    def get_model(self, name: str) -> RemoteModel | None:
        try:
            return tuning_job_from_wire(self.client.request("GET", self._job_name(name)))
        except PermanentBackendError as exc:
            if exc.http_status == 404:
                return None
            raise

    def progress(self, model: str, operation: str | None = None) -> Progress:
        return progress_of(tuning_job_from_wire(self.client.request("GET",
                                                                  self._job_name(model))))

    # Creating one (vertexjobs.py), from the training file's lines.

    @staticmethod
    def _lines(examples: Iterable[data.Example]) -> Iterator[bytes]:
        return rechunk(jsonl_line(e.conversation) for e in examples)

    @staticmethod
    def _job_lines(job: Job, examples: Iterable[data.Example]) -> Iterator[bytes]:
        """The training file's lines for ``job``: a Gemini model reads the contents form (§6),
        an open model the chat form (vertexopen.py)."""
        if openmodels.is_open_model(job.base_model):
            return rechunk(vertexopen.messages_line(e.conversation) for e in examples)
        return VertexBackend._lines(examples)

    def create(self, job: Job, identity: Identity) -> Progress:
        """Adopt this owner's job of the same name and fingerprint if one is not FAILED; else
        stage the data and create one, never twice (vertexjobs.py)."""
        return self.jobs.create(job, identity)

    def _sleep(self, seconds: float, why: str) -> None:
        if self._stop.wait(seconds):
            raise Interrupted(f"interrupted while waiting {why}") from None

    # Removing, asking.

    def remove(self, model: RemoteModel, kind: str = "") -> str:
        """Vertex AI cannot delete a tuning job: a running one is cancelled; for a finished
        one, what it left (its tuned model and endpoint) is named with how to remove it."""
        named = " ".join(filter(None, [kind, model.name]))
        if model.state == CREATING:
            try:
                self.client.request("POST", f"{model.name}:cancel", body={})
            except PermanentBackendError as exc:
                now = self.get_model(model.name) if exc.status == "FAILED_PRECONDITION" else None
                if now is None or now.state == CREATING:
                    raise
                return self.remove(now, kind)  # it finished meanwhile
            return (f"cancelled {named} (Vertex AI stops it asynchronously; it stays in its job "
                    "history as JOB_STATE_CANCELLED)")
        tuned = self.client.request("GET", model.name).get("tunedModel", {})
        left = [f"{what} {tuned[what]}" for what in ("model", "endpoint") if tuned.get(what)]
        if not left:
            return (f"nothing to remove: {named} ended {model.service_state or model.state}; "
                    "Vertex AI keeps it in its job history (it cannot delete tuning jobs)")
        return (f"Vertex AI cannot delete tuning jobs: {named} stays in its history, and "
                f"jobspec leaves in place what it made: {', '.join(left)}. To remove them:\n"
                + "\n".join(f"  {command}" for command in removal_commands(tuned)))

    def generate(self, target: str, prompt: Conversation, config: dict[str, Any]) -> str:
        if target in self._deployed:  # an open model's serving container: chat completions
            answer = self.client.request("POST", f"{target}/chat/completions",
                                         body=vertexdeploy.chat_body(prompt, config),
                                         version=vertexdeploy.CHAT_VERSION)
            return vertexdeploy.chat_answer(answer, target)
        return generate.generate(self.client, target, prompt, config, version="v1")

    def why_not_served(self, job: Job) -> str | None:
        return vertexdeploy.why_not_served(job)

    @contextmanager
    def serving(self, job: Job, model: RemoteModel, poll: PollPolicy,
                say: Callable[[str], None]) -> Iterator[str]:
        """A Gemini model's tuning endpoint; an open model deployed for as long as the
        ``with`` lasts (vertexdeploy.py)."""
        if not openmodels.is_open_model(job.base_model):
            yield model.generation_target
            return
        deployer = vertexdeploy.Deployer(self.client, self.settings.parent, self._sleep, poll)
        with vertexdeploy.deployed_for(deployer, job, model, self.owner.id, say) as endpoint:
            self._deployed.add(endpoint)
            try:
                yield endpoint
            finally:
                self._deployed.discard(endpoint)

    def base_target(self, job: Job) -> str:
        return (f"{self.settings.parent}/publishers/google/models/"
                f"{job.base_model.removeprefix('models/')}")

    def counting_digest(self, base_model: str) -> None:
        return None  # estimates are made here, never asked for

    def count_tokens(self, base_model: str,
                     example_sets: Sequence[Sequence[Any]]) -> list[TokenCount]:
        """Estimates: the contract (shared/reference/vertex-tuning-api.md) states no method
        that counts tuning examples; the limit is Vertex's 131,072 tokens an example (§6), or
        for an open model the longest sequence Vertex publishes for it (in any tuning mode:
        the counts are per model, not per job)."""
        model = openmodels.vertex_open_model(base_model)
        limit = model.longest_sequence if model is not None else MAX_EXAMPLE_TOKENS
        return [TokenCount.estimated(examples, limit=limit,
                                     why="Vertex AI states no way to count tuning examples")
                for examples in example_sets]


def vertex_credentials() -> auth.Credentials:
    """OAuth only (§1): Vertex AI refuses API keys, so one is never sent, and a user who has
    only an API key is told what to do instead."""
    try:
        return auth.oauth("vertex", SCOPES)
    except AuthError:
        keys = [v for v in API_KEY_VARIABLES if os.environ.get(v)]
        if not keys:
            raise
        raise AuthError(
            f"Vertex AI does not accept API keys ({' and '.join(keys)} "
            f"{'is' if len(keys) == 1 else 'are'} set: the gemini backend uses "
            f"{'it' if len(keys) == 1 else 'them'}), only OAuth: run `gcloud auth "
            "application-default login` for application-default credentials, or set "
            f"{auth.TOKEN_VARIABLE} to an access token (gcloud auth print-access-token)") \
            from None


def _operator_root(variable: str) -> Endpoint | None:
    if not os.environ.get(variable):
        return None
    return Endpoint(checked_url(os.environ[variable], variable), variable, trusted=True)


def _api_root(request: OpenRequest, location: str) -> Endpoint:
    """--endpoint / JOBSPEC_ENDPOINT, then JOBSPEC_VERTEX_ENDPOINT (the operator's), then a
    job file's backend.endpoint (trusted only if allowed), then the region's host."""
    chosen = (request.operator or _operator_root(VERTEX_ENDPOINT_VARIABLE)
              or request.allowed_declared)
    return chosen or Endpoint(f"https://{location}-aiplatform.googleapis.com",
                              "the vertex backend's default", trusted=True)


def training_line(job: Job, example: data.Example) -> bytes:
    """``example`` as a line of ``job``'s training file."""
    return b"".join(VertexBackend._job_lines(job, [example]))


def _open(request: OpenRequest) -> VertexBackend:
    chosen = settings(request.options, request.jobs)
    credentials = vertex_credentials()
    api = _api_root(request, chosen.location)
    storage = _operator_root(STORAGE_ENDPOINT_VARIABLE) or Endpoint(
        STORAGE_ENDPOINT, "Cloud Storage's default", trusted=True)
    check_destination(api, credentials, "vertex")
    check_destination(storage, credentials, "vertex")
    return VertexBackend(chosen, ApiClient(api.url, credentials, retry=request.retry,
                                           api_version="v1"),
                         ApiClient(storage.url, credentials, retry=request.retry), request.owner)


def _default_endpoint(options: BackendOptions, jobs: list[Job]) -> str:
    if os.environ.get(VERTEX_ENDPOINT_VARIABLE):
        return os.environ[VERTEX_ENDPOINT_VARIABLE].rstrip("/")
    return f"https://{location(options, jobs)}-aiplatform.googleapis.com"


VERTEX = BackendType(
    name="vertex", summary="Vertex AI supervised tuning (tuningJobs, {location}-aiplatform."
                           "googleapis.com), data staged in Cloud Storage",
    limits=LIMITS, open=_open, poll=POLL, credentials=vertex_credentials,
    default_endpoint=_default_endpoint, check_job=check_job,
    job_settings=("project", "location", "staging_bucket"),
    preview=preview.offline("a line of its training file (JSONL staged in Cloud Storage)",
                            lambda job, example: json.loads(training_line(job, example)),
                            "Vertex AI counts the tokens when it reads the file"))
