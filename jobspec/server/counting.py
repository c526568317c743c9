"""Counting tokens as the local service trains and serves them, with the base model's own
tokenizer (``tokens.Tokenizers``) and the trainer's encoding (``tokens.encode_as_trained``), so a
count is what training will take, not an approximation.

Two methods:

* ``models/{model}:countTokens`` — the Gemini API's (``CountTokensRequest``: ``contents``, or a
  ``generateContentRequest`` whose contents and system instruction are counted; answers
  ``{"totalTokens": n}``): the prompt as the model sees it, chat template included.
* ``models/{model}:countExampleTokens`` — jobspec's own, for plans: the tuning examples of a
  create request (``{"examples": [{"textInput", "output"}, ...]}``; an example may also be a
  conversation in an upload line's contents form, ``{"systemInstruction"?, "contents": [...]}``
  with ``"weight": 0`` on a model turn that is context, jobspec/wire.py), answered per example
  in order (``inputTokens``, ``outputTokens``: the tokens that are context and the trained
  tokens, the model turns and their end-of-turn tokens, which add up to what the trainer feeds
  the model) with ``exampleTokenLimit``, the longest example
  this service trains (the model's context, or one batch's token cap if lower; create refuses
  a longer one). Batched, several sets of examples in one request:
  ``{"requests": [{"examples": [...]}, ...]}``, answered ``{"responses": [...]}``, one answer
  as above per set, in order. A set may be an upload instead (``{"upload": "uploads/SHA"}``,
  jobspec/wire.py), read a line at a time; its count is kept beside it (``upload_counts``), so
  the create that follows a plan does not tokenize its examples again.

A count depends on the examples and on ``counting_digest``, which ``models.get`` reports for
each base model (``countingDigest``, jobspec's extension of the Model): a client that keeps
counts keys them by it, and a service with another tokenizer, layout or limit never gets a count
made with the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from array import array
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

from .. import wire
from ..conversation import Conversation, ConversationProblem
from . import protojson, validation
from .chat import IGNORE_INDEX, conversation_prompt_ids
from .models import BaseModel, ModelNotFound, context_length
from .tokens import encode_as_trained
from .uploads import sha256_of_name, stream_examples
from .protojson import ApiError

COUNT_TOKENS_REQUEST: protojson.Spec = {"contents": [protojson.CONTENT],
                                   "generate_content_request": protojson.GENERATE_CONTENT_REQUEST}
# A set of examples: inline (TuningExamples or contents lines, read by ``_example``), or an
# upload the service holds (``{"upload": "uploads/SHA"}``).
_EXAMPLE_SET: protojson.Spec = {"examples": ["any"], "upload": "string"}
COUNT_EXAMPLE_TOKENS_REQUEST: protojson.Spec = {**_EXAMPLE_SET, "requests": [_EXAMPLE_SET]}
# What an answer of countExampleTokens means: raise it when counting changes in a way that the
# digest's other parts (tokenizer, layout, limit) would not show.
COUNTING_SCHEME = 1


def _tokenizer(service: Any, model: str) -> tuple[Any, AbstractContextManager[Any]]:
    """(local model, the tokenizer in use by this caller alone: a fast tokenizer must not be
    called from two request threads at once)."""
    try:
        local = service.registry.resolve(f"models/{model}")
    except ModelNotFound:
        raise ApiError("NOT_FOUND", f"models/{model} is not found for API version v1beta, or is "
                       "not supported for countTokens.") from None
    return local, service.tokenizers.using(local.id)


def count_tokens(service: Any, model: str, body: Any) -> dict[str, Any]:
    request = protojson.parse(body, COUNT_TOKENS_REQUEST, "count_tokens_request")
    if "generate_content_request" in request:
        conversation = validation.conversation(request["generate_content_request"])
    elif request.get("contents"):
        conversation = validation.conversation(request)
    else:
        raise ApiError("INVALID_ARGUMENT", "contents or generate_content_request is required.")
    _, tokenizer_in_use = _tokenizer(service, model)
    with tokenizer_in_use as tokenizer:
        return {"totalTokens": len(conversation_prompt_ids(tokenizer, conversation))}


def example_token_limit(service: Any, local: BaseModel) -> int:
    """The longest example the service trains on ``local``: its context, or one batch's token
    cap if lower."""
    return min(context_length(local), service.max_batch_tokens)


def counting_digest(service: Any, local: BaseModel) -> str:
    """SHA-256 of everything a countExampleTokens answer depends on besides the examples."""
    described = {"scheme": COUNTING_SCHEME, "encoding": service.tokenizers.digest(local.id),
                 "example_token_limit": example_token_limit(service, local)}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def count_example_tokens(service: Any, model: str, body: Any) -> dict[str, Any]:
    request = protojson.parse(body, COUNT_EXAMPLE_TOKENS_REQUEST, "count_example_tokens_request")
    if "requests" in request:
        for one in ("examples", "upload"):
            if one in request:
                raise ApiError("INVALID_ARGUMENT", f"Give {one} (one set) or requests "
                               "(several), not both.")
        if not request["requests"]:
            raise ApiError("INVALID_ARGUMENT", "requests is required: at least one set of "
                           "examples.")
        sets = request["requests"]
        where = [f"requests[{n}]." for n in range(len(sets))]
    else:
        sets, where = [request], [""]
    for entry, prefix in zip(sets, where):
        if entry.get("examples") and "upload" in entry:
            raise ApiError("INVALID_ARGUMENT", f"{prefix}examples and {prefix}upload: give one.")
        if not entry.get("examples") and "upload" not in entry:
            raise ApiError("INVALID_ARGUMENT", f"{prefix}examples is required: at least one "
                           "example.")
    local, _ = _tokenizer(service, model)
    limit = example_token_limit(service, local)
    answers = []
    for entry, prefix in zip(sets, where):
        if "upload" in entry:
            sha256 = sha256_of_name(entry["upload"], f"{prefix}upload")
            inputs, outputs = upload_counts(service, local, sha256, f"{prefix}upload")
        else:
            field = f"count_example_tokens_request.{prefix}examples"
            examples = [_example(item, f"{field}[{index}]")
                        for index, item in enumerate(entry["examples"])]
            with service.tokenizers.using(local.id) as tokenizer:
                inputs, outputs = _counts(tokenizer, examples)
        answers.append({"inputTokens": list(inputs), "outputTokens": list(outputs),
                        "totalTokens": sum(inputs) + sum(outputs), "exampleTokenLimit": limit})
    return {"responses": answers} if "requests" in request else answers[0]


def _example(item: Any, where: str) -> Conversation:
    """One example of a set: a TuningExample (counted as the Gemini API sends it, blank texts
    too) or a conversation in an upload line's contents form."""
    if isinstance(item, dict) and "contents" in item:
        try:
            return wire.read_upload_line(item)
        except ConversationProblem as problem:
            field = f"{where}.{problem.field}" if problem.field else where
            raise ApiError("INVALID_ARGUMENT", f"{field}: {problem.message}.") from None
    return validation.one_turn(protojson.parse(item, protojson.TUNING_EXAMPLE, where))


