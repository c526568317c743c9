"""The Gemini API's tunedModels wire mapping (jobspec/backends/tunedmodels.py), which the gemini and
local backends share, called directly: the create request a job makes and what a TunedModel or
its create Operation is read as, every field and enum checked against the contract in
shared/reference/gemini-tuning-api.md (§4 schemas, §5 recorded wire) and the discovery document
generativelanguage.v1beta.json, whose names are transcribed below (the reference is not part of
the repository). The local backend's mapping (its uploads and its additions to the TuningTask)
is checked against the local service's own parser."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from jobspec import wire
from jobspec.auth import no_credentials
from jobspec.backends import uploads
from jobspec.backends.base import ACTIVE, CREATING, FAILED, Snapshot
from jobspec.backends.gemini import GeminiBackend
from jobspec.client import ApiClient
from jobspec.backends.tunedmodels import (create_body, inline_dataset, marker, model_path,
                                          model_progress, operation_progress, parse_marker,
                                          refused_example, tuned_model_from_wire,
                                          uploaded_dataset)
from jobspec.data import iter_examples
from jobspec.identity import identify
from jobspec.server import protojson
from jobspec.spec import load_job
from jobspec.workspace import Owner

# generativelanguage.v1beta.json, "schemas": the properties of each message a create sends, and
# the TunedModel.state enum, exactly as the discovery document names them.
TUNED_MODEL = {"name", "baseModel", "tunedModelSource", "displayName", "description",
               "temperature", "topP", "topK", "state", "createTime", "updateTime", "tuningTask"}
TUNED_MODEL_OUTPUT_ONLY = {"name", "state", "createTime", "updateTime"}
TUNING_TASK = {"startTime", "completeTime", "snapshots", "trainingData", "hyperparameters"}
HYPERPARAMETERS = {"learningRate": float, "learningRateMultiplier": float, "epochCount": int,
                   "batchSize": int}  # float, float, int32, int32: JSON numbers, not strings
DATASET = {"examples"}
TUNING_EXAMPLES = {"examples"}
TUNING_EXAMPLE = {"textInput", "output"}
STATES = ("STATE_UNSPECIFIED", "CREATING", "ACTIVE", "FAILED")
METADATA_TYPE = ("type.googleapis.com/google.ai.generativelanguage.v1beta."
                 "CreateTunedModelMetadata")  # §4, as recorded in §5
OWNER_ID = "0123456789abcdef"
EXAMPLES = [("1", "2"), ("3", "4"), ("déjà", "vu \"quoted\""), ("7", "8")]


def _job(repo, extra: str = "", *, hyperparameters: str = "batch_size: 2\n  learning_rate: "
         "0.001\n  epoch_count: 5"):
    repo.write_jsonl("jobs/data/demo.jsonl", EXAMPLES)
    path = repo.job("demo", extra=extra, hyperparameters=hyperparameters)
    job = load_job(str(path))
    return job, identify(job)


def _examples(job) -> list:
    """The job's training examples as the backend reads them (its data file holds EXAMPLES)."""
    return list(iter_examples(job.training_data))


def _body(job, identity, validation=None):
    return create_body(job, identity, OWNER_ID, inline_dataset(_examples(job)), validation)


def test_the_create_request_holds_only_fields_of_the_gemini_apis_messages(repo):
    job, identity = _job(repo, "description: Counts up by one.\ndisplay_name: Counter\n")
    body = _body(job, identity)

    assert set(body) <= TUNED_MODEL - TUNED_MODEL_OUTPUT_ONLY
    assert set(body) == {"displayName", "description", "baseModel", "tuningTask"}
    assert body["baseModel"] == "models/gemini-1.0-pro-001"  # as the job file names it
    assert body["displayName"] == "Counter"
    task = body["tuningTask"]
    assert set(task) == {"hyperparameters", "trainingData"} <= TUNING_TASK
    assert task["hyperparameters"] == {"batchSize": 2, "learningRate": 0.001, "epochCount": 5}
    for name, value in task["hyperparameters"].items():
        assert type(value) is HYPERPARAMETERS[name], name  # int32 travels as a number
    # Dataset.examples is a TuningExamples, whose examples are the TuningExample[] (§4's doubled
    # key), each one turn of text.
    dataset = task["trainingData"]
    assert set(dataset) == DATASET and set(dataset["examples"]) == TUNING_EXAMPLES
    assert dataset["examples"]["examples"] == [{"textInput": i, "output": o} for i, o in EXAMPLES]
    assert all(set(e) == TUNING_EXAMPLE for e in dataset["examples"]["examples"])
    json.dumps(body, allow_nan=False)  # plain JSON


