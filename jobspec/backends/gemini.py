"""The Gemini API's tuning surface (tunedModels, their operations, generateContent), spoken to
Google or, by the local backend, to jobspec's local service. The wire contract both sides share
is jobspec/wire.py; the requests and answers themselves, as pure functions, are
backends/tunedmodels.py."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager, nullcontext
from typing import Any

from .. import auth, data, wire
from ..client import ApiClient
from ..conversation import Conversation
from ..data import Example
from ..errors import ConfigError, JobSpecError, PermanentBackendError
from ..identity import Identity
from ..ownership import adopt, tuned_model_ids
from ..retrying import PollPolicy
from ..spec import Job
from ..workspace import Owner
from . import generate, openmodels, preview, tokencount, uploads
from .base import (BackendType, ExampleStreams, OpenRequest, PollDefaults, Progress,
                   RemoteModel, TokenCount, example_streams)
from .endpoints import Endpoint, check_destination
from .tunedmodels import (create_body, inline_dataset, model_path, model_progress,
                          operation_progress, refused_example, tuned_model_from_wire,
                          uploaded_dataset)

GOOGLE_ENDPOINT = "https://generativelanguage.googleapis.com"
POLL = PollDefaults(initial=5.0, maximum=60.0)  # Google's tuning runs take minutes to hours
API_KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
SCOPES = ("https://www.googleapis.com/auth/cloud-platform",
          "https://www.googleapis.com/auth/generative-language.tuning")

# Google states no size for a tunedModels.create request; the one figure it publishes for tuning
# data is a 4 MB dataset (shared/reference/gemini-tuning-api.md §10). Each example travels as
# {"textInput":...,"output":...}, comma-separated (JSON, UTF-8, compact, non-ASCII unescaped:
# what httpx sends); the envelope is room for the display name (<= 40 characters), description
# (<= 10,000), jobspec's marker, base model and hyperparameters.
INLINE_EXAMPLE_BYTES = len('{"textInput":,"output":},')
# The Gemini API's TuningExample is one text input and its output: conversations (more turns, a
# system instruction) are refused where the examples are read, naming the backends that take them.
CONVERSATIONS_ELSEWHERE = "local or vertex"
CREATE_ENVELOPE_BYTES = 64 * 1024


def inline_limits(backend: str, max_bytes: int, unit_bytes: int, unit: str,
                  stated_by: str) -> data.DataLimits:
    """The limits of a backend that takes the examples inline in a tunedModels.create."""
    return data.DataLimits(
        backend, max_input_chars=wire.MAX_INPUT_CHARS, max_output_chars=wire.MAX_OUTPUT_CHARS,
        max_bytes=max_bytes, per_example_bytes=INLINE_EXAMPLE_BYTES,
        envelope_bytes=CREATE_ENVELOPE_BYTES, unit_bytes=unit_bytes, unit=unit,
        stated_by=stated_by, shared_with_validation=True,
        conversations_elsewhere=CONVERSATIONS_ELSEWHERE)


class GeminiBackend:
    """tunedModels, their operations and generateContent, over one ApiClient. The tuned model's
    id is jobspec's (``ownership.tuned_model_ids``: one namespace holds every owner's
    models), so a repeated create meets ALREADY_EXISTS and adopts what an earlier, interrupted
    create of this owner made (``ownership.adopt``); a model of another owner under that id is
    left alone, and the next id is taken. A job's model is found by its mark (job,
    fingerprint, owner), never by its id alone."""

    def __init__(self, name: str, client: ApiClient, owner: Owner,
                 poll: PollDefaults = POLL, *, counts_examples: bool = False,
                 uploads_examples: bool = False) -> None:
        self.name = name
        self.counts_examples = counts_examples  # the service has models.countExampleTokens
        # The service takes examples uploaded apart (uploads.py), which a create then names.
        self.uploads_examples = uploads_examples
        self.uploads_sent = 0  # uploads this backend sent (others the service had already)
        self._counting_digests: dict[str, str | None] = {}
        self.client = client
        self.endpoint = client.base_url
        self.owner = owner
        self.poll = poll

    def __enter__(self) -> "GeminiBackend":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def interrupt(self) -> None:
        self.client.interrupt()

    def request_count(self) -> int:
        return self.client.request_count

    def list_models(self) -> list[RemoteModel]:
        return [tuned_model_from_wire(m) for m in self.client.paginate("tunedModels", "tunedModels")]

    def legacy_name(self, identity: Identity) -> str:
        """The job's first id, which every model had before owners were recorded."""
        return model_path(identity.tuned_model_id)

    def planned_name(self, identity: Identity, taken: frozenset[str] = frozenset()) -> str:
        """The first of the job's ids (``tuned_model_ids``) that no model holds (``taken``): the
        id create will take, unless another owner's create takes it first."""
        free = (name for name in map(model_path, tuned_model_ids(identity, self.owner.id))
                if name not in taken)
        return next(free, model_path(identity.tuned_model_id))

    def expected_steps(self, job: Job, identity: Identity) -> int | None:
        hp = job.hyperparameters
        return wire.total_steps(identity.trained_count, hp.epoch_count, hp.batch_size)

    def hyperparameters(self, job: Job) -> dict[str, Any]:
        return job.hyperparameters.as_dict()

    def get_model(self, name: str) -> RemoteModel | None:
        try:
            return tuned_model_from_wire(self.client.request("GET", model_path(name)))
        except PermanentBackendError as exc:
            if exc.http_status == 404:
                return None
            raise

    def create(self, job: Job, identity: Identity) -> Progress:
        """Create the job's model under the first of its ids (``tuned_model_ids``). An id that
        exists already (ALREADY_EXISTS) holds either this owner's model of the job, which a
        retried or resumed create made, and is adopted instead of creating another, or a model
        that is not this owner's, which is left alone while the next id is tried. The Gemini
        API takes the examples inline, in the request, whose size validate has checked against
        the backend's limit; the local service takes them uploaded first (streamed, and only
        when it does not have them already), and the create names the uploads."""
        streams = example_streams(job, identity)
        training, validation, uploaded_bytes = self._datasets(streams)
        body = create_body(job, identity, self.owner.id, training, validation)
        # A create that names uploads is answered once the service has read them.
        timeout = uploads.answer_timeout(uploaded_bytes) if uploaded_bytes else None
        ids = tuned_model_ids(identity, self.owner.id)
        for model_id in ids:
            try:
                operation = self.client.request("POST", "tunedModels", body=body,
                                                params={"tunedModelId": model_id},
                                                timeout=timeout)
            except PermanentBackendError as exc:
                if exc.status != "ALREADY_EXISTS" and exc.http_status != 409:
                    raise self._located(exc, streams.training) from None
                there = self.get_model(model_id)
                if there is not None and adopt(there, self.owner.id, job.name,
                                               identity.fingerprint,
                                               self.legacy_name(identity)).allowed:
                    return dataclasses.replace(self.progress(there.name), adopted=True)
                continue
            return operation_progress(operation)
        raise PermanentBackendError(
            f"every id this job's model may take ({', '.join(ids)}) is held by a model that is "
            "not this workspace's (see `jobspec get`)", http_status=409, status="ALREADY_EXISTS")

    def _datasets(self, streams: ExampleStreams) -> tuple[dict[str, Any],
                                                          dict[str, Any] | None, int]:
        """The create's training and validation Datasets: the examples inline, or (where the
        service takes uploads) the names of their uploads, each sent unless already there;
        and the bytes those uploads hold (0 inline)."""
        if self.uploads_examples:
            # Both measured (every example read and checked) before either is sent.
            training = uploads.measure_examples(streams.training())
            validation = (uploads.measure_examples(streams.validation())
                          if streams.validation is not None else None)
            try:
                self._upload(streams.training, training)
                if streams.validation is not None and validation is not None:
                    self._upload(streams.validation, validation)
                return (uploaded_dataset(training.name),
                        uploaded_dataset(validation.name) if validation is not None else None,
                        training.size + (validation.size if validation is not None else 0))
            except uploads.UploadsUnsupported:
                pass  # _upload noted it: the examples go inline
        return (inline_dataset(streams.training()),
                inline_dataset(streams.validation()) if streams.validation else None, 0)

    def _upload(self, examples: Callable[[], Iterable[Example]],
                measured: uploads.Measured) -> None:
        """Make sure the service has the upload; UploadsUnsupported (and no uploads tried
        again) when it takes none."""
        try:
            self.uploads_sent += uploads.ensure(self.client, examples, measured)
        except uploads.UploadsUnsupported:
            self.uploads_examples = False
            raise

    def _located(self, error: PermanentBackendError,
                 examples: Callable[[], Iterable[Example]]) -> JobSpecError:
        """A refusal that names training example i (inline, or line i+1 of their upload),
        shown against the line of the user's data file that holds it; any other error as it
        came."""
        index = refused_example(error.message)
        example = next(itertools.islice(examples(), index, None), None) \
            if index is not None else None
        if example is not None and example.where is not None:
            return ConfigError(example.where, f"the {self.name} backend refused this "
                               f"example ({error.http_status} {error.status}): {error.message}")
        return error

    def progress(self, model: str, operation: str | None = None) -> Progress:
        if operation:
            # Google documents polling tuning operations on /v1/.
            return operation_progress(self.client.request("GET", operation, version="v1"))
        path = model_path(model)
        operations = self.client.request("GET", f"{path}/operations").get("operations", [])
        if operations:
            return operation_progress(operations[-1])
        found = self.get_model(path)
        if found is None:
            raise PermanentBackendError(f"{path} does not exist", http_status=404,
                                        status="NOT_FOUND")
        return model_progress(found)

    def remove(self, model: RemoteModel, kind: str = "") -> str:
        try:
            self.client.request("DELETE", model_path(model.name))
        except PermanentBackendError as exc:
            if exc.http_status != 404:  # already gone is what we wanted
                raise
        return " ".join(filter(None, ["deleted", kind, model.name]))

    def generate(self, target: str, prompt: Conversation, config: dict[str, Any]) -> str:
        return generate.generate(self.client, target, prompt, config)

    def base_target(self, job: Job) -> str:
        return job.base_model

    def why_not_served(self, job: Job) -> str | None:
        return None  # a tuned model is served as soon as it is ACTIVE

    def serving(self, job: Job, model: RemoteModel, poll: PollPolicy,
                say: Callable[[str], None]) -> ContextManager[str]:
        return nullcontext(model.generation_target)

    def counting_digest(self, base_model: str) -> str | None:
        """The local service reports one per base model (asked once per command); the Gemini
        API counts no tuning examples."""
        if not self.counts_examples:
            return None
        if base_model not in self._counting_digests:
            self._counting_digests[base_model] = tokencount.counting_digest(self.client,
                                                                            base_model)
        return self._counting_digests[base_model]

    def count_tokens(self, base_model: str,
                     example_sets: Sequence[Sequence[Example]]) -> list[TokenCount] | None:
        """The local service counts every example as its trainer encodes it
        (models.countExampleTokens: small sets inline, every set in one batched request where
        they fit; more than uploads.INLINE_COUNT_BYTES uploaded, and named); the Gemini API has
        no such method (its countTokens counts one prompt, not a tuning example), so for it
        jobspec estimates."""
        if not self.counts_examples:
            return None
        method = f"counted by the {self.name} service with {base_model}'s tokenizer"
        measured = [uploads.measure_examples(examples) for examples in example_sets] \
            if self.uploads_examples else []
        if sum(m.size for m in measured) > uploads.INLINE_COUNT_BYTES:
            # Each set uploaded (once: a later plan or the create finds it there), and counted
            # from the upload, which the service reads a line at a time.
            try:
                for examples, upload in zip(example_sets, measured):
                    self._upload(lambda examples=examples: iter(examples), upload)
                return tokencount.count_uploads(
                    self.client, base_model, [m.name for m in measured], method,
                    timeout=uploads.answer_timeout(sum(m.size for m in measured)))
            except uploads.UploadsUnsupported:
                pass  # counted inline, as a service from before uploads counts
        return tokencount.count_example_sets(
            self.client, base_model, example_sets, method,
            batched=self.counting_digest(base_model) is not None)


