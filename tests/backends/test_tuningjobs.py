"""Vertex AI's tuningJobs wire mapping (jobspec/backends/tuningjobs.py), called directly: the
TuningJob a job creates, its labels and the listing's filter, the training file's JSONL line, and
what a TuningJob is read as (RemoteModel, Progress), every field and enum checked against
shared/reference/vertex-tuning-api.md (§3 TuningJob, §4 the create, §5 JobState, §6 the training
file). The create is also parsed by fake_vertex's TuningJob, built from the same reference."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobspec.backends.base import ACTIVE, CREATING, FAILED, DataStats
from jobspec.backends.tuningjobs import (ADAPTER_SIZES, JSONL_EXAMPLE_BYTES,
                                         applied_hyperparameters, hyperparameters_to_wire,
                                         job_labels, label_filter, progress_of,
                                         removal_commands, tuning_job_from_wire,
                                         tuning_job_to_wire)
from jobspec.backends.vertex import VertexBackend
from jobspec.data import iter_examples
from jobspec.identity import identify
from jobspec.spec import load_job
from tests.backends.conftest import job_text
from tests.fake_vertex import (ADAPTER_SIZES as REFERENCE_ADAPTER_SIZES, JOB_STATES, LABEL_KEY,
                               LABEL_VALUE, TUNING_JOB, parse)

OWNER_ID = "0123456789abcdef"
TRAINING = "gs://my-bucket/jobspec/training/f.jsonl"
VALIDATION = "gs://my-bucket/jobspec/validation/f.jsonl"
# §5: what each JobState is to jobspec. Terminal success is ACTIVE; every terminal state that is
# not a whole success is FAILED; the rest (not yet, or still, running) are CREATING.
STATE_OF = {"JOB_STATE_UNSPECIFIED": CREATING, "JOB_STATE_QUEUED": CREATING,
            "JOB_STATE_PENDING": CREATING, "JOB_STATE_RUNNING": CREATING,
            "JOB_STATE_SUCCEEDED": ACTIVE, "JOB_STATE_FAILED": FAILED,
            "JOB_STATE_CANCELLING": CREATING, "JOB_STATE_CANCELLED": FAILED,
            "JOB_STATE_PAUSED": CREATING, "JOB_STATE_EXPIRED": FAILED,
            "JOB_STATE_UPDATING": CREATING, "JOB_STATE_PARTIALLY_SUCCEEDED": FAILED}


def _job(repo, **kwargs):
    repo.write_jsonl("jobs/data/numbers.jsonl", [("1", "2"), ("3", "4"), ("5", "6")])
    repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl", **kwargs))
    job = load_job("jobs/numbers.yaml")
    return job, identify(job)


def _parsed(body: dict) -> dict:
    errors: list[tuple[str, str]] = []
    parsed = parse(body, TUNING_JOB, "", errors)
    assert errors == []
    return parsed


def test_the_create_is_a_tuning_job_as_the_reference_shapes_it(repo):
    job, identity = _job(repo)
    body = tuning_job_to_wire(job, identity, OWNER_ID, TRAINING, VALIDATION)
    assert body == {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": identity.tuned_model_id,
        "description": "The numbers job.",
        "supervisedTuningSpec": {
            "trainingDatasetUri": TRAINING, "validationDatasetUri": VALIDATION,
            # capital P (§3); epochCount an int64, so a JSON string
            "hyperParameters": {"epochCount": "3", "learningRateMultiplier": 0.5,
                                "adapterSize": "ADAPTER_SIZE_FOUR"}},
        "labels": {"jobspec-owner": OWNER_ID, "jobspec-name": "numbers",
                   "jobspec-fingerprint": identity.fingerprint}}
    assert _parsed(body)["supervisedTuningSpec"]["hyperParameters"]["epochCount"] == "3"
    assert len(body["tunedModelDisplayName"]) <= 128  # §3


def test_a_job_without_validation_description_or_adapter_size_sends_none(repo):
    job, identity = _job(repo, hyperparameters="epoch_count: 2")
    job = dataclasses.replace(job, description=None)
    body = tuning_job_to_wire(job, identity, OWNER_ID, TRAINING)
    assert "description" not in body
    assert body["supervisedTuningSpec"] == {
        "trainingDatasetUri": TRAINING,
        "hyperParameters": {"epochCount": "2", "learningRateMultiplier": 1.0}}
    _parsed(body)


def test_a_base_model_named_as_the_gemini_api_names_it_goes_bare(repo):
    job, identity = _job(repo)
    job = dataclasses.replace(job, base_model="models/gemini-2.5-flash")
    assert tuning_job_to_wire(job, identity, OWNER_ID, TRAINING)["baseModel"] == \
        "gemini-2.5-flash"


def test_every_adapter_size_is_the_references_enum_name():
    assert set(ADAPTER_SIZES.values()) == set(REFERENCE_ADAPTER_SIZES) - {
        "ADAPTER_SIZE_UNSPECIFIED"}
    assert ADAPTER_SIZES == {1: "ADAPTER_SIZE_ONE", 2: "ADAPTER_SIZE_TWO", 4: "ADAPTER_SIZE_FOUR",
                             8: "ADAPTER_SIZE_EIGHT", 16: "ADAPTER_SIZE_SIXTEEN",
                             32: "ADAPTER_SIZE_THIRTY_TWO"}
    for size, name in ADAPTER_SIZES.items():
        sent = hyperparameters_to_wire(1, None, size)
        assert sent == {"epochCount": "1", "adapterSize": name}
        read = tuning_job_from_wire({"name": "j", "supervisedTuningSpec": {
            "hyperParameters": sent}})
        assert read.hyperparameters == {"epoch_count": 1, "adapter_size": size}


def test_labels_are_what_vertex_takes_and_the_listing_filters_by_them(repo):
    job, identity = _job(repo)
    labels = job_labels(job.name, identity.fingerprint, OWNER_ID)
    assert labels == {"jobspec-owner": OWNER_ID, "jobspec-name": "numbers",
                      "jobspec-fingerprint": identity.fingerprint}
    for key, value in labels.items():  # §3: at most 64 lowercase letters, digits, _ and -
        assert LABEL_KEY.fullmatch(key) and LABEL_VALUE.fullmatch(value), (key, value)
    assert len(identity.fingerprint) == 64
    # AIP-160: a bare "-" is negation, so each key is quoted.
    assert label_filter(labels) == (
        f'labels."jobspec-owner"="{OWNER_ID}" AND labels."jobspec-name"="numbers" AND '
        f'labels."jobspec-fingerprint"="{identity.fingerprint}"')
    assert label_filter({"jobspec-owner": OWNER_ID}) == f'labels."jobspec-owner"="{OWNER_ID}"'


def test_a_created_job_reads_back_as_the_hyperparameters_the_plan_compares(repo):
    """Else every plan would see a change and tune again."""
    for hyperparameters in ("epoch_count: 3\n  learning_rate_multiplier: 0.5\n  adapter_size: 4",
                            "epoch_count: 2"):
        job, identity = _job(repo, hyperparameters=hyperparameters)
        body = tuning_job_to_wire(job, identity, OWNER_ID, TRAINING)
        model = tuning_job_from_wire({**body, "name": "projects/p/locations/l/tuningJobs/1",
                                      "state": "JOB_STATE_SUCCEEDED"})
        assert model.hyperparameters == applied_hyperparameters(job.hyperparameters)
        assert (model.job, model.fingerprint, model.owner) == (
            "numbers", identity.fingerprint, OWNER_ID)
        assert model.base_model == "gemini-2.5-flash"
        assert model.display_name == identity.tuned_model_id


@pytest.mark.parametrize("state", JOB_STATES)
def test_every_job_state_maps_to_one_of_three_and_keeps_its_name(state):
    model = tuning_job_from_wire({"name": "projects/p/locations/l/tuningJobs/1", "state": state})
    assert (model.state, model.service_state) == (STATE_OF[state], state)
    progress = progress_of(model)
    assert progress.state_label == state
    assert progress.done == (STATE_OF[state] in (ACTIVE, FAILED))


def test_a_job_without_a_state_is_unspecified():
    model = tuning_job_from_wire({"name": "j"})
    assert (model.state, model.service_state) == (CREATING, "JOB_STATE_UNSPECIFIED")


@pytest.mark.parametrize("state,error,said", [
    ("JOB_STATE_FAILED", {"code": 3, "message": "bad data"},
     "bad data (code 3, JOB_STATE_FAILED)"),
    ("JOB_STATE_CANCELLED", {"code": 1, "message": "CANCELED"},
     "CANCELED (code 1, JOB_STATE_CANCELLED)"),
    ("JOB_STATE_FAILED", None, "the tuning job ended JOB_STATE_FAILED"),
    ("JOB_STATE_EXPIRED", None, "the tuning job expired (JOB_STATE_EXPIRED)"),
    ("JOB_STATE_PARTIALLY_SUCCEEDED", None,
     "the tuning job only partly succeeded (JOB_STATE_PARTIALLY_SUCCEEDED)"),
    # An error counts only once the job has failed.
    ("JOB_STATE_RUNNING", {"code": 3, "message": "not yet"}, None),
])
def test_why_a_job_failed_is_vertexs_error_else_its_state(state, error, said):
    body = {"name": "j", "state": state, **({"error": error} if error else {})}
    assert tuning_job_from_wire(body).error == said


def test_a_finished_job_is_read_field_by_field():
    job = tuning_job_from_wire({
        "name": "projects/123/locations/us-central1/tuningJobs/456",
        "baseModel": "gemini-2.5-flash", "tunedModelDisplayName": "numbers-0a1b2c3d",
        "description": "d", "state": "JOB_STATE_SUCCEEDED",
        "createTime": "2025-01-01T00:00:00Z", "startTime": "2025-01-01T00:01:00Z",
        "endTime": "2025-01-01T00:30:00Z", "updateTime": "2025-01-01T00:30:01Z",
        "tunedModel": {"model": "projects/123/locations/us-central1/models/789@1",
                       "endpoint": "projects/123/locations/us-central1/endpoints/321"},
        "tuningDataStats": {"supervisedTuningDataStats": {
            "tuningDatasetExampleCount": "15", "totalTuningCharacterCount": "420",
            "totalBillableCharacterCount": "420", "totalBillableTokenCount": "105",
            "tuningStepCount": "12"}},
        "supervisedTuningSpec": {"hyperParameters": {"epochCount": "3"}}})
    assert (job.name, job.model_id, job.state) == (
        "projects/123/locations/us-central1/tuningJobs/456", "456", ACTIVE)
    assert (job.base_model, job.display_name, job.description) == (
        "gemini-2.5-flash", "numbers-0a1b2c3d", "d")
    assert (job.create_time, job.start_time, job.complete_time) == (
        "2025-01-01T00:00:00Z", "2025-01-01T00:01:00Z", "2025-01-01T00:30:00Z")
    assert job.target == "projects/123/locations/us-central1/endpoints/321"  # what eval asks
    assert job.stats == DataStats(examples=15, billable_tokens=105, steps=12, characters=420)
    assert job.total_steps == 12 and job.hyperparameters == {"epoch_count": 3}
    assert not job.managed and job.owner is None  # no labels: not jobspec's

    progress = progress_of(job, adopted=True)
    assert (progress.done, progress.total_steps, progress.completed_steps) == (True, 12, 12)
    assert progress.model is job and progress.adopted and progress.operation is None
    assert progress.stats == job.stats and progress.error is None


def test_int64s_that_are_not_numbers_are_unknown_not_an_error():
    job = tuning_job_from_wire({"name": "j", "state": "JOB_STATE_RUNNING",
                                "supervisedTuningSpec": {"hyperParameters": {"epochCount": "x"}},
                                "tuningDataStats": {"supervisedTuningDataStats": {
                                    "tuningDatasetExampleCount": "many"}}})
    assert job.hyperparameters == {} and job.stats is not None
    assert job.stats.examples is None and job.total_steps is None
    progress = progress_of(job)
    assert (progress.done, progress.total_steps, progress.completed_steps) == (False, None, 0)


def test_a_job_is_jobspecs_only_with_its_name_and_fingerprint_labels():
    partly = tuning_job_from_wire({"name": "j", "labels": {"jobspec-name": "numbers",
                                                           "jobspec-owner": OWNER_ID}})
    assert (partly.job, partly.fingerprint, partly.owner) == (None, None, None)
    labelled = tuning_job_from_wire({"name": "j", "labels": {
        "jobspec-name": "numbers", "jobspec-fingerprint": "a" * 64}})
    assert (labelled.job, labelled.fingerprint, labelled.owner) == ("numbers", "a" * 64, None)


def test_a_failed_job_is_done_with_its_error_and_no_model():
    progress = progress_of(tuning_job_from_wire({
        "name": "j", "state": "JOB_STATE_FAILED", "error": {"code": 3, "message": "bad"}}))
    assert progress.done and progress.model is None and progress.completed_steps == 0
    assert progress.error == "bad (code 3, JOB_STATE_FAILED)"


def test_a_training_line_is_one_user_turn_and_the_model_answer(repo):
    """§6: one object a line, shaped like a GenerateContent request; compact UTF-8. The lines
    the training file is staged as (``VertexBackend._lines``, rechunked)."""
    repo.write_jsonl("jobs/data/numbers.jsonl", [("déjà", 'vu "x"'), ("1", "2")])
    repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl"))
    examples = list(iter_examples(load_job("jobs/numbers.yaml").training_data))
    staged = b"".join(VertexBackend._lines(examples))
    lines = staged.splitlines(keepends=True)
    assert len(lines) == 2 and all(line.endswith(b"\n") for line in lines)
    assert json.loads(lines[0]) == {"contents": [{"role": "user", "parts": [{"text": "déjà"}]},
                                                 {"role": "model", "parts": [{"text": 'vu "x"'}]}]}
    assert lines[0] == ('{"contents":[{"role":"user","parts":[{"text":"déjà"}]},{"role":"model",'
                        '"parts":[{"text":"vu \\"x\\""}]}]}\n').encode()  # compact, not \u00e9
    # What a line adds around its two JSON strings, as validate counts a training file's size.
    assert len(lines[0]) == JSONL_EXAMPLE_BYTES + len(json.dumps("déjà", ensure_ascii=False)
                                                      .encode()) + len(json.dumps('vu "x"'))


def test_what_a_finished_job_leaves_is_named_with_the_commands_that_remove_it():
    commands = removal_commands({
        "model": "projects/123/locations/us-central1/models/789@1",
        "endpoint": "projects/123/locations/us-central1/endpoints/321"})
    scope = "--project=123 --region=us-central1"
    assert commands[0].startswith(f"gcloud ai endpoints undeploy-model 321 {scope} "
                                  "--deployed-model-id=ID")
    assert commands[1:] == [f"gcloud ai endpoints delete 321 {scope}",
                            f"gcloud ai models delete 789 {scope}"]  # the model, not @1
    assert removal_commands({}) == []
