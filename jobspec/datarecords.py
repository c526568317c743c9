"""One record of a data file as an example: the three forms a file may be in, telling them
apart, reading a record as a conversation with each turn's field, so that a problem is shown at
the field the user wrote (``messages[3].weight``), and what a backend takes of an example
(``DataLimits``) with the bytes it adds to what carries the examples.

The forms (``conversation.FORMS``):

* text: today's ``{text_input, output}`` (field names mapped by the job file), one user turn
  and the model's answer; every file format holds it, CSV only it;
* contents: Gemini / Vertex AI's ``{systemInstruction?, contents}``, a Vertex training line;
* messages: chat ``{messages: [{role, content, weight?}]}``.

A file holds one form: the job file's ``format:`` names it, or its first record shows it
(``record_form``). The rules of a conversation are conversation.py's alone; this module only
reads a record by its form and names the fields.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any, Protocol

from . import wire
from .conversation import (FORMS, MODEL, Conversation, ConversationProblem, from_contents,
                           from_messages, json_type, turn_fields)
from .datareaders import FieldPositions
from .errors import ConfigError, Location
from .utf8 import surrogate_problem
from .yamlload import FieldPath

TEXT, CONTENTS, MESSAGES = FORMS
_PATH_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")
MIB, MB, GB = 2**20, 10**6, 10**9


@dataclass(frozen=True)
class DataLimits:
    """What one job's examples may be on a backend, as whoever sets the limits states them.
    None: no such limit. The character limits are the Gemini API's on a one-turn example's
    input and output; in a longer conversation each user turn and the system instruction is
    held to the input's, each model turn to the output's (as the local service holds them)."""

    backend: str
    max_input_chars: int | None = None
    max_output_chars: int | None = None
    max_examples: int | None = None
    # The largest request or file that carries the examples, and how it encodes them.
    max_bytes: int | None = None
    carrier: str = "create request"
    per_example_bytes: int = 0  # JSON around one example's two strings, in the carrier
    envelope_bytes: int = 0  # what the carrier holds besides the examples
    unit_bytes: int = MIB  # sizes are shown in the unit the limit is stated in
    unit: str = "MiB"
    stated_by: str = ""
    # Whether validation examples travel in the same carrier as the training examples (an inline
    # create request does; Vertex AI reads a file of each), and so count against one max_bytes.
    shared_with_validation: bool = False
    # Conversations: None, the backend takes any; else it takes one-turn text examples only, and
    # this says where conversations go instead ("local or vertex").
    conversations_elsewhere: str | None = None
    # A model turn that is context (weight 0): None, the backend takes it; else it trains on
    # every model turn (Vertex AI), and this says where such a turn can go ("local").
    weights_elsewhere: str | None = None

    def show(self, size: int) -> str:
        return f"{size / self.unit_bytes:.1f} {self.unit}"

    @property
    def a_carrier(self) -> str:
        return f"{'an' if self.carrier[:1] in 'aeiou' else 'a'} {self.carrier}"

    def stated(self) -> str:
        assert self.max_bytes is not None
        return f"{self.max_bytes / self.unit_bytes:g} {self.unit}"


class Example:
    """One training (or validation) example: a conversation (conversation.py), the job's
    system instruction applied where it had none, and where its record is.

    Today's one-turn example is kept as its two texts (``pair``) and made a Conversation only
    when asked for one: reading a file of millions of them (validate, the fingerprint) makes
    no objects it does not need. Examples are equal when their conversations are; where they
    are written is not part of what they are."""

    __slots__ = ("_conversation", "pair", "where")

    def __init__(self, conversation: Conversation, where: Location | None = None) -> None:
        self._conversation: Conversation | None = conversation
        # (text_input, output) of a one-turn conversation; None for any other.
        self.pair: tuple[str, str] | None = (
            (conversation.turns[0].text, conversation.turns[1].text)
            if conversation.is_one_turn else None)
        # The record's place in its data file (or job file, for inline examples), so that a
        # problem the backend finds in examples[i] can be shown against the line the user wrote.
        self.where = where

    @classmethod
    def one_turn(cls, text_input: str, output: str, where: Location | None = None) -> Example:
        example = cls.__new__(cls)
        example._conversation, example.pair, example.where = None, (text_input, output), where
        return example

    @property
    def conversation(self) -> Conversation:
        if self._conversation is None:
            assert self.pair is not None
            self._conversation = Conversation.one_turn(*self.pair)
        return self._conversation

    @property
    def text_input(self) -> str:
        """A one-turn example's input (of a longer one: every user turn's, for estimates)."""
        return self.pair[0] if self.pair is not None else self.conversation.text_input

    @property
    def output(self) -> str:
        """A one-turn example's output (of a longer one: every model turn's)."""
        return self.pair[1] if self.pair is not None else self.conversation.output

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Example):
            return NotImplemented
        if self.pair is not None or other.pair is not None:
            return self.pair == other.pair
        return self.conversation == other.conversation

    def __hash__(self) -> int:
        return hash(self.pair) if self.pair is not None else hash(self.conversation)

    def __repr__(self) -> str:
        return f"Example({self.conversation!r})"


@dataclass(frozen=True)
class ReadRecord:
    """A record's conversation (its own system instruction, if any, not yet the job's), with
    the field of each turn, of each turn's text, and of the system instruction's text."""

    conversation: Conversation
    turn_fields: tuple[str, ...]
    text_fields: tuple[str, ...]
    system_field: str
    form_field: str  # the field that holds the turns ("" for text: the record itself)


def record_form(record: object) -> str:
    """The form a record is in by its keys (a record of none of them is read as text)."""
    if isinstance(record, Mapping):
        if CONTENTS in record:
            return CONTENTS
        if MESSAGES in record:
            return MESSAGES
    return TEXT


def expected(form: str, input_field: str, output_field: str) -> str:
    """What a record of ``form`` is, for a message about one that is none."""
    if form == TEXT:
        return f"an object with {input_field!r} and {output_field!r}"
    if form == CONTENTS:
        return "an object with 'contents' (and optionally 'systemInstruction')"
    return "an object with 'messages'"


def read_record(record: Mapping[str, Any], form: str, input_field: str,
                output_field: str) -> ReadRecord:
    """The conversation of a record of ``form``; ConversationProblem naming the field."""
    if form == TEXT:
        names = (input_field, output_field)
        texts = [_text(record, name) for name in names]
        return ReadRecord(Conversation.one_turn(*texts), names, names, "", "")
    if form == CONTENTS:
        conversation = from_contents(record)
        turns = turn_fields(record, CONTENTS)
        return ReadRecord(conversation, turns, tuple(f"{t}.parts" for t in turns),
                          "systemInstruction.parts", CONTENTS)
    conversation = from_messages(record)
    turns = turn_fields(record, MESSAGES)
    return ReadRecord(conversation, turns, tuple(f"{t}.content" for t in turns),
                      "messages[0].content", MESSAGES)


_MISSING = object()


def _text(record: Mapping[str, Any], name: str) -> str:
    value = record.get(name, _MISSING)
    if value is _MISSING:
        raise ConversationProblem(name, "missing")
    if not isinstance(value, str):
        raise ConversationProblem(name, f"must be a string, got {json_type(value)}")
    if not value or value.isspace():
        raise ConversationProblem(name, "must not be empty")
    return value


def field_path(text: str) -> FieldPath:
    """``contents[2].parts[0]`` → ``("contents", 2, "parts", 0)``: a conversation problem's
    field, as the positions of a YAML record are keyed."""
    return tuple(int(index) if index else name for index, name in _PATH_PART.findall(text))


class Source(Protocol):
    """What reading a record needs of where it comes from (data.DataSource)."""

    @property
    def input_field(self) -> str: ...
    @property
    def output_field(self) -> str: ...
    @property
    def form(self) -> str | None: ...
    @property
    def format(self) -> str: ...
    @property
    def system_instruction(self) -> str | None: ...
    @property
    def limits(self) -> DataLimits | None: ...


class Forms:
    """The form of a file's records: the job file's ``format:``, else its first record's (a CSV
    file's are text); a record of another form is an error at its line."""

    def __init__(self, source: Source) -> None:
        # A CSV file holds text; so does a file whose text fields are named like another
        # form's (input_field: messages), which detection would take for that form.
        named = {source.input_field, source.output_field} & {CONTENTS, MESSAGES}
        self.form = source.form or (TEXT if source.format == ".csv" or named else None)
        self.detecting = self.form is None
        self.first: Location | None = None

    def of(self, where: Location, record: object) -> str:
        if not self.detecting or not isinstance(record, dict):
            return self.form or TEXT
        # record_form, for a dict (every record of a file is checked: kept cheap)
        found = CONTENTS if CONTENTS in record else MESSAGES if MESSAGES in record else TEXT
        if self.form is None:
            self.form, self.first = found, where
        elif found != self.form:
            first = self.first.line if self.first is not None else None
            raise ConfigError(where, (
                f"a {found} record in a file of {self.form} records (its first record"
                f"{f', line {first},' if first is not None else ''} is {self.form}); a file "
                f"holds one form: write this one in the {self.form} form too"))
        return self.form