def gemini_credentials() -> auth.Credentials:
    return auth.api_key(API_KEY_VARIABLES) or auth.oauth(
        "gemini", SCOPES, other_ways="set GEMINI_API_KEY (or GOOGLE_API_KEY) to an API key, ")


def _open(request: OpenRequest) -> GeminiBackend:
    endpoint = request.chosen_endpoint or Endpoint(GOOGLE_ENDPOINT, "the gemini backend's "
                                                   "default", trusted=True)
    credentials = gemini_credentials()
    check_destination(endpoint, credentials, "gemini")
    return GeminiBackend("gemini", ApiClient(endpoint.url, credentials, retry=request.retry),
                         request.owner)


def refuse_validation(job: Job) -> list[ConfigError]:
    """The Gemini API's TuningTask has no validation data and no early stopping."""
    why = ("the Gemini API takes no validation data (its tuning task has none); remove it, or "
           "tune on local (or vertex, which takes a validation dataset)")
    problems = [ConfigError(job.at(key), why) for key in ("validation_data", "validation_split")
                if getattr(job, key) is not None]
    if job.early_stopping is not None:
        problems.append(ConfigError(job.at("early_stopping"), "the Gemini API has no early "
                                    "stopping; remove it, or tune on local"))
    return problems


def refuse_system_instruction(job: Job) -> list[ConfigError]:
    """The Gemini API's tuning takes no system instruction (its examples are text in, text
    out)."""
    if job.system_instruction is None:
        return []
    return [ConfigError(job.at("system_instruction"), (
        "the Gemini API's tuning takes no system instruction (a tuning example is one text "
        f"input and its output); remove it, or tune on {CONVERSATIONS_ELSEWHERE}, which take "
        "conversations"))]


