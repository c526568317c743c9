"""The Vertex AI tuningJobs wire format (shared/reference/vertex-tuning-api.md): its states
(§5), its hyperparameters (§3), the JSONL line of one training conversation (§6), the TuningJob a job
creates (§4), and a TuningJob read as jobspec's backend-neutral RemoteModel and Progress."""

from __future__ import annotations

import json
from typing import Any

from ..conversation import Conversation, to_contents
from ..identity import Identity
from ..spec import Hyperparameters, Job
from .base import ACTIVE, CREATING, FAILED, DataStats, Progress, RemoteModel
from .openmodels import VERTEX_TUNING_MODES, from_vertex_name

LABEL_NAME, LABEL_FINGERPRINT, LABEL_OWNER = ("jobspec-name", "jobspec-fingerprint",
                                              "jobspec-owner")

# §5: every JOB_STATE_* as one of jobspec's three; the service's own name is kept beside it.
_STATES = {"JOB_STATE_SUCCEEDED": ACTIVE, **dict.fromkeys(
    ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED",
     "JOB_STATE_PARTIALLY_SUCCEEDED"), FAILED)}  # the rest (queued ... paused): CREATING
ADAPTER_SIZES = {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR",
                 8: "ADAPTER_SIZE_EIGHT", 16: "ADAPTER_SIZE_SIXTEEN",
                 32: "ADAPTER_SIZE_THIRTY_TWO"}
ADAPTER_NUMBERS = {name: size for size, name in ADAPTER_SIZES.items()}
TUNING_MODES = {wire: mode for mode, wire in VERTEX_TUNING_MODES.items()}  # open models'