def test_a_learning_rate_multiplier_is_sent_in_place_of_a_rate_never_both(repo):
    """Hyperparameters.learningRate and learningRateMultiplier are one proto oneof (§4)."""
    job, identity = _job(repo, hyperparameters="learning_rate_multiplier: 0.5")
    sent = _body(job, identity)["tuningTask"]["hyperparameters"]
    assert sent == {"batchSize": 4, "epochCount": 5, "learningRateMultiplier": 0.5}
    assert set(sent) <= set(HYPERPARAMETERS)


def test_the_display_name_is_the_job_files_else_its_name_within_the_apis_40_characters(repo):
    job, identity = _job(repo)
    assert _body(job, identity)["displayName"] == "demo"
    job, identity = _job(repo, f"display_name: {'é' * 39}z\n")  # the schema's most
    assert _body(job, identity)["displayName"] == "é" * 39 + "z"
    # A Job made otherwise than from a job file is cut to the limit all the same.
    longer = dataclasses.replace(job, display_name="x" * 41)
    assert _body(longer, identity)["displayName"] == "x" * 40


def test_the_description_ends_with_jobspecs_mark_which_reads_back(repo):
    job, identity = _job(repo, "description: Counts up by one.\n")
    description = _body(job, identity)["description"]
    mark = marker("demo", identity.fingerprint, OWNER_ID)
    assert description == f"Counts up by one.\n\n{mark}"
    assert parse_marker(description) == {"job": "demo", "fingerprint": identity.fingerprint,
                                         "owner": OWNER_ID}
    job, identity = _job(repo)
    assert _body(job, identity)["description"] == marker("demo", identity.fingerprint, OWNER_ID)


def test_only_a_mark_in_the_last_paragraph_is_jobspecs():
    theirs = marker("other", "f" * 64, "feedfacefeedface")
    ours = marker("demo", "a" * 64, OWNER_ID)
    assert parse_marker(f"{theirs}\n\n{ours}")["job"] == "demo"  # the author's, then ours
    assert parse_marker(f"{ours}\n\nmore words") == {"job": None, "fingerprint": None,
                                                     "owner": None}
    assert parse_marker(None)["job"] is None
    # Models from before owners were recorded: owner None (never pruned).
    assert parse_marker(f"[jobspec job=demo fingerprint={'a' * 64}]") == {
        "job": "demo", "fingerprint": "a" * 64, "owner": None}


def test_a_created_model_reads_back_as_the_hyperparameters_the_plan_compares(repo):
    """What plan compares (the backend's ``hyperparameters``) is what the service's TunedModel
    says of the model create made: else every plan would see a change and train again."""
    for hyperparameters in ("batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 5",
                            "learning_rate_multiplier: 0.5\n  epoch_count: 3"):
        job, identity = _job(repo, hyperparameters=hyperparameters)
        body = _body(job, identity)
        answered = {**body, "name": "tunedModels/demo-1", "state": "ACTIVE",
                    "tuningTask": {"hyperparameters": body["tuningTask"]["hyperparameters"]}}
        model = tuned_model_from_wire(answered)
        with GeminiBackend("gemini", ApiClient("http://127.0.0.1:9", no_credentials("none")),
                           Owner("team", "test")) as naming:  # sends nothing
            assert model.hyperparameters == naming.hyperparameters(job)
        assert (model.job, model.fingerprint, model.owner) == ("demo", identity.fingerprint,
                                                               OWNER_ID)
        assert model.base_model == job.base_model and model.display_name == "demo"


@pytest.mark.parametrize("state,ours", [("STATE_UNSPECIFIED", CREATING), ("CREATING", CREATING),
                                        ("ACTIVE", ACTIVE), ("FAILED", FAILED)])
def test_every_tuned_model_state_maps_to_one_of_three_and_keeps_its_name(state, ours):
    assert state in STATES
    model = tuned_model_from_wire({"name": "tunedModels/m", "state": state})
    assert (model.state, model.service_state) == (ours, state)


