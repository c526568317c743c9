"""fake_vertex's open models: what Vertex AI's managed tuning of open models accepts and refuses,
as jobspec/backends/reference/vertex-open-models.md states it (its sources in brackets below).

Written from the reference, not from jobspec's table (jobspec/backends/openmodels.py), so that
a wrong name or mode in jobspec's table fails a test instead of agreeing with itself.

* v1beta1's TuningJob adds ``outputUri``, ``customBaseModel`` (not modelled),
  ``supervisedTuningSpec.tuningMode`` and ``hyperParameters.learningRate`` / ``batchSize`` to
  v1's (§4); on v1 they are unknown names.
* ``check_create``: the service's checks of a create (§7), 400 INVALID_ARGUMENT each.
* ``data_stats``: SupervisedTuningDataStats of an open model's training file, which is JSONL of
  the chat form ``{"messages": [...]}`` or the instruction form ``{"prompt", "completion"}``
  (§5); another line fails the job, as for Gemini jobs.
"""

from __future__ import annotations

import json
import re

from tests.fake_gcs import Reply, google_error

# §2: Vertex's name -> the tuningMode values it is offered in ([SKILL] models.md).
PEFT, FULL = "TUNING_MODE_PEFT_ADAPTER", "TUNING_MODE_FULL"
TUNING_MODES = ("TUNING_MODE_UNSPECIFIED", FULL, PEFT)  # [GENAI] types.TuningMode
OPEN_MODELS = {
    "google/gemma3@gemma-3-1b-it": {FULL}, "google/gemma3@gemma-3-4b-it": {FULL},
    "google/gemma3@gemma-3-12b-it": {FULL}, "google/gemma3@gemma-3-27b-it": {PEFT, FULL},
    "meta/llama3_1@llama-3.1-8b": {PEFT, FULL}, "meta/llama3_1@llama-3.1-8b-instruct": {PEFT, FULL},
    "meta/llama3-2@llama-3.2-1b-instruct": {FULL}, "meta/llama3-2@llama-3.2-3b-instruct": {FULL},
    "meta/llama3-3@llama-3.3-70b-instruct": {PEFT, FULL},
    "meta/llama4@llama-4-scout-17b-16e-instruct": {PEFT},
    "qwen/qwen3@qwen3-4b": {FULL}, "qwen/qwen3@qwen3-8b": {FULL}, "qwen/qwen3@qwen3-14b": {FULL},
    "qwen/qwen3@qwen3-32b": {PEFT, FULL}}
REGIONS = ("us-central1", "europe-west4", "us-west1", "us-east5", "asia-southeast1")  # §3
INVALID_NAME = "Invalid open source publisher model resource name"  # §1, [SKILL] models.md
OPEN_ONLY = {"learningRate": "hyperParameters.learningRate", "batchSize": "hyperParameters.batchSize"}


def open_model(base_model: str) -> str | None:
    """Vertex's short name for ``base_model`` (either form, §1), if it is an open model."""
    found = re.fullmatch(r"publishers/([^/]+)/models/([^/]+)", base_model)
    name = f"{found[1]}/{found[2]}" if found else base_model
    return name if name in OPEN_MODELS else None


def check_create(job: dict, location: str, buckets: set[str]) -> Reply | None:
    """The service's checks of a parsed create (§7); None when it passes them."""
    base_model, spec = job.get("baseModel", ""), job.get("supervisedTuningSpec", {})
    hyper, model = spec.get("hyperParameters", {}), open_model(job.get("baseModel", ""))
    if model is None:  # a Gemini model, or no model Vertex knows
        if "/" in base_model and not base_model.startswith("models/"):  # publisher/model
            return google_error(400, f"{INVALID_NAME}: {base_model}")
        given = [f"supervisedTuningSpec.{OPEN_ONLY[key]}" for key in OPEN_ONLY if key in hyper]
        given += ["supervisedTuningSpec.tuningMode"] * ("tuningMode" in spec)
        given += ["outputUri"] * ("outputUri" in job)
        if given:
            return google_error(400, f"{', '.join(given)} is only available for open source "
                                     f"models, not {base_model}.")
        return None
    if location not in REGIONS:
        return google_error(400, f"Open model tuning is not supported in {location}; supported "
                                 f"regions: {', '.join(REGIONS)}.")
    mode = spec.get("tuningMode", "TUNING_MODE_UNSPECIFIED")
    if mode not in OPEN_MODELS[model]:
        offered = " or ".join(sorted(OPEN_MODELS[model]))
        return google_error(400, f"Tuning mode {mode} is not supported for {model}; use {offered}.")
    if "learningRateMultiplier" in hyper:
        return google_error(400, "supervisedTuningSpec.hyperParameters.learningRateMultiplier "
                                 f"is only available for 1P models, not {model}.")
    if "adapterSize" in hyper and mode == FULL:
        return google_error(400, "The adapter size is not supported for TUNING_MODE_FULL.")
    output = re.fullmatch(r"gs://([^/]+)/.*", job.get("outputUri", ""))
    if output is None:
        return google_error(400, f"outputUri is required for open source models ({model}): a "
                                 "gs://BUCKET/PATH directory.")
    if output[1] not in buckets:
        return google_error(400, f"outputUri {job['outputUri']}: the bucket {output[1]} does "
                                 "not exist.")
    return None


def _text(example: dict) -> str:
    if "messages" in example:
        messages = example["messages"]
        roles = [m["role"] for m in messages]
        if not roles or roles[-1] != "assistant" or \
                set(roles) - {"system", "user", "assistant"} or "user" not in roles:
            raise ValueError("the messages must hold a user turn and end with the assistant's")
        return "".join(m["content"] for m in messages)
    if set(example) == {"prompt", "completion"}:
        return example["prompt"] + example["completion"]
    raise KeyError("messages")


def data_stats(data: bytes, epochs: int) -> tuple[dict | None, str | None]:
    """SupervisedTuningDataStats of an open model's training file (characters counted as the
    Gemini path counts them, four a token), or why Vertex would fail the job."""
    examples = characters = billable_tokens = 0
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        return None, "The training dataset is not UTF-8 text."
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            count = len(_text(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None, (f"Invalid training example at line {number}: expected a JSON object "
                          'with messages[] of {role, content}, or {"prompt", "completion"}.')
        examples, characters = examples + 1, characters + count
        billable_tokens += -(-count // 4)
    if not examples:
        return None, "The training dataset has no examples."
    return {"tuningDatasetExampleCount": str(examples),
            "totalTuningCharacterCount": str(characters),
            "totalBillableCharacterCount": str(characters),
            "totalBillableTokenCount": str(billable_tokens),
            "tuningStepCount": str(examples * epochs)}, None
