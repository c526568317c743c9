"""fake_vertex's open models (tests/fake_vertex_open.py, from
jobspec/backends/reference/vertex-open-models.md) against plain httpx: the v1beta1 create it
accepts, each refusal the reference names, the chat-form training file, and a finished job that
has a model and no endpoint; so that a failing open-model backend test points at the backend."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.fake_vertex import FakeVertex
from tests.test_fake_vertex import BEARER, error_of

pytestmark = pytest.mark.timeout(60)

PARENT = "projects/my-project/locations/us-central1"
CHAT = [{"messages": [{"role": "user", "content": "1+1=?"},
                      {"role": "assistant", "content": "2"}]},
        {"prompt": "hello", "completion": "world"}]  # 6 + 10 characters


@pytest.fixture
def client():
    with FakeVertex(polls_until_done=1) as fake, \
            httpx.Client(base_url=fake.url, headers=BEARER, timeout=10) as http:
        http.fake = fake
        response = http.post("/upload/storage/v1/b/my-bucket/o",
                             content="".join(json.dumps(line) + "\n" for line in CHAT).encode(),
                             params={"uploadType": "media", "name": "train.jsonl"},
                             headers={"Content-Type": "application/jsonl"})
        assert response.status_code == 200
        yield http


def body(**overrides):
    """An open model's create (reference §4), with ``overrides`` merged into it."""
    spec = {"trainingDatasetUri": "gs://my-bucket/train.jsonl",
            "tuningMode": "TUNING_MODE_PEFT_ADAPTER",
            "hyperParameters": {"epochCount": "2", "learningRate": 0.0002, "batchSize": "8",
                                "adapterSize": "ADAPTER_SIZE_SIXTEEN"}}
    spec.update(overrides.pop("spec", {}))
    return {"baseModel": "meta/llama3_1@llama-3.1-8b-instruct", "supervisedTuningSpec": spec,
            "outputUri": "gs://my-bucket/out/", **overrides}


def create(client, version="v1beta1", **overrides):
    return client.post(f"/{version}/{PARENT}/tuningJobs", json=body(**overrides))


def test_an_open_model_job_is_created_on_v1beta1_and_ends_with_a_model_only(client):
    job = create(client).json()
    assert job["state"] == "JOB_STATE_PENDING" and job["outputUri"] == "gs://my-bucket/out/"
    assert job["supervisedTuningSpec"]["hyperParameters"]["batchSize"] == "8"
    done = client.get(f"/v1/{job['name']}").json()  # read on v1, as jobspec reads it
    assert done["state"] == "JOB_STATE_SUCCEEDED"
    assert set(done["tunedModel"]) == {"model"}  # not served until deployed (§6)
    stats = done["tuningDataStats"]["supervisedTuningDataStats"]
    assert (stats["tuningDatasetExampleCount"], stats["totalTuningCharacterCount"],
            stats["tuningStepCount"]) == ("2", "16", "4")
    long_name = body(baseModel="publishers/meta/models/llama3_1@llama-3.1-8b-instruct")
    assert client.post(f"/v1beta1/{PARENT}/tuningJobs", json=long_name).status_code == 200


@pytest.mark.parametrize(("overrides", "words"), [
    ({"baseModel": "meta-llama/Llama-3.1-8B-Instruct"},
     "Invalid open source publisher model resource name: meta-llama/Llama-3.1-8B-Instruct"),
    ({"baseModel": "meta/llama3_1"}, "Invalid open source publisher model resource name"),
    ({"baseModel": "meta/llama4@llama-4-scout-17b-16e-instruct",
      "spec": {"tuningMode": "TUNING_MODE_FULL", "hyperParameters": {"epochCount": "1"}}},
     "Tuning mode TUNING_MODE_FULL is not supported for "
     "meta/llama4@llama-4-scout-17b-16e-instruct; use TUNING_MODE_PEFT_ADAPTER."),
    ({"spec": {"tuningMode": "TUNING_MODE_UNSPECIFIED"}}, "Tuning mode TUNING_MODE_UNSPECIFIED"),
    ({"spec": {"tuningMode": "LORA"}},
     "Invalid value at 'tuning_job.supervised_tuning_spec.tuning_mode'"),
    ({"spec": {"hyperParameters": {"learningRateMultiplier": 1.0}}},
     "learningRateMultiplier is only available for 1P models"),
    ({"spec": {"tuningMode": "TUNING_MODE_FULL", "hyperParameters": {"adapterSize":
                                                                     "ADAPTER_SIZE_FOUR"}}},
     "The adapter size is not supported for TUNING_MODE_FULL."),
    ({"outputUri": None}, "outputUri is required for open source models"),
    ({"outputUri": "gs://another-bucket/out/"}, "the bucket another-bucket does not exist"),
    ({"baseModel": "gemini-2.5-flash"},
     "supervisedTuningSpec.hyperParameters.learningRate, supervisedTuningSpec."
     "hyperParameters.batchSize, supervisedTuningSpec.tuningMode, outputUri is only available "
     "for open source models, not gemini-2.5-flash."),
])
def test_a_create_vertex_would_refuse(client, overrides, words):
    assert words in error_of(create(client, **overrides), 400, "INVALID_ARGUMENT")
    assert client.fake.jobs == {}


def test_v1_knows_no_open_model_fields_and_other_regions_tune_none():
    assert "Unknown name \"tuningMode\"" in error_of(
        create_in(FakeVertex(), "v1"), 400, "INVALID_ARGUMENT")
    assert error_of(create_in(FakeVertex(location="europe-north1"), "v1beta1"), 400,
                    "INVALID_ARGUMENT").startswith(
        "Open model tuning is not supported in europe-north1; supported regions: us-central1, ")


def create_in(fake: FakeVertex, version: str) -> httpx.Response:
    with fake, httpx.Client(base_url=fake.url, headers=BEARER, timeout=10) as http:
        http.post("/upload/storage/v1/b/my-bucket/o", content=b"{}\n",
                  params={"uploadType": "media", "name": "train.jsonl"},
                  headers={"Content-Type": "application/jsonl"})
        parent = f"projects/my-project/locations/{fake.location}"
        response = http.post(f"/{version}/{parent}/tuningJobs", json=body())
        response.read()
        return response


def test_a_training_file_in_another_form_fails_the_job(client):
    client.post("/upload/storage/v1/b/my-bucket/o", content=b'{"contents": []}\n',
                params={"uploadType": "media", "name": "gemini.jsonl"},
                headers={"Content-Type": "application/jsonl"})
    job = create(client, spec={"trainingDatasetUri": "gs://my-bucket/gemini.jsonl"}).json()
    failed = client.get(f"/v1/{job['name']}").json()
    assert failed["state"] == "JOB_STATE_FAILED"
    assert failed["error"]["message"].startswith("Invalid training example at line 1: expected "
                                                 "a JSON object with messages[]")
