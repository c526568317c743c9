"""When an earlier eval may stand in for asking again, and what --skip-eval and `jobspec report`
do with earlier evals. Against fake_generate (a contract fake of the Gemini API's tuned models
and generateContent), which counts every prompt asked."""

from __future__ import annotations

import json

import pytest

from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job

EVAL = """eval:
  prompts:
    - input: one
      expect: "1"
    - input: two
      expect: "2"
  min_pass_rate: 1.0
"""


@pytest.fixture
def fake(repo, monkeypatch, cli):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_eval_reuse")
    repo.job(name="counter", extra=EVAL)
    with FakeGenerate() as running:
        running.tuned = serve_job(running, cli, "jobs/counter.yaml")
        running.script(running.tuned, "one", "1")
        running.script(running.tuned, "two", "2")
        yield running


def run(cli, fake, command="apply", *extra, endpoint=None):
    return cli(command, "jobs/", "--backend", "gemini", "--endpoint", endpoint or fake.url,
               *extra)


def edit(repo, old, new):
    job = repo.root / "jobs/counter.yaml"
    assert old in job.read_text()
    job.write_text(job.read_text().replace(old, new))


def report(repo):
    return json.loads((repo.root / "reports/counter.json").read_text())


def test_the_same_deterministic_eval_of_the_same_model_is_reused(repo, fake, cli):
    first = run(cli, fake)
    assert first.code == 0, first.err
    assert len(fake.generate_requests()) == 2
    again = run(cli, fake)
    assert again.code == 0, again.err
    assert ("counter: eval unchanged since the last report (100% passed; gate passed); "
            "`jobspec eval` asks again") in again.err
    assert len(fake.generate_requests()) == 2  # nothing asked
    assert report(repo)["eval_status"] == "reused" and report(repo)["eval"]["pass_rate"] == 1.0
    asked = run(cli, fake, "eval")
    assert asked.code == 0 and len(fake.generate_requests()) == 4  # `jobspec eval` always asks


@pytest.mark.parametrize("old, new", [
    ("input: two", "input: three"),
    ('expect: "2"', 'expect: {contains: "2"}'),
    ("min_pass_rate: 1.0", "min_pass_rate: 0.5"),
    ("min_pass_rate: 1.0", "min_pass_rate: 1.0\n  compare_base: true"),
    ("min_pass_rate: 1.0", "min_pass_rate: 1.0\n  generation_config: {max_output_tokens: 8}"),
], ids=["prompt", "expectation", "gate", "compare_base", "generation config"])
def test_a_changed_eval_is_asked_again(repo, fake, cli, old, new):
    assert run(cli, fake).code == 0
    edit(repo, old, new)
    fake.script(fake.tuned, "three", "2")
    fake.script("models/gemini-1.0-pro-001", "one", "1")
    fake.script("models/gemini-1.0-pro-001", "two", "2")
    before = len(fake.generate_requests(fake.tuned))
    again = run(cli, fake)
    assert again.code == 0, again.err
    assert "eval unchanged" not in again.err and "counter: eval 100% passed" in again.err
    assert len(fake.generate_requests(fake.tuned)) == before + 2
    assert report(repo)["eval_status"] == "asked"


def test_a_sampled_eval_is_asked_again(repo, fake, cli):
    edit(repo, "min_pass_rate: 1.0", "min_pass_rate: 1.0\n  generation_config: {temperature: 0.7}")
    assert run(cli, fake).code == 0
    again = run(cli, fake)
    assert again.code == 0, again.err
    assert ("counter: asking the eval prompts again: generation is not deterministic "
            "(temperature 0.7)") in again.err
    assert len(fake.generate_requests()) == 4
    assert fake.generate_requests()[-1].json()["generationConfig"]["temperature"] == 0.7


def test_an_eval_with_an_errored_prompt_is_asked_again(repo, fake, cli):
    fake.answers.pop((fake.tuned, "two"))  # the fake answers 400: the request fails
    first = run(cli, fake)
    assert first.code == 1
    assert "counter: 1 eval prompt(s) could not be asked (errors, not wrong answers)" in first.err
    fake.script(fake.tuned, "two", "2")
    again = run(cli, fake)
    assert again.code == 0, again.err
    assert "counter: asking the eval prompts again: 1 prompt(s) could not be asked last time" \
        in again.err
    assert [p["verdict"] for p in report(repo)["eval"]["prompts"]] == ["pass", "pass"]


def test_the_same_model_on_another_endpoint_is_asked_again(repo, fake, cli):
    assert run(cli, fake).code == 0
    with FakeGenerate() as other:
        other.models = fake.models
        other.answers = fake.answers
        moved = run(cli, fake, endpoint=other.url)
        assert moved.code == 0, moved.err
        assert "eval unchanged" not in moved.err
        assert len(other.generate_requests()) == 2
    assert report(repo)["endpoint"] == other.url


def test_skip_eval_writes_no_eval_and_judges_no_stale_gate(repo, fake, cli):
    fake.script(fake.tuned, "two", "twenty")  # a wrong answer: the gate fails
    failed = run(cli, fake)
    assert failed.code == 1 and "counter: eval 50% passed; gate 100% FAILED" in failed.err
    assert report(repo)["eval"]["gate"] == "failed"
    skipped = run(cli, fake, "apply", "--skip-eval")
    assert skipped.code == 0, skipped.err
    assert "Apply complete: 1/1 jobs ACTIVE in" in skipped.err and "gate" not in skipped.err
    assert len(fake.generate_requests()) == 2  # nothing asked
    assert (report(repo)["eval"], report(repo)["eval_status"]) == (None, "skipped")
    summary = json.loads((repo.root / "reports/summary.json").read_text())
    assert summary["ok"] is True and summary["jobs"][0]["gate"] is None
    assert "Eval skipped (--skip-eval)" in (repo.root / "reports/counter.md").read_text()


def test_report_keeps_the_last_eval_only_while_it_asks_the_same(repo, fake, cli):
    assert run(cli, fake, "eval").code == 0
    kept = run(cli, fake, "report")
    assert kept.code == 0, kept.err
    assert len(fake.generate_requests()) == 2  # report asks nothing
    assert report(repo)["eval_status"] == "kept" and report(repo)["eval"]["pass_rate"] == 1.0
    edit(repo, "input: two", "input: three")
    stale = run(cli, fake, "report")
    assert stale.code == 0, stale.err
    assert (report(repo)["eval"], report(repo)["eval_status"]) == (None, "not_run")