def read_example(where: Location, record: object, source: Source, form: str,
                 may_need_escapes: bool, fields: FieldPositions | None) -> tuple[Example, int]:
    """The example in ``record`` (of ``form``), and the bytes it adds to what carries the
    examples."""
    def at(name: str, message: str) -> ConfigError:
        located = (fields.of(field_path(name)) if fields is not None and name
                   and (form != TEXT or fields.locates_text_fields) else None)
        line, column = located or (where.line, where.column)
        return ConfigError(Location(where.path, line, column, _join(where.field, name)), message)

    if not isinstance(record, dict):
        wanted = expected(form, source.input_field, source.output_field)
        raise ConfigError(where, f"expected {wanted}, got {type(record).__name__}")
    if form == TEXT and source.system_instruction is None:
        return _text_example(where, record, source, may_need_escapes, at)
    try:
        read = read_record(record, form, source.input_field, source.output_field)
    except ConversationProblem as problem:
        raise at(problem.field, problem.message) from None
    conversation = read.conversation.with_system(source.system_instruction)
    limits = source.limits
    refused = _refused(read, conversation, limits) if limits is not None else None
    if refused is not None:
        raise at(*refused)
    example = Example(conversation, where)
    if conversation.is_one_turn:  # today's example: counted as it always was
        size = limits.per_example_bytes if limits else 0
        for name, value in zip(read.text_fields, (turn.text for turn in conversation.turns)):
            try:
                size += _json_string_bytes(value, may_need_escapes)
            except UnicodeEncodeError:  # a lone surrogate, from a "\ud83d" escape in JSON
                raise at(name, surrogate_problem(value) or "cannot be sent as UTF-8") from None
        return example, size
    texts = list(zip(read.text_fields, (turn.text for turn in read.conversation.turns)))
    if read.conversation.system is not None:
        texts.append((read.system_field, read.conversation.system))
    for name, text in texts:
        problem = surrogate_problem(text)
        if problem is not None:
            raise at(name, problem)
    # A conversation travels as its contents line (the local service's upload, Vertex AI's
    # training file): its size is that line's.
    return example, len(wire.conversation_line(conversation)) if limits else 0


