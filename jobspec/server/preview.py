"""``renderExample``, the local service's extension for ``jobspec data preview``: one training
example as this service trains on it, the base model's chat template rendered over the
conversation with the trained pieces marked, and its tokens (jobspec/wire.py states the shape).

The pieces are ``chat.render``'s segments, tokenized as the trainer tokenizes them, so the
preview shows exactly what the loss covers and the count is the one create measures against
the model's context.
"""

from __future__ import annotations

from typing import Any

from .. import wire
from ..conversation import ConversationProblem
from .adapters import find_adapter
from .chat import IGNORE_INDEX, encode_segments, render
from .models import ModelNotFound
from .protojson import ApiError
from .recipe import RECIPE, read_layout
from .validation import checked_examples

EXAMPLE_WHERE = wire.RENDER_EXAMPLE_FIELD


def render_example(service: Any, body: Any, *, base: str | None = None,
                   tuned: str | None = None) -> dict[str, Any]:
    """The answer of ``{model}:renderExample`` for the base model ``base`` (laid out as the
    service trains now) or the tuned model ``tuned`` (laid out as it was trained)."""
    if not isinstance(body, dict) or wire.RENDER_EXAMPLE_FIELD not in body:
        raise ApiError("INVALID_ARGUMENT", f"{EXAMPLE_WHERE} is required: one example, an "
                       'upload line ({"textInput", "output"} or {"systemInstruction"?, '
                       '"contents"}).')
    unknown = sorted(set(body) - {wire.RENDER_EXAMPLE_FIELD})
    if unknown:
        raise ApiError("INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name '
                       f'"{unknown[0]}": a renderExample request has only '
                       f"{wire.RENDER_EXAMPLE_FIELD}.")
    try:
        conversation = wire.read_upload_line(body[wire.RENDER_EXAMPLE_FIELD])
    except ConversationProblem as problem:
        field = f"{EXAMPLE_WHERE}.{problem.field}" if problem.field else EXAMPLE_WHERE
        raise ApiError("INVALID_ARGUMENT", f"{field}: {problem.message}.") from None
    [conversation] = checked_examples([conversation], EXAMPLE_WHERE)
    local, layout = _model_and_layout(service, base, tuned)
    with service.tokenizers.using(local) as tokenizer:
        segments = render(tokenizer, conversation, layout.get("system_prompt"),
                          layout.get("chat_template", True))
        answered, total, trained = [], 0, 0
        for segment in segments:
            ids, labels = encode_segments(tokenizer, [segment])
            answered.append({wire.SEGMENT_TEXT_FIELD: segment.text,
                             wire.SEGMENT_TRAINED_FIELD: segment.trained,
                             wire.TOKEN_COUNT_FIELD: len(ids)})
            total += len(ids)
            trained += sum(label != IGNORE_INDEX for label in labels)
    return {wire.RENDER_SEGMENTS_FIELD: answered, wire.TOKEN_COUNT_FIELD: total,
            wire.TRAINED_TOKEN_COUNT_FIELD: trained}


def _model_and_layout(service: Any, base: str | None,
                      tuned: str | None) -> tuple[str, dict[str, Any]]:
    """(local model id, prompt layout) of the model the example is rendered for."""
    if tuned is not None:
        record = service.store.get(tuned, with_snapshots=False)
        if record is None:
            raise ApiError("NOT_FOUND", f"Tuned model tunedModels/{tuned} does not exist.")
        folder = find_adapter(service.state_dir, tuned, record.operation_id)
        if folder is None:  # not trained yet: it is trained as the service trains now
            return record.local_model, _recipe_layout()
        # An adapter from before layouts were recorded was trained on the model's template.
        return record.local_model, read_layout(folder) or {}
    try:
        local = service.registry.resolve(f"models/{base}").id
    except ModelNotFound:
        raise ApiError("NOT_FOUND", f"models/{base} is not found for API version v1beta, or is "
                       f"not supported for {wire.RENDER_EXAMPLE_METHOD}.") from None
    return local, _recipe_layout()


def _recipe_layout() -> dict[str, Any]:
    return {"system_prompt": RECIPE.system_prompt, "chat_template": RECIPE.chat_template}