def jsonl_line(conversation: Conversation) -> bytes:
    """One training example as Vertex reads it (§6: ``{"systemInstruction"?, "contents"}``),
    compact UTF-8, newline-terminated: a line of a Vertex training file the user already has is
    staged as it was written (in this key order, compact)."""
    return (json.dumps(to_contents(conversation), ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


# What a one-turn example's line adds around its two JSON strings (data.py counts each string
# with its quotes).
JSONL_EXAMPLE_BYTES = len(jsonl_line(Conversation.one_turn("", ""))) - 4


def hyperparameters_to_wire(epoch_count: int, learning_rate_multiplier: float | None,
                            adapter_size: int | None) -> dict[str, Any]:
    """``supervisedTuningSpec.hyperParameters``: epochCount as int64 in JSON (a string)."""
    hyper: dict[str, Any] = {"epochCount": str(epoch_count)}
    if learning_rate_multiplier is not None:
        hyper["learningRateMultiplier"] = learning_rate_multiplier
    if adapter_size is not None:
        hyper["adapterSize"] = ADAPTER_SIZES[adapter_size]
    return hyper


def job_labels(job_name: str, fingerprint: str, owner_id: str) -> dict[str, str]:
    """The labels that say whose tuning job this is, for which job file and fingerprint (§3:
    keys and values of at most 64 lowercase letters, digits, ``_`` and ``-``), the owner first:
    a listing filters by them in this order."""
    return {LABEL_OWNER: owner_id, LABEL_NAME: job_name, LABEL_FINGERPRINT: fingerprint}


def label_filter(labels: dict[str, str]) -> str:
    """The tuningJobs.list filter for jobs with all of ``labels``. The filter is AIP-160's,
    where a bare ``-`` is negation: the keys (``jobspec-owner``) are quoted."""
    return " AND ".join(f'labels."{key}"="{value}"' for key, value in labels.items())


def applied_hyperparameters(hp: Hyperparameters) -> dict[str, Any]:
    """What Vertex AI v1 applies of a job's hyperparameters, as ``tuning_job_from_wire`` reads
    them back (snake_case; the batch size is its own choice, so not shown)."""
    applied: dict[str, Any] = {"epoch_count": hp.epoch_count,
                               "learning_rate_multiplier": hp.learning_rate_multiplier}
    if hp.adapter_size is not None:
        applied["adapter_size"] = hp.adapter_size
    return applied


def tuning_job_to_wire(job: Job, identity: Identity, owner_id: str, training_uri: str,
                       validation_uri: str | None = None) -> dict[str, Any]:
    """The TuningJob that tunes ``job`` on the staged data, labelled with who made it, for
    which job and which fingerprint."""
    hp = job.hyperparameters
    hyper = hyperparameters_to_wire(hp.epoch_count, hp.learning_rate_multiplier,
                                    hp.adapter_size)
    body: dict[str, Any] = {
        "baseModel": job.base_model.removeprefix("models/"),
        "tunedModelDisplayName": identity.tuned_model_id,
        "supervisedTuningSpec": {"trainingDatasetUri": training_uri,
                                 "hyperParameters": hyper},
        "labels": job_labels(job.name, identity.fingerprint, owner_id)}
    if validation_uri is not None:
        body["supervisedTuningSpec"]["validationDatasetUri"] = validation_uri
    if job.description:
        body["description"] = job.description
    return body


def _int(value: object) -> int | None:
    try:
        return int(value) if value is not None else None  # int64 comes as a string
    except (TypeError, ValueError):
        return None


def _stats(job: dict[str, Any]) -> DataStats | None:
    found = job.get("tuningDataStats", {}).get("supervisedTuningDataStats")
    if not found:
        return None
    return DataStats(examples=_int(found.get("tuningDatasetExampleCount")),
                     billable_tokens=_int(found.get("totalBillableTokenCount")),
                     steps=_int(found.get("tuningStepCount")),
                     characters=_int(found.get("totalTuningCharacterCount")))


def _error(job: dict[str, Any], service_state: str) -> str | None:
    if _STATES.get(service_state, CREATING) != FAILED:
        return None
    error = job.get("error") or {}
    if error.get("message"):
        return f"{error['message']} (code {error.get('code')}, {service_state})"
    return {"JOB_STATE_EXPIRED": "the tuning job expired (JOB_STATE_EXPIRED)",
            "JOB_STATE_PARTIALLY_SUCCEEDED": "the tuning job only partly succeeded "
                                             "(JOB_STATE_PARTIALLY_SUCCEEDED)"}.get(
        service_state, f"the tuning job ended {service_state}")


def tuning_job_from_wire(job: dict[str, Any]) -> RemoteModel:
    service_state = job.get("state", "JOB_STATE_UNSPECIFIED")
    labels = job.get("labels") or {}
    hyper = job.get("supervisedTuningSpec", {}).get("hyperParameters", {})
    hyperparameters: dict[str, Any] = {}
    if _int(hyper.get("epochCount")) is not None:
        hyperparameters["epoch_count"] = _int(hyper["epochCount"])
    if "learningRateMultiplier" in hyper:
        hyperparameters["learning_rate_multiplier"] = hyper["learningRateMultiplier"]
    if hyper.get("adapterSize") in ADAPTER_NUMBERS:
        hyperparameters["adapter_size"] = ADAPTER_NUMBERS[hyper["adapterSize"]]
    # An open model's settings (vertexopen.py): its tuning mode, absolute rate and batch size.
    mode = job.get("supervisedTuningSpec", {}).get("tuningMode")
    if mode in TUNING_MODES:
        hyperparameters["tuning_mode"] = TUNING_MODES[mode]
    if "learningRate" in hyper:
        hyperparameters["learning_rate"] = hyper["learningRate"]
    if _int(hyper.get("batchSize")) is not None:
        hyperparameters["batch_size"] = _int(hyper["batchSize"])
    # An open model by the Hugging Face id its job names, not Vertex's name for it.
    open_model = from_vertex_name(job.get("baseModel", ""))
    stats = _stats(job)
    managed = bool(labels.get(LABEL_NAME) and labels.get(LABEL_FINGERPRINT))
    return RemoteModel(
        name=job["name"], state=_STATES.get(service_state, CREATING),
        service_state=service_state,
        base_model=open_model.hf_id if open_model else job.get("baseModel", ""),
        display_name=job.get("tunedModelDisplayName"), description=job.get("description"),
        hyperparameters=hyperparameters, create_time=job.get("createTime"),
        start_time=job.get("startTime"), complete_time=job.get("endTime"),
        job=labels.get(LABEL_NAME) if managed else None,
        fingerprint=labels.get(LABEL_FINGERPRINT) if managed else None,
        owner=labels.get(LABEL_OWNER) if managed else None,
        error=_error(job, service_state), target=job.get("tunedModel", {}).get("endpoint"),
        stats=stats, total_steps=stats.steps if stats else None)


def progress_of(model: RemoteModel, adopted: bool = False) -> Progress:
    """A tuning job as a run in progress: no step counts until Vertex has read the data, the
    JOB_STATE_* name as the label, done once ACTIVE or FAILED."""
    done = model.state in (ACTIVE, FAILED)
    return Progress(model_name=model.name, operation=None, done=done,
                    total_steps=model.total_steps,
                    completed_steps=(model.total_steps or 0) if model.state == ACTIVE else 0,
                    error=model.error, model=model if model.state == ACTIVE else None,
                    adopted=adopted, state_label=model.service_state, stats=model.stats)


def _segments(resource: str) -> dict[str, str]:
    """``projects/p/locations/l/endpoints/e`` -> {"projects": "p", "locations": "l", ...}."""
    parts = resource.split("/")
    return dict(zip(parts[::2], parts[1::2]))


def removal_commands(tuned: dict[str, str]) -> list[str]:
    """How to remove what a finished tuning job left (its ``tunedModel``): the endpoint's
    deployment, the endpoint, the model."""
    commands = []
    if tuned.get("endpoint"):
        where = _segments(tuned["endpoint"])
        scope = f"--project={where.get('projects')} --region={where.get('locations')}"
        endpoint = where.get("endpoints")
        commands += [f"gcloud ai endpoints undeploy-model {endpoint} {scope} "
                     f"--deployed-model-id=ID   (the ID is in: gcloud ai endpoints describe "
                     f"{endpoint} {scope})", f"gcloud ai endpoints delete {endpoint} {scope}"]
    if tuned.get("model"):
        where = _segments(tuned["model"])
        scope = f"--project={where.get('projects')} --region={where.get('locations')}"
        commands.append(f"gcloud ai models delete {where.get('models', '').split('@')[0]} "
                        f"{scope}")
    return commands
