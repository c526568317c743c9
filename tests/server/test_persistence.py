"""State survives restarts and kill -9: ACTIVE models stay servable, interrupted jobs resume."""

from __future__ import annotations

import signal
import sqlite3
import time

from tests.server.test_app import create, tutorial_body
from tests.service import LocalService


def wait_for_step(service, operation, step, timeout=120):
    with service.client() as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metadata = http.get(f"/v1/{operation}").json()["metadata"]
            if metadata.get("completedSteps", 0) >= step:
                return
            time.sleep(0.05)
    raise TimeoutError(operation)


def test_kill_minus_9_mid_training_then_restart_resumes(tiny_model, tmp_path):
    state = tmp_path / "state"
    first = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with first.client() as http:
            done = create(http, tutorial_body(epochs=1), "survivor").json()
            first.wait_done(done["name"])
            before = http.post("/v1beta/tunedModels/survivor:generateContent",
                               json={"contents": [{"parts": [{"text": "7"}]}]}).json()
            running = create(http, tutorial_body(batch_size=1, epochs=40), "interrupted").json()
        wait_for_step(first, running["name"], 5)
    finally:
        first.kill(signal.SIGKILL)  # the server and its worker, mid-step

    with sqlite3.connect(state / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    second = LocalService(state, "--model", str(tiny_model), port=first.port).start()
    try:
        assert "1 interrupted training job(s) queued again: interrupted" in second.log
        with second.client() as http:
            after = http.post("/v1beta/tunedModels/survivor:generateContent",
                              json={"contents": [{"parts": [{"text": "7"}]}]}).json()
            assert after["candidates"] == before["candidates"]
            finished = second.wait_done(running["name"], timeout=300)
            assert finished["response"]["state"] == "ACTIVE"
            assert finished["metadata"]["completedSteps"] == 600
            names = [m["name"] for m in http.get("/v1beta/tunedModels").json()["tunedModels"]]
            assert names == ["tunedModels/survivor", "tunedModels/interrupted"]
    finally:
        second.stop()


def test_sigterm_stops_cleanly_and_requeues_without_charging_an_attempt(tiny_model, tmp_path):
    state = tmp_path / "state"
    service = LocalService(state, "--model", str(tiny_model)).start()
    with service.client() as http:
        running = create(http, tutorial_body(batch_size=1, epochs=40), "paused").json()
    wait_for_step(service, running["name"], 3)
    service.stop()
    assert service.process.returncode == 0
    assert "jobspec serve: stopped" in service.log
    with sqlite3.connect(state / "state.db") as db:
        assert db.execute("SELECT state, worker_pid, attempts FROM tuned_models").fetchall() == [
            ("CREATING", None, 0)]
