"""Validation examples, validation loss and early stopping on the local service's HTTP API.

On the wire, for a caller that asks for jobspec's extensions (``X-Jobspec-Extensions: 1``; the
local service's additions to Google's messages, which no one else is sent, see
test_published_shapes.py): ``tuningTask.validationData`` (a Dataset, like trainingData) and
``tuningTask.earlyStopping {patience}`` in a create; ``tuningTask.validationSnapshots`` (one
TuningSnapshot per epoch: the step that ended it, the epoch, the mean validation loss),
``keptEpoch``, ``stopReason`` and ``device`` in the TunedModel, and ``validationSnapshots`` in the
operation's metadata while it trains.
"""

from __future__ import annotations

import pytest

from tests.conftest import NUMBER_EXAMPLES
from tests.server.test_app import create, error_of, tutorial_body

HELD_OUT = [("5", "6"), ("twelve", "thirteen"), ("-7", "-6")]


def with_validation(body: dict, examples=HELD_OUT, **extra) -> dict:
    body["tuning_task"]["validation_data"] = {"examples": {"examples": [
        {"text_input": i, "output": o} for i, o in examples]}}
    body["tuning_task"].update(extra)
    return body


def test_validation_loss_at_the_end_of_every_epoch(service):
    with service.client(extensions=True) as http:
        operation = create(http, with_validation(tutorial_body())).json()
        assert operation["metadata"]["totalSteps"] == 38  # validation examples are not trained on
        done = service.wait_done(operation["name"], extensions=True)
        model = done["response"]
        task = model["tuningTask"]
        # 15 examples, batch 2: epoch e ends at the step whose batch holds its 15th example.
        assert [(s["step"], s["epoch"]) for s in task["validationSnapshots"]] == [
            (8, 1), (15, 2), (23, 3), (30, 4), (38, 5)]
        assert all(s["meanLoss"] > 0 and s["computeTime"].endswith("Z")
                   for s in task["validationSnapshots"])
        assert done["metadata"]["validationSnapshots"] == task["validationSnapshots"]
        assert len(task["snapshots"]) == 38
        assert task["device"] in ("cpu (fp32)", "cpu (bf16)") or task["device"].startswith("cuda")
        assert "keptEpoch" not in task and "stopReason" not in task  # no early stopping asked
        assert f"train {model['name']}: started (15 examples, 3 validation examples, 38 steps)" \
            in service.log
        assert "validation loss" in service.log
        again = http.get(f"/v1beta/{model['name']}").json()["tuningTask"]
        assert again["validationSnapshots"] == task["validationSnapshots"]


def test_without_validation_data_nothing_is_added(service):
    with service.client(extensions=True) as http:
        done = service.wait_done(create(http, tutorial_body(epochs=1)).json()["name"],
                                 extensions=True)
        task = done["response"]["tuningTask"]
        assert set(task) == {"startTime", "completeTime", "snapshots", "hyperparameters",
                             "device"}
        assert "validationSnapshots" not in done["metadata"]


@pytest.mark.timeout(240)
def test_early_stopping_keeps_the_best_epoch_and_says_why(service):
    # Validation answers that contradict the training answers: the better the model learns the
    # training examples, the worse its validation loss, so training stops early.
    contradicting = [(i, "no") for i, _ in NUMBER_EXAMPLES[:5]]
    body = with_validation(tutorial_body(batch_size=5, epochs=40), contradicting,
                           early_stopping={"patience": 2})
    body["tuning_task"]["hyperparameters"]["learning_rate"] = 0.05
    with service.client(extensions=True) as http:
        operation = create(http, body).json()
        assert operation["metadata"]["totalSteps"] == 120
        done = service.wait_done(operation["name"], extensions=True)
        model = done["response"]
        task = model["tuningTask"]
        assert model["state"] == "ACTIVE"
        losses = [s["meanLoss"] for s in task["validationSnapshots"]]
        best = min(range(len(losses)), key=losses.__getitem__)
        assert task["keptEpoch"] == best + 1
        # Stopped two epochs after the best one, well before epoch 40.
        assert len(losses) == best + 3 < 40
        assert task["stopReason"].startswith(
            f"early stopping: the validation loss did not improve for 2 epochs after epoch "
            f"{best + 1} (best {losses[best]:.4f}); stopped after epoch {best + 3}, step "
            f"{3 * (best + 3)} of 120")
        assert done["metadata"]["completedSteps"] == 3 * (best + 3) == len(task["snapshots"])
        assert done["metadata"]["completedPercent"] == 100
        assert task["earlyStopping"] == {"patience": 2}
        answer = http.post(f"/v1beta/{model['name']}:generateContent",
                           json={"contents": [{"parts": [{"text": "7"}]}]})
        assert answer.status_code == 200, answer.text
        assert f"keeping epoch {best + 1}" in service.log


@pytest.mark.parametrize("task, message", [
    ({"early_stopping": {"patience": 2}},
     "tuned_model.tuning_task.early_stopping needs validation examples "
     "(tuned_model.tuning_task.validation_data): it stops on their loss."),
    ({"early_stopping": {}}, "tuned_model.tuning_task.early_stopping.patience is required."),
    ({"validation_data": {"examples": {"examples": [{"text_input": "1", "output": "2"}]}},
      "early_stopping": {"patience": 0}},
     "tuned_model.tuning_task.early_stopping.patience must be in [1, 1000], got 0."),
    ({"validation_data": {"examples": {"examples": [{"text_input": "1", "output": " "}]}}},
     "tuned_model.tuning_task.validation_data.examples.examples[0].output is required."),
    ({"validation_data": {"examples": {"examples": []}}},
     "tuned_model.tuning_task.validation_data.examples.examples is required: at least one "
     "example."),
    ({"validationData": {"examples": {"examples": [{"text_input": "x " * 600, "output": "y"}]}}},
     "tuned_model.tuning_task.validation_data.examples.examples[0] is "),
])
def test_refusals_name_the_field(service, task, message):
    body = tutorial_body()
    body["tuning_task"].update(task)
    with service.client() as http:
        status, code, text = error_of(create(http, body))
    assert (status, code) == (400, "INVALID_ARGUMENT")
    assert text.startswith(message)