def refuse_full_tuning(job: Job, why: str) -> list[ConfigError]:
    if job.tuning_mode == "full":
        return [ConfigError(job.at("tuning_mode"), why)]
    return []


def refuse_deployment(job: Job, why: str) -> list[ConfigError]:
    """``eval.deploy`` is for a tuned open model on Vertex AI, which is served only once
    deployed; every other backend serves what it tunes."""
    if job.eval is not None and job.eval.deploy is not None:
        return [ConfigError(job.at("eval", "deploy"), why)]
    return []


def refuse_resources(job: Job, why: str) -> list[ConfigError]:
    """``resources:`` sizes a run on the local service (its Ray cluster); Google's services
    choose their own machines."""
    if job.resources is not None:
        return [ConfigError(job.key_at("resources"), why)]
    return []


def refuse_open_model(job: Job) -> list[ConfigError]:
    """The Gemini API tunes Gemini models only; a Hugging Face id goes to vertex or local."""
    if not openmodels.is_open_model(job.base_model):
        return []
    vertex = ("vertex (Vertex AI's managed open-model tuning) or local"
              if openmodels.vertex_open_model(job.base_model) else "local")
    return [ConfigError(job.at("base_model"), (
        f"the Gemini API tunes no open models; tune {job.base_model} on {vertex} (the local "
        "service tunes the Hugging Face models it serves)"))]


