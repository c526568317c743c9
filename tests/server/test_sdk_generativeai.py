"""A strict official client: google-generativeai 0.8 (protobuf messages, REST transport), unchanged,
pointed at the local service on loopback.

Its operations client parses every Operation with protobuf's JSON parser and
``ignore_unknown_fields=False``, so one field that Google's published TunedModel lacks
(``tuningTask.device``, say) makes ``operation.done()`` raise ParseError on every poll. The
service answers a client that did not ask for jobspec's extensions with the published shapes only
(test_published_shapes.py checks each against the discovery document); this drives the SDK's own
create → poll to done → get → generate with validation data and early stopping, so that every
extension field would have been there.
"""

from __future__ import annotations

import time
import warnings

import httpx
import pytest

with warnings.catch_warnings():  # "support has ended": the point is that old code still works
    warnings.simplefilter("ignore", FutureWarning)
    import google.generativeai as genai
from google.generativeai import client as client_lib
from google.generativeai import operations

from tests.conftest import NUMBER_EXAMPLES

BASE = "models/gemini-1.5-flash-001-tuning"


@pytest.fixture
def configured(service, monkeypatch):
    """google-generativeai's module-wide clients, configured for this test alone: the REST
    transport to the local service (an API key, so google-auth looks for no other credentials;
    the loopback service without --api-key takes any)."""
    monkeypatch.setattr(client_lib, "_client_manager", client_lib._ClientManager())
    genai.configure(api_key="local", transport="rest",
                    client_options={"api_endpoint": service.url})
    return genai


def test_create_poll_get_generate(configured, service):
    operation = configured.create_tuned_model(
        BASE, [{"text_input": i, "output": o} for i, o in NUMBER_EXAMPLES], id="strict-sdk",
        display_name="strict sdk", epoch_count=2, batch_size=4, learning_rate=0.001)
    assert operation.metadata.total_steps == 8
    deadline = time.monotonic() + 120
    while not operation.done():  # the SDK's own poll: GET /v1beta/{operation} parsed strictly
        assert time.monotonic() < deadline, service.log[-3000:]
        time.sleep(0.2)
    model = operation.result()
    assert (model.name, model.state.name) == ("tunedModels/strict-sdk", "ACTIVE")
    assert operation.metadata.completed_steps == 8 and len(model.tuning_task.snapshots) == 8

    fetched = configured.get_tuned_model("tunedModels/strict-sdk")
    assert fetched.base_model == BASE and fetched.tuning_task.hyperparameters.epoch_count == 2
    assert [m.name for m in configured.list_tuned_models()].count("tunedModels/strict-sdk") == 1

    answer = configured.GenerativeModel("tunedModels/strict-sdk").generate_content(
        "LXIII", generation_config={"temperature": 0, "max_output_tokens": 4})
    assert answer.candidates[0].finish_reason.name in ("STOP", "MAX_TOKENS")
    assert answer.usage_metadata.total_token_count > 0
    assert "GET /v1beta/tunedModels/strict-sdk/operations/" in service.log


def test_the_rest_of_the_model_service(configured, service):
    """What else the SDK's users call on a tuned model and the base models, each parsed by
    the SDK's own messages."""
    operation = configured.create_tuned_model(
        BASE, [(i, o) for i, o in NUMBER_EXAMPLES], id="strict-rest", epoch_count=1,
        batch_size=8, learning_rate=0.001)
    deadline = time.monotonic() + 120
    while not operation.done():
        assert time.monotonic() < deadline, service.log[-3000:]
        time.sleep(0.2)
    updated = configured.update_tuned_model("tunedModels/strict-rest",
                                            {"description": "patched", "temperature": 0.5})
    assert (updated.description, updated.temperature) == ("patched", 0.5)
    assert configured.get_model(BASE).input_token_limit > 0
    assert BASE in [m.name for m in configured.list_models()]
    tokens = configured.GenerativeModel(BASE).count_tokens("LXIII")
    assert tokens.total_tokens > 0
    configured.delete_tuned_model("tunedModels/strict-rest")
    assert "tunedModels/strict-rest" not in [m.name for m in configured.list_tuned_models()]


@pytest.mark.timeout(240)
def test_a_run_with_validation_and_early_stopping_parses_too(configured, service):
    """The same SDK polls a job made with jobspec's extensions (validation data, early stopping):
    its responses carry validationSnapshots, keptEpoch, stopReason and device only for a caller
    that asks, so the strict parser never meets them."""
    body = {"baseModel": BASE, "tuningTask": {
        "hyperparameters": {"epochCount": 30, "batchSize": 5, "learningRate": 0.05},
        "trainingData": {"examples": {"examples": [
            {"textInput": i, "output": o} for i, o in NUMBER_EXAMPLES[:5]]}},
        "validationData": {"examples": {"examples": [
            {"textInput": i, "output": "no"} for i, _ in NUMBER_EXAMPLES[:5]]}},
        "earlyStopping": {"patience": 1}}}
    created = httpx.post(f"{service.url}/v1beta/tunedModels", params={"tunedModelId": "strict-es"},
                         json=body, timeout=60)
    assert created.status_code == 200, created.text
    operation = operations.get_operation(created.json()["name"])
    deadline = time.monotonic() + 200
    while not operation.done():
        assert time.monotonic() < deadline, service.log[-3000:]
        time.sleep(0.2)
    model = configured.get_tuned_model("tunedModels/strict-es")
    assert model.state.name == "ACTIVE"
    assert len(model.tuning_task.snapshots) < 30  # stopped early: the extension ran
    listed = client_lib.get_default_operations_client().list_operations(
        name="tunedModels/strict-es", filter_="")
    assert [o.name for o in listed] == [operation.name]  # the list parses too
