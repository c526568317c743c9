"""The local service's HTTP API, against the contract in shared/reference/gemini-tuning-api.md.

Runs the real service (`python -m jobspec.server`) with a tiny randomly initialised model.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.conftest import NUMBER_EXAMPLES

TUNING_METADATA = "type.googleapis.com/google.ai.generativelanguage.v1beta.CreateTunedModelMetadata"
TUNED_MODEL = "type.googleapis.com/google.ai.generativelanguage.v1beta.TunedModel"


def tutorial_body(batch_size=2, epochs=5, examples=NUMBER_EXAMPLES, **extra) -> dict:
    return {
        "display_name": "number generator model",
        "base_model": "models/gemini-1.0-pro-001",
        "tuning_task": {
            "hyperparameters": {"batch_size": batch_size, "learning_rate": 0.001,
                                "epoch_count": epochs},
            "training_data": {"examples": {"examples": [
                {"text_input": i, "output": o} for i, o in examples]}},
        },
        **extra,
    }


def create(http, body, model_id=None):
    params = {"tunedModelId": model_id} if model_id else {}
    return http.post("/v1beta/tunedModels", json=body, params=params)


def error_of(response):
    body = response.json()
    assert set(body) == {"error"}
    return response.status_code, body["error"]["status"], body["error"]["message"]


def test_lists_local_models_and_gemini_aliases_as_tunable(service):
    with service.client() as http:
        models = {m["name"]: m for m in http.get("/v1beta/models").json()["models"]}
        assert set(models) >= {"models/tiny-smollm2", "models/gemini-1.0-pro-001",
                               "models/gemini-1.5-flash-001-tuning"}
        for model in models.values():
            assert {"createTunedModel", "generateContent", "countTokens"} <= \
                set(model["supportedGenerationMethods"])
        assert http.get("/v1/models/tiny-smollm2").json()["inputTokenLimit"] == 512
        assert error_of(http.get("/v1beta/models/nope")) == (404, "NOT_FOUND", "Model models/nope is not found.")


def test_tutorial_request_as_sent_with_snake_case_and_trailing_commas(service):
    raw = json.dumps(tutorial_body(), indent=1).replace('"epoch_count": 5\n', '"epoch_count": 5,\n')
    assert ",\n" in raw
    with service.client() as http:
        response = http.post("/v1beta/tunedModels", content=raw.encode(),
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 200, response.text
        operation = response.json()
        assert re.fullmatch(r"tunedModels/number-generator-model-[a-z0-9]+/operations/[a-z0-9]+",
                            operation["name"])
        assert "done" not in operation
        assert operation["metadata"] == {
            "@type": TUNING_METADATA, "totalSteps": 38,
            "tunedModel": operation["name"].split("/operations/")[0]}


@pytest.mark.parametrize("batch_size, steps", [(2, 38), (4, 19)])
def test_total_steps_count_batches_over_the_epoch_stream(service, batch_size, steps):
    with service.client() as http:
        operation = create(http, tutorial_body(batch_size=batch_size)).json()
        assert operation["metadata"]["totalSteps"] == steps
        done = service.wait_done(operation["name"])
        assert [s["step"] for s in done["metadata"]["snapshots"]] == list(range(1, steps + 1))
        assert done["metadata"]["snapshots"][-1]["epoch"] == 5


def test_training_progress_then_active_model(service):
    with service.client() as http:
        operation = create(http, tutorial_body(),
                           "progress-1").json()
        name = operation["name"]
        done = service.wait_done(name)
        assert done["done"] is True and "error" not in done
        metadata = done["metadata"]
        assert metadata["@type"] == TUNING_METADATA
        assert (metadata["completedSteps"], metadata["completedPercent"]) == (38, 100.0)
        snapshot = metadata["snapshots"][-1]
        assert set(snapshot) == {"step", "epoch", "meanLoss", "computeTime"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", snapshot["computeTime"])
        model = done["response"]
        assert model["@type"] == TUNED_MODEL
        assert model["name"] == "tunedModels/progress-1"
        assert model["state"] == "ACTIVE"
        assert model["baseModel"] == "models/gemini-1.0-pro-001"  # the alias is kept
        assert model["tuningTask"]["hyperparameters"] == {
            "batchSize": 2, "learningRate": 0.001, "epochCount": 5}
        assert model["tuningTask"]["startTime"] <= model["tuningTask"]["completeTime"]
        assert len(model["tuningTask"]["snapshots"]) == 38
        fetched = http.get("/v1beta/tunedModels/progress-1").json()
        assert fetched == {k: v for k, v in model.items() if k != "@type"}
        # Operations are served identically under /v1/ and /v1beta/.
        assert http.get(f"/v1beta/{name}").json() == http.get(f"/v1/{name}").json()
        assert http.get("/v1/tunedModels/progress-1/operations").json()["operations"] == [done]


def test_camel_case_create_and_taken_id(service):
    body = {"displayName": "camel", "baseModel": "models/tiny-smollm2",
            "tuningTask": {"hyperparameters": {"batchSize": 4, "epochCount": 1},
                           "trainingData": {"examples": {"examples": [
                               {"textInput": "a", "output": "b"}]}}}}
    with service.client() as http:
        assert create(http, body, "camel-1").status_code == 200
        assert error_of(create(http, body, "camel-1")) == (
            409, "ALREADY_EXISTS", "Tuned model tunedModels/camel-1 already exists.")
        assert error_of(create(http, body, "Bad_Id"))[:2] == (400, "INVALID_ARGUMENT")


@pytest.mark.parametrize("mutate, expected", [
    (lambda b: b["tuning_task"]["hyperparameters"].update(batchsize=2),
     'Invalid JSON payload received. Unknown name "batchsize" at '
     "'tuned_model.tuning_task.hyperparameters': Cannot find field."),
    (lambda b: b["tuning_task"]["hyperparameters"].update(epoch_count="five"),
     "Invalid value at 'tuned_model.tuning_task.hyperparameters.epoch_count' (TYPE_INT32), \"five\""),
    (lambda b: b.pop("base_model"), "tuned_model.base_model is required."),
    (lambda b: b["tuning_task"]["training_data"]["examples"].update(examples=[]),
     "tuned_model.tuning_task.training_data.examples.examples is required: at least one example."),
    (lambda b: b["tuning_task"]["hyperparameters"].update(epoch_count=10**6),
     "tuned_model.tuning_task.hyperparameters.epoch_count must be in [1, 1000], got 1e+06."),
    (lambda b: b["tuning_task"]["hyperparameters"].update(learning_rate=-1),
     "tuned_model.tuning_task.hyperparameters.learning_rate must be in (0, 1], got -1."),
    (lambda b: b["tuning_task"]["hyperparameters"].update(learning_rate_multiplier=2),
     "tuned_model.tuning_task.hyperparameters: give learning_rate or learning_rate_multiplier, not both."),
])
def test_bad_create_requests_name_the_field(service, mutate, expected):
    body = tutorial_body()
    mutate(body)
    with service.client() as http:
        assert error_of(create(http, body)) == (400, "INVALID_ARGUMENT", expected)


def test_unknown_base_model_is_not_found(service):
    with service.client() as http:
        assert error_of(create(http, tutorial_body(base_model="models/gpt-5"))) == (
            404, "NOT_FOUND", "Base model models/gpt-5 is not found.")


def test_malformed_and_oversized_bodies_do_not_hurt_the_service(service):
    json_type = {"Content-Type": "application/json"}
    with service.client() as http:
        status, code, message = error_of(http.post("/v1beta/tunedModels", content=b"{nope",
                                                   headers=json_type))
        assert (status, code) == (400, "INVALID_ARGUMENT")
        assert message.startswith("Invalid JSON payload received.")
        huge = b'{"x": "' + b"a" * (33 * 1024 * 1024) + b'"}'
        assert error_of(http.post("/v1beta/tunedModels", content=huge, headers=json_type)) == (
            400, "INVALID_ARGUMENT", "Request payload size exceeds the limit: 33554432 bytes.")
        assert error_of(http.get("/v2/tunedModels"))[1] == "NOT_FOUND"
        assert error_of(http.put("/v1beta/tunedModels"))[1] == "UNIMPLEMENTED"
        assert http.get("/v1beta/models").status_code == 200


def test_paging_follows_next_page_token(service):
    with service.client() as http:
        for index in range(3):
            create(http, tutorial_body(epochs=1), f"page-{index}")
        seen, token = [], None
        while True:
            params = {"pageSize": 2, "$alt": "json;enum-encoding=int", "prettyPrint": "false"}
            if token:
                params["pageToken"] = token
            page = http.get("/v1beta/tunedModels", params=params).json()
            assert len(page.get("tunedModels", [])) <= 2
            seen += [m["name"] for m in page.get("tunedModels", [])]
            token = page.get("nextPageToken")
            if not token:
                break
        assert {"tunedModels/page-0", "tunedModels/page-1", "tunedModels/page-2"} <= set(seen)
        assert len(seen) == len(set(seen))
        assert error_of(http.get("/v1beta/tunedModels", params={"pageToken": "zz"}))[1] == "INVALID_ARGUMENT"


def test_patch_and_delete(service):
    with service.client() as http:
        create(http, tutorial_body(epochs=1), "patch-me")
        patched = http.patch("/v1beta/tunedModels/patch-me", params={"updateMask": "description"},
                             json={"description": "new words", "displayName": "ignored"}).json()
        assert patched["description"] == "new words"
        assert patched["displayName"] == "number generator model"
        assert error_of(http.patch("/v1beta/tunedModels/patch-me", params={"updateMask": "baseModel"},
                                   json={"baseModel": "models/x"}))[:2] == (400, "INVALID_ARGUMENT")
        assert http.delete("/v1beta/tunedModels/patch-me").json() == {}
        assert error_of(http.get("/v1beta/tunedModels/patch-me")) == (
            404, "NOT_FOUND", "Tuned model tunedModels/patch-me does not exist.")


def test_an_enum_is_read_by_name_or_number(service):
    """proto3 JSON: google-generativeai sends a TunedModel back in a patch with ``state: 2``."""
    with service.client() as http:
        create(http, tutorial_body(epochs=1), "enum-state")
        for state in (2, "ACTIVE"):
            answer = http.patch("/v1beta/tunedModels/enum-state",
                                params={"updateMask": "description"},
                                json={"description": f"state {state}", "state": state})
            assert answer.status_code == 200, answer.text
        assert error_of(http.patch("/v1beta/tunedModels/enum-state", json={"state": 9})) == (
            400, "INVALID_ARGUMENT", "Invalid value at 'tuned_model.state' (TYPE_ENUM), 9")
        assert error_of(http.patch("/v1beta/tunedModels/enum-state", json={"state": "DONE"})) \
            == (400, "INVALID_ARGUMENT",
                "Invalid value at 'tuned_model.state' (TYPE_ENUM), \"DONE\"")


def test_generate_content_on_tuned_and_base_models(service):
    with service.client() as http:
        operation = create(http, tutorial_body(), "gen-1").json()
        early = http.post("/v1beta/tunedModels/gen-1:generateContent",
                          json={"contents": [{"parts": [{"text": "1"}]}]})
        if early.status_code != 200:  # still training
            assert error_of(early)[:2] == (400, "FAILED_PRECONDITION")
        service.wait_done(operation["name"])
        answer = http.post("/v1beta/tunedModels/gen-1:generateContent", json={
            "contents": [{"role": "user", "parts": [{"text": "LXIII"}]}],
            "generationConfig": {"maxOutputTokens": 5, "temperature": 0}}).json()
        candidate = answer["candidates"][0]
        assert candidate["content"]["role"] == "model"
        assert isinstance(candidate["content"]["parts"][0]["text"], str)
        assert candidate["finishReason"] in ("STOP", "MAX_TOKENS") and candidate["index"] == 0
        assert "safetyRatings" not in candidate
        usage = answer["usageMetadata"]
        assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
        again = http.post("/v1/tunedModels/gen-1:generateContent", json={
            "contents": [{"parts": [{"text": "LXIII"}]}],
            "generation_config": {"max_output_tokens": 5}}).json()
        assert again["candidates"][0]["content"] == candidate["content"]  # greedy is repeatable
        base = http.post("/v1beta/models/tiny-smollm2:generateContent", json={
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 3, "candidateCount": 2}}).json()
        assert [c["index"] for c in base["candidates"]] == [0, 1]
        assert base["candidates"][0]["finishReason"] == "MAX_TOKENS"


def test_generate_content_bad_input(service):
    with service.client() as http:
        url = "/v1beta/models/tiny-smollm2:generateContent"
        assert error_of(http.post(url, json={"contents": []})) == (
            400, "INVALID_ARGUMENT", "contents is not specified.")
        too_long = {"contents": [{"parts": [{"text": "word " * 2000}]}]}
        status, code, message = error_of(http.post(url, json=too_long))
        assert (status, code) == (400, "INVALID_ARGUMENT")
        assert re.fullmatch(r"The input token count \(\d+\) exceeds the maximum number of tokens "
                            r"allowed \(511\): models/tiny-smollm2 has a context of 512 tokens, "
                            r"the prompt included, and its answer needs at least one\.", message)
        image = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}]}
        assert "only text parts" in error_of(http.post(url, json=image))[2]
        assert error_of(http.post("/v1beta/tunedModels/none:generateContent",
                                  json={"contents": [{"parts": [{"text": "x"}]}]}))[1] == "NOT_FOUND"


def test_cancel_and_delete_stop_training(service):
    with service.client() as http:
        long_job = tutorial_body(batch_size=1, epochs=1000)
        first = create(http, long_job, "cancel-me").json()
        second = create(http, long_job, "delete-me").json()
        assert http.post(f"/v1/{first['name']}:cancel").json() == {}
        cancelled = service.wait_done(first["name"], timeout=60)
        assert cancelled["error"] == {"code": 1, "message": "Operation cancelled."}
        assert http.get("/v1beta/tunedModels/cancel-me").json()["state"] == "FAILED"
        time.sleep(0.5)
        assert http.delete("/v1beta/tunedModels/delete-me").json() == {}
        assert error_of(http.get(f"/v1/{second['name']}"))[1] == "NOT_FOUND"
        # The worker is free again: a new job trains to the end.
        quick = create(http, tutorial_body(epochs=1), "after-cancel").json()
        assert service.wait_done(quick["name"], timeout=120)["response"]["state"] == "ACTIVE"