def test_a_tuned_model_is_read_field_by_field():
    body = {
        "name": "tunedModels/number-generator-model-dzlmi0gswwqb",
        "displayName": "number generator model", "description": "plain",
        "tunedModelSource": {"tunedModel": "tunedModels/earlier",
                             "baseModel": "models/gemini-1.0-pro-001"},
        "state": "ACTIVE", "createTime": "2024-03-14T15:00:00Z",
        "updateTime": "2024-03-14T15:12:00Z",
        "tuningTask": {
            "startTime": "2024-03-14T15:01:00Z", "completeTime": "2024-03-14T15:11:23Z",
            "snapshots": [{"step": 1, "epoch": 0, "meanLoss": 3.5,
                           "computeTime": "2024-03-14T15:02:00Z"},
                          {"step": 19, "epoch": 5, "meanLoss": 1.402067,
                           "computeTime": "2024-03-14T15:11:23.766989274Z"}],
            "hyperparameters": {"batchSize": 4, "learningRate": 0.001, "epochCount": 5}}}
    model = tuned_model_from_wire(body)
    assert model.name == body["name"] and model.model_id == "number-generator-model-dzlmi0gswwqb"
    assert model.base_model == "models/gemini-1.0-pro-001"  # from tunedModelSource
    assert (model.display_name, model.description) == ("number generator model", "plain")
    assert (model.create_time, model.start_time, model.complete_time) == (
        "2024-03-14T15:00:00Z", "2024-03-14T15:01:00Z", "2024-03-14T15:11:23Z")
    assert model.snapshots == (Snapshot(1, 0, 3.5, "2024-03-14T15:02:00Z"),
                               Snapshot(19, 5, 1.402067, "2024-03-14T15:11:23.766989274Z"))
    assert model.hyperparameters == {"batch_size": 4, "learning_rate": 0.001, "epoch_count": 5}
    assert not model.managed and model.owner is None  # no mark: not jobspec's
    # Google's TunedModel has none of the local service's additions.
    assert (model.validation, model.kept_epoch, model.stop_reason, model.device) == (
        (), None, None, None)


def test_the_local_services_additions_to_the_tuning_task_are_read():
    model = tuned_model_from_wire({
        "name": "tunedModels/m", "baseModel": "models/b", "state": "ACTIVE",
        "tuningTask": {"validationSnapshots": [{"step": 4, "epoch": 1, "meanLoss": 0.5}],
                       "keptEpoch": 1, "stopReason": "no better for 2 epochs",
                       "device": "cpu"}})
    assert model.validation == (Snapshot(4, 1, 0.5, None),)
    assert (model.kept_epoch, model.stop_reason, model.device) == (
        1, "no better for 2 epochs", "cpu")


def test_the_recorded_create_answer_is_a_run_in_progress():
    """§5's recorded response to a create: no ``done``, the model named in the metadata."""
    progress = operation_progress({
        "name": "tunedModels/number-generator-model-dzlmi0gswwqb/operations/bvl8dymw0fhw",
        "metadata": {"@type": METADATA_TYPE, "totalSteps": 38,
                     "tunedModel": "tunedModels/number-generator-model-dzlmi0gswwqb"}})
    assert progress.model_name == "tunedModels/number-generator-model-dzlmi0gswwqb"
    assert progress.operation == ("tunedModels/number-generator-model-dzlmi0gswwqb/operations/"
                                  "bvl8dymw0fhw")
    assert (progress.done, progress.total_steps, progress.completed_steps) == (False, 38, 0)
    assert progress.model is None and progress.error is None


def test_an_operation_without_a_model_in_its_metadata_names_it_before_operations():
    """As python-genai takes it (§5)."""
    progress = operation_progress({"name": "tunedModels/m-1/operations/op"})
    assert progress.model_name == "tunedModels/m-1" and progress.total_steps is None


def test_a_running_operation_counts_its_steps_and_snapshots():
    progress = operation_progress({
        "name": "tunedModels/m/operations/op",
        "metadata": {"@type": METADATA_TYPE, "tunedModel": "tunedModels/m", "totalSteps": 38,
                     "completedSteps": 19, "completedPercent": 50,
                     "snapshots": [{"step": 19, "epoch": 2, "meanLoss": 1.25}]}})
    assert (progress.completed_steps, progress.percent) == (19, 50.0)
    assert progress.snapshots == (Snapshot(19, 2, 1.25, None),)


def test_a_done_operation_carries_its_model_or_its_error_never_both():
    done = operation_progress({
        "name": "tunedModels/m/operations/op", "done": True,
        "metadata": {"tunedModel": "tunedModels/m", "totalSteps": 38, "completedSteps": 38},
        "response": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1beta."
                              "TunedModel", "name": "tunedModels/m", "state": "ACTIVE",
                     "baseModel": "models/b"}})
    assert done.done and done.error is None and done.model is not None
    assert (done.model.name, done.model.state, done.percent) == ("tunedModels/m", ACTIVE, 100.0)

    failed = operation_progress({"name": "tunedModels/m/operations/op", "done": True,
                                 "error": {"code": 13, "message": "Internal error"}})
    assert failed.done and failed.model is None
    assert failed.error == "Internal error (code 13)"


