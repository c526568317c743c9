"""Vertex AI's managed tuning of open models (jobspec/backends/reference/vertex-open-models.md):
what a job that names an open model must be to go to Vertex, and the TuningJob it creates.

The job is created, polled, adopted, cancelled and pruned as a Gemini job is (vertex.py); what
differs is the create: Vertex's name for the model as ``baseModel``, ``supervisedTuningSpec.
tuningMode``, the open models' hyperparameters (``learningRate`` and ``batchSize``, which Vertex
takes for open models only, and no ``learningRateMultiplier``, which it takes for Gemini models
only), the ``outputUri`` it writes the tuned weights under (required for open models), all of
them in v1beta1's TuningJob, and the training file in the chat form open models read (one
``{"messages": [...]}`` per example).
"""

from __future__ import annotations

import json
from typing import Any

from .. import conversation
from ..errors import ConfigError
from ..identity import Identity
from ..spec import Job
from .gcs import StagingBucket
from .openmodels import (FULL, LORA, MODE_NAMES, VERTEX_OPEN_MODEL_REGIONS, VERTEX_TUNING_MODES,
                         closest_vertex_models, vertex_model_list, vertex_open_model)
from . import tuningjobs
from .tuningjobs import ADAPTER_SIZES

# learningRate, batchSize, tuningMode and outputUri are v1beta1's (reference §3 and python-genai,
# which creates every tuning job there); gets, lists and cancels stay on v1, as for Gemini jobs.
CREATE_VERSION = "v1beta1"
OUTPUT_PREFIX = "jobspec/output/{fingerprint}/"  # in the staging bucket (and its prefix)


def check_job(job: Job) -> list[ConfigError]:
    """What Vertex AI does not take of a job naming an open model (a Hugging Face id), each at
    its line: a model it does not tune, a tuning mode the model is not offered in, a Gemini
    model's hyperparameter, an adapter size without an adapter, a region it does not tune open
    models in."""
    model = vertex_open_model(job.base_model)
    if model is None:
        close = closest_vertex_models(job.base_model)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        return [ConfigError(job.at("base_model"), (
            f"Vertex AI does not tune {job.base_model}{hint}; the open models it tunes, by "
            f"Hugging Face id, are: {vertex_model_list()}. To tune {job.base_model}, use the "
            "local backend, which tunes the Hugging Face models it serves"))]
    problems, given = [], job.hyperparameters.given
    mode = job.tuning_mode_or_default
    if mode not in model.modes:
        offered = " and ".join(MODE_NAMES[m] for m in model.modes)
        fix = (f"set tuning_mode: {model.modes[0]}" if job.tuning_mode is None
               else f"use tuning_mode: {model.modes[0]}")
        problems.append(ConfigError(job.at("tuning_mode" if job.tuning_mode else "base_model"), (
            f"Vertex AI tunes {model.hf_id} with {offered} only, not "
            f"{MODE_NAMES[mode]}{'' if job.tuning_mode else ' (the default tuning_mode)'}; "
            f"{fix}")))
    if "learning_rate_multiplier" in given:
        problems.append(ConfigError(job.at("hyperparameters", "learning_rate_multiplier"), (
            "Vertex AI takes a learning rate multiplier for Gemini models only; for an open "
            "model give learning_rate (an absolute rate), or leave both out for Vertex's "
            "default")))
    if "adapter_size" in given and mode == FULL:
        problems.append(ConfigError(job.at("hyperparameters", "adapter_size"), (
            "an adapter size is a LoRA adapter's rank, and full fine-tuning trains no adapter; "
            "remove adapter_size, or use tuning_mode: lora")))
    if job.early_stopping is not None:
        problems.append(ConfigError(job.at("early_stopping"), (
            "Vertex AI has no early stopping (its validation loss is only measured); remove "
            "early_stopping, or tune on the local backend")))
    if job.eval is not None and job.eval.compare_base:
        field = "require_improvement" if job.eval.require_improvement else "compare_base"
        problems.append(ConfigError(job.at("eval", field), (
            f"{field} asks the base model too, and Vertex AI serves an open base model only "
            "once it is deployed as well, which jobspec does not do; remove it (eval.deploy "
            "deploys the tuned model only)")))
    location = job.backend.location if job.backend is not None else None
    if location and location not in VERTEX_OPEN_MODEL_REGIONS:
        problems.append(ConfigError(job.at("backend", "location"), region_problem(location)))
    return problems


