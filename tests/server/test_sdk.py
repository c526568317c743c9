"""An official SDK (google-genai, unchanged) pointed at the local service's base URL.

google-genai 3.x drops the training examples when it builds a Gemini API (not Vertex) create
request: `_CreateTuningJobParametersPrivate_to_mldev` discards what `_TuningDataset_to_mldev`
returns, so `client.tunings.tune()` sends no `trainingData`. The service answers that exactly as
the contract says (400 INVALID_ARGUMENT naming the field), and the rest of the flow runs through
the SDK's own transport: the create request with the SDK's headers and base URL, then the SDK's
`tunings.get` and `models.generate_content` unchanged.
"""

from __future__ import annotations

import json
import time

import pytest
from google import genai
from google.genai import errors, types

from jobspec.wire import EXTENSIONS_HEADER, EXTENSIONS_ON
from tests.conftest import NUMBER_EXAMPLES


def make_client(service, extensions: bool = False) -> genai.Client:
    headers = {EXTENSIONS_HEADER: EXTENSIONS_ON} if extensions else None
    return genai.Client(api_key="local", http_options=types.HttpOptions(base_url=service.url,
                                                                        headers=headers))


def test_sdk_tune_without_examples_gets_the_contract_error(service):
    client = make_client(service)
    with pytest.raises(errors.ClientError) as raised:
        client.tunings.tune(
            base_model="models/gemini-1.5-flash-001-tuning",
            training_dataset=types.TuningDataset(examples=[
                types.TuningExample(text_input="1", output="2")]),
            config=types.CreateTuningJobConfig(epoch_count=1))
    assert raised.value.code == 400
    assert raised.value.status == "INVALID_ARGUMENT"
    assert raised.value.message == "tuned_model.tuning_task.training_data is required."


def test_google_genai_polls_and_generates(service):
    client = make_client(service)
    created = client._api_client.request("post", "tunedModels", {
        "displayName": "sdk model", "baseModel": "models/gemini-1.5-flash-001-tuning",
        "tuningTask": {"hyperparameters": {"epochCount": 2, "batchSize": 4, "learningRate": 0.001},
                       "trainingData": {"examples": {"examples": [
                           {"textInput": i, "output": o} for i, o in NUMBER_EXAMPLES]}}}})
    name = json.loads(created.body)["metadata"]["tunedModel"]
    deadline = time.monotonic() + 120
    while True:
        job = client.tunings.get(name=name)
        if job.state not in (types.JobState.JOB_STATE_QUEUED, types.JobState.JOB_STATE_RUNNING) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.base_model == "models/gemini-1.5-flash-001-tuning"
    response = client.models.generate_content(
        model=name, contents="LXIII",
        config=types.GenerateContentConfig(temperature=0, max_output_tokens=4))
    assert response.candidates[0].finish_reason in (types.FinishReason.STOP,
                                                    types.FinishReason.MAX_TOKENS)
    assert response.usage_metadata.total_token_count > 0
    assert "GET /v1/tunedModels/sdk-model-" in service.log


def test_google_genai_parses_every_response_that_carries_validation_loss(service):
    """The local service's additions (tuningTask.validationData, earlyStopping and
    validationSnapshots, keptEpoch, stopReason, device; metadata.validationSnapshots) are fields
    Google's messages lack, sent to a caller that asks for them: google-genai's lenient parsers
    take every response that has them (a strict client, test_sdk_generativeai.py, is never sent
    them)."""
    client = make_client(service, extensions=True)
    created = client._api_client.request("post", "tunedModels", {
        "displayName": "sdk validation", "baseModel": "models/gemini-1.5-flash-001-tuning",
        "tuningTask": {"hyperparameters": {"epochCount": 3, "batchSize": 4, "learningRate": 0.001},
                       "trainingData": {"examples": {"examples": [
                           {"textInput": i, "output": o} for i, o in NUMBER_EXAMPLES]}},
                       "validationData": {"examples": {"examples": [
                           {"textInput": "5", "output": "6"}]}},
                       "earlyStopping": {"patience": 1}}})
    name = json.loads(created.body)["metadata"]["tunedModel"]
    deadline = time.monotonic() + 120
    while True:
        job = client.tunings.get(name=name)  # parses TunedModel with the additions, every poll
        if job.state not in (types.JobState.JOB_STATE_QUEUED, types.JobState.JOB_STATE_RUNNING) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    raw = json.loads(client._api_client.request("get", name, {}).body)
    assert raw["tuningTask"]["validationSnapshots"] and raw["tuningTask"]["keptEpoch"] >= 1
    assert raw["tuningTask"]["device"]
    model = client.models.get(model=name)  # the TunedModel as a Model
    assert model.name == name
    operation = json.loads(created.body)["name"]
    polled = client._api_client.request("get", operation, {},
                                        http_options=types.HttpOptions(api_version="v1"))
    assert json.loads(polled.body)["metadata"]["validationSnapshots"]
    assert any(m.name == name for m in client.models.list(config={"query_base": False}))
