"""fake_vertex: a stand-in for Vertex AI supervised tuning (aiplatform.googleapis.com) and the
Cloud Storage bucket that holds its data (storage.googleapis.com), which tests cannot reach.

Built from ../shared/reference/vertex-tuning-api.md. One loopback server plays both hosts:
point JOBSPEC_VERTEX_ENDPOINT and JOBSPEC_STORAGE_ENDPOINT at ``fake.url``.

* Cloud Storage (§7): media upload and object metadata; see tests/fake_gcs.py.
* tuningJobs (§2, §3, §5) under ``/v1/projects/{p}/locations/{l}/tuningJobs``: create answers
  the TuningJob itself (not an Operation) in ``JOB_STATE_PENDING``; get; list with ``filter``,
  ``pageSize``, ``pageToken`` -> ``ListTuningJobsResponse``, newest job first, ``{}`` when
  empty (proto3 JSON leaves out empty fields); ``:cancel`` with ``{}`` -> ``{}``. A project or
  location other than the fake's is 404 NOT_FOUND.
* Create bodies are parsed as Google's front end parses JSON: an unknown name anywhere is 400
  ``Invalid JSON payload received. Unknown name "x" at 'tuning_job.…': Cannot find field.``
  (with a BadRequest detail), a value of the wrong type ``Invalid value at '…' (TYPE_INT64),
  …``; int64 ``epochCount`` may come as a number or a string and is echoed as a string;
  output-only fields (``state``, ``name``, …) are ignored, as Google ignores them. Then the
  service's checks, 400 INVALID_ARGUMENT: ``baseModel`` one of ``base_models``;
  ``supervisedTuningSpec.trainingDatasetUri`` (and ``validationDatasetUri``, if given) a
  ``gs://bucket/object`` in the fake's storage; ``adapterSize`` THIRTY_TWO refused with the
  message §1 quotes (every model §6 lists takes 1 to 16); labels per §3; a
  ``tunedModelDisplayName`` of at most 128 characters.
* The state machine (§5), sped up: each get of a job, and each list page that holds it, is one
  observation. The first moves the job to RUNNING (``startTime``); after ``polls_until_done``
  observations (None: never) it ends SUCCEEDED with ``endTime``, ``tunedModel``
  (``…/models/{n}@1``, ``…/endpoints/{m}``, §3) and
  ``tuningDataStats.supervisedTuningDataStats`` counted from the training JSONL as it was at
  create (§6): examples; characters of every text part; billable tokens = characters / 4
  rounded up, per example; steps = examples x epochs (epochCount, or 1 when unset). A file
  that is not JSONL of ``{contents: [...]}`` ends the job FAILED instead (error code 3), as
  Vertex fails a job whose data does not validate. Cancel is asynchronous (§2): the job shows
  JOB_STATE_CANCELLING to one observation, then is CANCELLED with ``error``
  ``{"code": 1, "message": "CANCELED"}``; cancelling a finished job is 400
  FAILED_PRECONDITION. Paused, updating or partly succeeded jobs (seeded) stay as they are.
  Timestamps come from fake_gcs.FakeClock (one second per reading; RFC 3339, nine digits).
* generateContent (§2 "Serving the result"; request and response shapes from
  gemini-tuning-api.md §6) on ``endpoints/{e}`` of a SUCCEEDED job or on
  ``publishers/google/models/{base model}``, else 404. The prompt is the text of the last user
  turn; the answer comes from ``answers``: a mapping ``{(target_kind, prompt): text}`` with
  target_kind ``"tuned"`` or ``"base"`` (add entries with ``fake.script``), or a callable
  ``(target_kind, target, prompt) -> text | None`` (target: the endpoint's resource name or the
  base model id). No answer: 400 naming the prompt. ``maxOutputTokens`` cuts the answer
  (finishReason MAX_TOKENS); usageMetadata counts four characters a token.
* Auth (§1): OAuth only, on every API and storage request. No Authorization: 401
  UNAUTHENTICATED; an API key (``x-goog-api-key`` or ``?key=``): 401 with the message Google's
  OAuth-only APIs give (the fake's stand-in: the reference quotes none for Vertex); any
  non-empty Bearer token is accepted. ``POST /token`` is an OAuth token endpoint whose tokens
  last 60 s, under google-auth's refresh threshold, so every use refreshes (``tokens_issued``).
* Endpoints to deploy a tuned open model to, their long-running operations and chat
  completions on them: tests/fake_vertex_deploy.py (``fake.deploys``).
* Errors: Google's envelope ``{"error": {"code", "message", "status"}}`` (§1).

* Open models (tests/fake_vertex_open.py, from jobspec/backends/reference/vertex-open-models.md):
  every route is served under ``/v1beta1/`` too, whose create parses v1beta1's TuningJob
  (``outputUri``, ``supervisedTuningSpec.tuningMode``, ``hyperParameters.learningRate`` /
  ``batchSize``; unknown names on v1) and applies the open models' checks (a model Vertex
  tunes, a tuning mode it is offered in, a region, ``outputUri``; Gemini-only and open-only
  fields); their training file is the chat form. A finished open-model job has
  ``tunedModel.model`` and no endpoint (it is not served until deployed). The fake serves a
  job's v1beta1 fields on v1 reads too (no source says whether v1 leaves them out).

Simplifications: v1 and v1beta1 alike but for create's fields (no operations,
rebaseTunedModel, streamGenerateContent);
real fields the fake does not model (``preTunedModel``, ``preferenceOptimizationSpec``,
``encryptionSpec``, ``evaluationConfig``, non-text parts, tools, …) are refused with a 400 that
says "fake_vertex does not model"; only lowerCamel JSON names are accepted (Google's parser
also takes proto names); the list filter understands only ``labels.KEY="VALUE"`` terms (key
and value bare or quoted; with a dash, quoted, as AIP-160 requires) joined by `` AND `` and
refuses the rest; ``epochCount`` has no range (none is published).

Every request is recorded in ``fake.requests`` (tests.loopback_http.Request: method, path,
parsed query, headers as sent, body bytes), ``fake.requests_to(prefix)`` filters them,
``fake.generate_bodies(kind)`` gives the generateContent bodies (``systemInstruction``,
``contents``, ``generationConfig``, as GenerateContentRequest names them). Hooks:
``fail_next_job``, ``expire_next_job``, ``end_job``, ``add_foreign_job``,
``drop_next_create_answer``, ``lag_next_listing`` (the list, eventually consistent, leaves a new
job out for a while), ``catch_up_listing``, ``fail_next_requests``, ``script``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from tests import fake_vertex_open
from tests.fake_vertex_deploy import FakeEndpoints
from tests.fake_gcs import FakeClock, FakeStorage, Reply, google_error, header, rfc3339
from tests.loopback_http import Request

QUEUED, PENDING, RUNNING = "JOB_STATE_QUEUED", "JOB_STATE_PENDING", "JOB_STATE_RUNNING"
SUCCEEDED, FAILED, EXPIRED = "JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_EXPIRED"
CANCELLING, CANCELLED = "JOB_STATE_CANCELLING", "JOB_STATE_CANCELLED"
JOB_STATES = ("JOB_STATE_UNSPECIFIED", QUEUED, PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLING,
              CANCELLED, "JOB_STATE_PAUSED", EXPIRED, "JOB_STATE_UPDATING",
              "JOB_STATE_PARTIALLY_SUCCEEDED")
FINISHED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED, "JOB_STATE_PARTIALLY_SUCCEEDED")
ADAPTER_SIZES = ("ADAPTER_SIZE_UNSPECIFIED", "ADAPTER_SIZE_ONE", "ADAPTER_SIZE_TWO",
                 "ADAPTER_SIZE_FOUR", "ADAPTER_SIZE_EIGHT", "ADAPTER_SIZE_SIXTEEN",
                 "ADAPTER_SIZE_THIRTY_TWO")
# The ids the reference names (§3 examples, §6 "Gemini 2.5 Flash / Flash-Lite / Pro").
BASE_MODELS = ("gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro",
               "gemini-2.0-flash-001")

NO_CREDENTIALS = ("Request is missing required authentication credential. Expected OAuth 2 access "
                  "token, login cookie or other valid authentication credential. See "
                  "https://developers.google.com/identity/sign-in/web/devconsole-project.")
BAD_CREDENTIALS = ("Request had invalid authentication credentials. Expected OAuth 2 access token, "
                   "login cookie or other valid authentication credential. See "
                   "https://developers.google.com/identity/sign-in/web/devconsole-project.")
API_KEYS_REFUSED = ("API keys are not supported by this API. Expected OAuth2 access token or other "
                    "authentication credentials that assert a principal. See "
                    "https://cloud.google.com/docs/authentication")
CANCELED = {"code": 1, "message": "CANCELED"}
FAULT_MESSAGES = {429: "Resource has been exhausted (e.g. check quota).",
                  500: "Internal error encountered.", 503: "The service is currently unavailable.",
                  504: "The request timed out. Please try again."}


# Proto3 JSON, as Google's front end parses it: a message's fields by lowerCamel JSON name; the
# error paths use the proto (snake_case) names, rooted at the request field that is the body.
class Kind:
    def __init__(self, type_name: str) -> None:
        self.type_name = type_name


STRING, INT64, INT32 = Kind("TYPE_STRING"), Kind("TYPE_INT64"), Kind("TYPE_INT32")
DOUBLE, BOOL = Kind("TYPE_DOUBLE"), Kind("TYPE_BOOL")
OUTPUT_ONLY = Kind("output only")  # accepted and ignored, as Google ignores them on input
UNMODELLED = Kind("unmodelled")  # a real field the fake does not model: refused, saying so
V1 = "type.googleapis.com/google.cloud.aiplatform.v1."


@dataclass
class Enum:
    type_name: str
    values: tuple[str, ...]


@dataclass
class Repeated:
    item: object


@dataclass
class StringMap:
    pass


@dataclass
class Message:
    type_name: str
    fields: dict[str, object]


def proto_name(json_name: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", json_name).lower()


def parse(value: object, kind: object, path: str, errors: list[tuple[str, str]]) -> object:
    """``value`` read as ``kind``, in its canonical JSON form; problems go to ``errors``."""
    def invalid(type_name: str) -> None:
        errors.append((path, f"Invalid value at '{path}' ({type_name}), {json.dumps(value)}"))

    if isinstance(kind, Message):
        if not isinstance(value, dict):
            return invalid(V1 + kind.type_name)
        parsed = {}
        for key, item in value.items():
            field = kind.fields.get(key)
            child = f"{path}.{proto_name(key)}" if path else proto_name(key)
            if field is None:
                at = f" at '{path}'" if path else ""
                errors.append((path, f'Invalid JSON payload received. Unknown name "{key}"{at}: '
                                     "Cannot find field."))
            elif field is UNMODELLED:
                errors.append((child, f"fake_vertex does not model '{child}'"))
            elif field is not OUTPUT_ONLY and item is not None:  # null: the field is unset
                parsed[key] = parse(item, field, child, errors)
        return parsed
    if isinstance(kind, Repeated):
        if not isinstance(value, list):
            return invalid("list")
        return [parse(item, kind.item, f"{path}[{i}]", errors) for i, item in enumerate(value)]
    if isinstance(kind, StringMap):
        if not isinstance(value, dict):
            return invalid("map")
        return {key: parse(item, STRING, f"{path}[{key!r}]", errors) for key, item in value.items()}
    if isinstance(kind, Enum):
        return value if value in kind.values else invalid(V1 + kind.type_name)
    if kind is STRING:
        return value if isinstance(value, str) else invalid(kind.type_name)
    if kind is BOOL:
        return value if isinstance(value, bool) else invalid(kind.type_name)
    if kind in (INT64, INT32):
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value) or \
                isinstance(value, (int, float)) and not isinstance(value, bool) \
                and float(value).is_integer():
            number = int(value)
            return str(number) if kind is INT64 else number  # int64 is a string in proto3 JSON
        return invalid(kind.type_name)
    if kind is DOUBLE:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value) if isinstance(value, str) else invalid(kind.type_name)
        except ValueError:
            return invalid(kind.type_name)
    raise AssertionError(f"no parser for {kind!r}")


SUPERVISED_TUNING_SPEC = Message("SupervisedTuningSpec", {
    "trainingDatasetUri": STRING, "validationDatasetUri": STRING,
    "hyperParameters": Message("SupervisedHyperParameters", {
        "epochCount": INT64, "learningRateMultiplier": DOUBLE,
        "adapterSize": Enum("SupervisedHyperParameters.AdapterSize", ADAPTER_SIZES)}),
    "exportLastCheckpointOnly": BOOL, "evaluationConfig": UNMODELLED})
TUNING_JOB = Message("TuningJob", {
    "name": OUTPUT_ONLY, "tunedModelDisplayName": STRING, "description": STRING,
    "baseModel": STRING, "preTunedModel": UNMODELLED,
    "supervisedTuningSpec": SUPERVISED_TUNING_SPEC, "preferenceOptimizationSpec": UNMODELLED,
    "state": OUTPUT_ONLY, "createTime": OUTPUT_ONLY,
    "startTime": OUTPUT_ONLY, "endTime": OUTPUT_ONLY, "updateTime": OUTPUT_ONLY,
    "error": OUTPUT_ONLY, "labels": StringMap(), "experiment": OUTPUT_ONLY,
    "tunedModel": OUTPUT_ONLY, "tuningDataStats": OUTPUT_ONLY, "encryptionSpec": UNMODELLED,
    "serviceAccount": STRING, "evaluateDatasetRuns": OUTPUT_ONLY})
# v1beta1's TuningJob: v1's and the open models' fields (fake_vertex_open.py, §4 of
# jobspec/backends/reference/vertex-open-models.md).
TUNING_JOB_V1BETA1 = Message("TuningJob", {
    **TUNING_JOB.fields, "outputUri": STRING, "customBaseModel": UNMODELLED,
    "supervisedTuningSpec": Message("SupervisedTuningSpec", {
        **SUPERVISED_TUNING_SPEC.fields,
        "tuningMode": Enum("SupervisedTuningSpec.TuningMode", fake_vertex_open.TUNING_MODES),
        "hyperParameters": Message("SupervisedHyperParameters", {
            **SUPERVISED_TUNING_SPEC.fields["hyperParameters"].fields,
            "learningRate": DOUBLE, "batchSize": INT64})})})
CONTENT = Message("Content", {"role": STRING, "parts": Repeated(Message("Part", {
    "text": STRING, **dict.fromkeys(("inlineData", "fileData", "functionCall", "functionResponse",
                                     "executableCode", "codeExecutionResult", "videoMetadata",
                                     "thought", "thoughtSignature"), UNMODELLED)}))})
GENERATE_CONTENT_REQUEST = Message("GenerateContentRequest", {
    "contents": Repeated(CONTENT), "systemInstruction": CONTENT, "labels": StringMap(),
    "generationConfig": Message("GenerationConfig", {
        "temperature": DOUBLE, "topP": DOUBLE, "topK": DOUBLE, "candidateCount": INT32,
        "maxOutputTokens": INT32, "stopSequences": Repeated(STRING), "seed": INT32,
        "presencePenalty": DOUBLE, "frequencyPenalty": DOUBLE, "responseMimeType": STRING,
        "responseLogprobs": BOOL, "logprobs": INT32,
        **dict.fromkeys(("responseSchema", "responseJsonSchema", "responseModalities",
                         "speechConfig", "thinkingConfig", "imageConfig", "mediaResolution"),
                        UNMODELLED)}),
    **dict.fromkeys(("tools", "toolConfig", "safetySettings", "cachedContent"), UNMODELLED)})

LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # §3: ≤ 64 chars; a key starts with a letter
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,64}")
# §2's "standard list filter" is AIP-160's grammar, in which "-" is the negation operator and
# never part of a bare word (TEXT): `labels.jobspec-owner="x"` reads as `labels.jobspec`, then
# `-owner="x"`. A key or value with a dash in it must be a quoted STRING, as Vertex's list
# methods quote a key with a space in it (`labels."a key"`).
FILTER_TERM = re.compile(r'labels\.(?:([a-z][a-z0-9_]*)|"([a-z][a-z0-9_-]*)")'
                         r'\s*=\s*(?:"([^"\\]*)"|([a-z0-9_]+))')


def parse_filter(text: str) -> list[tuple[str, str]]:
    """The list filters the fake understands: ``labels.KEY="VALUE"`` terms joined by
    `` AND ``, the key and the value bare words or quoted (quoted when they hold a dash, see
    FILTER_TERM). Anything else is refused, so a client cannot come to rely on filter syntax
    the reference does not show."""
    terms = []
    for term in text.split(" AND ") if text.strip() else []:
        match = FILTER_TERM.fullmatch(term.strip())
        if not match:
            raise ValueError(f"Unsupported filter {text!r}: fake_vertex accepts only "
                             'labels.KEY="VALUE" terms joined by " AND " (a key or value with '
                             'a "-", the negation operator, quoted: labels."a-key"="a-value")')
        terms.append((match[1] or match[2], match[3] if match[3] is not None else match[4]))
    return terms


def text_of(contents: Iterable[dict]) -> str:
    return "".join(part.get("text", "") for content in contents
                   for part in content.get("parts", []))


def tokens(characters: int) -> int:
    return -(-characters // 4)  # the fake's tokenizer: four characters a token, rounded up


def supervised_tuning_data_stats(data: bytes, epochs: int) -> tuple[dict | None, str | None]:
    """SupervisedTuningDataStats (§3) of a training file, or why Vertex would fail the job."""
    examples = characters = billable_tokens = 0
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None, "The training dataset is not UTF-8 text."
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
            turns = [example.get("systemInstruction") or {}, *example["contents"]]
            count = len(text_of(turns))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, (f"Invalid training example at line {number}: expected a JSON object "
                          "with contents[] of {role, parts[{text}]}.")
        examples, characters, billable_tokens = (examples + 1, characters + count,
                                                 billable_tokens + tokens(count))
    if not examples:
        return None, "The training dataset has no examples."
    return {"tuningDatasetExampleCount": str(examples),
            "totalTuningCharacterCount": str(characters),
            "totalBillableCharacterCount": str(characters),
            "totalBillableTokenCount": str(billable_tokens),
            "tuningStepCount": str(examples * epochs)}, None


@dataclass
class Progress:
    """How a job goes on: observations so far and how it will end."""
    ends_as: str = SUCCEEDED
    error: dict | None = None
    stats: dict | None = None
    observations: int = 0
    forced: bool = False  # end at the next observation
    cancelling_seen: bool = False  # a cancelled job shows CANCELLING to one observation
    unlisted: int = 0  # list requests still to leave it out (the listing lags behind a create)


class FakeVertex:
    """Vertex for ``project``/``location`` and Cloud Storage with ``buckets``, on ``url``.

    ``polls_until_done``: observations from create to the end (None: jobs never end);
    ``page_size``: list's default page, small so that tests page; ``answers``: what
    generateContent says (see the module docstring); ``base_models``: what create and the
    publisher-model route accept; ``project_number``: if given, resource names in answers
    carry it instead of ``project`` (as Vertex's do) and paths may use either. State a test
    reads: ``jobs`` (TuningJob resources by name, as served), ``objects`` ({(bucket, name):
    fake_gcs.StoredObject}), ``uploads`` (every stored upload, in order), ``endpoints``
    (tuned endpoint name -> job name), ``progress`` (observations per job), ``requests``,
    ``tokens_issued``.
    """

    def __init__(self, project: str = "my-project", location: str = "us-central1",
                 polls_until_done: int | None = 2, page_size: int = 2,
                 answers: Mapping[tuple[str, str], str] | Callable | None = None, *,
                 buckets: Iterable[str] = ("my-bucket",), base_models: Iterable[str] = BASE_MODELS,
                 project_number: str | None = None) -> None:
        self.project, self.location = project, location
        self.project_number = project_number  # when set, resource names use it, as Vertex's do
        self.parent = f"projects/{project_number or project}/locations/{location}"
        self.polls_until_done = polls_until_done
        self.page_size = page_size
        self.answers = answers if callable(answers) else dict(answers or {})
        self.base_models = set(base_models)
        self.clock = FakeClock()
        self.storage = FakeStorage(set(buckets), self.clock)
        self.requests: list[Request] = []
        self.jobs: dict[str, dict] = {}  # TuningJob resources by name, as served
        self.progress: dict[str, Progress] = {}
        self.endpoints: dict[str, str] = {}  # tuned endpoint name -> its tuning job's name
        self.tokens_issued = 0
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        self._next_endings: deque[tuple[str, dict | None]] = deque()
        self._creates_to_drop = 0
        self._listing_lag = 0
        self._faults: deque[tuple[int, str | None]] = deque()
        # Endpoints to deploy tuned open models to (tests/fake_vertex_deploy.py).
        self.deploys = FakeEndpoints(self.parent, self._tuned_models, self._deployed_answer)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeVertex:
        # A short poll interval: shutdown, at the end of every test, waits for one.
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def objects(self):
        return self.storage.objects

    @property
    def uploads(self):
        return self.storage.uploads

    def _tuned_models(self) -> set[str]:
        return {job["tunedModel"]["model"] for job in self.jobs.values() if "tunedModel" in job}

    def _deployed_answer(self, endpoint: str, prompt: str) -> str | None:
        if callable(self.answers):
            return self.answers("tuned", endpoint, prompt)
        return self.answers.get(("tuned", prompt))

    def requests_to(self, path_prefix: str) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def generate_bodies(self, target_kind: str | None = None) -> list[dict]:
        """The GenerateContentRequest bodies received, in order: of "tuned" endpoints, of
        "base" (publisher) models, or (None) of both."""
        where = {"tuned": "/endpoints/", "base": "/publishers/", None: "/"}[target_kind]
        return [r.json() for r in self.requests_to("/v1/") if r.method == "POST"
                and r.path.endswith(":generateContent") and where in r.path]

    # What a test sets up.

    def script(self, target_kind: str, prompt: str, answer: str) -> None:
        """What a "tuned" endpoint or a "base" model answers to ``prompt``."""
        assert target_kind in ("tuned", "base") and not callable(self.answers)
        self.answers[(target_kind, prompt)] = answer

    def fail_next_job(self, message: str = "Internal error occurred.", code: int = 3) -> None:
        """The next created job ends JOB_STATE_FAILED with ``error`` {code, message}."""
        with self.lock:
            self._next_endings.append((FAILED, {"code": code, "message": message}))

    def expire_next_job(self) -> None:
        with self.lock:
            self._next_endings.append((EXPIRED, None))

    def end_job(self, name: str, state: str, message: str | None = None) -> None:
        """``name`` ends as ``state`` at its next observation (FAILED: error code 3)."""
        assert state in (SUCCEEDED, FAILED, EXPIRED), state
        with self.lock:
            progress = self.progress[name]
            progress.ends_as, progress.forced = state, True
            progress.error = {"code": 3, "message": message or "Internal error occurred."} \
                if state == FAILED else None

    def drop_next_create_answer(self) -> None:
        """The next create is carried out, but the connection closes with no answer."""
        with self.lock:
            self._creates_to_drop += 1

    def lag_next_listing(self, lists: int) -> None:
        """The next job created is left out of the next ``lists`` list requests (gets find
        it), as an eventually consistent listing lags behind a create."""
        with self.lock:
            self._listing_lag = lists

    def catch_up_listing(self) -> None:
        """Every job shows in listings again."""
        with self.lock:
            for progress in self.progress.values():
                progress.unlisted = 0

    def fail_next_requests(self, n: int = 1, status_code: int = 503,
                           retry_after: str | None = None) -> None:
        """Answer the next ``n`` API requests (not /token) ``status_code`` and do nothing."""
        with self.lock:
            self._faults.extend([(status_code, retry_after)] * n)

    def add_foreign_job(self, labels: dict[str, str] | None = None, state: str = SUCCEEDED, *,
                        base_model: str = "gemini-2.5-flash",
                        display_name: str | None = None) -> dict:
        """Another team's job, created outside jobspec: it moves on like any job."""
        assert state in JOB_STATES, state
        with self.lock:
            body = {"baseModel": base_model, "supervisedTuningSpec": {
                "trainingDatasetUri": "gs://another-team/train.jsonl"}}
            if display_name:
                body["tunedModelDisplayName"] = display_name
            if labels:
                body["labels"] = dict(labels)
            job = self._store(body, Progress())
            if state in FINISHED or state in (RUNNING, CANCELLING):
                job["startTime"] = job["createTime"]
            if state in FINISHED:
                errors = {FAILED: {"code": 3, "message": "Internal error occurred."},
                          CANCELLED: CANCELED}
                self._finish(job, state, errors.get(state))
            job["state"] = state
            return copy.deepcopy(job)

    # The wire.

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> bytes:
                if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()  # the CRLF after each chunk
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query, keep_blank_values=True)
                request = Request(self.command, url.path, query, dict(self.headers), self._body())
                with fake.lock:
                    fake.requests.append(request)
                    reply = fake._route(request)
                    # Serialised under the lock: other threads change the jobs it shows.
                    data = json.dumps(reply[1]).encode() if reply else b""
                if reply is None:  # a dropped answer: the client sees the connection close
                    self.close_connection = True
                    return
                self.send_response(reply[0])
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in reply[2].items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        return Handler

    def _route(self, request: Request) -> Reply | None:
        if request.path == "/token" and request.method == "POST":
            self.tokens_issued += 1
            return 200, {"access_token": f"fake-vertex-token-{self.tokens_issued}",
                         "expires_in": 60, "token_type": "Bearer"}, {}
        if self._faults:
            code, retry_after = self._faults.popleft()
            return google_error(code, FAULT_MESSAGES.get(code, "fake_vertex fault"),
                                headers={"Retry-After": retry_after} if retry_after else None)
        refused = self._authenticate(request)
        if refused:
            return refused
        if self.storage.serves(request.path):
            return self.storage.route(request)
        return self._route_vertex(request)

    def _authenticate(self, request: Request) -> Reply | None:
        service = "storage.googleapis.com" if self.storage.serves(request.path) \
            else "aiplatform.googleapis.com"
        if header(request, "x-goog-api-key") or request.query.get("key"):
            return google_error(401, API_KEYS_REFUSED, details=[{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "CREDENTIALS_MISSING", "domain": "googleapis.com",
                "metadata": {"service": service}}])
        authorization = header(request, "authorization")
        if not authorization:
            return google_error(401, NO_CREDENTIALS)
        scheme, _, token = authorization.partition(" ")
        return None if scheme.lower() == "bearer" and token.strip() \
            else google_error(401, BAD_CREDENTIALS)

    def _route_vertex(self, request: Request) -> Reply | None:
        method = request.method
        segments = [unquote(s) for s in request.path.split("/")[2:]]
        version = request.path.split("/")[1]
        if version not in ("v1", "v1beta1") or len(segments) < 5 \
                or segments[0] != "projects" or segments[2] != "locations":
            return google_error(404, f"fake_vertex does not serve {method} {request.path}")
        if segments[1] not in (self.project, self.project_number):
            return google_error(404, f'Project "{segments[1]}" not found or permission denied.')
        if segments[3] != self.location:
            return google_error(404, f"Location {segments[3]} is not supported.")
        rest = segments[4:]
        deployed = self.deploys.route(method, rest, version, request.body,
                                      {key: values[-1] for key, values in request.query.items()})
        if deployed is not None:
            return deployed
        if rest == ["tuningJobs"] and method == "POST":
            return self._create(request)
        if rest == ["tuningJobs"] and method == "GET":
            return self._list({key: values[-1] for key, values in request.query.items()})
        if len(rest) == 2 and rest[0] == "tuningJobs":
            job_id, _, verb = rest[1].partition(":")
            name = f"{self.parent}/tuningJobs/{job_id}"
            if name not in self.jobs and (method, verb) in (("GET", ""), ("POST", "cancel")):
                return google_error(404, f"The TuningJob {name} does not exist.")
            if method == "GET" and not verb:
                self._observe(name)
                return 200, self.jobs[name], {}
            if method == "POST" and verb == "cancel":
                return self._cancel(name, request.body)
        if method == "POST" and rest[-1].endswith(":generateContent"):
            target = rest[-1].removesuffix(":generateContent")
            if len(rest) == 2 and rest[0] == "endpoints":
                endpoint = f"{self.parent}/endpoints/{target}"
                if endpoint not in self.endpoints:
                    return google_error(404, f"Endpoint `{endpoint}` not found.")
                return self._generate("tuned", endpoint, request.body)
            if len(rest) == 4 and rest[:3] == ["publishers", "google", "models"]:
                if target not in self.base_models:
                    return google_error(404, (
                        f"Publisher Model `{self.parent}/publishers/google/models/{target}` was "
                        "not found or your project does not have access to it. Please ensure you "
                        "are using a valid model version."))
                return self._generate("base", target, request.body)
        return google_error(404, f"fake_vertex does not serve {method} {request.path}")

    @staticmethod
    def _read(raw: bytes, kind: Message, root: str) -> tuple[dict | None, Reply | None]:
        try:
            value = json.loads(raw or b"{}")
        except ValueError as exc:
            return None, google_error(400, f"Invalid JSON payload received. {exc}")
        errors: list[tuple[str, str]] = []
        parsed = parse(value, kind, root, errors)
        if not errors:
            return parsed, None
        return None, google_error(400, "\n".join(message for _, message in errors), details=[{
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": field, "description": message}
                                for field, message in errors]}])

    def _dataset(self, spec: dict, field: str) -> tuple[object, Reply | None]:
        uri = spec.get(field, "")
        match = re.fullmatch(r"gs://([^/]+)/(.+)", uri)
        if not match:
            return None, google_error(400, (
                f"supervisedTuningSpec.{field} is required." if not uri else
                f"supervisedTuningSpec.{field} {uri!r} is not gs://BUCKET/OBJECT (fake_vertex "
                "does not model Vertex multimodal datasets)."))
        stored = self.storage.objects.get((match[1], match[2]))
        if stored is None:
            return None, google_error(400, f"supervisedTuningSpec.{field}: the Cloud Storage "
                                           f"object {uri} does not exist.")
        return stored, None

    def _create(self, request: Request) -> Reply | None:
        beta = request.path.startswith("/v1beta1/")
        job, refused = self._read(request.body, TUNING_JOB_V1BETA1 if beta else TUNING_JOB,
                                  "tuning_job")
        if refused:
            return refused
        base_model, spec = job.get("baseModel", ""), job.get("supervisedTuningSpec", {})
        if not base_model:
            return google_error(400, "baseModel is required.")
        refused = fake_vertex_open.check_create(job, self.location, self.storage.buckets)
        if refused:
            return refused
        is_open = fake_vertex_open.open_model(base_model) is not None
        if base_model not in self.base_models and not is_open:
            return google_error(400, f"Base model {base_model} is not supported.")
        training, refused = self._dataset(spec, "trainingDatasetUri")
        if refused:
            return refused
        if "validationDatasetUri" in spec:
            _, refused = self._dataset(spec, "validationDatasetUri")
            if refused:
                return refused
        hyper = spec.get("hyperParameters", {})
        if hyper.get("adapterSize") == "ADAPTER_SIZE_THIRTY_TWO" and not is_open:
            return google_error(400, "The adapter size is not supported for this base model.")
        labels = job.get("labels", {})
        if len(labels) > 64:
            return google_error(400, f"A tuning job can have at most 64 labels, not {len(labels)}.")
        for key, value in labels.items():
            if not LABEL_KEY.fullmatch(key) or not LABEL_VALUE.fullmatch(value):
                return google_error(400, (
                    f"Invalid label {key!r}: {value!r}. Label keys and values can be no longer "
                    "than 64 characters, can only contain lowercase letters, numeric characters, "
                    "underscores and dashes; keys must start with a lowercase letter."))
        if len(job.get("tunedModelDisplayName", "")) > 128:
            return google_error(400, "tunedModelDisplayName must be at most 128 characters.")
        stats, problem = (fake_vertex_open.data_stats if is_open else
                          supervised_tuning_data_stats)(training.data,
                                                        int(hyper.get("epochCount", 1)))
        progress = Progress(stats=stats) if stats else \
            Progress(FAILED, {"code": 3, "message": problem})
        if self._next_endings:
            progress.ends_as, progress.error = self._next_endings.popleft()
        progress.unlisted, self._listing_lag = self._listing_lag, 0
        created = self._store(job, progress)
        if self._creates_to_drop:
            self._creates_to_drop -= 1
            return None
        return 200, created, {}

    def _store(self, job: dict, progress: Progress) -> dict:
        name = f"{self.parent}/tuningJobs/{7_000_000_000_000_000_000 + next(self._ids)}"
        now = rfc3339(self.clock.now())
        self.jobs[name] = {"name": name, **job, "state": PENDING, "createTime": now,
                           "updateTime": now}
        self.progress[name] = progress
        return self.jobs[name]

    def _observe(self, name: str) -> None:
        job, progress = self.jobs[name], self.progress[name]
        if job["state"] == CANCELLING:
            if progress.cancelling_seen:
                self._finish(job, CANCELLED, CANCELED)
            progress.cancelling_seen = True
            return
        if job["state"] not in (QUEUED, PENDING, RUNNING):
            return  # finished, or paused/updating: the fake leaves those where they are
        progress.observations += 1
        if job["state"] != RUNNING:
            job["state"] = RUNNING
            job["startTime"] = job["updateTime"] = rfc3339(self.clock.now())
        if progress.forced or self.polls_until_done is not None \
                and progress.observations >= self.polls_until_done:
            self._finish(job, progress.ends_as, progress.error, progress.stats)

    def _finish(self, job: dict, state: str, error: dict | None, stats: dict | None = None) -> None:
        job["state"] = state
        job["endTime"] = job["updateTime"] = rfc3339(self.clock.now())
        if error:
            job["error"] = error
        if state == SUCCEEDED:
            if stats:
                job["tuningDataStats"] = {"supervisedTuningDataStats": stats}
            number = next(self._ids)  # models and endpoints numbered apart, as Vertex's are
            model = f"{self.parent}/models/{8_000_000_000_000_000_000 + number}@1"
            job["tunedModel"] = {"model": model}
            if fake_vertex_open.open_model(job.get("baseModel", "")):
                return  # a tuned open model is not served until it is deployed (§6)
            endpoint = f"{self.parent}/endpoints/{9_000_000_000_000_000_000 + number}"
            job["tunedModel"]["endpoint"] = endpoint
            self.endpoints[endpoint] = job["name"]

    def _list(self, query: dict[str, str]) -> Reply:
        try:
            wanted = parse_filter(query.get("filter", ""))
        except ValueError as exc:
            return google_error(400, str(exc))
        try:
            size = int(query.get("pageSize") or 0) or self.page_size
        except ValueError:
            return google_error(400, f"Invalid value at 'page_size' (TYPE_INT32), "
                                     f"\"{query['pageSize']}\"")
        if size < 0:
            return google_error(400, "pageSize must not be negative.")
        older_than = None
        if query.get("pageToken"):  # a token this fake wrote: older-than:{job number}
            try:
                token = base64.urlsafe_b64decode(query["pageToken"] + "==").decode("latin-1")
            except ValueError:  # binascii.Error
                token = ""
            if not re.fullmatch(r"older-than:\d+", token):
                return google_error(400, "Invalid pageToken.")
            older_than = int(token.removeprefix("older-than:"))

        def number(job: dict) -> int:
            return int(job["name"].rsplit("/", 1)[1])

        lagging = {name for name, progress in self.progress.items() if progress.unlisted}
        for name in lagging:
            self.progress[name].unlisted -= 1
        matching = [job for job in sorted(self.jobs.values(), key=number, reverse=True)
                    if all(job.get("labels", {}).get(k) == v for k, v in wanted)
                    and (older_than is None or number(job) < older_than)
                    and job["name"] not in lagging]
        page, body = matching[:size], {}
        for job in page:
            self._observe(job["name"])
        if page:
            body["tuningJobs"] = page
        if len(matching) > size:  # the token names the last job shown: stable as jobs are added
            body["nextPageToken"] = base64.urlsafe_b64encode(
                f"older-than:{number(page[-1])}".encode()).decode()
        return 200, body, {}

    def _cancel(self, name: str, raw: bytes) -> Reply:
        _, refused = self._read(raw, Message("CancelTuningJobRequest", {"name": OUTPUT_ONLY}), "")
        if refused:
            return refused
        job = self.jobs[name]
        if job["state"] in FINISHED:
            return google_error(400, f"Cannot cancel tuning job {name} in state {job['state']}.",
                                "FAILED_PRECONDITION")
        if job["state"] != CANCELLING:
            job["state"], job["updateTime"] = CANCELLING, rfc3339(self.clock.now())
        return 200, {}, {}

    def _generate(self, kind: str, target: str, raw: bytes) -> Reply:
        body, refused = self._read(raw, GENERATE_CONTENT_REQUEST, "")
        if refused:
            return refused
        contents = body.get("contents", [])
        if not contents:
            return google_error(400, "contents is required.")
        if any(content.get("role", "user") not in ("user", "model") for content in contents):
            return google_error(400, "Please use a valid role: user, model.")
        asked = [c for c in contents if c.get("role", "user") == "user"]
        if not asked:
            return google_error(400, "contents must hold a user turn.")
        prompt = text_of(asked[-1:])
        answer = self.answers(kind, target, prompt) if callable(self.answers) \
            else self.answers.get((kind, prompt))
        if answer is None:
            return google_error(400, f"fake_vertex has no answer scripted for "
                                     f"({kind!r}, {prompt!r}) ({target})")
        config = body.get("generationConfig", {})
        if config.get("candidateCount", 1) != 1:
            return google_error(400, "fake_vertex answers one candidate only.")
        finish, limit = "STOP", config.get("maxOutputTokens")
        if limit is not None and tokens(len(answer)) > limit:
            answer, finish = answer[:4 * limit], "MAX_TOKENS"
        prompt_tokens = tokens(len(text_of([body.get("systemInstruction", {}), *contents])))
        return 200, {"candidates": [{"content": {"role": "model", "parts": [{"text": answer}]},
                                     "finishReason": finish}],
                     "usageMetadata": {"promptTokenCount": prompt_tokens,
                                       "candidatesTokenCount": tokens(len(answer)),
                                       "totalTokenCount": prompt_tokens + tokens(len(answer))}}, {}
