"""Vertex AI supervised tuning (``projects.locations.tuningJobs``), the contract in
shared/reference/vertex-tuning-api.md.

Vertex chooses a tuning job's id, so jobspec records who made a job, and for which job file and
fingerprint, in the job's ``labels`` (``jobspec-name``, ``jobspec-fingerprint``, the full 64 hex,
and ``jobspec-owner``) and finds its jobs by listing with a label filter, every page. A create is
never repeated blindly: before it, jobspec lists the jobs of this owner, job and fingerprint and
adopts one that is not FAILED; after a create whose answer was lost, it lists again, for as
long as the listing may lag behind a create, before it would try again, and adopts what the lost
create made. Another team's jobs (other labels, or none) are never listed as this workspace's,
adopted or cancelled.

The training data goes to Cloud Storage first (gcs.py) as Vertex's JSONL, one
``{"contents": [user turn, model turn]}`` per example (§6), named by the fingerprint. Vertex
cannot delete a tuning job: removing one cancels it while it runs, and for a finished one says
what stays (its tuned model and endpoint) and how to remove that.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import auth, data
from ..client import ApiClient
from ..errors import (AuthError, ConfigError, Interrupted, Location, PermanentBackendError,
                      TransientBackendError, UsageError)
from ..identity import Identity
from ..spec import Job
from ..workspace import Owner
from . import generate
from .base import (CREATING, FAILED, BackendOptions, BackendType, OpenRequest, PollDefaults,
                   Progress, RemoteModel, TokenCount, example_streams, is_own, newest,
                   own_current)
from .endpoints import Endpoint, checked_url, check_destination
from .gcs import STORAGE_ENDPOINT, StagingBucket, Storage, rechunk
from .tuningjobs import (JSONL_EXAMPLE_BYTES, LABEL_FINGERPRINT, LABEL_NAME, LABEL_OWNER,
                         hyperparameters_to_wire, jsonl_line, progress_of,
                         removal_commands, tuning_job_from_wire)

POLL = PollDefaults(initial=30.0, maximum=300.0)  # Vertex tuning jobs take tens of minutes
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
DEFAULT_LOCATION = "us-central1"
MAX_EXAMPLE_TOKENS = 131_072  # input and output of one example, Gemini 2.5 and later (§6)
PROJECT_VARIABLE, LOCATION_VARIABLE = "GOOGLE_CLOUD_PROJECT", "JOBSPEC_VERTEX_LOCATION"
BUCKET_VARIABLE = "JOBSPEC_STAGING_BUCKET"
VERTEX_ENDPOINT_VARIABLE, STORAGE_ENDPOINT_VARIABLE = ("JOBSPEC_VERTEX_ENDPOINT",
                                                       "JOBSPEC_STORAGE_ENDPOINT")
API_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
TRAINING_OBJECT = "jobspec/training/{fingerprint}.jsonl"  # in the staging bucket (and prefix)
VALIDATION_OBJECT = "jobspec/validation/{fingerprint}.jsonl"
MAX_VALIDATION_EXAMPLES = 5_000  # §6
# A create answered 429 or 503 was refused before anything was made (RESOURCE_EXHAUSTED,
# UNAVAILABLE); any other failure (no answer, 500, 502, 504) may have followed the job's making.
REFUSED_CREATE = (429, 503)
# How long Vertex AI's listing is given to show a job a create made. The list is the only way
# to find a job whose create answer was lost, and it may lag behind the create.
LISTING_SETTLE_SECONDS = 60.0

# A region goes into the service's host name, a project into its paths: nothing else may pass.
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,61}[a-z0-9]")
_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z0-9][a-z0-9-]{0,61}[a-z0-9]")
_WHAT = {"location": "a Google Cloud region such as us-central1",
         "project": "a Google Cloud project id"}

LIMITS = data.DataLimits(
    "vertex", max_examples=1_000_000, max_bytes=data.GB, carrier="training file",
    per_example_bytes=JSONL_EXAMPLE_BYTES, unit_bytes=data.GB, unit="GB",
    stated_by="Vertex AI's published limits for supervised tuning: a JSONL training file of "
              "at most 1 GB and 1M text examples")


@dataclass(frozen=True)
class Settings:
    project: str
    location: str
    bucket: StagingBucket | None  # None only when no job is in scope (get, delete by name)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


def _from_jobs(jobs: list[Job], key: str) -> tuple[str, Job] | None:
    """The one value the job files give for ``backend.<key>``; UsageError if they differ."""
    given = {}
    for job in jobs:
        value = getattr(job.backend, key, None) if job.backend is not None else None
        if value:
            given.setdefault(value, job)
    if len(given) > 1:
        listing = ", ".join(f"{job.path}: {value}" for value, job in given.items())
        raise UsageError(f"the jobs name different vertex backend.{key} values ({listing}); "
                         f"apply them separately or pass --{key.replace('_', '-')}")
    return next(iter(given.items()), None)


def _setting(options: BackendOptions, jobs: list[Job], key: str, variable: str,
             pattern: re.Pattern[str] | None = None) -> tuple[str, str] | None:
    """(value, where it came from) for one setting: the flag, the job files, the variable."""
    flag = f"--{key.replace('_', '-')}"
    found: tuple[str, str, Location | None] | None = None
    if getattr(options, key):
        found = (getattr(options, key), flag, None)
    elif (declared := _from_jobs(jobs, key)) is not None:
        value, job = declared
        found = (value, f"{job.path}: backend.{key}", job.at("backend", key))
    elif os.environ.get(variable):
        found = (os.environ[variable], variable, None)
    if found is None:
        return None
    value, source, where = found
    if pattern is not None and not pattern.fullmatch(value):
        if where is not None:
            raise ConfigError(where, f"{value!r} is not {_WHAT[key]}")
        raise UsageError(f"{source} {value!r}: expected {_WHAT[key]}")
    return value, source


def settings(options: BackendOptions, jobs: list[Job]) -> Settings:
    project = _setting(options, jobs, "project", PROJECT_VARIABLE, _PROJECT)
    if project is None:
        raise UsageError("the vertex backend needs a Google Cloud project: pass --project, set "
                         f"backend.project in the job file, or set {PROJECT_VARIABLE}")
    location = _setting(options, jobs, "location", LOCATION_VARIABLE, _LOCATION)
    bucket = _setting(options, jobs, "staging_bucket", BUCKET_VARIABLE)
    if bucket is None and jobs:
        raise UsageError("the vertex backend needs a Cloud Storage bucket for the training "
                         "data (in the same region as the tuning jobs): pass --staging-bucket "
                         "gs://BUCKET, set backend.staging_bucket in the job file, or set "
                         f"{BUCKET_VARIABLE}")
    return Settings(project[0], location[0] if location else DEFAULT_LOCATION,
                    StagingBucket.parse(*bucket) if bucket else None)


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

    # Finding jobs.

    def _list(self, **labels: str) -> list[RemoteModel]:
        """The tuning jobs with these labels, following every page. The list filter is
        AIP-160's, where a bare ``-`` is negation: the keys (``jobspec-owner``) are quoted."""
        query = {"filter": " AND ".join(f'labels."{key}"="{value}"'
                                        for key, value in labels.items())}
        path = f"{self.settings.parent}/tuningJobs"
        found: list[RemoteModel] = []
        while True:
            try:
                page = self.client.request("GET", path, params=query)
            except PermanentBackendError as exc:
                if exc.http_status == 404:
                    raise PermanentBackendError(
                        f"{exc.message} (project {self.settings.project}, location "
                        f"{self.settings.location}: check --project and --location; tuning "
                        "runs in the regions Vertex AI lists for it)", http_status=404,
                        status=exc.status) from None
                raise
            found.extend(tuning_job_from_wire(job) for job in page.get("tuningJobs", []))
            if not page.get("nextPageToken"):
                return found
            query = {**query, "pageToken": page["nextPageToken"]}

    def list_models(self) -> list[RemoteModel]:
        return self._list(**{LABEL_OWNER: self.owner.id})

    def _of(self, models: list[RemoteModel], job: Job, identity: Identity) -> list[RemoteModel]:
        return [m for m in models if is_own(m, job, identity, self.owner.id)]

    def current(self, models: list[RemoteModel], job: Job,
                identity: Identity) -> RemoteModel | None:
        return own_current(models, job, identity, self.owner.id)

    def planned_name(self, identity: Identity, models: Sequence[RemoteModel] = ()) -> str:
        return f"tuningJobs/(new) {identity.tuned_model_id}"

    def expected_steps(self, job: Job, identity: Identity) -> int | None:
        return None  # Vertex counts its steps once it has read the data

    def hyperparameters(self, job: Job) -> dict[str, Any]:
        """What Vertex AI v1 takes (the batch size is its own choice, so not shown)."""
        hp = job.hyperparameters
        applied: dict[str, Any] = {"epoch_count": hp.epoch_count,
                                   "learning_rate_multiplier": hp.learning_rate_multiplier}
        if hp.adapter_size is not None:
            applied["adapter_size"] = hp.adapter_size
        return applied

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

    # Creating one.

    @staticmethod
    def _lines(examples: Iterable[data.Example]) -> Iterator[bytes]:
        return rechunk(jsonl_line(e.text_input, e.output) for e in examples)

    def _stage(self, job: Job, identity: Identity) -> tuple[str, str | None]:
        """The training (and validation) JSONL in Cloud Storage, uploaded unless there, each
        read as a stream (a validation split's sides as identify drew it)."""
        bucket = self.settings.bucket
        if bucket is None:
            raise UsageError("the vertex backend needs a staging bucket to create a tuning job: "
                             f"pass --staging-bucket, or set {BUCKET_VARIABLE}")
        streams = example_streams(job, identity)
        name = bucket.object_name(TRAINING_OBJECT.format(fingerprint=identity.fingerprint))
        self.storage.stage(bucket, name, lambda: self._lines(streams.training()))
        validation = streams.validation
        if validation is None:
            return bucket.uri(name), None
        held_out = (identity.held_out if job.validation_data is None
                    else data.count_examples(job.validation_data))
        if held_out > MAX_VALIDATION_EXAMPLES:
            where = "validation_data" if job.validation_data is not None else "validation_split"
            raise ConfigError(job.at(where), f"{held_out:,} validation examples; Vertex AI "
                              f"takes at most {MAX_VALIDATION_EXAMPLES:,} (§6)")
        checked = bucket.object_name(VALIDATION_OBJECT.format(fingerprint=identity.fingerprint))
        self.storage.stage(bucket, checked, lambda: self._lines(validation()))
        return bucket.uri(name), bucket.uri(checked)

    def create_body(self, job: Job, identity: Identity, training_uri: str,
                    validation_uri: str | None = None) -> dict[str, Any]:
        hp = job.hyperparameters
        hyper = hyperparameters_to_wire(hp.epoch_count, hp.learning_rate_multiplier,
                                        hp.adapter_size)
        body: dict[str, Any] = {
            "baseModel": job.base_model.removeprefix("models/"),
            "tunedModelDisplayName": identity.tuned_model_id,
            "supervisedTuningSpec": {"trainingDatasetUri": training_uri,
                                     "hyperParameters": hyper},
            "labels": {LABEL_NAME: job.name, LABEL_FINGERPRINT: identity.fingerprint,
                       LABEL_OWNER: self.owner.id}}
        if validation_uri is not None:
            body["supervisedTuningSpec"]["validationDatasetUri"] = validation_uri
        if job.description:
            body["description"] = job.description
        return body

    def create(self, job: Job, identity: Identity) -> Progress:
        """Adopt this owner's job of the same name and fingerprint if one is not FAILED; else
        stage the data and create one. The create is sent once per attempt, never retried
        blindly. After one the service refused (429, 503) the jobs are listed again before the
        next attempt. After one whose outcome is unknown (no answer, or an error that may
        follow the job's making), no create is sent until the listing has had time to show
        what it made (``_after_unknown_create``), which is then adopted."""
        labels = {LABEL_OWNER: self.owner.id, LABEL_NAME: job.name,
                  LABEL_FINGERPRINT: identity.fingerprint}
        started = time.monotonic()
        known: set[str] | None = None  # the jobs there before this create
        staged, failed, attempt = None, None, 0
        while True:
            found = self._of(self._list(**labels), job, identity)
            known = {m.name for m in found} if known is None else known
            adopt = [m for m in found if m.state != FAILED or m.name not in known]
            if adopt:
                return progress_of(newest(adopt), adopted=True)
            if failed is not None:  # the last attempt's create made nothing, and none is left
                raise TransientBackendError(
                    f"{failed.message} (creating the tuning job: gave up after {attempt} "
                    f"attempt{'s' if attempt > 1 else ''}, and no job was made; apply again to "
                    "retry)", http_status=failed.http_status, status=failed.status)
            staged = staged or self._stage(job, identity)
            attempt += 1
            try:
                created = self.client.request("POST", f"{self.settings.parent}/tuningJobs",
                                              body=self.create_body(job, identity, *staged),
                                              retry=False)
            except TransientBackendError as exc:
                if exc.http_status not in REFUSED_CREATE:
                    made = self._after_unknown_create(exc, labels, job, identity, known, started)
                    if made:
                        return progress_of(newest(made), adopted=True)
                wait = self._retry_wait(exc, attempt, started)
                if wait is None:
                    failed = exc  # list once more: a lost answer may have made the job
                elif self._stop.wait(wait):
                    raise Interrupted("interrupted while waiting to retry creating a Vertex AI "
                                      "tuning job") from None
                continue
            return progress_of(tuning_job_from_wire(created))

    def _after_unknown_create(self, error: TransientBackendError, labels: dict[str, str],
                              job: Job, identity: Identity, known: set[str],
                              started: float) -> list[RemoteModel]:
        """The jobs a create whose outcome is unknown made, once the listing shows them; []
        once ``LISTING_SETTLE_SECONDS`` have passed with none (it made nothing). Vertex AI
        takes no request id and chooses the job's name, so the listing is the only way to
        find the job, and it may lag behind the create: until it has had that long, jobspec
        lists again and never creates again. If the retry deadline ends first, it stops with
        nothing created a second time."""
        policy, sent = self.client.retry, time.monotonic()
        wait = policy.initial_wait
        while True:
            found = self._of(self._list(**labels), job, identity)
            made = [m for m in found if m.state != FAILED or m.name not in known]
            waited = time.monotonic() - sent
            if made or waited >= LISTING_SETTLE_SECONDS:
                return made
            left = policy.deadline_seconds - (time.monotonic() - started)
            if left <= 0:
                raise TransientBackendError(
                    f"{error.message} (creating the tuning job: whether that create made a "
                    f"job is unknown, and after {waited:.0f}s Vertex AI's listing, which can lag "
                    "behind a create, shows none; jobspec did not create another. Apply again "
                    "in a minute: it adopts the job if the create made one, or creates it)",
                    http_status=error.http_status, status=error.status)
            if self._stop.wait(min(wait, left, LISTING_SETTLE_SECONDS - waited)):
                raise Interrupted("interrupted while waiting for Vertex AI to list the tuning "
                                  "job a create may have made") from None
            wait = min(2 * wait, policy.max_wait)

    def _retry_wait(self, error: TransientBackendError, attempt: int,
                    started: float) -> float | None:
        """Seconds to wait before the next create, as ApiClient waits between attempts
        (exponential backoff with jitter, or what the service asks); None: give up."""
        policy = self.client.retry
        left = policy.deadline_seconds - (time.monotonic() - started)
        if attempt >= policy.attempts or left <= 0:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= min(left, policy.max_wait) else None
        backoff = policy.initial_wait * 2 ** (attempt - 1) + random.uniform(0, 1)
        return max(0.0, min(backoff, policy.max_wait, left))

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

    def generate(self, target: str, prompt: str, config: dict[str, Any]) -> str:
        return generate.generate(self.client, target, prompt, config, version="v1")

    def base_target(self, job: Job) -> str:
        return (f"{self.settings.parent}/publishers/google/models/"
                f"{job.base_model.removeprefix('models/')}")

    def counting_digest(self, base_model: str) -> None:
        return None  # estimates are made here, never asked for

    def count_tokens(self, base_model: str,
                     example_sets: Sequence[Sequence[Any]]) -> list[TokenCount]:
        """Estimates: the contract (shared/reference/vertex-tuning-api.md) states no method
        that counts tuning examples; the limit is Vertex's 131,072 tokens an example (§6)."""
        return [TokenCount.estimated(examples, limit=MAX_EXAMPLE_TOKENS,
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
    location = _setting(options, jobs, "location", LOCATION_VARIABLE, _LOCATION)
    return f"https://{location[0] if location else DEFAULT_LOCATION}-aiplatform.googleapis.com"


def check_job(job: Job) -> list[ConfigError]:
    """What Vertex AI v1 does not take, refused at the job file's line before anything is
    sent (§3: learningRate and batchSize are v1beta1 only)."""
    given, problems = job.hyperparameters.given, []
    if "learning_rate" in given:
        problems.append(ConfigError(job.at("hyperparameters", "learning_rate"), (
            "Vertex AI takes no learning rate; use learning_rate_multiplier (a multiplier on "
            "Vertex's recommended rate for the base model) instead")))
    if "batch_size" in given:
        problems.append(ConfigError(job.at("hyperparameters", "batch_size"), (
            "Vertex AI takes no batch size (it chooses one); remove batch_size")))
    if job.early_stopping is not None:
        problems.append(ConfigError(job.at("early_stopping"), (
            "Vertex AI has no early stopping (its validation loss is only measured); remove "
            "early_stopping, or tune on the local backend")))
    for key, pattern in (("project", _PROJECT), ("location", _LOCATION)):
        value = getattr(job.backend, key, None) if job.backend is not None else None
        if value and not pattern.fullmatch(value):
            problems.append(ConfigError(job.at("backend", key),
                                        f"{value!r} is not {_WHAT[key]}"))
    return problems


VERTEX = BackendType(
    name="vertex", summary="Vertex AI supervised tuning (tuningJobs, {location}-aiplatform."
                           "googleapis.com), data staged in Cloud Storage",
    limits=LIMITS, open=_open, poll=POLL, credentials=vertex_credentials,
    default_endpoint=_default_endpoint, check_job=check_job,
    job_settings=("project", "location", "staging_bucket"))
