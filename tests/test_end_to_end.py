"""End to end with the real SmolLM2-135M model: the README's main command, and Google's REST
tutorial replayed against the local service. One test per capability; each trains for real."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.conftest import NUMBER_EXAMPLES, ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def applied(tmp_path_factory):
    """`jobspec apply jobs/` in a fresh copy of the repository, starting its own service."""
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(ROOT / "jobs", repo / "jobs")
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    (repo / ".git").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("JOBSPEC_LOCAL_URL", "JOBSPEC_BACKEND")}
    # Its own private state directory: this fixture starts before the per-test one is set.
    env["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    command = [sys.executable, "-m", "jobspec", "apply", "jobs/"]
    first = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    state = Path(env["XDG_STATE_HOME"]) / "jobspec" / "workspaces"
    record = json.loads(next(state.glob("*/service.json")).read_text())
    try:
        yield repo, first, record["url"], command, env
    finally:
        os.kill(record["pid"], signal.SIGTERM)


def test_readme_main_command_trains_evaluates_and_reports(applied):
    repo, first, _, command, env = applied
    assert first.returncode == 0, first.stderr
    assert "Started the local tuning service at http://127.0.0.1:" in first.stderr
    assert "Apply complete: 2/2 jobs ACTIVE" in first.stderr
    schema = json.loads((ROOT / "schemas/report.schema.json").read_text())
    for job in ("number-generator", "antonyms"):
        report = json.loads((repo / f"reports/{job}.json").read_text())
        jsonschema.validate(report, schema)
        curve = [p["mean_loss"] for p in report["loss_curve"]]
        assert curve[-1] < curve[0] / 5  # the loss really falls
        assert report["eval"]["gate"] == "passed"
        assert report["eval"]["pass_rate"] > report["eval"]["base_pass_rate"]  # tuning helped
        assert "xychart-beta" in (repo / f"reports/{job}.md").read_text()
    assert (repo / "reports/SUMMARY.md").exists() and (repo / "reports/junit.xml").exists()
    second = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stderr
    assert "Plan: 0 to create, 2 unchanged" in second.stderr


def test_google_tutorial_replayed_with_curl(applied):
    _, _, url, _, _ = applied
    body = json.dumps({
        "display_name": "number generator model", "base_model": "models/gemini-1.0-pro-001",
        "tuning_task": {"hyperparameters": {"batch_size": 2, "learning_rate": 0.001,
                                            "epoch_count": 5},
                        "training_data": {"examples": {"examples": [
                            {"text_input": i, "output": o} for i, o in NUMBER_EXAMPLES]}}}})
    body = body.replace('"epoch_count": 5}', '"epoch_count": 5,}')  # as the tutorial's curl has it
    created = subprocess.run(["curl", "-s", "-X", "POST", f"{url}/v1beta/tunedModels",
                              "-H", "Content-Type: application/json", "-d", body],
                             capture_output=True, text=True, check=True)
    operation = json.loads(created.stdout)
    assert operation["metadata"]["totalSteps"] == 38
    seen_percent = set()
    with httpx.Client(base_url=url, timeout=60) as http:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            polled = http.get(f"/v1/{operation['name']}").json()
            seen_percent.add(polled["metadata"].get("completedPercent", 0))
            if polled.get("done"):
                break
            time.sleep(0.5)
        assert polled["response"]["state"] == "ACTIVE"
        assert len(seen_percent) > 2  # progress was visible while it trained
        losses = [s["meanLoss"] for s in polled["metadata"]["snapshots"]]
        assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 / 5
        model = operation["metadata"]["tunedModel"]
        answer = http.post(f"/v1beta/{model}:generateContent",
                           json={"contents": [{"parts": [{"text": "999"}]}]}).json()
        assert answer["candidates"][0]["content"]["parts"][0]["text"].strip() in ("1000", "1,000")
        base = http.post("/v1beta/models/gemini-1.0-pro-001:generateContent",
                         json={"contents": [{"parts": [{"text": "999"}]}],
                               "generationConfig": {"maxOutputTokens": 16}}).json()
        assert base["candidates"][0]["content"]["parts"][0]["text"].strip() not in ("1000", "1,000")
