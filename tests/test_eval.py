"""Eval prompts, gates and reports through the CLI, against the real local service (tiny model).

The tiny model's answers are deterministic nonsense, so expectations are chosen to pass
(`not_contains` of a word it never says, a regex matching anything) or to fail (`equals` a
sentence it never says), and one prompt is too long for its context, which is an error.
"""

from __future__ import annotations

import json
from xml.etree import ElementTree

import jsonschema
import pytest

from tests.conftest import ROOT
from tests.service import LocalService

EVAL = """eval:
  prompts:
    - input: "1"
      expect: {not_contains: zzzz-never-said}
    - input: "2"
      expect: {regex: "[\\\\s\\\\S]*"}
    - input: "3"
      expect: {equals: definitely not this answer}
    - input: "%s"
      expect: {contains: x}
  min_pass_rate: %s
  compare_base: true
"""


@pytest.fixture
def eval_repo(repo, service, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    return repo


def write_job(repo, min_pass_rate="0.5", epochs=1):
    repo.job(name="evaljob", hyperparameters=f"batch_size: 4\n  epoch_count: {epochs}",
             extra=EVAL % ("word " * 1000, min_pass_rate))


def report_schema():
    return json.loads((ROOT / "schemas/report.schema.json").read_text())


def test_apply_writes_reports_and_passes_the_gate(eval_repo, cli):
    write_job(eval_repo)
    result = cli("apply", "jobs/")
    assert result.code == 0, result.err
    assert "evaljob: eval 50% passed, base model 50%; gate 50% passed" in result.err
    assert "evaljob: 1 eval prompt(s) could not be asked (errors, not wrong answers)" in result.err
    reports = eval_repo.root / "reports"
    data = json.loads((reports / "evaljob.json").read_text())
    jsonschema.validate(data, report_schema())
    assert data["total_steps"] == 4 and data["example_count"] == 15
    assert len(data["loss_curve"]) == 4
    assert [p["verdict"] for p in data["eval"]["prompts"]] == ["pass", "pass", "fail", "error"]
    assert "exceeds the maximum number of tokens" in data["eval"]["prompts"][3]["error"]
    assert data["eval"]["gate"] == "passed" and data["timings"]["duration_seconds"] >= 0
    markdown = (reports / "evaljob.md").read_text()
    assert "```mermaid\n%%{init: " in markdown and "}%%\nxychart-beta" in markdown
    assert "| input | expected | base answer | | tuned answer | |" in markdown
    assert "❌ fail" in markdown and "⚠️ error" in markdown
    summary = json.loads((reports / "summary.json").read_text())
    assert summary["ok"] is True and summary["jobs"][0]["gate"] == "passed"
    assert "[evaljob](evaljob.md)" in (reports / "SUMMARY.md").read_text()
    suite = ElementTree.parse(reports / "junit.xml").getroot().find("testsuite")
    # One case for the model's state, then one per prompt.
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "1", "1")
    assert not list(reports.glob(".*.tmp"))  # atomic writes leave nothing behind


def test_a_failing_gate_fails_apply_and_names_the_prompts(eval_repo, cli):
    write_job(eval_repo, min_pass_rate="0.9")
    result = cli("apply", "jobs/")
    assert result.code == 1
    assert "evaljob: eval 50% passed, base model 50%; gate 90% FAILED" in result.err
    assert "evaljob: failing prompts: '3', 'word word" in result.err
    assert "Apply incomplete: 1/1 jobs ACTIVE; an eval gate failed" in result.err
    assert json.loads((eval_repo.root / "reports/summary.json").read_text())["ok"] is False


def test_eval_and_report_rerun_without_training(eval_repo, service, cli):
    write_job(eval_repo)
    assert cli("apply", "jobs/").code == 0
    job = eval_repo.root / "jobs/evaljob.yaml"
    job.write_text(job.read_text().replace("min_pass_rate: 0.5", "min_pass_rate: 0.25")
                   .replace('expect: {equals: definitely not this answer}',
                            'expect: {not_contains: also-never-said}'))
    marker = len(service.lines)
    evaluated = cli("eval", "jobs/")
    assert evaluated.code == 0, evaluated.err
    assert "evaljob: eval 75% passed" in evaluated.err
    log = "".join(service.lines[marker:])
    assert "POST /v1beta/tunedModels " not in log  # nothing trained
    assert json.loads((eval_repo.root / "reports/evaljob.json").read_text())["eval"]["pass_rate"] == 0.75

    (eval_repo.root / "reports/evaljob.md").unlink()
    marker = len(service.lines)
    rebuilt = cli("report", "jobs/")
    assert rebuilt.code == 0
    assert "generateContent" not in "".join(service.lines[marker:])  # no eval, no training
    data = json.loads((eval_repo.root / "reports/evaljob.json").read_text())
    assert data["eval"]["pass_rate"] == 0.75  # kept from the last eval
    assert (eval_repo.root / "reports/evaljob.md").exists()


