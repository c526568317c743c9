"""Counting tokens as the local service trains and serves them, with the base model's own
tokenizer (``tokens.Tokenizers``) and the trainer's encoding (``tokens.encode_as_trained``), so a
count is what training will take, not an approximation.

Two methods:

* ``models/{model}:countTokens`` — the Gemini API's (``CountTokensRequest``: ``contents``, or a
  ``generateContentRequest`` whose contents and system instruction are counted; answers
  ``{"totalTokens": n}``): the prompt as the model sees it, chat template included.
* ``models/{model}:countExampleTokens`` — jobspec's own, for plans: the tuning examples of a
  create request (``{"examples": [{"textInput", "output"}, ...]}``), answered per example in
  order (``inputTokens``, ``outputTokens``: the prompt turn and the trained answer turn, which
  add up to what the trainer feeds the model) with ``exampleTokenLimit``, the longest example
  this service trains (the model's context, or one batch's token cap if lower; create refuses
  a longer one). Batched, several sets of examples in one request:
  ``{"requests": [{"examples": [...]}, ...]}``, answered ``{"responses": [...]}``, one answer
  as above per set, in order.

A count depends on the examples and on ``counting_digest``, which ``models.get`` reports for
each base model (``countingDigest``, jobspec's extension of the Model): a client that keeps
counts keys them by it, and a service with another tokenizer, layout or limit never gets a count
made with the old one.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import AbstractContextManager
from typing import Any

from . import protojson, validation
from .chat import IGNORE_INDEX, prompt_ids
from .models import BaseModel, ModelNotFound, context_length
from .tokens import encode_as_trained
from .protojson import ApiError

COUNT_TOKENS_REQUEST: protojson.Spec = {"contents": [protojson.CONTENT],
                                   "generate_content_request": protojson.GENERATE_CONTENT_REQUEST}
COUNT_EXAMPLE_TOKENS_REQUEST: protojson.Spec = {"examples": [protojson.TUNING_EXAMPLE],
                                           "requests": [{"examples": [protojson.TUNING_EXAMPLE]}]}
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
        inner = request["generate_content_request"]
        messages = validation.messages(inner)
    elif request.get("contents"):
        messages = validation.messages(request)
    else:
        raise ApiError("INVALID_ARGUMENT", "contents or generate_content_request is required.")
    _, tokenizer_in_use = _tokenizer(service, model)
    with tokenizer_in_use as tokenizer:
        return {"totalTokens": len(prompt_ids(tokenizer, messages))}


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
        if "examples" in request:
            raise ApiError("INVALID_ARGUMENT", "Give examples (one set) or requests (several), "
                           "not both.")
        if not request["requests"]:
            raise ApiError("INVALID_ARGUMENT", "requests is required: at least one set of "
                           "examples.")
        sets = [entry.get("examples") or [] for entry in request["requests"]]
        where = [f"requests[{n}].examples" for n in range(len(sets))]
    else:
        sets, where = [request.get("examples") or []], ["examples"]
    for items, name in zip(sets, where):
        if not items:
            raise ApiError("INVALID_ARGUMENT", f"{name} is required: at least one example.")
    local, tokenizer_in_use = _tokenizer(service, model)
    limit = example_token_limit(service, local)
    answers = []
    with tokenizer_in_use as tokenizer:
        for items in sets:
            inputs, outputs = [], []
            for item in items:
                ids, labels = encode_as_trained(tokenizer, item.get("text_input", ""),
                                                item.get("output", ""))
                trained = sum(label != IGNORE_INDEX for label in labels)
                inputs.append(len(ids) - trained)
                outputs.append(trained)
            answers.append({"inputTokens": inputs, "outputTokens": outputs,
                            "totalTokens": sum(inputs) + sum(outputs),
                            "exampleTokenLimit": limit})
    return {"responses": answers} if "requests" in request else answers[0]