def _text_example(where: Location, record: dict[str, Any], source: Source,
                  may_need_escapes: bool,
                  at: Callable[[str, str], ConfigError]) -> tuple[Example, int]:
    """read_example of today's ``{text_input, output}`` record, with no system instruction to
    add: the same rules and messages as ``read_record`` and ``_refused``, in one pass with
    nothing made but the example (the common case, which sets how fast a large file is read)."""
    limits = source.limits
    size = limits.per_example_bytes if limits else 0
    texts = []
    for name, limit in ((source.input_field, limits.max_input_chars if limits else None),
                        (source.output_field, limits.max_output_chars if limits else None)):
        value = record.get(name, _MISSING)
        if value.__class__ is not str or not value or value.isspace() \
                or (limit is not None and len(value) > limit):
            raise at(name, _text_problem(value, limit))
        try:
            size += _json_string_bytes(value, may_need_escapes)
        except UnicodeEncodeError:  # a lone surrogate, from a "\ud83d" escape in JSON
            raise at(name, surrogate_problem(value) or "cannot be sent as UTF-8") from None
        texts.append(value)
    return Example.one_turn(texts[0], texts[1], where), size


def _text_problem(value: object, limit: int | None) -> str:
    if value is _MISSING:
        return "missing"
    if not isinstance(value, str):
        return f"must be a string, got {json_type(value)}"
    if not value or value.isspace():
        return "must not be empty"
    return f"is {len(value):,} characters, over the limit of {limit:,}"


def _refused(read: ReadRecord, conversation: Conversation,
             limits: DataLimits) -> tuple[str, str] | None:
    """(field, why) when the backend does not take this conversation as it is."""
    turns = read.conversation.turns
    if limits.conversations_elsewhere is not None and not conversation.is_one_turn:
        has = [f"{len(turns)} turns"] if len(turns) != 2 else []
        if conversation.system is not None:
            has.append("a system instruction")
        if any(not turn.trained for turn in turns):
            has.append("a model turn of weight 0")
        return read.form_field, (
            f"the {limits.backend} backend takes one-turn text examples only (a user turn and "
            f"the model's answer, no system instruction); this example has {' and '.join(has)}: "
            f"tune it on {limits.conversations_elsewhere}, which take conversations")
    if limits.weights_elsewhere is not None:
        for name, turn in zip(read.turn_fields, turns):
            if not turn.trained:
                return f"{name}.weight", (
                    f"the {limits.backend} backend trains on every model turn and takes no "
                    f"weights: a turn of weight 0 (context, not learned) cannot be sent to it; "
                    f"remove the weight (the turn is then learned) or the turn, or tune on "
                    f"{limits.weights_elsewhere}")
    for name, turn in zip(read.text_fields, turns):
        limit = limits.max_output_chars if turn.role == MODEL else limits.max_input_chars
        if limit is not None and len(turn.text) > limit:
            return name, f"is {len(turn.text):,} characters, over the limit of {limit:,}"
    system = read.conversation.system
    if (system is not None and limits.max_input_chars is not None
            and len(system) > limits.max_input_chars):
        return read.system_field, (f"is {len(system):,} characters, over the limit of "
                                   f"{limits.max_input_chars:,}")
    return None


# What JSON escapes in a string (ensure_ascii=False): the quote, the backslash, control characters.
_ESCAPED_BYTES = b'"\\' + bytes(range(0x20))


def _json_string_bytes(value: str, may_need_escapes: bool) -> int:
    """Bytes of ``value`` as a JSON string in UTF-8; UnicodeEncodeError if it has none."""
    if value.isascii():
        size = len(value)
        if may_need_escapes:
            raw = value.encode("ascii")
            if len(raw.translate(None, _ESCAPED_BYTES)) != size:
                return len(encode_basestring(value))
        return size + 2
    raw = value.encode("utf-8")
    if may_need_escapes and len(raw.translate(None, _ESCAPED_BYTES)) != len(raw):
        return len(encode_basestring(value).encode("utf-8"))
    return len(raw) + 2


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
