"""Every response the local service gives is one Google publishes, unless the caller asked for
more: each is checked against the discovery document, walked here from its ``resources`` (which
method a request reached, and its response type) through ``schemas`` and ``$ref`` to every
field, with a field the document lacks refused, as protobuf's strict JSON parser refuses it.

The document is the one the service ships (jobspec/server/reference/, equal to
shared/reference/generativelanguage.v1beta.json: checked below) with its supplement of what the
2024 revision lacks (tuning operations, their metadata, the error envelope). One training run
with validation data and early stopping makes every extension field appear; each response is
fetched twice, as a strict client and as jobspec (``X-Jobspec-Extensions: 1``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from jobspec.server import published
from jobspec.server.app import METHODS
from jobspec.wire import EXTENSIONS_HEADER, EXTENSIONS_ON, TYPE_PREFIX
from tests.conftest import NUMBER_EXAMPLES, ROOT

Path_ = tuple[Any, ...]
DOCUMENT = published.document()
# What jobspec adds to Google's messages today: each must reach a caller that asks, and no one else.
EXTENSION_FIELDS = {
    ("tuningTask", "validationSnapshots"), ("tuningTask", "keptEpoch"),
    ("tuningTask", "stopReason"), ("tuningTask", "device"), ("tuningTask", "earlyStopping"),
    ("metadata", "validationSnapshots"), ("modelVersion",)}
DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


# -- the document, walked ------------------------------------------------------------------------

def response_type(http_method: str, path: str) -> str | None:
    """The published response type of the method ``http_method path`` (after /v1beta/ or /v1/)
    reaches, by the document's own path templates; None for a method it does not publish."""
    for method in published.methods(DOCUMENT["resources"]):
        template = method["flatPath"].split("/", 1)[1]
        pattern = re.sub(r"\\\{[A-Za-z]+\\\}", "[^/:]+", re.escape(template))
        if method["httpMethod"] == http_method and re.fullmatch(pattern, path):
            return method.get("response", {}).get("$ref", "Empty")
    return None


def unpublished(value: Any, prop: dict[str, Any], where: Path_ = ()) -> Iterator[tuple[Path_, str]]:
    """(path, why) for each part of ``value`` that the published ``prop`` does not allow."""
    if "$ref" in prop:
        name = prop["$ref"]
        if not isinstance(value, dict):
            yield where, f"{name} is an object, not {value!r}"
            return
        properties = DOCUMENT["schemas"][name].get("properties", {})
        for key, item in value.items():
            if key in properties:
                yield from unpublished(item, properties[key], (*where, key))
            else:
                yield (*where, key), f"{name} has no field {key!r}"
        return
    kind = prop.get("type")
    if kind == "array":
        if not isinstance(value, list):
            yield where, f"not a list: {value!r}"
            return
        for index, item in enumerate(value):
            yield from unpublished(item, prop["items"], (*where, index))
    elif kind == "object":
        yield from _object(value, prop, where)
    elif not _scalar_ok(value, prop):
        yield where, f"{value!r} is not a {kind} ({prop.get('format')}, {prop.get('enum')})"


def _object(value: Any, prop: dict[str, Any], where: Path_) -> Iterator[tuple[Path_, str]]:
    extra = prop.get("additionalProperties", {})
    if not isinstance(value, dict):
        yield where, f"not an object: {value!r}"
    elif "@type" in extra.get("description", ""):  # a google.protobuf.Any
        url = value.get("@type", "")
        name = url.removeprefix(TYPE_PREFIX)
        if not url.startswith(TYPE_PREFIX) or name not in DOCUMENT["schemas"]:
            yield where, f"an Any of a type the document does not describe: {url!r}"
            return
        yield from unpublished({k: v for k, v in value.items() if k != "@type"}, {"$ref": name},
                               where)
    elif extra.get("type") != "any":  # a map of messages
        for key, item in value.items():
            yield from unpublished(item, extra, (*where, key))


def _scalar_ok(value: Any, prop: dict[str, Any]) -> bool:
    kind, form = prop.get("type"), prop.get("format")
    if kind == "string":
        if not isinstance(value, str) or value not in prop.get("enum", [value]):
            return False
        return bool(DATETIME.fullmatch(value)) if form == "google-datetime" else \
            value.lstrip("-").isdigit() if form == "int64" else True
    if kind == "integer":
        return type(value) is int and -(2**31) <= value < 2**31
    if kind == "number":
        return type(value) in (int, float)
    if kind == "boolean":
        return type(value) is bool
    return kind == "any"


