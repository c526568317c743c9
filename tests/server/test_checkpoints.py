"""Resuming mid-run: a service killed with -9 while training resumes the job from its last
checkpoint, not from step 0, and ends with the adapter an uninterrupted run makes, bit for bit;
and a state directory made before checkpoints and validation existed keeps working."""

from __future__ import annotations

import re
import signal
import sqlite3
import time

import pytest
from safetensors.torch import load_file

from jobspec.server.adapters import find_adapter
from jobspec.server.checkpoints import checkpoint_path
from jobspec.server.store import Store
from tests.server.test_app import create, tutorial_body
from tests.server.test_persistence import wait_for_step
from tests.service import LocalService

PROMPTS = ["7", "twelve", "LXIII", "-4"]


def answers(service, model_id):
    with service.client() as http:
        return [http.post(f"/v1beta/tunedModels/{model_id}:generateContent",
                          json={"contents": [{"parts": [{"text": p}]}],
                                "generationConfig": {"maxOutputTokens": 8}}).json()["candidates"]
                for p in PROMPTS]


def adapter_tensors(state, model_id):
    with sqlite3.connect(state / "state.db") as db:
        operation = db.execute("SELECT operation_id FROM tuned_models WHERE id = ?",
                               (model_id,)).fetchone()[0]
    return load_file(find_adapter(state, model_id, operation) / "adapter_model.safetensors")


def job(validation: bool = False) -> dict:
    # 15 examples, batch 1, 20 epochs: 300 steps; epochs end every 15 steps (a checkpoint each).
    body = tutorial_body(batch_size=1, epochs=20)
    if validation:  # early stopping's state (the best epoch's weights) must survive too
        body["tuning_task"]["validation_data"] = {"examples": {"examples": [
            {"text_input": "5", "output": "6"}, {"text_input": "-7", "output": "-6"}]}}
        body["tuning_task"]["early_stopping"] = {"patience": 1000}
    return body


@pytest.mark.timeout(420)
@pytest.mark.parametrize("validation", [False, True], ids=["plain", "validation"])
def test_kill_minus_9_resumes_from_the_checkpoint_with_the_same_adapter(tiny_model, tmp_path,
                                                                       validation):
    state = tmp_path / "state"
    first = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with first.client() as http:
            running = create(http, job(validation), "interrupted").json()
        wait_for_step(first, running["name"], 50)  # past the checkpoints at steps 15, 30, 45
    finally:
        first.kill(signal.SIGKILL)  # the server and its worker, mid-step
    with sqlite3.connect(state / "state.db") as db:
        recorded = db.execute("SELECT MAX(step) FROM snapshots").fetchone()[0]
    assert recorded >= 50
    assert checkpoint_path(state, "interrupted", running["name"].rsplit("/", 1)[1]).is_file()

    second = LocalService(state, "--model", str(tiny_model), port=first.port).start()
    try:
        finished = second.wait_done(running["name"], timeout=300)
        resumed = re.search(r"train tunedModels/interrupted: resuming from its checkpoint at "
                            r"step (\d+) ", second.log)
        assert resumed, second.log
        step = int(resumed[1])
        assert step >= 45 and step % 15 == 0 and step <= recorded
        assert finished["response"]["state"] == "ACTIVE"
        assert finished["metadata"]["completedSteps"] == 300
        snapshots = finished["response"]["tuningTask"]["snapshots"]
        assert [s["step"] for s in snapshots] == list(range(1, 301))  # one continuous series
        with second.client(extensions=True) as http:
            model = http.get("/v1beta/tunedModels/interrupted").json()
        # Steps up to the checkpoint are the first run's; the rest were trained again.
        times = [s["computeTime"] for s in model["tuningTask"]["snapshots"]]
        assert times == sorted(times)
        if validation:
            series = model["tuningTask"]["validationSnapshots"]
            assert [s["step"] for s in series] == list(range(15, 301, 15))

        # The same job, never interrupted, in the same service: the same adapter, bit for bit.
        with second.client() as http:
            straight_run = create(http, job(validation), "uninterrupted").json()
        second.wait_done(straight_run["name"])
        resumed_weights = adapter_tensors(state, "interrupted")
        straight = adapter_tensors(state, "uninterrupted")
        assert resumed_weights.keys() == straight.keys()
        for name, tensor in straight.items():
            assert resumed_weights[name].equal(tensor), name
        assert answers(second, "interrupted") == answers(second, "uninterrupted")
        if validation:
            with second.client(extensions=True) as http:
                tasks = [http.get(f"/v1beta/tunedModels/{m}").json()["tuningTask"]
                         for m in ("interrupted", "uninterrupted")]
            assert [s["meanLoss"] for s in tasks[0]["validationSnapshots"]] == \
                [s["meanLoss"] for s in tasks[1]["validationSnapshots"]]
            assert tasks[0]["keptEpoch"] == tasks[1]["keptEpoch"]
        assert not (state / "checkpoints" / "interrupted").exists()  # removed once ACTIVE
    finally:
        second.stop()


