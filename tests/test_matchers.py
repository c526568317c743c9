"""Every matcher, through `jobspec apply` and `jobspec eval` against fake_generate (a contract
fake of the Gemini API's tuned models and generateContent), with answers that make each pass
and each fail, for the tuned model and for the base model (compare_base)."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job

EVAL = """eval:
  prompts:
    - input: roman 63
      expect: LXIV
    - input: capital
      expect: {equals: Paris, case_sensitive: false}
    - input: capital, strictly
      expect: {equals: Paris}
    - input: yes or no
      expect: {one_of: ["yes", "no"]}
    - input: shout yes or no
      expect: {one_of: ["yes", "no"], case_sensitive: false}
    - input: the answer
      expect: {regex: "^4[0-9]$"}
    - input: greeting
      expect: {regex: "^hello", case_sensitive: false}
    - input: animal
      expect: {contains: cat}
    - input: polite
      expect: {not_contains: sorry}
    - input: polite, any case
      expect: {not_contains: SORRY, case_sensitive: false}
  min_pass_rate: 1.0
  compare_base: true
"""

# prompt: (answer that passes, answer that fails), each as the parts of one candidate
ANSWERS = {
    "roman 63": (("  LX", "IV\n"), ("LXIV.",)),  # trimmed equals, parts joined
    "capital": (("PARIS ",), ("Lyon",)),
    "capital, strictly": (("Paris",), ("PARIS",)),
    "yes or no": ((" no ",), ("No",)),
    "shout yes or no": (("YES",), ("maybe",)),
    "the answer": (("42\n",), ("142",)),
    "greeting": (("Hello there",), ("well, hello",)),
    "animal": (("concatenate",), ("dog",)),
    "polite": (("Sure, Sorry-free",), ("I am sorry",)),
    "polite, any case": (("Of course",), ("so Sorry",)),
}
BASE = "models/gemini-1.0-pro-001"


@pytest.fixture
def fake(repo, monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_matchers")
    repo.job(name="matchers", extra=EVAL)
    with FakeGenerate() as running:
        yield running


def script(fake, tuned, tuned_passes: bool, base_passes: bool) -> None:
    for prompt, (good, bad) in ANSWERS.items():
        fake.script(tuned, prompt, *(good if tuned_passes else bad))
        fake.script(BASE, prompt, *(good if base_passes else bad))


def on_fake(cli, fake, command, *extra):
    return cli(command, "jobs/", "--backend", "gemini", "--endpoint", fake.url, *extra)


def test_each_matcher_passes_on_the_tuned_model_and_fails_on_the_base(repo, fake, cli):
    tuned = serve_job(fake, cli, "jobs/matchers.yaml")
    script(fake, tuned, tuned_passes=True, base_passes=False)
    result = on_fake(cli, fake, "apply")
    assert result.code == 0, result.err
    assert "matchers: eval 100% passed, base model 0%; gate 100% passed" in result.err
    assert "Apply complete: 1/1 jobs ACTIVE in" in result.err
    data = json.loads((repo.root / "reports/matchers.json").read_text())
    prompts = data["eval"]["prompts"]
    assert [p["input"] for p in prompts] == list(ANSWERS)
    assert [p["verdict"] for p in prompts] == ["pass"] * len(ANSWERS)
    assert [p["base_verdict"] for p in prompts] == ["fail"] * len(ANSWERS)
    assert prompts[0]["answer"] == "  LXIV\n"  # the parts joined, recorded untrimmed
    assert (data["eval"]["pass_rate"], data["eval"]["base_pass_rate"]) == (1.0, 0.0)
    assert data["eval_status"] == "asked"
    # What went over the wire: each prompt once to each model, greedy, as Google reads it.
    asked = fake.generate_requests(tuned)
    assert [r.json()["contents"][0]["parts"][0]["text"] for r in asked] == list(ANSWERS)
    assert all(r.json()["generationConfig"] == {"temperature": 0.0, "maxOutputTokens": 32}
               for r in asked)
    assert len(fake.generate_requests(BASE)) == len(ANSWERS)


def test_each_matcher_fails_on_the_tuned_model_and_passes_on_the_base(repo, fake, cli):
    tuned = serve_job(fake, cli, "jobs/matchers.yaml")
    script(fake, tuned, tuned_passes=False, base_passes=True)
    result = on_fake(cli, fake, "eval")
    assert result.code == 1
    assert "matchers: eval 0% passed, base model 100%; gate 100% FAILED" in result.err
    assert ("matchers: failing prompts: 'roman 63', 'capital', 'capital, strictly', 'yes or no', "
            "'shout yes or no', 'the answer', 'greeting', 'animal', 'polite', "
            "'polite, any case'") in result.err
    data = json.loads((repo.root / "reports/matchers.json").read_text())
    assert [p["verdict"] for p in data["eval"]["prompts"]] == ["fail"] * len(ANSWERS)
    assert [p["base_verdict"] for p in data["eval"]["prompts"]] == ["pass"] * len(ANSWERS)
    assert data["eval"]["gate"] == "failed"
    suite = ElementTree.parse(repo.root / "reports/junit.xml").getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("11", "10", "0")
    failure = suite.find("testcase[@name='capital, strictly']/failure")
    assert failure.get("message") == 'expected {"equals": "Paris"}'
    assert failure.text == "answer: 'PARIS'"


def test_mixed_answers_judge_each_prompt_and_the_gate(repo, fake, cli):
    job = repo.root / "jobs/matchers.yaml"
    job.write_text(job.read_text().replace("min_pass_rate: 1.0", "min_pass_rate: 0.5"))
    tuned = serve_job(fake, cli, "jobs/matchers.yaml")
    for index, (prompt, (good, bad)) in enumerate(ANSWERS.items()):
        fake.script(tuned, prompt, *(good if index % 2 == 0 else bad))
        fake.script(BASE, prompt, *(bad if index % 2 == 0 else good))
    result = on_fake(cli, fake, "eval")
    assert result.code == 0, result.err
    assert "matchers: eval 50% passed, base model 50%; gate 50% passed" in result.err
    data = json.loads((repo.root / "reports/matchers.json").read_text())
    assert [p["verdict"] for p in data["eval"]["prompts"]] == ["pass", "fail"] * 5
    assert [p["base_verdict"] for p in data["eval"]["prompts"]] == ["fail", "pass"] * 5
    table = (repo.root / "reports/matchers.md").read_text()
    assert "| roman 63 | equals: LXIV | LXIV. | ❌ fail |   LXIV  | ✅ pass |" in table
