"""The Gemini API's tunedModels wire format (shared/reference/gemini-tuning-api.md), as the gemini
and local backends speak it: the create request a job makes (§4 TunedModel, TuningTask,
Hyperparameters, Dataset), jobspec's mark on the models it creates, and a TunedModel or its
create Operation (§4 Operation, CreateTunedModelMetadata) read as jobspec's backend-neutral
RemoteModel and Progress. Pure functions: GeminiBackend (gemini.py) sends and receives them. The
contract both sides of the local wire share is jobspec/wire.py."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .. import wire
from ..data import Example
from ..identity import Identity
from ..spec import Job, Resources
from .uploads import wire_example
from .base import ACTIVE, CREATING, FAILED, Progress, RemoteModel, Snapshot

# A tuned model of the Gemini API has no labels, so jobspec marks the models it creates in their
# description: `[jobspec job=... fingerprint=... owner=...]`, always as its last paragraph, after
# the job's own description. Only a mark in that place is read: the job file's author writes the
# description, and a mark written there (another job's, another owner's) is followed by
# jobspec's own, so it is never taken for it. Models created before owners were recorded carry
# no `owner=`; they parse with owner None, and are never pruned.
_MARKER = re.compile(r"(?:\A|\n\n)\[jobspec job=(?P<job>[a-z][a-z0-9-]*) "
                     r"fingerprint=(?P<fp>[0-9a-f]{64})(?: owner=(?P<owner>[0-9a-f]{8,64}))?\]"
                     r"\s*\Z")
_STATES = {wire.CREATING: CREATING, wire.ACTIVE: ACTIVE, wire.FAILED: FAILED}
# How the Gemini API (and the local service) name one example in an INVALID_ARGUMENT message:
# the i-th inline example, or line i+1 of the uploaded training examples.
_EXAMPLE_INDEX = re.compile(f"(?:{re.escape(wire.EXAMPLES_FIELD)}|"
                            f"{re.escape(wire.UPLOADED_EXAMPLES_FIELD)})" + r"\[(\d+)\]")
MAX_DISPLAY_NAME = 40  # §4 TunedModel.displayName: at most 40 characters


def marker(job_name: str, fingerprint: str, owner_id: str) -> str:
    return f"[jobspec job={job_name} fingerprint={fingerprint} owner={owner_id}]"


def parse_marker(description: str | None) -> dict[str, str | None]:
    """{"job", "fingerprint", "owner"} as RemoteModel fields, from jobspec's mark at the end
    of ``description``; all None without one there."""
    found = _MARKER.search(description or "")
    if not found:
        return {"job": None, "fingerprint": None, "owner": None}
    return {"job": found["job"], "fingerprint": found["fp"], "owner": found["owner"]}


def model_path(name: str) -> str:
    """``tunedModels/x`` from a tuned model's name or bare id."""
    return name if name.startswith("tunedModels/") else f"tunedModels/{name}"


def snapshots_from_wire(items: list[dict[str, Any]]) -> tuple[Snapshot, ...]:
    """TuningSnapshot[] (§4: step, epoch, meanLoss, computeTime)."""
    return tuple(Snapshot(int(s.get("step", 0)), int(s.get("epoch", 0)),
                          float(s.get("meanLoss", 0.0)), s.get("computeTime")) for s in items)


def tuned_model_from_wire(body: dict[str, Any]) -> RemoteModel:
    task = body.get("tuningTask", {})
    hyperparameters = {wire.HYPERPARAMETERS.get(k, k): v
                       for k, v in task.get("hyperparameters", {}).items()}
    state = body.get("state", wire.STATE_UNSPECIFIED)
    return RemoteModel(
        name=body["name"], state=_STATES.get(state, CREATING), service_state=state,
        base_model=body.get("baseModel", body.get("tunedModelSource", {}).get("baseModel", "")),
        display_name=body.get("displayName"), description=body.get("description"),
        hyperparameters=hyperparameters, create_time=body.get("createTime"),
        start_time=task.get("startTime"), complete_time=task.get("completeTime"),
        snapshots=snapshots_from_wire(task.get("snapshots", [])),
        # jobspec's local service adds these to the TuningTask (Google's has none of them).
        validation=snapshots_from_wire(task.get("validationSnapshots", [])),
        kept_epoch=task.get("keptEpoch"), stop_reason=task.get("stopReason"),
        device=task.get("device"), **parse_marker(body.get("description")))


