"""A conversation: the unit of training data and of an eval prompt's context.

An optional system instruction, then turns that alternate user / model, starting with a user
turn; a training example ends with a model turn (what the model learns to say), an eval prompt's
history ends with a model turn too (its ``input`` is the next user turn). A model turn may be
context rather than a target (``trained=False``: OpenAI's per-message ``"weight": 0``), so that a
dialogue can show an answer the model should not learn to give.

This module is the one home of the rules and of the two JSON forms teams already have:

* contents (Gemini / Vertex AI): ``{"systemInstruction"?: {"parts": [{"text": …}]},
  "contents": [{"role": "user"|"model", "parts": [{"text": …}, …]}, …]}``, Vertex's training file
  line (shared/reference/vertex-tuning-api.md §6) and a generateContent request's fields. A turn's
  text is its parts' texts joined, as Gemini joins them; a Content without a role is the user's,
  as Vertex reads it. On the local service's wire a model turn that is context carries
  ``"weight": 0`` (its extension; see wire.py).
* messages (chat): ``{"messages": [{"role": "system"|"user"|"assistant", "content": "…",
  "weight"?: 0|1}, …]}``; ``assistant`` is the model's turn, ``system`` may only come first.

Both sides of the local service's wire use it, so it imports nothing from jobspec. A problem is a
``ConversationProblem`` naming the field inside the record (``contents[2].role``), which the
caller places at its file and line.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

USER, MODEL = "user", "model"
FORMS = ("text", "contents", "messages")  # a data file's forms (text: text_input/output)
SYSTEM_ROLE, ASSISTANT_ROLE = "system", "assistant"
CONTENTS_ROLES = (USER, MODEL)
MESSAGES_ROLES = (SYSTEM_ROLE, USER, ASSISTANT_ROLE)


class ConversationProblem(ValueError):
    """What is wrong with a conversation, and where in its record (a field path; "" for the
    record itself)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Turn:
    role: str  # USER or MODEL
    text: str
    trained: bool = True  # a model turn the loss covers; False: context (weight 0)


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    system: str | None = None

    @classmethod
    def one_turn(cls, text_input: str, output: str) -> Conversation:
        return cls((Turn(USER, text_input), Turn(MODEL, output)))

    @property
    def is_one_turn(self) -> bool:
        """Today's ``{text_input, output}`` example: no system instruction, one user turn and
        the model's trained answer. Its fingerprint and wire form are the ones jobspec always
        had."""
        return (self.system is None and len(self.turns) == 2
                and self.turns[0].role == USER and self.turns[1].trained)

    @property
    def text_input(self) -> str:
        """The user's text of a one-turn conversation; every user turn's, joined by newlines,
        for plans' estimates of a longer one."""
        return "\n".join(turn.text for turn in self.turns if turn.role == USER)

    @property
    def output(self) -> str:
        """The model's answer of a one-turn conversation; every model turn's, joined by
        newlines, for a longer one."""
        return "\n".join(turn.text for turn in self.turns if turn.role == MODEL)

    def with_system(self, system: str | None) -> Conversation:
        """This conversation with ``system`` as its instruction where it has none (a job's
        ``system_instruction``)."""
        if system is None or self.system is not None:
            return self
        return Conversation(self.turns, system)


def check_turns(turns: Sequence[Turn], *, field: str, ending: str | None = MODEL,
                positions: Sequence[str] = ()) -> None:
    """Turns alternate user / model, starting with user and (``ending``) ending with it; a
    training conversation has a model turn to learn. ``positions[i]`` names turn i's field."""
    def where(i: int) -> str:
        return positions[i] if i < len(positions) else f"{field}[{i}]"

    if not turns:
        if ending is None:
            return
        raise ConversationProblem(field, "has no turns; a conversation is user and model turns, "
                                  "starting with user and ending with model")
    for i, turn in enumerate(turns):
        expected = USER if i % 2 == 0 else MODEL
        if turn.role != expected:
            before = "the first turn" if i == 0 else f"after a {turns[i - 1].role} turn"
            raise ConversationProblem(
                f"{where(i)}.role", f"roles out of order: {before} comes a {expected} turn, "
                f"not {turn.role}; turns alternate user / model, starting with user")
    if ending is not None and turns[-1].role != ending:
        raise ConversationProblem(
            field, f"ends with a {turns[-1].role} turn; a conversation ends with the "
            f"{ending} turn {'the model learns' if ending == MODEL else 'it answers'}")
    if ending == MODEL and not any(turn.trained for turn in turns if turn.role == MODEL):
        raise ConversationProblem(field, "every model turn has weight 0: nothing to learn; "
                                  "at least one model turn must be trained")


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ConversationProblem(field, f"must be a string, got {json_type(value)}")
    if not value or value.isspace():
        raise ConversationProblem(field, "must not be empty")
    return value