def without(value: Any, paths: set[Path_]) -> Any:
    """``value`` with the parts at ``paths`` removed."""
    if isinstance(value, dict):
        return {k: without(v, {p[1:] for p in paths if p[0] == k}) for k, v in value.items()
                if (k,) not in paths}
    if isinstance(value, list):
        return [without(v, {p[1:] for p in paths if p[0] == i}) for i, v in enumerate(value)
                if (i,) not in paths]
    return value


# -- the document itself -------------------------------------------------------------------------

def test_the_shipped_document_is_the_reference():
    shipped = published.DOCUMENT.read_bytes()
    for folder in (ROOT, *ROOT.parents):
        reference = folder / "shared" / "reference" / "generativelanguage.v1beta.json"
        if reference.is_file():
            assert shipped == reference.read_bytes()
            return
    pytest.skip("shared/reference is not beside this checkout")


def test_every_published_method_of_the_service_is_the_document_s():
    """Each route names a method of the document whose path and HTTP method it serves (so the
    response type it is cut to is that method's), and every other route is jobspec's own."""
    for method in METHODS:
        path = method.pattern.replace(r"([a-z0-9][a-z0-9.-]*)", "x1")
        found = response_type(method.http_method, path)
        if method.published is None:
            assert found is None, method
        else:
            assert found == published.published().response_type(method.published), method


def test_a_supplement_never_replaces_the_document(tmp_path, monkeypatch):
    clash = tmp_path / "supplement.json"
    clash.write_text('{"resources": {}, "schemas": {"TunedModel": {"properties": {}}}}')
    monkeypatch.setattr(published, "SUPPLEMENT", clash)
    published.document.cache_clear()
    try:
        with pytest.raises(ValueError, match="schemas.TunedModel would replace the discovery "
                                             "document's own"):
            published.document()
    finally:
        monkeypatch.undo()
        published.document.cache_clear()


# -- every response of a real service ------------------------------------------------------------

class Recorder:
    """Two clients of the service, a strict one and jobspec's: ``seen`` keeps every response
    either received, ``pairs`` the same request's two answers."""

    def __init__(self, url: str) -> None:
        self.seen: list[tuple[bool, str, str, int, Any]] = []
        self.pairs: list[tuple[str, str, int, Any, Any]] = []
        self.clients = {asks: httpx.Client(
            base_url=url, timeout=60, event_hooks={"response": [self._keeper(asks)]},
            headers={EXTENSIONS_HEADER: EXTENSIONS_ON} if asks else {}) for asks in (False, True)}

    def _keeper(self, asks: bool):
        def keep(response: httpx.Response) -> None:
            response.read()
            path = response.request.url.path.split("/", 2)[2]  # after /v1beta/ or /v1/
            self.seen.append((asks, response.request.method, path, response.status_code,
                              response.json()))
        return keep

    def both(self, method: str, url: str, **kwargs) -> Any:
        """The strict client's answer; jobspec's to the same request is kept beside it."""
        plain, asked = (self.clients[asks].request(method, url, **kwargs) for asks in (False, True))
        path = url.split("/", 2)[2]
        self.pairs.append((method, path, plain.status_code, plain.json(), asked.json()))
        return plain.json()


def wait_done(recorder: Recorder, operation: str) -> None:
    deadline = time.monotonic() + 240
    while not all(recorder.both("GET", f"/{version}/{operation}").get("done")
                  for version in ("v1", "v1beta")):
        assert time.monotonic() < deadline, operation
        time.sleep(0.2)


def examples(pairs) -> dict:
    return {"examples": {"examples": [{"textInput": i, "output": o} for i, o in pairs]}}


