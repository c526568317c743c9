"""What each method of the local service does, on parsed requests; HTTP is app.py's business."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Protocol

from . import counting, datasets, paging, protojson, validation
from .adapters import find_adapter, remove_model_adapters
from .checkpoints import remove_checkpoints
from .inference import Adapter, GenerationSettings, PromptTooLong
from .models import ModelNotFound, ModelRegistry, context_length
from .store import ACTIVE, CREATING, AlreadyExists, Store, TunedModelRecord
from .tokens import Tokenizers
from .uploads import Uploads, checked_sha256
from ..wire import METADATA_TYPE, TUNED_MODEL_TYPE, total_steps, upload_name
from .recipe import read_layout
from .trainer import DEFAULT_MAX_BATCH_TOKENS
from .protojson import ApiError

TUNED_MODEL_ID = re.compile(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?")
MAX_TOTAL_STEPS = 100_000
UPDATABLE = ("display_name", "description", "temperature", "top_p", "top_k")


class Generation(Protocol):
    """Where generation runs: inference.Generator (in this process) or, on a Ray cluster,
    raygenerate.RayGenerator; the service does not tell them apart."""

    def generate(self, local_model: str, conversation: Any, settings: GenerationSettings,
                 adapter: Adapter | None = None,
                 layout: dict[str, Any] | None = None) -> Any: ...

    def forget_model(self, model_id: str) -> None: ...


class TuningService:
    def __init__(self, store: Store, registry: ModelRegistry, generator: Generation,
                 tokenizers: Tokenizers, state_dir: Path, *,
                 max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS) -> None:
        self.store = store
        self.registry = registry
        self.generator = generator
        self.tokenizers = tokenizers
        self.state_dir = state_dir
        self.uploads = Uploads(state_dir)
        self.max_batch_tokens = max_batch_tokens
        self.last_activity = time.monotonic()  # of the last request, for --idle-exit

    # -- rendering -----------------------------------------------------------------------------

    def tuned_model(self, record: TunedModelRecord) -> dict[str, Any]:
        return protojson.compact({
            "name": f"tunedModels/{record.id}",
            "baseModel": record.base_model,
            "displayName": record.display_name,
            "description": record.description,
            "temperature": record.temperature,
            "topP": record.top_p,
            "topK": record.top_k,
            "state": record.state,
            "createTime": protojson.timestamp(record.create_time),
            "updateTime": protojson.timestamp(record.update_time),
            "tuningTask": {
                "startTime": protojson.timestamp(record.start_time),
                "completeTime": protojson.timestamp(record.complete_time),
                "snapshots": self._snapshots(record),
                "hyperparameters": record.hyperparameters,
                # The local service's additions to TuningTask (see protojson.TUNING_TASK).
                "validationSnapshots": self._snapshots(record, validation=True),
                "earlyStopping": ({"patience": record.early_stopping_patience}
                                  if record.early_stopping_patience else None),
                "keptEpoch": record.kept_epoch,
                "stopReason": record.stop_reason,
                "device": record.device,
                "resources": _resources(record),
            },
        })

    @staticmethod
    def _snapshots(record: TunedModelRecord, validation: bool = False) -> list[dict[str, Any]]:
        series = record.validation_snapshots if validation else record.snapshots
        return [{"step": s.step, "epoch": s.epoch, "meanLoss": s.mean_loss,
                 "computeTime": protojson.timestamp(s.compute_time)} for s in series]

    def operation(self, record: TunedModelRecord) -> dict[str, Any]:
        done = record.state != CREATING
        # An ACTIVE run has done all it will: every step, or fewer when early stopping ended it.
        completed = record.total_steps if record.state == ACTIVE and not record.stop_reason \
            else record.completed_steps
        percent = 100.0 if record.state == ACTIVE else 100.0 * completed / record.total_steps
        metadata = protojson.compact({
            "tunedModel": f"tunedModels/{record.id}",
            "totalSteps": record.total_steps,
            "completedSteps": completed,
            "completedPercent": round(percent, 2),
            "snapshots": self._snapshots(record),
            # The local service's addition to CreateTunedModelMetadata, as in the TuningTask.
            "validationSnapshots": self._snapshots(record, validation=True),
        })
        body: dict[str, Any] = {
            "name": f"tunedModels/{record.id}/operations/{record.operation_id}",
            "metadata": {"@type": METADATA_TYPE, **metadata},
        }
        if done:
            body["done"] = True
            if record.state == ACTIVE:
                body["response"] = {"@type": TUNED_MODEL_TYPE, **self.tuned_model(record)}
            else:
                body["error"] = {"code": record.error_code or 13,
                                 "message": record.error_message or "Tuning failed."}
        return body

    def base_model(self, model_id: str, *, alias_of: str | None = None) -> dict[str, Any]:
        model = self.registry.models[alias_of or model_id]
        limit = context_length(model)
        description = f"{model.id}, served on this machine by jobspec"
        if alias_of:
            description = f"Alias of models/{alias_of} on this jobspec local service"
        return {
            "name": f"models/{model_id}", "baseModelId": model_id, "version": "001",
            "displayName": model_id, "description": description,
            "inputTokenLimit": limit, "outputTokenLimit": limit,
            "supportedGenerationMethods": ["generateContent", "countTokens", "createTunedModel"],
            "temperature": 0.0, "maxTemperature": 2.0, "topP": 1.0, "topK": 1,
        }

    def _serving(self) -> str:
        """What a caller that named a model this service lacks can do instead."""
        served = ", ".join([f"models/{m}" for m in self.registry.models]
                           + [a for a in self.registry.aliases if "/" in a])
        return (f" This jobspec local service serves {served}; to tune another Hugging Face "
                "model, start it with `jobspec serve --model OWNER/NAME` (a Hugging Face id, "
                "folder or .gguf file) and point jobspec at it (JOBSPEC_LOCAL_URL).")

    # -- lookup --------------------------------------------------------------------------------

    def _record(self, model_id: str) -> TunedModelRecord:
        record = self.store.get(model_id)
        if record is None:
            raise ApiError("NOT_FOUND", f"Tuned model tunedModels/{model_id} does not exist.")
        return record

    # -- methods -------------------------------------------------------------------------------

    def list_models(self, page_size: str | None, page_token: str | None) -> dict[str, Any]:
        paging.single_page(page_size, page_token)
        models = [self.base_model(m) for m in self.registry.models]
        # A Hugging Face id (owner/name) is accepted as a base model name but is no models/NAME
        # a caller could get: the model is listed under its own id.
        models += [self.base_model(a, alias_of=t) for a, t in self.registry.aliases.items()
                   if "/" not in a]
        return {"models": models}

    def get_model(self, model_id: str) -> dict[str, Any]:
        if model_id in self.registry.models:
            body = self.base_model(model_id)
        elif model_id in self.registry.aliases:
            body = self.base_model(model_id, alias_of=self.registry.aliases[model_id])
        else:
            raise ApiError("NOT_FOUND", f"Model models/{model_id} is not found.")
        # jobspec's extension of the Model: what this service's countExampleTokens answers for
        # it depend on besides the examples, so that a client may keep counts (counting.py).
        body["countingDigest"] = counting.counting_digest(self, self.registry.resolve(model_id))
        return body

    def create(self, body: Any, tuned_model_id: str | None) -> dict[str, Any]:
        request = protojson.parse(body, protojson.TUNED_MODEL, "tuned_model")
        if tuned_model_id is not None and not TUNED_MODEL_ID.fullmatch(tuned_model_id):
            raise ApiError("INVALID_ARGUMENT", f"tunedModelId {tuned_model_id!r} is invalid: it "
                           "must match [a-z]([a-z0-9-]{0,38}[a-z0-9])?.")
        if "tuned_model_source" in request:
            raise ApiError("INVALID_ARGUMENT", "tuned_model.tuned_model_source is not supported "
                           "by the local service; give tuned_model.base_model.")
        base_name = protojson.require(request, "base_model", "tuned_model")
        try:
            local = self.registry.resolve(base_name)
        except ModelNotFound:
            # A Hugging Face id (a job's open model) is told how this service comes to serve it.
            advice = self._serving() if "/" in base_name.removeprefix("models/") else ""
            raise ApiError("NOT_FOUND", f"Base model {base_name} is not found.{advice}") from None
        if len(request.get("display_name", "")) > 40:
            raise ApiError("INVALID_ARGUMENT", "tuned_model.display_name must be at most 40 "
                           "characters.")
        task = protojson.require(request, "tuning_task", "tuned_model")
        data = protojson.require(task, "training_data", "tuned_model.tuning_task")
        # Inline, or an upload read a line at a time (datasets.py): never held whole here.
        training = datasets.read(self.uploads, data, datasets.TRAINING_DATA)
        held_out = datasets.read(self.uploads, task["validation_data"], datasets.VALIDATION_DATA) \
            if "validation_data" in task else None
        patience = validation.early_stopping(task, held_out.examples if held_out else [])
        workers, gpus_per_worker = validation.resources(task)
        hyperparameters, learning_rate = validation.hyperparameters(
            task.get("hyperparameters", {}), training.count)
        steps = total_steps(training.count, hyperparameters["epochCount"],
                            hyperparameters["batchSize"])
        if steps > MAX_TOTAL_STEPS:
            raise ApiError("INVALID_ARGUMENT", f"The job would take {steps:,} steps (examples × "
                           f"epochs ÷ batch size); the local service allows {MAX_TOTAL_STEPS:,}.")
        validation.sampling_defaults(request)
        if tuned_model_id is not None and self.store.get(tuned_model_id, with_snapshots=False):
            # Before measuring: a client that retries a create it already made gets its answer
            # without the examples being tokenized again. (store.create checks again, atomically.)
            raise ApiError("ALREADY_EXISTS", f"Tuned model tunedModels/{tuned_model_id} already "
                           "exists.")
        # Last, as the slowest check: every example through the tokenizer (an upload's once:
        # its count is kept, and a plan has usually made it already).
        for dataset, where in ((training, datasets.TRAINING_DATA),
                               (held_out, datasets.VALIDATION_DATA)):
            if dataset is not None:
                self._check_tokens(local, dataset, datasets.examples_field(dataset, where))
        try:
            record = self.store.create(
                model_id=tuned_model_id, display_name=request.get("display_name"),
                description=request.get("description"), base_model=base_name,
                local_model=local.id, temperature=request.get("temperature"),
                top_p=request.get("top_p"), top_k=request.get("top_k"),
                hyperparameters=hyperparameters, effective_lr=learning_rate,
                examples=datasets.inline(training), total_steps=steps,
                validation=datasets.inline(held_out) if held_out else [],
                early_stopping_patience=patience, upload=datasets.uploaded(training),
                workers=workers, gpus_per_worker=gpus_per_worker,
                validation_upload=datasets.uploaded(held_out) if held_out else None)
        except AlreadyExists:
            raise ApiError("ALREADY_EXISTS", f"Tuned model tunedModels/{tuned_model_id} already "
                           "exists.") from None
        return self.operation(record)

    def upload_info(self, sha256: str) -> dict[str, Any]:
        info = self.uploads.info(checked_sha256(sha256))
        if info is None:
            raise ApiError("NOT_FOUND", f"{upload_name(sha256)} does not exist.")
        return info

    def _check_tokens(self, local: Any, dataset: datasets.Dataset, where: str) -> None:
        if dataset.upload is None:
            validation.check_example_tokens(self.tokenizers, local.id, dataset.examples,
                                            context_length(local), self.max_batch_tokens, where)
            return
        limit = counting.example_token_limit(self, local)
        validation.refuse_too_long(
            counting.first_too_long(self, local, dataset.upload, where, limit), local.id,
            context_length(local), self.max_batch_tokens, where)

    def list_tuned_models(self, page_size: str | None, page_token: str | None) -> dict[str, Any]:
        asked = paging.page(page_size, page_token)
        records, next_seq = self.store.page(asked.after, asked.size)
        body: dict[str, Any] = {}
        if records:
            body["tunedModels"] = [self.tuned_model(r) for r in records]
        if next_seq is not None:
            body["nextPageToken"] = paging.next_page_token(next_seq)
        return body

    def get_tuned_model(self, model_id: str) -> dict[str, Any]:
        return self.tuned_model(self._record(model_id))

    def patch(self, model_id: str, body: Any, update_mask: str | None) -> dict[str, Any]:
        self._record(model_id)
        request = protojson.parse(body, protojson.TUNED_MODEL, "tuned_model")
        if update_mask:
            fields = [protojson.snake(f.strip()) for f in update_mask.split(",") if f.strip()]
            for name in fields:
                if name not in UPDATABLE:
                    raise ApiError("INVALID_ARGUMENT", f"update_mask: {protojson.camel(name)} "
                                   f"cannot be updated; updatable: "
                                   f"{', '.join(protojson.camel(u) for u in UPDATABLE)}.")
        else:
            fields = [name for name in UPDATABLE if name in request]
        validation.sampling_defaults(request)
        changes = {name: request.get(name) for name in fields}
        record = self.store.update_fields(model_id, changes)
        if record is None:
            raise ApiError("NOT_FOUND", f"Tuned model tunedModels/{model_id} does not exist.")
        return self.tuned_model(record)

    def delete(self, model_id: str) -> dict[str, Any]:
        if not self.store.delete(model_id):
            raise ApiError("NOT_FOUND", f"Tuned model tunedModels/{model_id} does not exist.")
        remove_model_adapters(self.state_dir, model_id)
        remove_checkpoints(self.state_dir, model_id)
        self.generator.forget_model(model_id)
        return {}

    def list_operations(self, model_id: str, page_size: str | None,
                        page_token: str | None) -> dict[str, Any]:
        paging.single_page(page_size, page_token)
        return {"operations": [self.operation(self._record(model_id))]}

    def get_operation(self, model_id: str, operation_id: str) -> dict[str, Any]:
        record = self._record(model_id)
        if record.operation_id != operation_id:
            raise ApiError("NOT_FOUND", f"Operation tunedModels/{model_id}/operations/"
                           f"{operation_id} does not exist.")
        return self.operation(record)

    def cancel_operation(self, model_id: str, operation_id: str) -> dict[str, Any]:
        self.get_operation(model_id, operation_id)
        self.store.request_cancel(model_id)
        return {}

    # -- generation ----------------------------------------------------------------------------

    def generate(self, body: Any, *, base: str | None = None,
                 tuned: str | None = None) -> dict[str, Any]:
        request = protojson.parse(body, protojson.GENERATE_CONTENT_REQUEST,
                                  "generate_content_request")
        adapter = None
        if tuned is not None:
            record = self._record(tuned)
            if record.state != ACTIVE:
                raise ApiError("FAILED_PRECONDITION", f"Tuned model tunedModels/{tuned} is not "
                               f"ready: its state is {record.state}.")
            local, name = record.local_model, f"tunedModels/{tuned}"
            folder = find_adapter(self.state_dir, tuned, record.operation_id)
            if folder is None:
                raise ApiError("DATA_LOSS", f"The adapter of tunedModels/{tuned} (operation "
                               f"{record.operation_id}) is missing from "
                               f"{self.state_dir / 'adapters'}; delete the model and tune it "
                               "again.")
            adapter = Adapter(tuned, record.operation_id, folder)
            layout = read_layout(folder)
            defaults = GenerationSettings(temperature=record.temperature or 0.0,
                                          top_p=record.top_p, top_k=record.top_k)
        else:
            try:
                local, name = self.registry.resolve(base or "").id, f"models/{base}"
            except ModelNotFound:
                raise ApiError("NOT_FOUND", f"models/{base} is not found for API version "
                               "v1beta, or is not supported for generateContent.") from None
            defaults = GenerationSettings()
            layout = None
        conversation = validation.conversation(request)
        settings = validation.generation_settings(request.get("generation_config", {}), defaults)
        try:
            result = self.generator.generate(local, conversation, settings, adapter,
                                             layout=layout)
        except PromptTooLong as exc:
            raise ApiError("INVALID_ARGUMENT", str(exc)) from None
        candidates = [{"content": {"parts": [{"text": c.text}], "role": "model"},
                       "finishReason": c.finish_reason, "index": i}
                      for i, c in enumerate(result.candidates)]
        produced = sum(c.token_count for c in result.candidates)
        return {"candidates": candidates, "usageMetadata": {
            "promptTokenCount": result.prompt_token_count, "candidatesTokenCount": produced,
            "totalTokenCount": result.prompt_token_count + produced}, "modelVersion": name}


def _resources(record: TunedModelRecord) -> dict[str, Any] | None:
    """What the job asked of its run (wire.RESOURCES_FIELD), as it asked it."""
    asked = {"workers": record.workers, "gpusPerWorker": record.gpus_per_worker}
    return {k: v for k, v in asked.items() if v is not None} or None
