"""Generation on base models and on tuned models (base + LoRA adapter), with an adapter cache.

One copy of each base model is loaded; adapters are attached to it by name and switched per
request, so a tuned model costs its adapter's few MB, not another base model. The least recently
used adapters are dropped past ``max_adapters``.
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conversation import Conversation
from .chat import conversation_prompt_ids, end_of_turn
from .models import ModelRegistry, load_base

DEFAULT_MAX_OUTPUT_TOKENS = 256


class PromptTooLong(Exception):
    """A prompt that leaves no room in the model's context for even one token of answer."""

    def __init__(self, prompt_tokens: int, context: int, model_id: str) -> None:
        self.args_given = (prompt_tokens, context, model_id)  # to make it again elsewhere
        super().__init__(f"The input token count ({prompt_tokens}) exceeds the maximum number of "
                         f"tokens allowed ({context - 1}): models/{model_id} has a context of "
                         f"{context} tokens, the prompt included, and its answer needs at "
                         "least one.")


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 0.0
    top_p: float | None = None
    top_k: int | None = None
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS
    stop_sequences: tuple[str, ...] = ()
    candidate_count: int = 1
    seed: int | None = None


@dataclass(frozen=True)
class Candidate:
    text: str
    finish_reason: str  # STOP or MAX_TOKENS
    token_count: int


@dataclass(frozen=True)
class Generation:
    candidates: list[Candidate]
    prompt_token_count: int


@dataclass(frozen=True)
class Adapter:
    """A tuned model's adapter as generation loads it: the model, the operation that trained it
    (which names it uniquely) and the folder it is in."""

    model_id: str
    operation_id: str
    folder: Path

    @property
    def name(self) -> str:
        return f"op_{self.operation_id}"


@dataclass
class _Loaded:
    network: Any
    tokenizer: Any
    peft: Any = None  # the PeftModel wrapping network, once an adapter is attached
    adapters: OrderedDict[str, str] = field(default_factory=OrderedDict)  # name → its model id


class Generator:
    """Generation in this process. ``models_dir``: where GGUF models' conversions are kept."""

    def __init__(self, registry: ModelRegistry, models_dir: Path, max_adapters: int = 8) -> None:
        self.registry = registry
        self.models_dir = models_dir
        self.max_adapters = max_adapters
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()  # one generation at a time: the model is shared

    def context_length(self, local_model: str) -> int:
        return int(getattr(self._model(local_model).network.config, "max_position_embeddings", 2048))

    def _model(self, local_model: str) -> _Loaded:
        if local_model not in self._loaded:
            network, tokenizer = load_base(self.registry.models[local_model], self.models_dir)
            self._loaded[local_model] = _Loaded(network, tokenizer)
        return self._loaded[local_model]

    def _select_adapter(self, loaded: _Loaded, adapter: Adapter) -> Any:
        from peft import PeftModel  # noqa: PLC0415

        if loaded.peft is None:
            loaded.peft = PeftModel.from_pretrained(loaded.network, adapter.folder,
                                                    adapter_name=adapter.name)
        elif adapter.name not in loaded.adapters:
            loaded.peft.load_adapter(adapter.folder, adapter_name=adapter.name)
        loaded.adapters[adapter.name] = adapter.model_id
        loaded.adapters.move_to_end(adapter.name)
        loaded.peft.set_adapter(adapter.name)
        while len(loaded.adapters) > self.max_adapters:
            oldest = next(iter(loaded.adapters))
            loaded.adapters.pop(oldest)
            loaded.peft.delete_adapter(oldest)
        return loaded.peft

    def forget_model(self, model_id: str) -> None:
        """Drop the adapters of ``model_id`` from memory: the tuned model was deleted."""
        with self._lock:
            for loaded in self._loaded.values():
                for name in [n for n, owner in loaded.adapters.items() if owner == model_id]:
                    loaded.adapters.pop(name)
                    loaded.peft.delete_adapter(name)
                if loaded.peft is not None and not loaded.adapters:
                    # PEFT cannot disable adapters it no longer has: the base model gets its
                    # own layers back, and the next adapter wraps it again.
                    loaded.network, loaded.peft = loaded.peft.unload(), None

    def generate(self, local_model: str, conversation: Conversation,
                 settings: GenerationSettings, adapter: Adapter | None = None,
                 layout: dict[str, Any] | None = None) -> Generation:
        """Answer ``conversation`` (its system instruction and turns, ending with the user's)
        with the base model, or with ``adapter`` laid out as it was trained (``layout``,
        recorded beside the adapter; None: the model's chat template, as adapters made before
        layouts were recorded were trained). The prompt is rendered as training renders a
        conversation (chat.py)."""
        import torch  # noqa: PLC0415

        with self._lock:
            loaded = self._model(local_model)
            tokenizer = loaded.tokenizer
            ids = conversation_prompt_ids(tokenizer, conversation,
                                          (layout or {}).get("system_prompt"),
                                          (layout or {}).get("chat_template", True))
            window = self.context_length(local_model)
            # maxOutputTokens is a cap, not a reservation: the answer gets what the prompt
            # leaves of the context window, up to the cap.
            max_new_tokens = min(settings.max_output_tokens, window - len(ids))
            if max_new_tokens < 1:
                raise PromptTooLong(len(ids), window, local_model)
            if adapter is not None:
                model = self._select_adapter(loaded, adapter)
                context = nullcontext()
            elif loaded.peft is not None:
                model, context = loaded.peft, loaded.peft.disable_adapter()
            else:
                model, context = loaded.network, nullcontext()
            stop_ids = {tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))}
            if tokenizer.eos_token_id is not None:
                stop_ids.add(tokenizer.eos_token_id)
            sample = settings.temperature > 0
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens, "do_sample": sample,
                "eos_token_id": sorted(stop_ids),
                "pad_token_id": tokenizer.pad_token_id or sorted(stop_ids)[0],
            }
            if sample:
                kwargs.update(temperature=settings.temperature,
                              num_return_sequences=settings.candidate_count,
                              top_p=settings.top_p if settings.top_p is not None else 1.0,
                              top_k=settings.top_k if settings.top_k is not None else 0)
                if settings.seed is not None:
                    torch.manual_seed(settings.seed)
            else:  # greedy; transformers warns about sampling knobs, so leave them unset
                kwargs.update(temperature=None, top_p=None, top_k=None)
            device = next(model.parameters()).device
            inputs = torch.tensor([ids], device=device)
            with context, torch.inference_mode():
                output = model.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs),
                                        **kwargs)
            sequences = [row[len(ids):].tolist() for row in output]
            if not sample:  # greedy answers are all the same
                sequences = sequences[:1] * settings.candidate_count
            candidates = [self._candidate(tokenizer, seq, stop_ids, settings, max_new_tokens)
                          for seq in sequences]
            return Generation(candidates, len(ids))

    @staticmethod
    def _candidate(tokenizer: Any, new_ids: list[int], stop_ids: set[int],
                   settings: GenerationSettings, max_new_tokens: int) -> Candidate:
        """MAX_TOKENS when the answer was cut at max_new_tokens (the cap, or the end of the
        context), STOP when it ended or met a stop sequence."""
        stopped = False
        for position, token in enumerate(new_ids):
            if token in stop_ids:
                new_ids, stopped = new_ids[:position], True
                break
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        for stop in settings.stop_sequences:
            cut = text.find(stop)
            if cut >= 0:
                text, stopped = text[:cut], True
        finish = "STOP" if stopped or len(new_ids) < max_new_tokens else "MAX_TOKENS"
        return Candidate(text.strip(), finish, len(new_ids))
