"""Turning conversations into token ids, the same way for training, counting and serving.

A conversation (jobspec/conversation.py: an optional system instruction, then user and model
turns) is rendered as a list of ``Segment``s, each a piece of text that is trained (a model
turn's text and its end-of-turn token) or context (everything else: the system instruction,
user turns, the template's scaffolding, and model turns of weight 0). Each segment is tokenized
on its own and the ids are concatenated; a trained segment's tokens are labels, every other
token is ``IGNORE_INDEX``. Training, token counts, the context limit, generation prompts and the
render endpoint all take their ids from ``render``, so what is counted or previewed is what is
trained, and a tuned model is asked the way it was trained.

With a chat template (SmolLM2 has one) the text is the template's own: ``render`` asks
``tokenizer.apply_chat_template`` for the conversation up to each model turn with the
generation prompt (where that turn's text begins) and takes what it adds to what is rendered
so far as the next context segment; the model turn then follows as its text and the
end-of-turn token. (SmolLM2's template has no ``{% generation %}`` markers, so transformers'
``return_assistant_tokens_mask`` cannot mark the model's tokens; rendering prefixes works with
any template whose renders of a conversation's beginnings are prefixes of one another, which
``render`` checks.) The system instruction is the template's system turn; a template that has
no system turn (it refuses the role, or leaves its text out) gets it at the start of the first
user turn, followed by a blank line. With no system instruction the template renders as it is
(SmolLM2's then adds its default system turn), under the recipe's ``system_prompt`` if it has
one.

Without a chat template (or with the recipe's ``chat_template`` off) the layout is plain text:
the system instruction on its own line, then ``Input: {user}`` lines each followed by
``Output:``, the model's answer after a space and closed by the end-of-turn token (the
tokenizer's end-of-sequence token, or a newline), and a newline before the next ``Input:``.

A one-turn conversation renders exactly as examples did before conversations (the prompt
segment, then the answer and end-of-turn), so its ids and labels, and so the training of every
job made before, are unchanged. The ids of a conversation end with its last model turn (nothing
after it is trained).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from ..conversation import MODEL, USER, Conversation, Turn

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips
Example = Conversation | tuple[str, str]  # a (text_input, output) pair is a one-turn conversation
Encoded = tuple[list[int], list[int]]
SYSTEM_SEPARATOR = "\n\n"  # between the system text and the first user turn, without a system turn


class UnsupportedTemplate(ValueError):
    """A chat template whose renders of a conversation's beginnings are not prefixes of one
    another, so that a turn's tokens cannot be found in the whole."""


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool  # its tokens are labels (a trained model turn and its end-of-turn token)


def as_conversation(example: Example) -> Conversation:
    return example if isinstance(example, Conversation) else Conversation.one_turn(*example)


def templated(tokenizer: Any, chat: bool = True) -> bool:
    """Whether prompts go through the model's chat template (``chat`` False: the plain layout
    even for a model that has one)."""
    return chat and bool(getattr(tokenizer, "chat_template", None))


def end_of_turn(tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None) and _has_token(tokenizer, "<|im_end|>"):
        return "<|im_end|>"
    return tokenizer.eos_token or "\n"


def _has_token(tokenizer: Any, token: str) -> bool:
    # Not ``token in tokenizer.get_vocab()``: that copies the whole vocabulary (~20 ms for
    # SmolLM2's 49k tokens), once per example when training or measuring a job.
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def render(tokenizer: Any, conversation: Conversation, system: str | None = None,
           chat: bool = True, *, answer: bool = False) -> list[Segment]:
    """The conversation as segments of text, in order. ``system``: the instruction when the
    conversation has none (the recipe's). ``answer``: the conversation ends with a user turn
    and the render ends where the model's answer begins (a generation prompt)."""
    conversation = conversation.with_system(system)
    if templated(tokenizer, chat):
        return _templated(tokenizer, conversation, answer)
    return _plain(tokenizer, conversation, answer)


def _messages(tokenizer: Any, conversation: Conversation) -> list[dict[str, str]]:
    """The conversation as the template's messages, the system instruction where it goes."""
    messages = [{"role": "assistant" if turn.role == MODEL else "user", "content": turn.text}
                for turn in conversation.turns]
    if conversation.system is None:
        return messages
    if _has_system_turn(tokenizer):
        return [{"role": "system", "content": conversation.system}, *messages]
    if messages:
        first = messages[0]["content"]
        messages[0] = {"role": "user", "content": conversation.system + SYSTEM_SEPARATOR + first}
    return messages


def _apply(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=generation,
                                         tokenize=False)


_PROBE = "\x1fjobspec system probe\x1f"
_SYSTEM_TURNS: dict[str, bool] = {}  # by template: whether it renders a system message


