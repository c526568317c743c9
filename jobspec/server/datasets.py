"""A Dataset of a create (or of countExampleTokens): its examples inline, as the Gemini API
sends them, or an upload that the service keeps (``{"upload": "uploads/{sha256}"}``, the local
wire's extension; uploads.py), read a line at a time and never held whole."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..conversation import Conversation
from . import validation
from .protojson import ApiError
from .store import Store
from .uploads import StoredExamples, Uploads, sha256_of_name, stream_examples

Example = Conversation
TRAINING_DATA = "tuned_model.tuning_task.training_data"
VALIDATION_DATA = "tuned_model.tuning_task.validation_data"


@dataclass(frozen=True)
class Dataset:
    examples: Sequence[Example]  # a list (inline) or an upload's StoredExamples
    count: int
    upload: str | None = None  # the upload's SHA-256, when uploaded


def read(uploads: Uploads, data: dict[str, Any], where: str) -> Dataset:
    """The Dataset at ``where`` (``tuned_model.tuning_task.training_data``, say), every example
    checked against the character limits, one pass over an upload."""
    examples_where = f"{where}.examples.examples"
    if wire.UPLOAD_FIELD not in data:
        examples = validation.training_examples(data, examples_where)
        return Dataset(examples, len(examples))
    if (data.get("examples") or {}).get("examples"):
        raise ApiError("INVALID_ARGUMENT", f"{where}: give examples or {wire.UPLOAD_FIELD}, "
                       "not both.")
    upload_where = f"{where}.{wire.UPLOAD_FIELD}"
    sha256 = sha256_of_name(data[wire.UPLOAD_FIELD], upload_where)
    path = uploads.require(sha256, upload_where)
    # An upload is never empty (uploads.py refuses that), so it has one example at least.
    count = sum(1 for _ in validation.checked_examples(stream_examples(path, upload_where),
                                                       upload_where))
    return Dataset(StoredExamples(path, upload_where, count), count, sha256)


def examples_field(dataset: Dataset, where: str) -> str:
    """How a refusal names the dataset's examples (``{field}[i]``)."""
    return f"{where}.{wire.UPLOAD_FIELD}" if dataset.upload else f"{where}.examples.examples"


def inline(dataset: Dataset) -> list[tuple[str, str]]:
    """The examples to keep with the job, as (text_input, output): those given inline, which
    are the Gemini API's one-turn TuningExamples (an upload's stay in its file)."""
    return [] if dataset.upload else [(example.turns[0].text, example.turns[1].text)
                                      for example in dataset.examples]


def uploaded(dataset: Dataset) -> tuple[str, int] | None:
    """(SHA-256, example count) of the upload that holds the examples, if uploaded."""
    return (dataset.upload, dataset.count) if dataset.upload else None


def stored(store: Store, uploads: Uploads, model_id: str,
           with_validation: bool = True) -> tuple[Sequence[Example], Sequence[Example]]:
    """The job's (training, validation) examples as the service keeps them: from the database
    where they came inline, from their uploads (read a line at a time) where uploaded."""
    training_upload, validation_upload = store.uploads(model_id)
    training: Sequence[Example] = (
        StoredExamples(uploads.path(training_upload), f"{TRAINING_DATA}.{wire.UPLOAD_FIELD}")
        if training_upload else _one_turns(store.examples(model_id)))
    validation: Sequence[Example] = []
    if with_validation:
        validation = (StoredExamples(uploads.path(validation_upload),
                                     f"{VALIDATION_DATA}.{wire.UPLOAD_FIELD}")
                      if validation_upload else _one_turns(store.validation_examples(model_id)))
    return training, validation


def _one_turns(pairs: list[tuple[str, str]]) -> list[Conversation]:
    return [Conversation.one_turn(text_input, output) for text_input, output in pairs]