def region_problem(location: str) -> str:
    return (f"Vertex AI tunes open models in {', '.join(VERTEX_OPEN_MODEL_REGIONS)} only, not "
            f"{location}")


def refuse_full_tuning(job: Job) -> list[ConfigError]:
    """Vertex AI tunes a Gemini model with an adapter (its adapterSize); it offers full
    fine-tuning for some open models only."""
    if job.tuning_mode != FULL:
        return []
    return [ConfigError(job.at("tuning_mode"), (
        f"Vertex AI tunes Gemini models with an adapter (LoRA) only; full fine-tuning is for "
        f"some open models (by Hugging Face id: {vertex_model_list()}); use tuning_mode: "
        f"{LORA}, or leave it out"))]


def refuse_deployment(job: Job) -> list[ConfigError]:
    """Vertex AI serves a tuned Gemini model on the endpoint its tuning job made; only a
    tuned open model needs deploying (``eval.deploy``)."""
    if job.eval is None or job.eval.deploy is None:
        return []
    return [ConfigError(job.at("eval", "deploy"), (
        f"Vertex AI serves a tuned Gemini model ({job.base_model}) on the endpoint its tuning "
        "job makes; eval.deploy is for an open model (by Hugging Face id), which Vertex serves "
        "only once deployed: remove it"))]


def messages_line(chat: conversation.Conversation) -> bytes:
    """One training example in the chat form Vertex's open-model tuning reads (its system
    instruction as the first message), compact UTF-8, newline-terminated."""
    return (json.dumps(conversation.to_messages(chat), ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


def output_uri(bucket: StagingBucket, identity: Identity) -> str:
    """Where the tuning job writes the tuned model, named by the job's fingerprint."""
    return bucket.uri(bucket.object_name(OUTPUT_PREFIX.format(fingerprint=identity.fingerprint)))


def applied_hyperparameters(job: Job) -> dict[str, Any]:
    """What Vertex applies of the job's settings for an open model (plan shows them and
    compares them with a job's earlier model): what the job file gives, Vertex chooses the
    rest."""
    hp, given = job.hyperparameters, job.hyperparameters.given
    applied: dict[str, Any] = {"epoch_count": hp.epoch_count,
                               "tuning_mode": job.tuning_mode_or_default}
    if "learning_rate" in given:
        applied["learning_rate"] = hp.learning_rate
    if "batch_size" in given:
        applied["batch_size"] = hp.batch_size
    if hp.adapter_size is not None:
        applied["adapter_size"] = hp.adapter_size
    return applied


def tuning_job_to_wire(job: Job, identity: Identity, owner_id: str, training_uri: str,
                       validation_uri: str | None, output: str) -> dict[str, Any]:
    """The v1beta1 TuningJob that tunes ``job``'s open model, labelled as a Gemini job is."""
    model = vertex_open_model(job.base_model)
    assert model is not None, "check_job refuses a model Vertex does not tune"
    body = tuningjobs.tuning_job_to_wire(job, identity, owner_id, training_uri,
                                         validation_uri)
    applied = applied_hyperparameters(job)
    hyper: dict[str, Any] = {"epochCount": str(applied["epoch_count"])}  # int64: a string
    if "learning_rate" in applied:
        hyper["learningRate"] = applied["learning_rate"]
    if "batch_size" in applied:
        hyper["batchSize"] = str(applied["batch_size"])  # int64
    if "adapter_size" in applied:
        hyper["adapterSize"] = ADAPTER_SIZES[applied["adapter_size"]]
    body["baseModel"] = model.vertex_name
    body["supervisedTuningSpec"]["hyperParameters"] = hyper
    body["supervisedTuningSpec"]["tuningMode"] = VERTEX_TUNING_MODES[applied["tuning_mode"]]
    body["outputUri"] = output
    return body
