"""Finding and creating the tuning jobs of one owner in one Vertex AI project and region: the
half of the vertex backend (vertex.py) that must never make a job twice.

Vertex chooses a tuning job's id, so jobspec records who made a job, and for which job file and
fingerprint, in the job's ``labels`` and finds its jobs by listing with a label filter, every
page (``TuningJobs.labelled``). A create is never repeated blindly: before it, the jobs of this
owner, job and fingerprint are listed and one that is not FAILED is adopted; after a create whose
answer was lost, they are listed again, for as long as the listing may lag behind a create,
before another would be tried, and what the lost create made is adopted. The data is staged in
Cloud Storage first, named by the fingerprint, so a second try uploads nothing again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .. import data
from ..client import ApiClient
from ..errors import ConfigError, PermanentBackendError, TransientBackendError, UsageError
from ..identity import Identity
from ..ownership import adopt, newest
from ..retrying import Budget, Deadline, PollPolicy
from ..spec import Job
from ..workspace import Owner
from . import openmodels, vertexopen
from .base import Progress, RemoteModel, example_streams
from .gcs import Storage
from .tuningjobs import (job_labels, label_filter, progress_of, tuning_job_from_wire,
                         tuning_job_to_wire)
from .vertexsettings import BUCKET_VARIABLE, Settings

TRAINING_OBJECT = "jobspec/training/{fingerprint}.jsonl"  # in the staging bucket (and prefix)
VALIDATION_OBJECT = "jobspec/validation/{fingerprint}.jsonl"
MAX_VALIDATION_EXAMPLES = 5_000  # §6
# A create answered 429 or 503 was refused before anything was made (RESOURCE_EXHAUSTED,
# UNAVAILABLE); any other failure (no answer, 500, 502, 504) may have followed the job's making.
REFUSED_CREATE = (429, 503)
# How long Vertex AI's listing is given to show a job a create made. The list is the only way
# to find a job whose create answer was lost, and it may lag behind the create.
LISTING_SETTLE_SECONDS = 60.0

Sleep = Callable[[float, str], None]
Lines = Callable[[Job, Iterable[data.Example]], Iterator[bytes]]


class TuningJobs:
    """The tuning jobs in ``settings``' project and region, through ``client`` (Vertex AI's
    v1); staged data through ``storage``; ``owner``'s labels on what it creates. ``lines`` makes
    a job's training file from its examples; ``sleep`` waits between tries (and raises
    Interrupted when the run is stopped)."""

    def __init__(self, settings: Settings, client: ApiClient, storage: Storage, owner: Owner,
                 lines: Lines, sleep: Sleep) -> None:
        self.settings = settings
        self.client = client
        self.storage = storage
        self.owner = owner
        self.lines = lines
        self._sleep = sleep

    def labelled(self, **labels: str) -> list[RemoteModel]:
        """The tuning jobs with these labels, following every page."""
        query = {"filter": label_filter(labels)}
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

    def adoptable(self, models: list[RemoteModel], job: Job, identity: Identity,
                  existed: set[str]) -> list[RemoteModel]:
        """What a create takes instead of making a job (``ownership.adopt``)."""
        return [m for m in models if adopt(m, self.owner.id, job.name, identity.fingerprint,
                                           existed=existed).allowed]

    def _stage(self, job: Job, identity: Identity) -> tuple[str, str | None]:
        """The training (and validation) JSONL in Cloud Storage, uploaded unless there, each
        read as a stream (a validation split's sides as identify drew it)."""
        bucket = self.settings.bucket
        if bucket is None:
            raise UsageError("the vertex backend needs a staging bucket to create a tuning job: "
                             f"pass --staging-bucket, or set {BUCKET_VARIABLE}")
        streams = example_streams(job, identity)
        name = bucket.object_name(TRAINING_OBJECT.format(fingerprint=identity.fingerprint))
        self.storage.stage(bucket, name, lambda: self.lines(job, streams.training()))
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
        self.storage.stage(bucket, checked, lambda: self.lines(job, validation()))
        return bucket.uri(name), bucket.uri(checked)

    def create(self, job: Job, identity: Identity) -> Progress:
        """Adopt this owner's job of the same name and fingerprint if one is not FAILED; else
        stage the data and create one. The create is sent once per attempt, never retried
        blindly. After one the service refused (429, 503) the jobs are listed again before the
        next attempt. After one whose outcome is unknown (no answer, or an error that may
        follow the job's making), no create is sent until the listing has had time to show
        what it made (``_after_unknown_create``), which is then adopted."""
        labels = job_labels(job.name, identity.fingerprint, self.owner.id)
        budget = self.client.retry.budget()
        known: set[str] | None = None  # the jobs there before this create
        staged, failed, attempt = None, None, 0
        while True:
            found = self.labelled(**labels)
            known = {m.name for m in found} if known is None else known
            taken = self.adoptable(found, job, identity, known)
            if taken:
                return progress_of(newest(taken), adopted=True)
            if failed is not None:  # the last attempt's create made nothing, and none is left
                raise TransientBackendError(
                    f"{failed.message} (creating the tuning job: gave up after {attempt} "
                    f"attempt{'s' if attempt > 1 else ''}, and no job was made; apply again to "
                    "retry)", http_status=failed.http_status, status=failed.status)
            staged = staged or self._stage(job, identity)
            attempt += 1
            body, version = self._create_body(job, identity, staged)
            try:
                created = self.client.request("POST", f"{self.settings.parent}/tuningJobs",
                                              body=body, retry=False, version=version)
            except TransientBackendError as exc:
                if exc.http_status not in REFUSED_CREATE:
                    made = self._after_unknown_create(exc, labels, job, identity, known,
                                                      budget)
                    if made:
                        return progress_of(newest(made), adopted=True)
                # As ApiClient waits between attempts; None: give up.
                wait = budget.next_wait(exc, attempt)
                if wait is None:
                    failed = exc  # list once more: a lost answer may have made the job
                else:
                    self._sleep(wait, "to retry creating a Vertex AI tuning job")
                continue
            return progress_of(tuning_job_from_wire(created))

    def _create_body(self, job: Job, identity: Identity,
                     staged: tuple[str, str | None]) -> tuple[dict[str, Any], str | None]:
        """The TuningJob to create and the API version to create it in: v1 for a Gemini
        model; v1beta1, with its output under the staging bucket, for an open model."""
        if not openmodels.is_open_model(job.base_model):
            return tuning_job_to_wire(job, identity, self.owner.id, *staged), None
        assert self.settings.bucket is not None  # _stage has refused a job without one
        output = vertexopen.output_uri(self.settings.bucket, identity)
        return (vertexopen.tuning_job_to_wire(job, identity, self.owner.id, *staged, output),
                vertexopen.CREATE_VERSION)

    def _after_unknown_create(self, error: TransientBackendError, labels: dict[str, str],
                              job: Job, identity: Identity, known: set[str],
                              budget: Budget) -> list[RemoteModel]:
        """The jobs a create whose outcome is unknown made, once the listing shows them; []
        once ``LISTING_SETTLE_SECONDS`` have passed with none (it made nothing). Vertex AI
        takes no request id and chooses the job's name, so the listing is the only way to
        find the job, and it may lag behind the create: until it has had that long, jobspec
        lists again (waits doubling from the retry policy's first) and never creates again.
        If the retry deadline ends first, it stops with nothing created a second time."""
        policy = self.client.retry
        settled = Deadline(LISTING_SETTLE_SECONDS)
        listings = PollPolicy(policy.initial_wait, policy.max_wait, growth=2.0)

        def made() -> list[RemoteModel]:
            return self.adoptable(self.labelled(**labels), job, identity, known)

        found = listings.poll(made, bool, until=Deadline.earliest(settled, budget.deadline),
                              sleep=lambda seconds: self._sleep(
                                  seconds, "for Vertex AI to list the tuning job a create may "
                                  "have made"))
        if found or settled.left() <= 0:
            return found
        waited = LISTING_SETTLE_SECONDS - settled.left()
        raise TransientBackendError(
            f"{error.message} (creating the tuning job: whether that create made a "
            f"job is unknown, and after {waited:.0f}s Vertex AI's listing, which can lag "
            "behind a create, shows none; jobspec did not create another. Apply again "
            "in a minute: it adopts the job if the create made one, or creates it)",
            http_status=error.http_status, status=error.status)
