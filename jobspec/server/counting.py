"""Counting tokens as the local service trains and serves them, with the base model's own
tokenizer (``tokens.Tokenizers``) and the trainer's encoding (``chat.encode_example``), so a
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
  a longer one).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from . import validation, wire
from .chat import IGNORE_INDEX, encode_example, prompt_ids
from .models import ModelNotFound, context_length
from .wire import ApiError

COUNT_TOKENS_REQUEST: wire.Spec = {"contents": [wire.CONTENT],
                                   "generate_content_request": wire.GENERATE_CONTENT_REQUEST}
COUNT_EXAMPLE_TOKENS_REQUEST: wire.Spec = {"examples": [wire.TUNING_EXAMPLE]}


def _tokenizer(service: Any, model: str) -> tuple[Any, Any, Any]:
    """(local model, tokenizer, the lock that one caller at a time holds while using it)."""
    try:
        local = service.registry.resolve(f"models/{model}")
    except ModelNotFound:
        raise ApiError("NOT_FOUND", f"models/{model} is not found for API version v1beta, or is "
                       "not supported for countTokens.") from None
    tokenizers = service.tokenizers
    tokenizer = tokenizers.get(local.id)
    # A fast tokenizer must not be used by two threads at once (tokens.Tokenizers keeps a lock
    # per model for that); without one, this caller is the only user.
    lock = getattr(tokenizers, "_in_use", {}).get(local.id) or nullcontext()
    return local, tokenizer, lock


def count_tokens(service: Any, model: str, body: Any) -> dict[str, Any]:
    request = wire.parse(body, COUNT_TOKENS_REQUEST, "count_tokens_request")
    if "generate_content_request" in request:
        inner = request["generate_content_request"]
        messages = validation.messages(inner)
    elif request.get("contents"):
        messages = validation.messages(request)
    else:
        raise ApiError("INVALID_ARGUMENT", "contents or generate_content_request is required.")
    _, tokenizer, lock = _tokenizer(service, model)
    with lock:
        return {"totalTokens": len(prompt_ids(tokenizer, messages))}


def count_example_tokens(service: Any, model: str, body: Any) -> dict[str, Any]:
    request = wire.parse(body, COUNT_EXAMPLE_TOKENS_REQUEST, "count_example_tokens_request")
    items = request.get("examples") or []
    if not items:
        raise ApiError("INVALID_ARGUMENT", "examples is required: at least one example.")
    local, tokenizer, lock = _tokenizer(service, model)
    inputs, outputs = [], []
    with lock:
        for item in items:
            ids, labels = encode_example(tokenizer, item.get("text_input", ""),
                                         item.get("output", ""))
            trained = sum(label != IGNORE_INDEX for label in labels)
            inputs.append(len(ids) - trained)
            outputs.append(trained)
    limit = min(context_length(local), service.max_batch_tokens)
    return {"inputTokens": inputs, "outputTokens": outputs,
            "totalTokens": sum(inputs) + sum(outputs), "exampleTokenLimit": limit}