@pytest.mark.timeout(280)
def test_no_response_carries_a_field_the_document_lacks_unless_asked(service):
    recorder = Recorder(service.url)
    strict, jobspec = recorder.clients[False], recorder.clients[True]
    # Validation answers that contradict training's: the validation loss rises, and training
    # stops early, so keptEpoch and stopReason appear too.
    body = {"displayName": "shapes", "baseModel": "models/gemini-1.5-flash-001-tuning",
            "tuningTask": {"hyperparameters": {"epochCount": 40, "batchSize": 5,
                                               "learningRate": 0.05},
                           "trainingData": examples(NUMBER_EXAMPLES[:5]),
                           "validationData": examples([(i, "no") for i, _ in NUMBER_EXAMPLES[:5]]),
                           "earlyStopping": {"patience": 1}}}
    operation = strict.post("/v1beta/tunedModels", params={"tunedModelId": "shapes"},
                            json=body).json()["name"]
    queued = jobspec.post("/v1beta/tunedModels", params={"tunedModelId": "shapes-cancelled"},
                          json={**body, "displayName": "cancelled"}).json()["name"]
    strict.post(f"/v1/{queued}:cancel")  # queued behind the first: FAILED at once, with an error
    wait_done(recorder, operation)
    wait_done(recorder, queued)
    for url in ("/v1beta/tunedModels/shapes", "/v1beta/tunedModels/shapes/operations",
                "/v1beta/tunedModels/shapes-cancelled/operations", "/v1beta/models",
                "/v1beta/models/gemini-1.5-flash-001-tuning", "/v1beta/tunedModels/nothing",
                "/v1beta/tunedModels/shapes/operations/nothing", "/v2/models"):
        recorder.both("GET", url)
    recorder.both("GET", "/v1beta/tunedModels", params={"pageSize": 1})  # with nextPageToken
    prompt = {"contents": [{"parts": [{"text": "7"}]}], "generationConfig": {"maxOutputTokens": 2}}
    for model in ("tunedModels/shapes", "models/tiny-smollm2"):
        recorder.both("POST", f"/v1beta/{model}:generateContent", json=prompt)
    recorder.both("POST", "/v1beta/models/tiny-smollm2:countTokens", json=prompt)
    recorder.both("POST", "/v1beta/models/tiny-smollm2:generateContent", json={"contents": []})
    patched = strict.patch("/v1beta/tunedModels/shapes", params={"updateMask": "description"},
                           json={"description": "patched"}).json()
    assert patched["description"] == "patched"
    recorder.both("POST", "/v1beta/models/tiny-smollm2:countExampleTokens",
                  json={"examples": [{"textInput": "1", "output": "2"}]})
    recorder.both("PUT", "/v1beta/tunedModels")
    recorder.both("POST", "/v1beta/tunedModels", content=b"{,",
                  headers={"Content-Type": "application/json"})
    assert strict.get("/v1beta/models", headers={EXTENSIONS_HEADER: "yes"}).json()["error"] == {
        "code": 400, "status": "INVALID_ARGUMENT", "message": "X-Jobspec-Extensions: 'yes' is not "
        "understood; send 1 for jobspec's extension fields, or leave it out for the Gemini API's "
        "published fields only."}
    assert strict.delete("/v1beta/tunedModels/shapes-cancelled").json() == {}

    statuses, own = set(), []
    for asks, http_method, path, status, answer in recorder.seen:
        statuses.add(status)
        type_name = published.ERROR_TYPE if status >= 400 else response_type(http_method, path)
        if type_name is None:
            own.append(path)
            continue
        problems = list(unpublished(answer, {"$ref": type_name}))
        # Without the header: nothing the document lacks. With it: only added fields, never a
        # published field of another type or value.
        assert problems == [] if not asks else all("has no field" in why for _, why in problems), \
            (http_method, path, problems)
    assert own == ["models/tiny-smollm2:countExampleTokens"] * 2  # jobspec's own, sent whole
    assert {200, 400, 404, 501} <= statuses

    # With the header the same responses carry every extension field, and they are all that
    # the strict caller was spared: nothing else differs.
    extended = set()
    for http_method, path, status, plain, asked in recorder.pairs:
        type_name = published.ERROR_TYPE if status >= 400 else response_type(http_method, path)
        paths = {where for where, _ in unpublished(asked, {"$ref": type_name})} \
            if type_name else set()
        extended |= {tuple(key for key in where if isinstance(key, str))[-2:] for where in paths}
        if "/operations/" not in path or asked.get("done"):  # a running job changes meanwhile
            assert without(asked, paths) == plain, path
    assert EXTENSION_FIELDS <= extended, extended