def refuse_adapter_size(job: Job, why: str) -> list[ConfigError]:
    if "adapter_size" in job.hyperparameters.given:
        return [ConfigError(job.at("hyperparameters", "adapter_size"), why)]
    return []


GEMINI = BackendType(
    name="gemini", summary="the Gemini API's tunedModels (generativelanguage.googleapis.com)",
    limits=inline_limits("gemini", 4 * data.MB, data.MB, "MB",
                         "the Gemini API's published limit for tuning data"),
    open=_open, poll=POLL, credentials=gemini_credentials,
    default_endpoint=lambda options, jobs: GOOGLE_ENDPOINT,
    check_job=lambda job: refuse_open_model(job) + refuse_adapter_size(
        job, "the Gemini API takes no adapter size (Vertex AI does); remove it, or tune on vertex")
    + refuse_full_tuning(job, "the Gemini API has no full fine-tuning; remove tuning_mode, or "
                              "tune an open model on vertex")
    + refuse_validation(job) + refuse_system_instruction(job)
    + refuse_deployment(job, "the Gemini API serves a tuned model as soon as it is ACTIVE; "
                             "eval.deploy is for an open model tuned on vertex: remove it")
    + refuse_resources(job, "the Gemini API chooses the machines it tunes on; resources "
                            "applies to the local service: remove it, or tune on local"),
    preview=preview.offline("a TuningExample in its create request",
                            lambda job, example: uploads.wire_example(example),
                            "the Gemini API does not count tuning examples"))
