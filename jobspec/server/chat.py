"""Turning prompts and training examples into token ids, the same way for training and serving.

With a chat template (SmolLM2 has one) an example is a user turn and an assistant turn; the
loss is taken on the assistant's tokens and the end-of-turn token only. Models without a chat
template fall back to a plain "Input:/Output:" layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

IGNORE_INDEX = -100  # the label value PyTorch's cross-entropy skips


def with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    """The conversation under ``system`` when it has no system turn of its own (None: as the
    model's chat template lays it out, with whatever default system turn that adds)."""
    if system is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": system}, *messages]


def templated(tokenizer: Any, chat: bool = True) -> bool:
    """Whether prompts go through the model's chat template (``chat`` False: the plain layout
    even for a model that has one)."""
    return chat and bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]],
               system: str | None = None, chat: bool = True) -> list[int]:
    """Token ids of a conversation, ending where the model's answer should begin."""
    messages = with_system(messages, system)
    if templated(tokenizer, chat):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = "".join(f"{m['content']}\n" if m["role"] == "system" else
                       f"{'Input' if m['role'] == 'user' else 'Output'}: {m['content']}\n"
                       for m in messages) + "Output:"
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn(tokenizer: Any) -> str:
    if getattr(tokenizer, "chat_template", None) and _has_token(tokenizer, "<|im_end|>"):
        return "<|im_end|>"
    return tokenizer.eos_token or "\n"


def _has_token(tokenizer: Any, token: str) -> bool:
    # Not ``token in tokenizer.get_vocab()``: that copies the whole vocabulary (~20 ms for
    # SmolLM2's 49k tokens), once per example when training or measuring a job.
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


def encode_example(tokenizer: Any, text_input: str, output: str,
                   system: str | None = None, chat: bool = True) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example; labels hide the prompt from the loss."""
    prompt = prompt_ids(tokenizer, [{"role": "user", "content": text_input}], system, chat)
    prefix = "" if templated(tokenizer, chat) else " "
    answer = tokenizer(prefix + output + end_of_turn(tokenizer),
                       add_special_tokens=False)["input_ids"]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


Encoded = tuple[list[int], list[int]]


class EncodedExamples(Sequence[Encoded]):
    """``examples`` as (input_ids, labels), each encoded when it is asked for: training takes a
    batch at a time, so the whole set is never held in tokens."""

    def __init__(self, examples: Sequence[tuple[str, str]],
                 encode: Callable[[str, str], Encoded]) -> None:
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
            return [self._encode(*example) for example in self._examples[index]]
        return self._encode(*self._examples[index])
