"""What the service, not the job, decides about training: one ``Recipe``.

The prompt layout, the LoRA shape, the learning-rate schedule, the optimiser's groups and the
precision. ``RECIPE`` is what the service trains with; each of its values was chosen by
bench/tuning_quality.py (the figures are here and in the README). ``LEGACY_RECIPE`` is what the
service did before issue 10, kept for that benchmark. A layout is recorded beside each adapter
(``write_layout``) so a tuned model is asked the way it was trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SEED = 0
LAYOUT_FILE = "jobspec_layout.json"  # written beside a published adapter


@dataclass(frozen=True)
class Recipe:
    """How the service trains, whatever the job: each field is measured by
    bench/tuning_quality.py (``--set NAME=VALUE``)."""

    # The system turn every example is trained under (and a tuned model is asked under, when a
    # request gives none). None: the base model's chat template as it is (SmolLM2's inserts
    # "You are a helpful AI assistant named SmolLM, trained by Hugging Face").
    system_prompt: str | None = None
    chat_template: bool = True  # False: the plain "Input: ... Output:" layout instead
    rank: int = 8
    alpha: float = 16.0
    targets: str = "all-linear"  # or comma-separated module names, e.g. "q_proj,v_proj"
    rslora: bool = False  # scale by alpha / sqrt(rank) instead of alpha / rank
    dora: bool = False
    dropout: float = 0.0
    schedule: str = "constant"  # constant, linear or cosine (to zero at the last step)
    warmup: float = 0.0  # fraction of the steps over which the rate rises linearly from zero
    weight_decay: float = 0.01  # AdamW's default
    precision: str = "fp32"  # fp32; bf16 (autocast, fp32 master weights); auto: bf16 where fast
    neftune: float = 0.0  # NEFTune noise on the input embeddings while training (alpha; 0: off)
    loraplus: float = 1.0  # LoRA+ (Hayou et al. 2024): the B matrices learn this many times faster
    label_smoothing: float = 0.0  # on the training loss only (validation loss stays plain)
    seed: int = SEED  # LoRA initialisation (and NEFTune noise)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_settings(self, settings: list[str]) -> Recipe:
        """This recipe with ``NAME=VALUE`` settings applied (the benchmarks' ``--set``); a value
        is read as an int, a float, true/false/none, or else a string."""
        changes: dict[str, Any] = {}
        names = {f.name for f in dataclasses.fields(self)}
        for item in settings:
            name, _, text = item.partition("=")
            if name not in names:
                raise ValueError(f"{item}: a Recipe has no field {name!r} (it has "
                                 f"{', '.join(sorted(names))})")
            changes[name] = _setting_value(text)
        return dataclasses.replace(self, **changes)


def _setting_value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


LEGACY_RECIPE = Recipe()
# Measured by bench/tuning_quality.py on the shipped number-generator job (49 probes in 7
# notations the examples never show; mean exact over LoRA seeds 0, 1, 2; base model 0/49):
#   legacy (constant rate)            11.3/49 (23.1%)   cosine, no warm-up     13.0 (26.5%)
#   cosine, 10% linear warm-up        17.0/49 (34.7%)   ... 20% warm-up        11.3 (23.1%)
#   ... 5% warm-up                    14.0 (28.6%)      ... 15% warm-up        12.7 (25.9%)
#   linear decay, 10% warm-up         16.7 (34.0%)      ... + alpha 8          11.0 (22.4%)
#   ... + alpha 32                    15.3 (31.3%)      ... + MLP-only LoRA    13.0 (26.5%)
#   ... + LoRA dropout 0.1            17.0 (34.7%), 1.4x the time
#   ... + plain Input:/Output: layout 12.7 (25.9%)      ... + empty system turn 8 (seed 0)
#   ... + rank 16, alpha 32           16 (seed 0)       ... + DoRA             16 (seed 0), slower
#   legacy + rsLoRA 10, NEFTune 5: 9, bf16 autocast: 9 (seed 0; bf16 5x slower on this CPU)
#   on RECIPE, seed 0 (RECIPE itself: 16): LoRA+ 4: 15, LoRA+ 16: 4, attention-only LoRA: 14,
#   rank 4 alpha 8: 12, label smoothing 0.1: 15, weight decay 0.1: 16, LoRA on the upper 15
#   layers only: 10, on the lower 15 only: 17, 18, 16 over seeds 0-2 (34.7%, no gain); IA3 in
#   place of LoRA: 9; the loss on the whole sequence, prompt included: 7; PiSSA / OLoRA
#   initialisation (adapters converted for the unchanged base): 12 / 4. Few-shot prompting of
#   the base model with the 15 examples as earlier turns (no tuning): 2; the base model told the
#   task in a system turn (--base-system): 0 exact, 2 holding the answer in a longer reply.
#   Fewer adapters train faster (bench/local_tuning.py --only flops --set ...): LoRA on q, v only
#   reaches 0.43 of the matmul peak (vs 0.33-0.36) but 13.0 of 49 (26.5%); attention + down_proj
#   at rank 16, alpha 32: 17.0 (34.7%), 0.37 of the peak, but the example jobs' own eval prompts
#   pass 13 of 19 instead of 16. Neither taken.
RECIPE = Recipe(schedule="cosine", warmup=0.1, precision="auto")


def lora_config(recipe: Recipe) -> Any:
    from peft import LoraConfig  # noqa: PLC0415

    targets: Any = recipe.targets if recipe.targets == "all-linear" else \
        [t.strip() for t in recipe.targets.split(",") if t.strip()]
    return LoraConfig(r=recipe.rank, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                      target_modules=targets, use_rslora=recipe.rslora, use_dora=recipe.dora,
                      task_type="CAUSAL_LM")


def _fast_bf16(device: str) -> bool:
    import torch  # noqa: PLC0415

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    try:  # AVX-512 BF16 or AMX: oneDNN runs bf16 matmuls natively
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def precision_for(recipe: Recipe, device: str) -> str:
    """``auto``: bf16 on a GPU that has it; fp32 on a CPU (measured on this project's 2-core
    Xeon with AMX: bf16 autocast made the shipped job's steps slower, not faster)."""
    if recipe.precision == "auto":
        return "bf16" if device.startswith("cuda") and _fast_bf16(device) else "fp32"
    return recipe.precision


def schedule(recipe: Recipe, total: int) -> Callable[[int], float]:
    warmup = int(round(recipe.warmup * total))

    def factor(done: int) -> float:  # ``done`` steps taken before this one
        if done < warmup:
            return (done + 1) / (warmup + 1)
        if recipe.schedule == "constant" or total <= warmup:
            return 1.0
        progress = (done - warmup) / max(1, total - warmup)
        if recipe.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if recipe.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        raise ValueError(f"unknown schedule {recipe.schedule!r}")

    return factor


def parameter_groups(params: dict[str, Any], recipe: Recipe,
                     learning_rate: float) -> list[dict[str, Any]]:
    """AdamW's groups: no weight decay on vectors (DoRA's magnitudes); with LoRA+ the B
    matrices at ``recipe.loraplus`` times the rate."""
    groups = []
    for decayed in (True, False):
        for fast in (False, True):
            chosen = [p for n, p in params.items() if (p.ndim >= 2) == decayed
                      and (".lora_B." in n and recipe.loraplus != 1.0) == fast]
            if chosen:
                groups.append({"params": chosen, "lr": learning_rate * (
                    recipe.loraplus if fast else 1.0),
                    "weight_decay": recipe.weight_decay if decayed else 0.0})
    return groups


def write_layout(folder: Path, recipe: Recipe) -> None:
    """Record beside an adapter how its prompts were laid out, so that it is asked the same
    way (adapters from before have no record: they were trained on the model's template)."""
    (folder / LAYOUT_FILE).write_text(json.dumps({"system_prompt": recipe.system_prompt,
                                                  "chat_template": recipe.chat_template}))


def read_layout(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / LAYOUT_FILE).read_text())
    except (OSError, ValueError):
        return None