def _has_system_turn(tokenizer: Any) -> bool:
    """Whether the model's template renders a system message's text (some templates refuse
    the role, some drop it)."""
    template = tokenizer.chat_template
    if template not in _SYSTEM_TURNS:
        try:
            probe = _apply(tokenizer, [{"role": "system", "content": _PROBE},
                                       {"role": "user", "content": "x"}], generation=True)
        except Exception:  # noqa: BLE001 - a template that raises on the role has none
            probe = ""
        _SYSTEM_TURNS[template] = _PROBE in probe
    return _SYSTEM_TURNS[template]


def _templated(tokenizer: Any, conversation: Conversation, answer: bool) -> list[Segment]:
    messages = _messages(tokenizer, conversation)
    system_first = len(messages) - len(conversation.turns)  # 1 with a system message
    close = end_of_turn(tokenizer)
    segments: list[Segment] = []
    rendered = ""

    def context_up_to(position: int) -> None:
        """The template's text for the messages before ``position``, ending where the next
        model turn's text begins, as a context segment after what is rendered so far."""
        nonlocal rendered
        prefix = _apply(tokenizer, messages[:position], generation=True)
        if not prefix.startswith(rendered):
            raise UnsupportedTemplate(
                "this model's chat template renders the beginning of a conversation "
                "differently from the whole, so the local service cannot tell which of its "
                "tokens are a model turn's")
        segments.append(Segment(prefix[len(rendered):], False))
        rendered = prefix

    for index, turn in enumerate(conversation.turns):
        if turn.role != MODEL:
            continue
        context_up_to(system_first + index)
        segments.append(Segment(turn.text + close, turn.trained))
        rendered += turn.text + close
    if answer:
        context_up_to(len(messages))
    return segments


def _plain(tokenizer: Any, conversation: Conversation, answer: bool) -> list[Segment]:
    close = end_of_turn(tokenizer)
    segments: list[Segment] = []
    context = f"{conversation.system}\n" if conversation.system is not None else ""
    for turn in conversation.turns:
        if turn.role == USER:
            context += f"Input: {turn.text}\nOutput:"
            continue
        segments.append(Segment(context, False))
        segments.append(Segment(f" {turn.text}{close}", turn.trained))
        context = "\n"
    if answer:
        segments.append(Segment(context, False))
    return segments


def encode_segments(tokenizer: Any, segments: Sequence[Segment]) -> Encoded:
    """(input_ids, labels) of rendered segments, each tokenized on its own."""
    ids: list[int] = []
    labels: list[int] = []
    for segment in segments:
        if not segment.text:
            continue
        piece = tokenizer(segment.text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if segment.trained else [IGNORE_INDEX] * len(piece)
    return ids, labels


def encode_conversation(tokenizer: Any, conversation: Example, system: str | None = None,
                        chat: bool = True) -> Encoded:
    """(input_ids, labels) of a training conversation: labels on its trained model turns."""
    return encode_segments(tokenizer, render(tokenizer, as_conversation(conversation), system,
                                             chat))


def encode_example(tokenizer: Any, text_input: str, output: str,
                   system: str | None = None, chat: bool = True) -> Encoded:
    """(input_ids, labels) of a one-turn example; labels hide the prompt from the loss."""
    return encode_conversation(tokenizer, Conversation.one_turn(text_input, output), system,
                               chat)


def conversation_prompt_ids(tokenizer: Any, conversation: Conversation,
                            system: str | None = None, chat: bool = True) -> list[int]:
    """Token ids of a conversation that ends with a user turn, ending where the model's answer
    should begin: the history as training renders it, then the generation prompt."""
    ids, _ = encode_segments(tokenizer, render(tokenizer, conversation, system, chat,
                                               answer=True))
    return ids


def conversation_of_messages(messages: Sequence[Mapping[str, str]]) -> Conversation:
    """Chat messages (a first ``system``, then ``user`` / ``assistant``) as a conversation."""
    system = None
    turns = []
    for message in messages:
        if message["role"] == "system":
            system = message["content"]
        else:
            turns.append(Turn(MODEL if message["role"] == "assistant" else USER,
                              message["content"]))
    return Conversation(tuple(turns), system)


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]],
               system: str | None = None, chat: bool = True) -> list[int]:
    """Token ids of chat messages that end with a user turn, ending where the model's answer
    should begin (``conversation_prompt_ids`` of the messages)."""
    return conversation_prompt_ids(tokenizer, conversation_of_messages(messages), system, chat)


class EncodedExamples(Sequence[Encoded]):
    """``examples`` (conversations) as (input_ids, labels), each encoded when it is asked for:
    training takes a batch at a time, so the whole set is never held in tokens."""

    def __init__(self, examples: Sequence[Example],
                 encode: Callable[[Conversation], Encoded]) -> None:
        self._examples = examples
        self._encode = encode

    def __len__(self) -> int:
        return len(self._examples)

    @overload
    def __getitem__(self, index: int) -> Encoded: ...
    @overload
    def __getitem__(self, index: slice) -> list[Encoded]: ...

    def __getitem__(self, index: int | slice) -> Encoded | list[Encoded]:
        if isinstance(index, slice):
            return [self._encode(as_conversation(example))
                    for example in self._examples[index]]
        return self._encode(as_conversation(self._examples[index]))
