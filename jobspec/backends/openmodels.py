"""Open base models: how a job names one, and what each backend knows of them.

A job names an open model once, by its Hugging Face id (``meta-llama/Llama-3.1-8B-Instruct``,
``Qwen/Qwen3-8B``), and each backend maps that one name to its own:

* local: the local service serves Hugging Face models and matches the id against the models it
  serves (it answers 404 naming the model when it serves no such model), so any id passes here;
* vertex: Vertex AI's managed open-model tuning takes the models in ``VERTEX_OPEN_MODELS``, each
  under Vertex's own publisher-model name, in the tuning modes and regions Vertex publishes;
* gemini: the Gemini API tunes no open model.

Everything here comes from jobspec/backends/reference/vertex-open-models.md, which names its
sources; change the two together.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

LORA, FULL = "lora", "full"
TUNING_MODES = (LORA, FULL)  # the job file's `tuning_mode`; unset: spec.DEFAULT_TUNING_MODE
# supervisedTuningSpec.tuningMode (python-genai types.TuningMode, v1beta1).
VERTEX_TUNING_MODES = {LORA: "TUNING_MODE_PEFT_ADAPTER", FULL: "TUNING_MODE_FULL"}
MODE_NAMES = {LORA: "LoRA (parameter-efficient)", FULL: "full fine-tuning"}

# "Tune an open model", supported regions (the newest revision of the page lists five).
VERTEX_OPEN_MODEL_REGIONS = ("us-central1", "europe-west4", "us-west1", "us-east5",
                             "asia-southeast1")

# A Hugging Face repository id: owner/name, each letters, digits, "-", "_" and ".". The Gemini
# API's `models/x` and `tunedModels/x` have that shape too, and are the services' own names.
_HF_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")
_SERVICE_PREFIXES = ("models/", "tunedModels/")


@dataclass(frozen=True)
class VertexOpenModel:
    """One open model Vertex AI tunes: its Hugging Face id, Vertex's name for it, and, for each
    tuning mode it is offered in, the longest sequence Vertex trains on (None: the stored
    sources do not say)."""

    hf_id: str
    vertex_name: str  # {publisher}/{model}@{version}, supervised tuning's baseModel
    display_name: str
    max_sequence_length: Mapping[str, int | None]

    @property
    def modes(self) -> tuple[str, ...]:
        return tuple(mode for mode in TUNING_MODES if mode in self.max_sequence_length)

    @property
    def longest_sequence(self) -> int | None:
        """The longest sequence Vertex trains the model on in any mode (None: not known)."""
        known = [n for n in self.max_sequence_length.values() if n is not None]
        return max(known) if known else None


def _model(hf_id: str, vertex_name: str, display_name: str, **lengths: int | None
           ) -> VertexOpenModel:
    return VertexOpenModel(hf_id, vertex_name, display_name, lengths)


VERTEX_OPEN_MODELS = (
    _model("google/gemma-3-1b-it", "google/gemma3@gemma-3-1b-it", "Gemma 3 1B IT", full=8192),
    _model("google/gemma-3-4b-it", "google/gemma3@gemma-3-4b-it", "Gemma 3 4B IT", full=8192),
    _model("google/gemma-3-12b-it", "google/gemma3@gemma-3-12b-it", "Gemma 3 12B IT",
           full=8192),
    _model("google/gemma-3-27b-it", "google/gemma3@gemma-3-27b-it", "Gemma 3 27B IT",
           lora=8192, full=8192),
    _model("meta-llama/Llama-3.1-8B", "meta/llama3_1@llama-3.1-8b", "Llama 3.1 8B",
           lora=4096, full=8192),
    _model("meta-llama/Llama-3.1-8B-Instruct", "meta/llama3_1@llama-3.1-8b-instruct",
           "Llama 3.1 8B Instruct", lora=4096, full=8192),
    _model("meta-llama/Llama-3.2-1B-Instruct", "meta/llama3-2@llama-3.2-1b-instruct",
           "Llama 3.2 1B Instruct", full=8192),
    _model("meta-llama/Llama-3.2-3B-Instruct", "meta/llama3-2@llama-3.2-3b-instruct",
           "Llama 3.2 3B Instruct", full=None),
    _model("meta-llama/Llama-3.3-70B-Instruct", "meta/llama3-3@llama-3.3-70b-instruct",
           "Llama 3.3 70B Instruct", lora=None, full=None),
    _model("meta-llama/Llama-4-Scout-17B-16E-Instruct",
           "meta/llama4@llama-4-scout-17b-16e-instruct", "Llama 4 Scout 17B 16E Instruct",
           lora=None),
    _model("Qwen/Qwen3-4B", "qwen/qwen3@qwen3-4b", "Qwen 3 4B", full=None),
    _model("Qwen/Qwen3-8B", "qwen/qwen3@qwen3-8b", "Qwen 3 8B", full=None),
    _model("Qwen/Qwen3-14B", "qwen/qwen3@qwen3-14b", "Qwen 3 14B", full=None),
    _model("Qwen/Qwen3-32B", "qwen/qwen3@qwen3-32b", "Qwen 3 32B", lora=None, full=None),
)
_BY_HF_ID = {model.hf_id: model for model in VERTEX_OPEN_MODELS}
_BY_VERTEX_NAME = {model.vertex_name: model for model in VERTEX_OPEN_MODELS}


def is_open_model(name: str) -> bool:
    """Whether ``name`` is a Hugging Face id (owner/name), not a service's own model name."""
    return bool(_HF_ID.fullmatch(name)) and not name.startswith(_SERVICE_PREFIXES)


def vertex_open_model(hf_id: str) -> VertexOpenModel | None:
    """The open model Vertex AI tunes under the Hugging Face id ``hf_id``, if it tunes it."""
    return _BY_HF_ID.get(hf_id)


def from_vertex_name(name: str) -> VertexOpenModel | None:
    """The open model Vertex calls ``name`` (``meta/llama3_1@llama-3.1-8b``, or the long form
    ``publishers/meta/models/llama3_1@llama-3.1-8b``)."""
    found = re.fullmatch(r"publishers/([^/]+)/models/([^/]+)", name)
    return _BY_VERTEX_NAME.get(f"{found[1]}/{found[2]}" if found else name)


def closest_vertex_models(name: str) -> list[str]:
    """The Hugging Face ids of the models Vertex tunes that ``name`` may have meant: the same
    id spelled in another case, else the nearest spellings."""
    same = [m.hf_id for m in VERTEX_OPEN_MODELS if m.hf_id.lower() == name.lower()]
    return same or difflib.get_close_matches(name, list(_BY_HF_ID), n=2, cutoff=0.75)


def vertex_model_list() -> str:
    """The models Vertex tunes, for messages: each id with the modes it is offered in."""
    return ", ".join(f"{m.hf_id} ({'/'.join(m.modes)})" for m in VERTEX_OPEN_MODELS)