def test_eval_of_a_job_never_applied_says_so(eval_repo, cli):
    write_job(eval_repo, epochs=3)  # a fingerprint no other test applies
    result = cli("eval", "jobs/")
    assert result.code == 1
    assert "evaljob: tunedModels/evaljob-" in result.err
    assert ": NOT_CREATED: not created yet; run `jobspec apply` first" in result.err
    summary = json.loads((eval_repo.root / "reports/summary.json").read_text())
    assert summary["ok"] is False and summary["jobs"][0]["state"] == "NOT_CREATED"


def test_no_secret_reaches_a_report(repo, tiny_model, tmp_path, cli, monkeypatch):
    key = "sk-report-secret-31337"
    keyed = LocalService(tmp_path / "state", "--model", str(tiny_model), "--api-key", key).start()
    try:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", keyed.url)
        monkeypatch.setenv("JOBSPEC_LOCAL_API_KEY", key)
        write_job(repo, min_pass_rate="0")
        result = cli("apply", "jobs/")
        assert result.code == 0, result.err
    finally:
        keyed.stop()
    written = [p.read_text() for p in (repo.root / "reports").iterdir()]
    assert len(written) == 5
    assert not any(key in text for text in written)
    assert key not in result.out + result.err + keyed.log


def test_transient_errors_during_eval_are_retried(eval_repo, service, cli, monkeypatch):
    from tests.faultproxy import FaultProxy

    write_job(eval_repo)
    assert cli("apply", "--skip-eval", "jobs/").code == 0
    with FaultProxy(service.url, rate=0.3, seed=3) as proxy:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", proxy.url)
        result = cli("eval", "jobs/")
    assert result.code == 0, result.err
    data = json.loads((eval_repo.root / "reports/evaljob.json").read_text())
    assert [p["verdict"] for p in data["eval"]["prompts"]] == ["pass", "pass", "fail", "error"]
    assert proxy.injected["429"] + proxy.injected["503"] > 0


def test_apply_again_reuses_an_unchanged_eval(eval_repo, service, cli):
    answerable = EVAL.replace('    - input: "%s"\n      expect: {contains: x}\n', "")
    eval_repo.job(name="evaljob", hyperparameters="batch_size: 4\n  epoch_count: 4",
                  extra=answerable % "0.5")
    assert cli("apply", "jobs/").code == 0
    marker = len(service.lines)
    again = cli("apply", "jobs/")
    assert again.code == 0
    assert "evaljob: eval unchanged since the last report (67% passed; gate passed)" in again.err
    assert "generateContent" not in "".join(service.lines[marker:])
    assert json.loads((eval_repo.root / "reports/evaljob.json").read_text())["eval_status"] == \
        "reused"
    job = eval_repo.root / "jobs/evaljob.yaml"
    job.write_text(job.read_text().replace('input: "1"', 'input: "one"'))
    edited = cli("apply", "jobs/")
    assert "evaljob: eval 67% passed" in edited.err
    assert "generateContent" in "".join(service.lines[marker:])


def test_an_eval_with_errored_prompts_is_asked_again(eval_repo, service, cli):
    write_job(eval_repo, epochs=4)  # its last prompt is too long for the model: an error
    assert cli("apply", "jobs/").code == 0
    marker = len(service.lines)
    again = cli("apply", "jobs/")
    assert again.code == 0
    assert "evaljob: asking the eval prompts again: 1 prompt(s) could not be asked last time" \
        in again.err
    assert "evaljob: eval 50% passed, base model 50%; gate 50% passed" in again.err
    assert "generateContent" in "".join(service.lines[marker:])
