"""The Gemini API's tuning surface, spoken to Google or to jobspec's local service."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from ..client import ApiClient
from ..data import Example
from ..errors import ConfigError, JobSpecError, PermanentBackendError
from ..identity import Identity
from ..spec import Job
from ..workspace import Owner
from .base import ACTIVE, FAILED, Progress, RemoteModel, Snapshot

GOOGLE_ENDPOINT = "https://generativelanguage.googleapis.com"

# A tuned model of the Gemini API has no labels, so jobspec marks the models it creates in their
# description: `[jobspec job=... fingerprint=... owner=...]`. Models created before owners were
# recorded carry no `owner=`; they parse with owner None, and are never pruned.
_MARKER = re.compile(r"\[jobspec job=(?P<job>[a-z][a-z0-9-]*) fingerprint=(?P<fp>[0-9a-f]{64})"
                     r"(?: owner=(?P<owner>[0-9a-f]{8,64}))?\]")


def marker(job_name: str, fingerprint: str, owner_id: str) -> str:
    return f"[jobspec job={job_name} fingerprint={fingerprint} owner={owner_id}]"


def parse_marker(description: str | None) -> dict[str, str | None]:
    """{"job", "fingerprint", "owner"} as RemoteModel fields; all None without a marker."""
    found = _MARKER.search(description or "")
    if not found:
        return {"job": None, "fingerprint": None, "owner": None}
    return {"job": found["job"], "fingerprint": found["fp"], "owner": found["owner"]}
# How the Gemini API (and the local service) name one example in an INVALID_ARGUMENT message.
_EXAMPLE_INDEX = re.compile(r"training_data\.examples\.examples\[(\d+)\]")
_HYPERPARAMETER_NAMES = {"batchSize": "batch_size", "epochCount": "epoch_count",
                         "learningRate": "learning_rate",
                         "learningRateMultiplier": "learning_rate_multiplier"}


def _snapshots(items: list[dict[str, Any]]) -> tuple[Snapshot, ...]:
    return tuple(Snapshot(int(s.get("step", 0)), int(s.get("epoch", 0)),
                          float(s.get("meanLoss", 0.0)), s.get("computeTime")) for s in items)


def tuned_model_from_wire(body: dict[str, Any]) -> RemoteModel:
    task = body.get("tuningTask", {})
    hyperparameters = {_HYPERPARAMETER_NAMES.get(k, k): v
                       for k, v in task.get("hyperparameters", {}).items()}
    return RemoteModel(
        name=body["name"], state=body.get("state", "STATE_UNSPECIFIED"),
        base_model=body.get("baseModel", body.get("tunedModelSource", {}).get("baseModel", "")),
        display_name=body.get("displayName"), description=body.get("description"),
        hyperparameters=hyperparameters, create_time=body.get("createTime"),
        start_time=task.get("startTime"), complete_time=task.get("completeTime"),
        snapshots=_snapshots(task.get("snapshots", [])), **parse_marker(body.get("description")))


class GeminiBackend:
    """tunedModels, their operations and generateContent, over one ApiClient."""

    def __init__(self, name: str, client: ApiClient, owner: Owner) -> None:
        self.name = name
        self.client = client
        self.endpoint = client.base_url
        self.owner = owner

    def close(self) -> None:
        self.client.close()

    def interrupt(self) -> None:
        self.client.interrupt()

    def request_count(self) -> int:
        return self.client.request_count

    def list_models(self) -> list[RemoteModel]:
        return [tuned_model_from_wire(m) for m in self.client.paginate("tunedModels", "tunedModels")]

    def get_model(self, model_id: str) -> RemoteModel | None:
        try:
            return tuned_model_from_wire(self.client.request("GET", f"tunedModels/{model_id}"))
        except PermanentBackendError as exc:
            if exc.http_status == 404:
                return None
            raise

    def create_body(self, job: Job, identity: Identity, examples: list[Example]) -> dict[str, Any]:
        description = "\n\n".join(filter(None, [job.description,
                                                marker(job.name, identity.fingerprint,
                                                       self.owner.id)]))
        hyperparameters = {camel: job.hyperparameters.as_dict()[snake]
                           for camel, snake in _HYPERPARAMETER_NAMES.items()
                           if snake in job.hyperparameters.as_dict()}
        return {
            "displayName": (job.display_name or job.name)[:40],
            "description": description,
            "baseModel": job.base_model,
            "tuningTask": {
                "hyperparameters": hyperparameters,
                "trainingData": {"examples": {"examples": [
                    {"textInput": e.text_input, "output": e.output} for e in examples]}},
            },
        }

    def create(self, job: Job, identity: Identity, examples: list[Example]) -> Progress:
        """Create the job's model under its own id; if it exists already (a retried or resumed
        create), adopt it instead of creating another."""
        body = self.create_body(job, identity, examples)
        try:
            operation = self.client.request("POST", "tunedModels", body=body,
                                            params={"tunedModelId": identity.tuned_model_id})
        except PermanentBackendError as exc:
            if exc.status != "ALREADY_EXISTS" and exc.http_status != 409:
                raise self._located(exc, examples) from None
            return dataclasses.replace(self.progress(identity.tuned_model_id), adopted=True)
        return self._progress_from_operation(operation)

    def _located(self, error: PermanentBackendError, examples: list[Example]) -> JobSpecError:
        """A refusal that names ``examples[i]``, shown against the line of the user's data file
        that holds example i; any other error as it came."""
        found = _EXAMPLE_INDEX.search(error.message)
        index = int(found[1]) if found else -1
        if 0 <= index < len(examples) and examples[index].where is not None:
            return ConfigError(examples[index].where, f"the {self.name} backend refused this "
                               f"example ({error.http_status} {error.status}): {error.message}")
        return error

    def _progress_from_operation(self, operation: dict[str, Any]) -> Progress:
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
            snapshots=_snapshots(metadata.get("snapshots", [])),
            error=(f"{error.get('message', 'failed')} (code {error.get('code')})" if error else None),
            model=model)

    def progress(self, model_id: str, operation: str | None = None) -> Progress:
        if operation:
            # Google documents polling tuning operations on /v1/.
            return self._progress_from_operation(self.client.request("GET", operation, version="v1"))
        operations = self.client.request("GET", f"tunedModels/{model_id}/operations").get(
            "operations", [])
        if operations:
            return self._progress_from_operation(operations[-1])
        model = self.get_model(model_id)
        if model is None:
            raise PermanentBackendError(f"tunedModels/{model_id} does not exist", http_status=404,
                                        status="NOT_FOUND")
        done = model.state in (ACTIVE, FAILED)
        return Progress(model.name, None, done, None,
                        model.snapshots[-1].step if model.snapshots else 0, model.snapshots,
                        "tuning failed" if model.state == FAILED else None,
                        model if model.state == ACTIVE else None)

    def delete(self, model_id: str) -> None:
        try:
            self.client.request("DELETE", f"tunedModels/{model_id}")
        except PermanentBackendError as exc:
            if exc.http_status != 404:  # already gone is what we wanted
                raise

    def generate(self, model: str, prompt: str, config: dict[str, Any]) -> str:
        body = {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": config}
        answer = self.client.request("POST", f"{model}:generateContent", body=body)
        candidates = answer.get("candidates") or []
        if not candidates:
            reason = answer.get("promptFeedback", {}).get("blockReason", "no candidates")
            raise PermanentBackendError(f"{model} gave no answer ({reason})")
        parts = candidates[0].get("content", {}).get("parts", [])
        return "".join(p.get("text", "") for p in parts)
