"""Training examples measured in tokens when a job is created, with the base model's tokenizer.

An example longer than the model's context cannot be trained on, and one longer than a batch's
token cap could not be split to fit memory; both are refused at create time, with the example's
index, rather than discovered by a worker that runs out of memory three times. The HTTP process
loads only the tokenizer (a few MB), never the weights, and measures each example exactly as the
trainer encodes it (``chat.encode_conversation``): a conversation as its chat template renders it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..conversation import Conversation
from .chat import encode_conversation
from .models import ModelRegistry, load_tokenizer
from .recipe import RECIPE  # the layout the trainer encodes examples in


class Tokenizers:
    """One tokenizer per local model, loaded on first use and kept."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path) -> None:
        self.registry = registry
        self.cache_dir = cache_dir
        self._loaded: dict[str, Any] = {}
        self._loading = threading.Lock()
        # A fast tokenizer is not safe to call from two threads at once ("Already borrowed"):
        # requests run in a threadpool, so each measurement holds its tokenizer's lock.
        self._in_use: dict[str, threading.Lock] = {}
        self._digests: dict[str, str] = {}

    def get(self, model_id: str) -> Any:
        with self._loading:
            if model_id not in self._loaded:
                self._loaded[model_id] = load_tokenizer(self.registry.models[model_id],
                                                        self.cache_dir)
                self._in_use[model_id] = threading.Lock()
            return self._loaded[model_id]

    @contextmanager
    def using(self, model_id: str) -> Iterator[Any]:
        """The model's tokenizer, for this caller alone while the block runs."""
        tokenizer = self.get(model_id)
        with self._in_use[model_id]:
            yield tokenizer

    def digest(self, model_id: str) -> str:
        """What decides how the model's examples are encoded for training (its tokenizer, and
        the layout the trainer puts examples in), as a SHA-256: equal digests, equal counts."""
        with self.using(model_id) as tokenizer:
            if model_id not in self._digests:
                self._digests[model_id] = _encoding_digest(tokenizer)
            return self._digests[model_id]

    def first_too_long(self, model_id: str, examples: Iterable[Conversation],
                       limit: int) -> tuple[int, int] | None:
        """(index, token count) of the first example over ``limit`` tokens; None if none is."""
        with self.using(model_id) as tokenizer:
            for index, conversation in enumerate(examples):
                ids, _ = encode_as_trained(tokenizer, conversation)
                if len(ids) > limit:
                    return index, len(ids)
        return None


def encode_as_trained(tokenizer: Any, conversation: Conversation) -> tuple[list[int], list[int]]:
    """(token ids, labels) of an example, laid out as the trainer's recipe lays it out."""
    return encode_conversation(tokenizer, conversation, RECIPE.system_prompt,
                               RECIPE.chat_template)


def _encoding_digest(tokenizer: Any) -> str:
    import tokenizers  # noqa: PLC0415 - loaded with the tokenizer already
    import transformers  # noqa: PLC0415

    backend = getattr(tokenizer, "backend_tokenizer", None)
    # A fast tokenizer serialises its whole pipeline (normaliser, vocabulary, merges, added
    # tokens); a slow one is described by its vocabulary.
    pipeline = backend.to_str() if backend is not None else json.dumps(
        sorted(tokenizer.get_vocab().items()))
    described = {
        "pipeline": hashlib.sha256(pipeline.encode("utf-8")).hexdigest(),
        "class": type(tokenizer).__name__,
        "chat_template": getattr(tokenizer, "chat_template", None),
        "special_tokens": tokenizer.special_tokens_map,
        "layout": {"system_prompt": RECIPE.system_prompt, "chat_template": RECIPE.chat_template},
        "libraries": [transformers.__version__, tokenizers.__version__],
    }
    text = json.dumps(described, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