def inline_dataset(examples: Iterable[Example]) -> dict[str, Any]:
    """A Dataset of the Gemini API, with the examples inline (one-turn: the only ones the Gemini
    API takes, as its limits say where the examples are read)."""
    return {"examples": {"examples": [wire_example(e) for e in examples]}}


def uploaded_dataset(name: str) -> dict[str, Any]:
    """A Dataset of the local service that names an upload (its extension, jobspec/wire.py)."""
    return {wire.UPLOAD_FIELD: name}


def create_body(job: Job, identity: Identity, owner_id: str, training: dict[str, Any],
                validation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tunedModels.create request of ``job``, given its Datasets (examples inline, or an
    upload named), marked as ``owner_id``'s model of the job and its fingerprint."""
    description = "\n\n".join(filter(None, [job.description,
                                            marker(job.name, identity.fingerprint, owner_id)]))
    wanted = job.hyperparameters.as_dict()
    hyperparameters = {camel: wanted[snake] for camel, snake in wire.HYPERPARAMETERS.items()
                       if snake in wanted}
    task: dict[str, Any] = {
        "hyperparameters": hyperparameters,
        "trainingData": training,
    }
    # The local service's additions (check_job keeps them from the Gemini API, which has
    # neither): validation examples, as a Dataset like trainingData, and early stopping.
    if validation:
        task["validationData"] = validation
    if job.early_stopping is not None:
        task["earlyStopping"] = {"patience": job.early_stopping}
    if job.resources is not None:
        task[wire.RESOURCES_FIELD] = resources_body(job.resources)
    return {
        "displayName": (job.display_name or job.name)[:MAX_DISPLAY_NAME],
        "description": description,
        "baseModel": job.base_model,
        "tuningTask": task,
    }


def resources_body(resources: Resources) -> dict[str, Any]:
    """``resources:`` as the local service's create takes it (its extension; wire.py)."""
    body: dict[str, Any] = {}
    if resources.workers is not None:
        body["workers"] = resources.workers
    if resources.gpus_per_worker is not None:
        body["gpusPerWorker"] = resources.gpus_per_worker
    return body


def refused_example(message: str) -> int | None:
    """The index of the training example an INVALID_ARGUMENT message names, if it names one."""
    found = _EXAMPLE_INDEX.search(message)
    return int(found[1]) if found else None


def operation_progress(operation: dict[str, Any]) -> Progress:
    """A create Operation (§4, its metadata a CreateTunedModelMetadata) as a run in progress;
    the model is named by the metadata, else by the operation's name before /operations/
    (as python-genai takes it, §5)."""
    metadata = operation.get("metadata", {})
    model_name = metadata.get("tunedModel") or operation["name"].split("/operations/")[0]
    error = operation.get("error")
    model = None
    if operation.get("done") and not error and "response" in operation:
        model = tuned_model_from_wire(operation["response"])
    return Progress(
        model_name=model_name, operation=operation.get("name"),
        done=bool(operation.get("done")), total_steps=metadata.get("totalSteps"),
        completed_steps=int(metadata.get("completedSteps", 0)),
        snapshots=snapshots_from_wire(metadata.get("snapshots", [])),
        error=(f"{error.get('message', 'failed')} (code {error.get('code')})" if error else None),
        model=model)


def model_progress(found: RemoteModel) -> Progress:
    """A tuned model that has no operation to poll, as a run in progress: its steps are its
    latest snapshot's; done once ACTIVE or FAILED."""
    done = found.state in (ACTIVE, FAILED)
    return Progress(found.name, None, done, None,
                    found.snapshots[-1].step if found.snapshots else 0, found.snapshots,
                    "tuning failed" if found.state == FAILED else None,
                    found if found.state == ACTIVE else None)
