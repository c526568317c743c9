"""Counting tuning examples in tokens on jobspec's local service (its ``models.countExampleTokens``
extension, described in jobspec/server/counting.py), as few requests as its body limit allows.

An example goes as its upload line has it (``uploads.wire_example``): a one-turn example as
the Gemini API's TuningExample, as it always went; a conversation as its contents line, which
the service reads as it reads an upload's, and counts as context tokens (``inputTokens``) and
trained tokens (``outputTokens``: the model turns the loss covers).

A plan counts every distinct set of examples of one base model in one batched request (several
when they would not fit in one body: a set too large for one is cut across entries, and its
answers joined again); where the service takes uploads (backends/uploads.py), each set is
uploaded, once, and the one request names the uploads. A service that does not report a ``countingDigest`` for the base model
predates the batched form: each set is then counted on its own, as that service understands.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from .. import wire
from ..client import ApiClient
from ..data import Example
from ..errors import PermanentBackendError
from .base import TokenCount
from .uploads import wire_example

DIGEST_FIELD = "countingDigest"  # the local service's extension of the Model
# The most bytes one batched request carries: the service's limit on a body.
BATCH_BYTES = wire.LOCAL_MAX_BODY_BYTES
_BATCH_ENVELOPE = len('{"requests":[]}')
_ENTRY_ENVELOPE = len('{"examples":[]},')

Entry = tuple[int, list[dict[str, Any]]]  # (which set, its examples or a run of them)


def counting_digest(client: ApiClient, base_model: str) -> str | None:
    """What the service says its counts for ``base_model`` depend on; None when it does not
    say (a service from before it did, or a base model it does not have)."""
    try:
        model = client.request("GET", base_model)
    except PermanentBackendError as exc:
        if exc.http_status != 404:
            raise
        return None
    digest = model.get(DIGEST_FIELD)
    return digest if isinstance(digest, str) and digest else None


def _size(value: Any) -> int:
    """Bytes of ``value`` in the body as httpx sends JSON (compact, UTF-8, unescaped)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def batches(example_sets: Sequence[Sequence[Example]], max_bytes: int) -> Iterator[list[Entry]]:
    """The sets as bodies of batched requests, each of at most ``max_bytes`` (an example that
    alone passes it goes alone, for the service to refuse), the sets' examples in order."""
    body: list[Entry] = []
    size = _BATCH_ENVELOPE
    for index, examples in enumerate(example_sets):
        entry: list[dict[str, Any]] | None = None
        for example in examples:
            item = wire_example(example)
            item_size = _size(item) + 1  # and its comma
            room = max_bytes - size - (0 if entry is not None else _ENTRY_ENVELOPE)
            if item_size > room and body:
                yield body
                body, size, entry = [], _BATCH_ENVELOPE, None
            if entry is None:
                entry = []
                body.append((index, entry))
                size += _ENTRY_ENVELOPE
            entry.append(item)
            size += item_size
    if body:
        yield body


def _count(answer: dict[str, Any], method: str) -> TokenCount:
    return TokenCount(tuple(answer.get("inputTokens", ())), tuple(answer.get("outputTokens", ())),
                      exact=True, method=method, limit=answer.get("exampleTokenLimit"))


def count_example_sets(client: ApiClient, base_model: str,
                       example_sets: Sequence[Sequence[Example]],
                       method: str, batched: bool) -> list[TokenCount]:
    """Each set's examples in tokens, in order (``method`` says how, for people)."""
    path = f"{base_model}:countExampleTokens"
    if not batched:
        return [_count(client.request("POST", path, body={
            "examples": [wire_example(e) for e in examples]}), method)
            for examples in example_sets]
    inputs: list[list[int]] = [[] for _ in example_sets]
    outputs: list[list[int]] = [[] for _ in example_sets]
    limit = None
    for body in batches(example_sets, BATCH_BYTES):
        answer = client.request("POST", path, body={
            "requests": [{"examples": items} for _, items in body]})
        responses = answer.get("responses", [])
        if len(responses) != len(body):
            raise PermanentBackendError(f"{path}: {len(body)} sets of examples asked, "
                                        f"{len(responses)} answered")
        for (index, _), response in zip(body, responses):
            inputs[index] += response.get("inputTokens", [])
            outputs[index] += response.get("outputTokens", [])
            limit = response.get("exampleTokenLimit", limit)
    return [TokenCount(tuple(i), tuple(o), exact=True, method=method, limit=limit)
            for i, o in zip(inputs, outputs)]


def count_uploads(client: ApiClient, base_model: str, names: list[str], method: str,
                  timeout: float) -> list[TokenCount]:
    """Each upload's examples in tokens, in order (``names``: ``uploads/SHA``), in one request
    that waits ``timeout`` for the service to count them."""
    path = f"{base_model}:countExampleTokens"
    answer = client.request("POST", path, body={"requests": [{"upload": n} for n in names]},
                            timeout=timeout)
    responses = answer.get("responses", [])
    if len(responses) != len(names):
        raise PermanentBackendError(f"{path}: {len(names)} uploads asked, {len(responses)} "
                                    "answered")
    return [_count(response, method) for response in responses]