@pytest.mark.timeout(300)
def test_periodic_checkpoints_and_progress_forgive_interruptions(tiny_model, tmp_path):
    """Checkpoints come every --checkpoint-interval seconds too, not only at epoch ends; a run
    that made progress is not charged the attempts of earlier interruptions."""
    state = tmp_path / "state"
    service = LocalService(state, "--model", str(tiny_model), "--checkpoint-interval",
                           "0.2").start()
    try:
        with service.client() as http:
            # One epoch of 400 steps: its only epoch end is its last step.
            body = tutorial_body(batch_size=1, epochs=1,
                                 examples=[(str(n), str(n + 1)) for n in range(400)])
            running = create(http, body, "periodic").json()
        wait_for_step(service, running["name"], 40)
        with sqlite3.connect(state / "state.db") as db:
            db.execute("UPDATE tuned_models SET attempts = 2")  # two interruptions before
            # In the same transaction: the checkpoint a later one must pass (one may have come
            # between step 40 and this update, and it forgave nothing of these two).
            before = db.execute("SELECT checkpoint_step FROM tuned_models").fetchone()[0] or 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with sqlite3.connect(state / "state.db") as db:
                row = db.execute("SELECT checkpoint_step, attempts FROM tuned_models").fetchone()
            if row[0] and row[0] > max(before, 40):
                break
            time.sleep(0.1)
        assert row[0] > max(before, 40) and row[1] == 0
    finally:
        service.kill(signal.SIGKILL)


# The schema of a state directory made before this version (validation, early stopping,
# checkpoints and the device were added since), with one ACTIVE model and its snapshots.
OLD_SCHEMA = """
CREATE TABLE tuned_models (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, operation_id TEXT NOT NULL, display_name TEXT,
    description TEXT, base_model TEXT NOT NULL, local_model TEXT NOT NULL, temperature REAL,
    top_p REAL, top_k INTEGER, state TEXT NOT NULL, create_time REAL NOT NULL,
    update_time REAL NOT NULL, start_time REAL, complete_time REAL,
    hyperparameters TEXT NOT NULL, effective_lr REAL NOT NULL, example_count INTEGER NOT NULL,
    total_steps INTEGER NOT NULL, completed_steps INTEGER NOT NULL DEFAULT 0, error_code INTEGER,
    error_message TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, worker_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0);
CREATE TABLE examples (model_id TEXT PRIMARY KEY REFERENCES tuned_models(id) ON DELETE CASCADE,
    data TEXT NOT NULL);
CREATE TABLE snapshots (model_id TEXT NOT NULL REFERENCES tuned_models(id) ON DELETE CASCADE,
    step INTEGER NOT NULL, epoch INTEGER NOT NULL, mean_loss REAL NOT NULL,
    compute_time REAL NOT NULL, PRIMARY KEY (model_id, step));
INSERT INTO tuned_models VALUES ('old', 1, 'op1', NULL, NULL, 'models/tiny-smollm2',
    'tiny-smollm2', NULL, NULL, NULL, 'ACTIVE', 1.0, 2.0, 1.0, 2.0,
    '{"batchSize": 15, "epochCount": 1, "learningRate": 0.001}', 0.001, 15, 1, 1, NULL, NULL,
    0, NULL, 1);
INSERT INTO examples VALUES ('old', '[["1", "2"]]');
INSERT INTO snapshots VALUES ('old', 1, 1, 2.5, 2.0);
"""


def test_a_state_directory_from_before_keeps_working(tiny_model, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    with sqlite3.connect(state / "state.db") as db:
        db.executescript(OLD_SCHEMA)
    record = Store(state / "state.db").get("old")
    assert (record.state, record.validation_count, record.kept_epoch, record.device) == (
        "ACTIVE", 0, None, None)
    assert Store(state / "state.db").get("old") == record  # a second open adds nothing
    service = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with service.client(extensions=True) as http:
            model = http.get("/v1beta/tunedModels/old").json()
            assert model["state"] == "ACTIVE"
            assert model["tuningTask"]["snapshots"] == [
                {"step": 1, "epoch": 1, "meanLoss": 2.5,
                 "computeTime": "1970-01-01T00:00:02.000000Z"}]
            assert "validationSnapshots" not in model["tuningTask"]
            done = service.wait_done(create(http, tutorial_body(epochs=1)).json()["name"])
            assert done["response"]["state"] == "ACTIVE"
    finally:
        service.stop()
