"""Reports tell the truth about the whole run: every planned job, whatever became of it, in
SUMMARY.md, summary.json and junit.xml; junit.xml is well-formed whatever a model answers;
Google's timestamps are read; reports go to the repository root's reports/ by default.
Against fake_generate (a contract fake of the Gemini API's tuned models and generateContent)."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

import jsonschema
import pytest

from jobspec import timestamps
from tests.conftest import ROOT
from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job

EVAL = """eval:
  prompts:
    - input: "1"
      expect: "2"
"""
SCHEMA = json.loads((ROOT / "schemas/report.schema.json").read_text())
SUMMARY_SCHEMA = {**SCHEMA["$defs"]["summary"], "$defs": SCHEMA["$defs"]}


@pytest.fixture
def gemini_repo(repo, monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_reports")
    repo.job(name="good", extra=EVAL)
    repo.job(name="broken", extra=EVAL, hyperparameters="batch_size: 1\n  epoch_count: 2")
    return repo


def apply_on(cli, fake, *extra):
    return cli("apply", "jobs/", "--backend", "gemini", "--endpoint", fake.url,
               "--poll-interval", "0.01", *extra)


def reports(repo):
    directory = repo.root / "reports"
    per_job = {path.stem: json.loads(path.read_text()) for path in directory.glob("*.json")
               if path.name != "summary.json"}
    for report in per_job.values():
        jsonschema.validate(report, SCHEMA)
    summary = json.loads((directory / "summary.json").read_text())
    jsonschema.validate(summary, SUMMARY_SCHEMA)
    junit = ElementTree.parse(directory / "junit.xml").getroot()
    return per_job, summary, (directory / "SUMMARY.md").read_text(), junit


def test_a_failed_job_is_in_every_report(gemini_repo, cli):
    with FakeGenerate() as fake:
        good = serve_job(fake, cli, "jobs/good.yaml")
        serve_job(fake, cli, "jobs/broken.yaml", state="FAILED")
        fake.script(good, "1", "2")
        result = apply_on(cli, fake)
    assert result.code == 1
    assert "broken: FAILED: the model's tuning failed" in result.err
    assert "Apply incomplete: 1/2 jobs ACTIVE" in result.err
    per_job, summary, markdown, junit = reports(gemini_repo)
    assert summary["ok"] is False and (summary["jobs_total"], summary["jobs_ok"]) == (2, 1)
    states = {j["job"]: (j["state"], j["ok"], j["eval_status"]) for j in summary["jobs"]}
    assert states == {"broken": ("FAILED", False, "not_run"), "good": ("ACTIVE", True, "asked")}
    broken = per_job["broken"]
    assert broken["state"] == "FAILED" and broken["eval"] is None
    assert broken["reason"].startswith("the model's tuning failed")
    assert len(broken["loss_curve"]) == 3  # what the failed model recorded
    assert "❌ 1 of 2 jobs need attention" in markdown
    assert "all jobs ACTIVE" not in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| [broken]"))
    # no eval figures (tuned, base, paired), no time, no gate; then why
    assert "| FAILED | - | - | - | " in row and row.endswith("| - | - | the model's tuning "
                                                          "failed; re-run with --recreate-failed to retry |")
    case = junit.find("testsuite[@name='broken']/testcase")
    assert case.get("name") == f"tunedModels/{broken['tuned_model'].split('/')[1]} is ACTIVE"
    assert case.find("failure").get("message").startswith("FAILED: the model's tuning failed")
    assert junit.find("testsuite[@name='good']/testcase/failure") is None
    assert [c.get("name") for c in junit.find("testsuite[@name='good']")] == [
        f"{per_job['good']['tuned_model']} is ACTIVE", "1"]


def test_jobs_not_waited_for_or_timed_out_are_not_ok(gemini_repo, cli):
    with FakeGenerate() as fake:  # its training never ends
        submitted = apply_on(cli, fake, "--no-wait", "--skip-eval")
        assert submitted.code == 0, submitted.err
        assert "good: CREATING: submitted; not waited for (--no-wait)" in submitted.err
        _, summary, markdown, junit = reports(gemini_repo)
        assert summary["ok"] is False and summary["jobs_ok"] == 0
        assert {j["state"] for j in summary["jobs"]} == {"CREATING"}
        assert "❌ 2 of 2 jobs need attention" in markdown
        assert junit.find("testsuite[@name='good']/testcase/failure").get("message") == \
            "CREATING: submitted; not waited for (--no-wait)"

        waited = apply_on(cli, fake, "--timeout", "0.3", "--skip-eval")
    assert waited.code == 1
    assert ("good: CREATING: still training when --timeout 0.3s ran out; training goes on: "
            "apply again to keep waiting") in waited.err
    per_job, summary, _, _ = reports(gemini_repo)
    assert per_job["good"]["reason"].startswith("still training when --timeout 0.3s ran out")
    assert per_job["good"]["loss_curve"] == []


def test_a_create_the_service_refuses_is_an_error_in_the_reports(gemini_repo, cli):
    with FakeGenerate(refuse_creates="tuning is not supported for this model") as fake:
        good = serve_job(fake, cli, "jobs/good.yaml")
        fake.script(good, "1", "2")
        result = apply_on(cli, fake)
    assert result.code == 1
    assert "broken: ERROR: 400 INVALID_ARGUMENT: tuning is not supported for this model" \
        in result.err
    per_job, summary, markdown, junit = reports(gemini_repo)
    assert per_job["broken"]["state"] == "ERROR"
    assert per_job["broken"]["timings"] == {"created": None, "started": None, "completed": None,
                                            "duration_seconds": None}
    assert [j["ok"] for j in summary["jobs"]] == [False, True]
    assert re.search(r"\| ERROR \| - \| - \| - \| [\d,]+ \| - \| - \| 400 INVALID_ARGUMENT: "
                     "tuning is not supported", markdown)
    assert junit.find("testsuite[@name='broken']").get("failures") == "1"


def test_junit_is_well_formed_whatever_the_model_answers(gemini_repo, cli):
    nasty = "nul\x00 bell\x07 esc\x1b[31m vt\x0b surrogate\ud83d nonchars\ufffe\uffff ok\t\n😀"
    job = gemini_repo.root / "jobs/good.yaml"
    job.write_text(job.read_text() + '    - input: "bell\\a in the prompt"\n      expect: x\n')
    with FakeGenerate() as fake:
        good = serve_job(fake, cli, "jobs/good.yaml")
        fake.script(good, "1", nasty)
        fake.script(good, "bell\x07 in the prompt", "x", nasty)
        result = cli("eval", "jobs/good.yaml", "--backend", "gemini", "--endpoint", fake.url)
    assert result.code == 1, result.err
    per_job, _, _, junit = reports(gemini_repo)  # parsing junit.xml is the test
    assert per_job["good"]["eval"]["prompts"][0]["answer"] == nasty  # JSON keeps it exactly
    suite = junit.find("testsuite[@name='good']")
    failure = suite.find("testcase[@name='1']/failure")
    assert "\\x00" in failure.text and "\\x1b" in failure.text
    names = [case.get("name") for case in suite]
    assert names[2] == "bell\\x07 in the prompt"
    text = (gemini_repo.root / "reports/junit.xml").read_text(encoding="utf-8")
    assert "\\ud83d" in text and "\\ufffe" in text and "😀" in text  # allowed characters stay
    assert "\x00" not in text and "\x1b" not in text
    assert "nul\\x00 bell\\x07" in (gemini_repo.root / "reports/good.md").read_text()


def test_google_timestamps_with_nine_fractional_digits(gemini_repo, cli):
    with FakeGenerate() as fake:
        good = serve_job(fake, cli, "jobs/good.yaml")
        fake.script(good, "1", "2")
        result = cli("report", "jobs/good.yaml", "--backend", "gemini", "--endpoint", fake.url)
    assert result.code == 0, result.err
    timings = json.loads((gemini_repo.root / "reports/good.json").read_text())["timings"]
    assert timings == {"created": "2024-05-01T09:59:59.987654321Z",
                       "started": "2024-05-01T10:00:00.123456789Z",
                       "completed": "2024-05-01T10:01:30.5Z", "duration_seconds": 90.377}
    assert "trained in 90.4s." in (gemini_repo.root / "reports/good.md").read_text()


@pytest.mark.parametrize("text, iso", [
    ("2024-05-01T10:00:00.123456789Z", "2024-05-01T10:00:00.123456+00:00"),
    ("2024-05-01T10:00:00Z", "2024-05-01T10:00:00+00:00"),
    ("2024-05-01t10:00:00.5z", "2024-05-01T10:00:00.500000+00:00"),
    ("2024-05-01T12:00:00.000000001+02:00", "2024-05-01T12:00:00+02:00"),
    ("2024-05-01T10:00:00.123-05:30", "2024-05-01T10:00:00.123000-05:30"),
])
def test_rfc3339_timestamps_parse_without_fromisoformat(text, iso):
    assert timestamps.parse(text).isoformat() == iso


@pytest.mark.parametrize("text", [None, "", "yesterday", "2024-05-01", "2024-02-30T00:00:00Z",
                                  "2024-05-01T10:00:00", "2024-05-01T25:00:00Z"])
def test_what_is_not_a_timestamp_is_none(text):
    assert timestamps.parse(text) is None


def test_reports_go_to_the_repository_root_wherever_jobspec_runs(gemini_repo, cli, monkeypatch):
    with FakeGenerate() as fake:
        good = serve_job(fake, cli, "jobs/good.yaml")
        fake.script(good, "1", "2")
        monkeypatch.chdir(gemini_repo.root / "jobs")
        result = cli("eval", "good.yaml", "--backend", "gemini", "--endpoint", fake.url)
        assert result.code == 0, result.err
        assert (gemini_repo.root / "reports/good.json").exists()
        assert not (gemini_repo.root / "jobs/reports").exists()
        assert f"Reports: 5 files in {gemini_repo.root.resolve() / 'reports'}/" in result.err
        explicit = cli("eval", "good.yaml", "--backend", "gemini", "--endpoint", fake.url,
                       "--report-dir", "out")
    assert explicit.code == 0, explicit.err
    assert (gemini_repo.root / "jobs/out/good.json").exists()  # relative to where it ran
    assert "Reports: 5 files in out/" in explicit.err
    help_text = " ".join(cli("apply", "--help").out.split())
    assert ("--report-dir DIR where reports are written (default: reports/ at the repository "
            "root, wherever jobspec runs from; a relative DIR is relative to the current "
            "directory)") in help_text