def _parts_text(content: object, field: str) -> str:
    """The text of a Content's parts, joined; only text parts."""
    if not isinstance(content, Mapping):
        raise ConversationProblem(field, f"must be an object with parts, got "
                                  f"{json_type(content)}")
    parts = content.get("parts")
    if parts is None:
        raise ConversationProblem(f"{field}.parts", "missing")
    if not isinstance(parts, list) or not parts:
        raise ConversationProblem(f"{field}.parts", "must be a non-empty array of text parts")
    texts = []
    for j, part in enumerate(parts):
        where = f"{field}.parts[{j}]"
        if not isinstance(part, Mapping) or "text" not in part:
            kinds = ", ".join(sorted(part)) if isinstance(part, Mapping) else json_type(part)
            raise ConversationProblem(where, f"only text parts are supported, got {kinds}")
        other = sorted(set(part) - {"text"})
        if other:
            raise ConversationProblem(where, "only text parts are supported, got "
                                      f"{', '.join(other)}")
        if not isinstance(part["text"], str):
            raise ConversationProblem(f"{where}.text", f"must be a string, got "
                                      f"{json_type(part['text'])}")
        texts.append(part["text"])
    text = "".join(texts)
    if not text or text.isspace():
        raise ConversationProblem(field, "is empty: a turn must have text")
    return text


def _weight(message: Mapping[str, Any], field: str, role: str) -> bool:
    """Whether a turn is trained, from its optional ``weight`` (0 or 1; only a model turn's may
    be 0)."""
    if "weight" not in message:
        return True
    weight = message["weight"]
    if isinstance(weight, bool) or weight not in (0, 1):
        raise ConversationProblem(f"{field}.weight", f"must be 0 or 1, got {weight!r}")
    if weight == 0 and role != MODEL:
        raise ConversationProblem(f"{field}.weight", "only a model (assistant) turn may have "
                                  "weight 0")
    return weight == 1


def turns_from_contents(contents: object, field: str = "contents", *,
                        weights: bool = False) -> tuple[Turn, ...]:
    """Turns from Gemini/Vertex Contents (``weights``: the local wire's ``weight`` taken)."""
    if not isinstance(contents, list):
        raise ConversationProblem(field, f"must be an array of turns, got {json_type(contents)}")
    turns = []
    for i, content in enumerate(contents):
        where = f"{field}[{i}]"
        text = _parts_text(content, where)
        role = content.get("role", USER)
        if role not in CONTENTS_ROLES:
            raise ConversationProblem(f"{where}.role", f"unknown role {role!r}: a turn is "
                                      f"{' or '.join(CONTENTS_ROLES)}")
        trained = _weight(content, where, role) if weights else True
        turns.append(Turn(role, text, trained))
    return tuple(turns)


def turns_from_messages(messages: object, field: str = "messages", *,
                        system_allowed: bool = True) -> tuple[str | None, tuple[Turn, ...]]:
    """The system instruction (a first ``system`` message) and turns of chat messages."""
    if not isinstance(messages, list):
        raise ConversationProblem(field, f"must be an array of messages, got "
                                  f"{json_type(messages)}")
    system, turns = None, []
    for i, message in enumerate(messages):
        where = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise ConversationProblem(where, f"must be an object with role and content, got "
                                      f"{json_type(message)}")
        role = message.get("role")
        if role is None:
            raise ConversationProblem(f"{where}.role", "missing")
        if role not in MESSAGES_ROLES:
            raise ConversationProblem(f"{where}.role", f"unknown role {role!r}: a message is "
                                      f"{', '.join(MESSAGES_ROLES)}")
        if "content" not in message:
            raise ConversationProblem(f"{where}.content", "missing")
        content = message["content"]
        if isinstance(content, list):
            raise ConversationProblem(f"{where}.content", "only text content is supported "
                                      "(a string), got an array of parts")
        text = _text(content, f"{where}.content")
        if role == SYSTEM_ROLE:
            if not system_allowed:
                raise ConversationProblem(f"{where}.role", "a system message is not allowed "
                                          "here: give the system instruction as the prompt's "
                                          "system")
            if i != 0:
                raise ConversationProblem(f"{where}.role", "a system message is allowed only "
                                          "as the first message")
            system = text
            continue
        turn_role = MODEL if role == ASSISTANT_ROLE else USER
        turns.append(Turn(turn_role, text, _weight(message, where, turn_role)))
    return system, tuple(turns)


def from_contents(record: Mapping[str, Any], *, weights: bool = False) -> Conversation:
    """A training conversation from a contents-form record (a Vertex training line)."""
    if "contents" not in record:
        raise ConversationProblem("contents", "missing")
    system = None
    if "systemInstruction" in record:
        system = _parts_text(record["systemInstruction"], "systemInstruction")
    turns = turns_from_contents(record["contents"], weights=weights)
    check_turns(turns, field="contents")
    return Conversation(turns, system)


