"""One training example as a backend receives it, for ``jobspec data preview``: what a reviewer
needs to see that a conversation will be trained on as meant.

The Gemini API and Vertex AI receive JSON whose form is known without asking them (a
TuningExample, a line of a training file): their previews are made here, offline, with tokens
estimated. jobspec's local service trains on the example through the base model's chat template;
only the service knows how that renders and which tokens the loss covers, so it is asked
(``models.renderExample``, its extension in wire.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..client import ApiClient
from ..data import Example
from ..spec import Job
from .base import Backend, TokenCount


@dataclass(frozen=True)
class Segment:
    """A piece of the rendered example; ``trained``: the loss covers its tokens."""

    text: str
    trained: bool
    tokens: int


@dataclass(frozen=True)
class ExamplePreview:
    received: str  # what the service receives, for people: "a line of its training file"
    body: dict[str, Any] | None  # the JSON it receives, where that is how it is shown
    segments: tuple[Segment, ...]  # the chat template rendered, where the service renders it
    tokens: int
    trained_tokens: int | None  # None where not known before training
    exact: bool  # counted with the model's tokenizer, not estimated
    method: str  # how the tokens were had, for people


# A backend's preview: the job, the example, and a way to open the backend (for a service that
# must be asked; the offline previews never call it).
Preview = Callable[[Job, Example, Callable[[], Backend]], ExamplePreview]


def offline(received: str, body_of: Callable[[Job, Example], dict[str, Any]],
            why: str) -> Preview:
    """A preview of the JSON ``body_of`` gives, its tokens estimated from characters."""
    def preview(job: Job, example: Example, opened: Callable[[], Backend]) -> ExamplePreview:
        count = TokenCount.estimated([example], why=why)
        return ExamplePreview(received, body_of(job, example), (), count.total,
                              count.output_tokens, exact=False, method=count.method)
    return preview


def rendered(client: ApiClient, model: str, example: Example) -> ExamplePreview:
    """The local service's rendering of ``example`` for ``model`` (``models/...``)."""
    line = json.loads(wire.conversation_line(example.conversation))
    answer = client.request("POST", f"{model}:{wire.RENDER_EXAMPLE_METHOD}",
                            body={wire.RENDER_EXAMPLE_FIELD: line})
    segments = tuple(Segment(s.get(wire.SEGMENT_TEXT_FIELD, ""),
                             bool(s.get(wire.SEGMENT_TRAINED_FIELD)),
                             int(s.get(wire.TOKEN_COUNT_FIELD, 0)))
                     for s in answer.get(wire.RENDER_SEGMENTS_FIELD, []))
    return ExamplePreview(
        "the base model's chat template, as its trainer renders it", line, segments,
        int(answer.get(wire.TOKEN_COUNT_FIELD, 0)),
        int(answer.get(wire.TRAINED_TOKEN_COUNT_FIELD, 0)), exact=True,
        method=f"counted by the local service with {model}'s tokenizer")