@pytest.mark.parametrize("state,done,error", [("CREATING", False, None), ("ACTIVE", True, None),
                                              ("FAILED", True, "tuning failed")])
def test_a_model_without_an_operation_is_polled_by_its_state(state, done, error):
    model = tuned_model_from_wire({"name": "tunedModels/m", "state": state, "tuningTask": {
        "snapshots": [{"step": 3, "epoch": 1, "meanLoss": 2.0}]}})
    progress = model_progress(model)
    assert (progress.model_name, progress.operation, progress.done, progress.error) == (
        "tunedModels/m", None, done, error)
    assert progress.completed_steps == 3 and progress.total_steps is None
    assert (progress.model is model) == (state == "ACTIVE")


def test_a_refusal_that_names_a_training_example_gives_its_index():
    """As the local service names them (server/validation.py, server/uploads.py): the i-th
    inline example, or line i+1 of the upload; a validation example is not a training one."""
    assert refused_example(f"{wire.EXAMPLES_FIELD}[12] is too long: inputs may have 40,000 "
                           "characters and outputs 5,000.") == 12
    assert refused_example(f"{wire.EXAMPLES_FIELD}[0].output is required.") == 0
    assert refused_example(f"{wire.UPLOADED_EXAMPLES_FIELD}[41] (line 42 of the upload) is "
                           "not JSON") == 41
    assert refused_example("tuned_model.tuning_task.validation_data.examples.examples[3] is "
                           "too long") is None
    assert refused_example("tuned_model.display_name is too long") is None


def test_a_tuned_models_path_comes_from_its_name_or_bare_id():
    assert model_path("demo-1") == model_path("tunedModels/demo-1") == "tunedModels/demo-1"


# The local backend: the same create, with its examples uploaded apart and the local service's
# additions (validation examples, early stopping), which the Gemini API never gets.

def test_an_upload_is_one_compact_json_line_an_example_named_by_its_sha256(repo):
    examples = _examples(_job(repo)[0])
    content = b"".join(uploads.lines(examples))
    lines = content.decode("utf-8").splitlines(keepends=True)
    assert [json.loads(line) for line in lines] == [{"textInput": i, "output": o}
                                                    for i, o in EXAMPLES]
    assert all(line.endswith("\n") for line in lines)
    assert lines[2] == '{"textInput":"déjà","output":"vu \\"quoted\\""}\n'  # UTF-8, not \u00e9
    measured = uploads.measure_examples(examples)
    assert measured.sha256 == hashlib.sha256(content).hexdigest()
    assert measured.size == len(content)
    assert measured.name == f"uploads/{measured.sha256}" and wire.is_sha256(measured.sha256)
    # Each line is what the service reads back as the example.
    assert [wire.read_upload_line(json.loads(line)).turns[1].text for line in lines] == \
        [o for _, o in EXAMPLES]


def test_the_local_create_names_its_uploads_and_the_service_parses_it(repo):
    job, identity = _job(repo, "validation_split: 0.25\nearly_stopping: 2\n")
    examples = _examples(job)
    training = uploads.measure_examples(examples[1:])
    validation = uploads.measure_examples(examples[:1])
    body = create_body(job, identity, OWNER_ID, uploaded_dataset(training.name),
                       uploaded_dataset(validation.name))
    task = body["tuningTask"]
    assert task["trainingData"] == {"upload": training.name}
    assert task["validationData"] == {"upload": validation.name}
    assert task["earlyStopping"] == {"patience": 2}
    # The local service's own parser of a TunedModel takes it, additions and all.
    parsed = protojson.parse(body, protojson.TUNED_MODEL, "tuned_model")
    assert parsed["tuning_task"]["training_data"] == {"upload": training.name}
    assert parsed["tuning_task"]["early_stopping"] == {"patience": 2}


def test_a_job_without_validation_or_early_stopping_sends_none_of_the_local_additions(repo):
    job, identity = _job(repo)
    body = create_body(job, identity, OWNER_ID, uploaded_dataset("uploads/" + "0" * 64))
    task = body["tuningTask"]
    assert set(task) == {"hyperparameters", "trainingData"}
    assert protojson.parse(_body(job, identity), protojson.TUNED_MODEL, "tuned_model")