def from_messages(record: Mapping[str, Any]) -> Conversation:
    """A training conversation from a messages-form record."""
    if "messages" not in record:
        raise ConversationProblem("messages", "missing")
    system, turns = turns_from_messages(record["messages"])
    positions = _turn_positions(record["messages"], "messages")
    check_turns(turns, field="messages", positions=positions)
    return Conversation(turns, system)


def turns_from_history(history: object, field: str = "history") -> tuple[Turn, ...]:
    """An eval prompt's earlier turns, in either form (contents: ``{role: user|model, parts:
    [{text}]}``; messages: ``{role: user|assistant, content}``), one form per history, as a data
    file has one: its first turn decides. They alternate user / model, starting with user and
    ending with model, since the prompt's ``input`` is the next user turn. A history is context,
    never trained: it has no ``weight``, and its system instruction is the prompt's ``system``."""
    if not isinstance(history, list):
        raise ConversationProblem(field, f"must be an array of turns, got {json_type(history)}")
    forms = [_history_form(item, f"{field}[{i}]") for i, item in enumerate(history)]
    for i, item in enumerate(history):
        if forms[i] != forms[0]:
            raise ConversationProblem(
                f"{field}[{i}]", f"is in the {forms[i]} form but the first turn is in the "
                f"{forms[0]} form; a history's turns are all in one form")
        if "weight" in item:
            raise ConversationProblem(f"{field}[{i}].weight", "a history is context, never "
                                      "trained: weight applies to training examples only")
    if forms and forms[0] == "messages":
        _, turns = turns_from_messages(history, field, system_allowed=False)
    else:
        turns = turns_from_contents(history, field)
    if not turns:
        raise ConversationProblem(field, "has no turns: give the earlier turns (user, model, "
                                  "...), or leave history out")
    check_turns(turns, field=field, ending=None)
    if turns[-1].role != MODEL:
        raise ConversationProblem(
            f"{field}[{len(turns) - 1}].role", f"a history ends with a model turn, not "
            f"{turns[-1].role}: the prompt's input is the next user turn")
    return turns


def _history_form(item: object, field: str) -> str:
    """Which form one turn of a history is in: "contents" (it has parts) or "messages" (it
    has content)."""
    if isinstance(item, Mapping):
        if "parts" in item and "content" in item:
            raise ConversationProblem(field, "give parts (the contents form) or content (the "
                                      "messages form), not both")
        if "parts" in item:
            return "contents"
        if "content" in item:
            return "messages"
    raise ConversationProblem(field, "must be a turn: {role: user|model, parts: [{text: ...}]} "
                              "(the contents form) or {role: user|assistant, content: ...} "
                              "(the messages form)")


def _turn_positions(messages: list[Any], field: str) -> list[str]:
    """Each turn's field, skipping a system message."""
    return [f"{field}[{i}]" for i, message in enumerate(messages)
            if not (isinstance(message, Mapping) and message.get("role") == SYSTEM_ROLE)]


def turn_fields(record: Mapping[str, Any], form: str) -> tuple[str, ...]:
    """Each turn's field in a record of ``form`` ("contents" or "messages") whose conversation
    has been read: ``contents[i]``, or ``messages[i]`` skipping a system message."""
    items = record[form]
    if form == "messages":
        return tuple(_turn_positions(items, form))
    return tuple(f"{form}[{i}]" for i in range(len(items)))


def form_of(record: object) -> str | None:
    """The form a record is in, by its keys: "contents", "messages", or None (the text form,
    or not a conversation at all)."""
    if isinstance(record, Mapping):
        if "contents" in record:
            return "contents"
        if "messages" in record:
            return "messages"
    return None


def content(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": text}]}


def system_instruction(text: str) -> dict[str, Any]:
    return {"parts": [{"text": text}]}


def to_contents(conversation: Conversation, *, weights: bool = False) -> dict[str, Any]:
    """The conversation in the contents form (a Vertex training line); ``weights``: a model
    turn that is context carries the local wire's ``"weight": 0``."""
    record: dict[str, Any] = {}
    if conversation.system is not None:
        record["systemInstruction"] = system_instruction(conversation.system)
    contents = []
    for turn in conversation.turns:
        item = content(turn.role, turn.text)
        if weights and not turn.trained:
            item["weight"] = 0
        contents.append(item)
    record["contents"] = contents
    return record


def to_messages(conversation: Conversation) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if conversation.system is not None:
        messages.append({"role": SYSTEM_ROLE, "content": conversation.system})
    for turn in conversation.turns:
        message: dict[str, Any] = {"role": ASSISTANT_ROLE if turn.role == MODEL else USER,
                                   "content": turn.text}
        if not turn.trained:
            message["weight"] = 0
        messages.append(message)
    return {"messages": messages}


def texts(conversation: Conversation) -> Iterator[str]:
    """Every text in the conversation, the system instruction first."""
    if conversation.system is not None:
        yield conversation.system
    for turn in conversation.turns:
        yield turn.text


def json_type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
            str: "string", type(None): "null"}.get(type(value), type(value).__name__)
