"""The shipped conversation example (examples/conversations/counting.yaml): a system
instruction, multi-turn training examples in the messages form, validation examples in Vertex's
contents form, eval prompts with history and their own system instruction. Applied with the tiny
model against the real local service, and once end to end with the real SmolLM2, as a user runs
it: `jobspec apply examples/conversations/counting.yaml`, starting its own service."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import ROOT

JOB = "examples/conversations/counting.yaml"
REPORT_SCHEMA = json.loads((ROOT / "schemas/report.schema.json").read_text())


def copy_example(root: Path) -> None:
    shutil.copytree(ROOT / "examples/conversations", root / "examples/conversations")
    shutil.copytree(ROOT / "schemas", root / "schemas")


def check_report(report: dict) -> None:
    jsonschema.validate(report, REPORT_SCHEMA)
    assert report["state"] == "ACTIVE"
    assert report["validation_curve"]  # measured on the contents-form validation file
    prompts = report["eval"]["prompts"]
    assert [p.get("system") for p in prompts] == [
        "You count upwards. Reply with the next number in words, nothing else."] * 3 + [
        "Reply with the number in digits, nothing else."]
    assert [len(p.get("history", [])) for p in prompts] == [0, 2, 2, 0]
    assert prompts[1]["history"][0] == {"role": "user", "text": "ten"}


@pytest.mark.timeout(300)
def test_the_example_trains_and_evaluates_on_the_tiny_model(repo, service, cli, monkeypatch):
    copy_example(repo.root)
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    assert cli("validate", JOB).code == 0
    applied = cli("apply", JOB)
    # A random model answers nothing right: the example's gate (min_pass_rate 0.5) fails, and
    # apply says so with exit 1, after training to ACTIVE and writing the report.
    assert applied.code == 1 and "an eval gate failed" in applied.err, applied.err
    check_report(json.loads((repo.root / "reports/counting.json").read_text()))
    again = cli("apply", JOB)
    assert "Plan: 0 to create, 1 unchanged" in again.err and "created" not in again.err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_example_end_to_end_with_the_real_model(tmp_path):
    copy_example(tmp_path)
    (tmp_path / ".git").mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("JOBSPEC_LOCAL_URL", "JOBSPEC_BACKEND")}
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    run = subprocess.run([sys.executable, "-m", "jobspec", "apply", JOB], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=850)
    state = tmp_path / "xdg-state" / "jobspec" / "workspaces"
    record = json.loads(next(state.glob("*/service.json")).read_text())
    try:
        assert run.returncode == 0, run.stderr
        report = json.loads((tmp_path / "reports/counting.json").read_text())
        check_report(report)
        curve = [p["mean_loss"] for p in report["loss_curve"]]
        assert curve[-1] < curve[0] / 2, curve  # it learns the model turns
        assert report["eval"]["pass_rate"] > report["eval"]["base_pass_rate"]  # tuning helped
        print(json.dumps({"pass_rate": report["eval"]["pass_rate"],
                          "base_pass_rate": report["eval"].get("base_pass_rate"),
                          "loss": [curve[0], curve[-1]],
                          "answers": [p.get("answer") for p in report["eval"]["prompts"]]}))
    finally:
        os.kill(record["pid"], signal.SIGTERM)