def _counts(tokenizer: Any, examples: Iterable[Conversation]) -> tuple[array[int], array[int]]:
    """Each example's context tokens and trained tokens, as the trainer encodes it."""
    inputs, outputs = array("I"), array("I")
    for conversation in examples:
        ids, labels = encode_as_trained(tokenizer, conversation)
        trained = sum(label != IGNORE_INDEX for label in labels)
        inputs.append(len(ids) - trained)
        outputs.append(trained)
    return inputs, outputs


def upload_counts(service: Any, local: BaseModel, sha256: str,
                  where: str) -> tuple[array[int], array[int]]:
    """The tokens of each example of an upload, counted once per upload and counting digest
    (an upload never changes) and kept beside it: a plan counts it, and the create that
    follows measures its examples from that count instead of tokenizing them again."""
    path = service.uploads.require(sha256, where)
    kept = path.with_name(f"{sha256}.{counting_digest(service, local)[:16]}.tokens")
    both = array("I")
    try:
        with open(kept, "rb") as handle:
            both.frombytes(handle.read())
    except FileNotFoundError:
        with service.tokenizers.using(local.id) as tokenizer:
            inputs, outputs = _counts(tokenizer, stream_examples(path, where))
        both = array("I", bytes(len(inputs) * 2 * inputs.itemsize))
        both[0::2], both[1::2] = inputs, outputs
        partial = kept.with_name(f".partial-{kept.name}-{secrets.token_hex(4)}")
        with open(partial, "xb") as handle:
            handle.write(both.tobytes())
        os.replace(partial, kept)
    return both[0::2], both[1::2]


def first_too_long(service: Any, local: BaseModel, sha256: str, where: str,
                   limit: int) -> tuple[int, int] | None:
    """(index, tokens) of the upload's first example over ``limit`` tokens, from its count."""
    inputs, outputs = upload_counts(service, local, sha256, where)
    return next(((index, size) for index, size in enumerate(map(sum, zip(inputs, outputs)))
                 if size > limit), None)
