"""Reading and checking the parsed requests of the local service: what a create or a
generateContent request may ask for, and the settings it amounts to. Every refusal is
INVALID_ARGUMENT naming the field and what is allowed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

from .. import wire
from ..conversation import (MODEL, USER, Conversation, ConversationProblem, Turn, check_turns,
                            turns_from_contents)
from . import protojson
from .inference import GenerationSettings
from .tokens import Tokenizers
from .protojson import ApiError

EXAMPLES = wire.EXAMPLES_FIELD
VALIDATION_EXAMPLES = "tuned_model.tuning_task.validation_data.examples.examples"
MAX_PATIENCE = 1000  # epochs of early stopping's patience, as the job-file schema allows
MAX_INPUT_CHARS, MAX_OUTPUT_CHARS = wire.MAX_INPUT_CHARS, wire.MAX_OUTPUT_CHARS
DEFAULT_LEARNING_RATE = 0.001  # what a multiplier of 1.0 means here


def in_range(where: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if value < low or value > high or (low_open and value == low):
        bound = f"({low}, {high}]" if low_open else f"[{low}, {high}]"
        raise ApiError("INVALID_ARGUMENT", f"{where} must be in {bound}, got {value:g}.")


def training_examples(data: dict[str, Any], where: str = EXAMPLES) -> list[Conversation]:
    """The inline examples (the Gemini API's TuningExamples: one-turn conversations), each
    present and within the character limits."""
    items = (data.get("examples") or {}).get("examples") or []
    if not items:
        raise ApiError("INVALID_ARGUMENT", f"{where} is required: at least one example.")
    return list(checked_examples((one_turn(item) for item in items), where))


def one_turn(item: dict[str, Any]) -> Conversation:
    """A parsed TuningExample (text_input, output: either may be missing or blank until
    ``checked_examples``)."""
    return Conversation((Turn(USER, item.get("text_input", "")),
                         Turn(MODEL, item.get("output", ""))))


def checked_examples(examples: Iterable[Conversation],
                     where: str) -> Iterator[Conversation]:
    """``examples`` as they come, each refused (with its index) unless its texts are present
    and within the character limits: a one-turn example's input and output as the Gemini API
    limits them, and in a longer conversation each user turn (and the system instruction) as
    an input, each model turn as an output."""
    for index, conversation in enumerate(examples):
        if conversation.is_one_turn:
            text_input, output = (turn.text for turn in conversation.turns)
            if not text_input.strip() or not output.strip():
                missing = "text_input" if not text_input.strip() else "output"
                raise ApiError("INVALID_ARGUMENT", f"{where}[{index}].{missing} is required.")
            if len(text_input) > MAX_INPUT_CHARS or len(output) > MAX_OUTPUT_CHARS:
                raise ApiError("INVALID_ARGUMENT", f"{where}[{index}] is too long: inputs may "
                               f"have {MAX_INPUT_CHARS:,} characters and outputs "
                               f"{MAX_OUTPUT_CHARS:,}.")
        else:
            _check_turn_lengths(conversation, f"{where}[{index}]")
        yield conversation


def _check_turn_lengths(conversation: Conversation, where: str) -> None:
    too_long = None
    if conversation.system is not None and len(conversation.system) > MAX_INPUT_CHARS:
        too_long = f"{where}.systemInstruction"
    for position, turn in enumerate(conversation.turns):
        limit = MAX_OUTPUT_CHARS if turn.role == MODEL else MAX_INPUT_CHARS
        if too_long is None and len(turn.text) > limit:
            too_long = f"{where}.contents[{position}]"
    if too_long is not None:
        raise ApiError("INVALID_ARGUMENT", f"{too_long} is too long: a user turn or system "
                       f"instruction may have {MAX_INPUT_CHARS:,} characters and a model turn "
                       f"{MAX_OUTPUT_CHARS:,}.")


def early_stopping(task: dict[str, Any], validation: Sized) -> int | None:
    """The patience (epochs without a lower validation loss) of early stopping, if asked."""
    if "early_stopping" not in task:
        return None
    where = "tuned_model.tuning_task.early_stopping"
    patience = task["early_stopping"].get("patience")
    if patience is None:
        raise ApiError("INVALID_ARGUMENT", f"{where}.patience is required.")
    in_range(f"{where}.patience", patience, 1, MAX_PATIENCE)
    if not validation:
        raise ApiError("INVALID_ARGUMENT", f"{where} needs validation examples "
                       "(tuned_model.tuning_task.validation_data): it stops on their loss.")
    return patience


def resources(task: dict[str, Any]) -> tuple[int | None, float | None]:
    """(workers, GPUs per worker) a job asks for (``wire.RESOURCES_FIELD``); None: the
    service's default."""
    asked = task.get(wire.RESOURCES_FIELD) or {}
    where = f"tuned_model.tuning_task.{wire.RESOURCES_FIELD}"
    workers, gpus = asked.get("workers"), asked.get("gpus_per_worker")
    if workers is not None:
        in_range(f"{where}.workers", workers, 1, wire.MAX_WORKERS)
    if gpus is not None:
        in_range(f"{where}.gpus_per_worker", gpus, 0, wire.MAX_GPUS_PER_WORKER)
    return workers, gpus


def check_example_tokens(tokenizers: Tokenizers, model_id: str,
                         examples: Iterable[tuple[str, str]],
                         context: int, max_batch_tokens: int, where: str = EXAMPLES) -> None:
    """Refuse the first example the trainer could not take: longer than the model's context, or
    than one batch may hold. (The CLI reads the index from this message to point at the line of
    the user's data file.)"""
    refuse_too_long(tokenizers.first_too_long(model_id, examples, min(context, max_batch_tokens)),
                    model_id, context, max_batch_tokens, where)


def refuse_too_long(found: tuple[int, int] | None, model_id: str, context: int,
                    max_batch_tokens: int, where: str) -> None:
    """INVALID_ARGUMENT for ``found``, the (index, tokens) of the first example too long."""
    if found is None:
        return
    index, count = found
    measured = (f"{where}[{index}] is {count:,} tokens long (input and output, in "
                f"models/{model_id}'s tokenizer), over ")
    if count > context:
        raise ApiError("INVALID_ARGUMENT", f"{measured}the model's limit of {context:,} tokens.")
    raise ApiError("INVALID_ARGUMENT", f"{measured}this service's limit of {max_batch_tokens:,} "
                   "tokens in one batch (jobspec serve --max-batch-tokens).")


def hyperparameters(given: dict[str, Any], count: int) -> tuple[dict[str, Any], float]:
    where = "tuned_model.tuning_task.hyperparameters"
    if "learning_rate" in given and "learning_rate_multiplier" in given:
        raise ApiError("INVALID_ARGUMENT", f"{where}: give learning_rate or "
                       "learning_rate_multiplier, not both.")
    epochs = given.get("epoch_count", 5)
    batch = given.get("batch_size", 4 if count < 1000 else 16)
    in_range(f"{where}.epoch_count", epochs, 1, 1000)
    in_range(f"{where}.batch_size", batch, 1, 1024)
    result: dict[str, Any] = {"epochCount": epochs, "batchSize": batch}
    if "learning_rate" in given:
        in_range(f"{where}.learning_rate", given["learning_rate"], 0, 1, low_open=True)
        result["learningRate"] = rate = given["learning_rate"]
    else:
        multiplier = given.get("learning_rate_multiplier", 1.0)
        in_range(f"{where}.learning_rate_multiplier", multiplier, 0, 100, low_open=True)
        result["learningRateMultiplier"] = multiplier
        rate = multiplier * DEFAULT_LEARNING_RATE
    return result, rate


def sampling_defaults(request: dict[str, Any]) -> None:
    if "temperature" in request:
        in_range("tuned_model.temperature", request["temperature"], 0, 2)
    if "top_p" in request:
        in_range("tuned_model.top_p", request["top_p"], 0, 1)
    if "top_k" in request:
        in_range("tuned_model.top_k", request["top_k"], 1, 1000)


def conversation(request: dict[str, Any]) -> Conversation:
    """The conversation a generateContent (or countTokens) request asks the model to answer:
    its system instruction and its contents, user and model turns alternating, starting and
    ending with a user turn (conversation.py's rules)."""
    contents = request.get("contents")
    if not contents:
        raise ApiError("INVALID_ARGUMENT", "contents is not specified.")
    try:
        system = None
        if "system_instruction" in request:
            system = _text_of(request["system_instruction"], "systemInstruction")
        turns = turns_from_contents([_camel_parts(content) for content in contents])
        check_turns(turns, field="contents", ending=USER)
    except ConversationProblem as problem:
        raise ApiError("INVALID_ARGUMENT", f"{problem}.") from None
    return Conversation(turns, system)


def _camel_parts(content: dict[str, Any]) -> dict[str, Any]:
    """A parsed Content (snake_case names) with its parts' names as the request spelled them,
    for conversation.py's messages (``inline_data`` is named ``inlineData``)."""
    parts = [{protojson.camel(name): value for name, value in part.items()}
             for part in content.get("parts", [])]
    return {**content, "parts": parts}


def _text_of(content: dict[str, Any], where: str) -> str:
    """A system instruction's text: its parts' texts joined."""
    try:
        [turn] = turns_from_contents([{"parts": _camel_parts(content)["parts"]}], where)
    except ConversationProblem as problem:
        field = problem.field.replace(f"{where}[0]", where, 1)
        raise ConversationProblem(field, problem.message) from None
    return turn.text


def generation_settings(config: dict[str, Any],
                        defaults: GenerationSettings) -> GenerationSettings:
    where = "generation_config"
    values = {
        "temperature": config.get("temperature", defaults.temperature),
        "top_p": config.get("top_p", defaults.top_p),
        "top_k": config.get("top_k", defaults.top_k),
        "max_output_tokens": config.get("max_output_tokens", defaults.max_output_tokens),
        "stop_sequences": tuple(config.get("stop_sequences", ())),
        "candidate_count": config.get("candidate_count", 1),
        "seed": config.get("seed"),
    }
    in_range(f"{where}.temperature", values["temperature"], 0, 2)
    if values["top_p"] is not None:
        in_range(f"{where}.top_p", values["top_p"], 0, 1)
    if values["top_k"] is not None:
        in_range(f"{where}.top_k", values["top_k"], 1, 1000)
    in_range(f"{where}.max_output_tokens", values["max_output_tokens"], 1, 8192)
    in_range(f"{where}.candidate_count", values["candidate_count"], 1, 8)
    if len(values["stop_sequences"]) > 5:
        raise ApiError("INVALID_ARGUMENT", f"{where}.stop_sequences: at most 5.")
    return GenerationSettings(**values)
