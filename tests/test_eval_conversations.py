"""Eval prompts asked in a conversation (issue 18): a prompt's ``system`` (over the job's
``system_instruction``) and ``history`` (earlier turns, in the contents or the messages form)
reach every backend's generateContent as ``systemInstruction`` + ``contents``, for the tuned and
the base model alike; a prompt with neither sends the body jobspec always sent. A bad history is
refused at its line and field; reports show the system instruction and history; a changed one
is asked again.

Through the CLI, against fake_gemini and fake_generate (the Gemini API), fake_vertex (Vertex AI)
and the real local service with the tiny model, behind a recording proxy (tests/recording_proxy:
what the client sent, and the service's prompt token counts).
"""

from __future__ import annotations

import json
from xml.etree import ElementTree

import jsonschema
import pytest

from tests.conftest import ROOT
from tests.fake_gemini import FakeGemini
from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job
from tests.fake_vertex import FakeVertex
from tests.recording_proxy import RecordingProxy

REPORT_SCHEMA = json.loads((ROOT / "schemas/report.schema.json").read_text())
CONFIG = {"temperature": 0.0, "maxOutputTokens": 32}  # the eval's default generation config

# Three prompts: one as every prompt was before (no system, no history), one with its own system
# and a contents-form history, one with a messages-form history.
EVAL = """eval:
  compare_base: true
  min_pass_rate: 0
  prompts:
    - input: "1"
      expect: "2"
    - input: "3"
      system: Count in ones.
      history:
        - {role: user, parts: [{text: "1"}]}
        - {role: model, parts: [{text: "2"}]}
      expect: "4"
    - input: "5"
      history:
        - {role: user, content: "3"}
        - {role: assistant, content: "4"}
        - {role: user, content: "4"}
        - {role: assistant, content: "5"}
      expect: "6"
"""


def user(text: str) -> dict:
    return {"role": "user", "parts": [{"text": text}]}


def model(text: str) -> dict:
    return {"role": "model", "parts": [{"text": text}]}


def system(text: str) -> dict:
    return {"parts": [{"text": text}]}


HISTORY_2 = [{"role": "user", "text": "1"}, {"role": "model", "text": "2"}]
HISTORY_3 = [{"role": "user", "text": "3"}, {"role": "model", "text": "4"},
             {"role": "user", "text": "4"}, {"role": "model", "text": "5"}]


def without_credentials(monkeypatch, tmp_path) -> None:
    for variable in (*ENVIRONMENT, "JOBSPEC_VERTEX_LOCATION", "JOBSPEC_STAGING_BUCKET",
                     "JOBSPEC_ALLOWED_ENDPOINTS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no gcloud ADC file


def report(repo, job: str) -> dict:
    data = json.loads((repo.root / "reports" / f"{job}.json").read_text())
    jsonschema.validate(data, REPORT_SCHEMA)
    return data


# -- the job file ------------------------------------------------------------------------------

BAD_HISTORIES = """eval:
  prompts:
    - input: "3"
      expect: "4"
      history:
        - {role: user, content: "1"}
        - {role: assistant, content: "2"}
        - {role: system, content: "Be brief."}
        - {role: assistant, content: "2"}
    - input: "3"
      expect: "4"
      history:
        - {role: user, parts: [{text: "1"}]}
        - {role: assistant, content: "2"}
    - input: "3"
      expect: "4"
      history:
        - {role: user, parts: [{text: "1"}]}
    - input: "3"
      expect: "4"
      history:
        - {role: user, parts: [{text: "1"}]}
        - {role: tool, parts: [{text: "2"}]}
    - input: "3"
      expect: "4"
      history:
        - {role: assistant, content: "2"}
        - {role: user, content: "1"}
    - input: "3"
      expect: "4"
      history:
        - {role: user, parts: [{inlineData: {mimeType: image/png, data: AAAA}}]}
        - {role: model, parts: [{text: "2"}]}
    - input: "3"
      expect: "4"
      history: []
    - input: "3"
      expect: "4"
      system: "  "
      history:
        - {role: user, content: "1"}
        - {role: assistant, content: "2", weight: 0}
"""


@pytest.mark.timeout(60)
def test_bad_histories_are_refused_at_their_line_and_field(repo, cli):
    repo.job(name="bad", extra=BAD_HISTORIES)
    result = cli("validate", "jobs/")
    assert result.code == 1
    shown = result.out + result.err
    expected = [
        "jobs/bad.yaml:16:18: eval.prompts[0].history[2].role: a system message is not "
        "allowed here: give the system instruction as the prompt's system",
        "jobs/bad.yaml:22:11: eval.prompts[1].history[1]: is in the messages form but the first "
        "turn is in the contents form; a history's turns are all in one form",
        "jobs/bad.yaml:26:18: eval.prompts[2].history[0].role: a history ends with a model "
        "turn, not user: the prompt's input is the next user turn",
        "jobs/bad.yaml:31:18: eval.prompts[3].history[1].role: unknown role 'tool': a turn is "
        "user or model",
        "jobs/bad.yaml:35:18: eval.prompts[4].history[0].role: roles out of order: the first "
        "turn comes a user turn, not model",
        "jobs/bad.yaml:40:32: eval.prompts[5].history[0].parts[0]: only text parts are "
        "supported, got inlineData",
        "jobs/bad.yaml:44:16: eval.prompts[6].history: has no turns",
        "jobs/bad.yaml:47:15: eval.prompts[7].system: '  ' must not be empty or only whitespace",
        "jobs/bad.yaml:50:43: eval.prompts[7].history[1].weight: unknown field 'weight'",
    ]
    for line in expected:
        assert line in shown, f"{line}\nnot in:\n{shown}"
    assert "9 problems found" in shown


@pytest.mark.timeout(60)
def test_good_histories_in_either_form_validate(repo, cli):
    repo.job(name="good", extra=EVAL, data="data/good.jsonl")
    repo.write_jsonl("jobs/data/good.jsonl", [("1", "2"), ("3", "4")])
    assert cli("validate", "jobs/").code == 0


# -- the Gemini API ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_gemini_api_tuned_and_base_models_are_asked_the_whole_conversation(
        repo, cli, monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-gemini")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_eval_conversations")
    repo.job(name="counter", extra=EVAL)
    shown = cli("show", "jobs/counter.yaml", "--format", "json").json()
    tuned = f"tunedModels/{shown['tuned_model_id']}"
    base = "models/gemini-1.0-pro-001"
    with FakeGemini(polls_until_done=1) as fake:
        fake.script(tuned, "1", "2")
        fake.script(tuned, "3", "4", system="Count in ones.")  # only with its system
        fake.script(tuned, "5", "6")
        for prompt, answer in (("1", "two"), ("3", "four"), ("5", "six")):
            fake.script(base, prompt, answer, system="Count in ones." if prompt == "3" else None)
        result = cli("apply", "jobs/", "--backend", "gemini", "--endpoint", fake.url,
                     "--poll-interval", "0.01")
        assert result.code == 0, result.err
        tuned_bodies, base_bodies = fake.generate_bodies(tuned), fake.generate_bodies(base)

    expected = [
        {"contents": [user("1")], "generationConfig": CONFIG},
        {"systemInstruction": system("Count in ones."),
         "contents": [user("1"), model("2"), user("3")], "generationConfig": CONFIG},
        {"contents": [user("3"), model("4"), user("4"), model("5"), user("5")],
         "generationConfig": CONFIG},
    ]
    assert tuned_bodies == expected and base_bodies == expected
    # A prompt with neither is the body jobspec always sent, keys and all.
    assert list(tuned_bodies[0]) == ["contents", "generationConfig"]

    prompts = report(repo, "counter")["eval"]["prompts"]
    assert [(p["answer"], p["base_answer"]) for p in prompts] == [
        ("2", "two"), ("4", "four"), ("6", "six")]
    assert [(p.get("system"), p.get("history")) for p in prompts] == [
        (None, None), ("Count in ones.", HISTORY_2), (None, HISTORY_3)]
    assert list(prompts[0]) == ["input", "expect", "answer", "error", "verdict", "base_answer",
                                "base_error", "base_verdict"]
    markdown = (repo.root / "reports/counter.md").read_text()
    assert "| 1 | equals: 2 | two |" in markdown
    assert "| 3 <sub>(system: “Count in ones.”; after 2 turns)</sub> | equals: 4 |" in markdown
    assert "| 5 <sub>(after 4 turns)</sub> | equals: 6 |" in markdown
    suite = ElementTree.parse(repo.root / "reports/junit.xml").getroot().find("testsuite")
    assert [case.get("name") for case in suite.findall("testcase")][1:] == [
        "1", "3 (system: “Count in ones.”; after 2 turns)", "5 (after 4 turns)"]


# -- eval reuse --------------------------------------------------------------------------------

REUSED_EVAL = """eval:
  prompts:
    - input: one
      system: Answer with a digit.
      expect: "1"
    - input: two
      system: Answer with a digit.
      history:
        - {role: user, content: zero}
        - {role: assistant, content: "0"}
      expect: "2"
"""


@pytest.fixture
def generate(repo, cli, monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_eval_conversations")
    repo.job(name="digits", extra=REUSED_EVAL)
    with FakeGenerate() as running:
        running.tuned = serve_job(running, cli, "jobs/digits.yaml")
        running.script(running.tuned, "one", "1")
        running.script(running.tuned, "two", "2")
        yield running


def edit(repo, old: str, new: str) -> None:
    job = repo.root / "jobs/digits.yaml"
    assert old in job.read_text()
    job.write_text(job.read_text().replace(old, new, 1))


@pytest.mark.timeout(120)
def test_a_changed_system_or_history_is_asked_again_and_an_unchanged_one_reused(
        repo, cli, generate):
    def apply():
        result = cli("apply", "jobs/", "--backend", "gemini", "--endpoint", generate.url)
        assert result.code == 0, result.err
        return result

    apply()
    assert len(generate.generate_requests()) == 2
    markdown = (repo.root / "reports/digits.md").read_text()
    assert "_Every prompt was asked with the system instruction “Answer with a digit.”._" \
        in markdown
    assert "| one | equals: 1 | 1 | ✅ pass |" in markdown  # the shared system said once
    assert "| two <sub>(after 2 turns)</sub> | equals: 2 | 2 | ✅ pass |" in markdown

    again = apply()
    assert "digits: eval unchanged since the last report" in again.err
    assert len(generate.generate_requests()) == 2  # nothing asked
    assert report(repo, "digits")["eval_status"] == "reused"

    edit(repo, "content: zero", "content: nought")  # the history changed: another question
    apply()
    assert len(generate.generate_requests()) == 4
    assert generate.generate_bodies()[-1]["contents"][0] == user("nought")
    assert report(repo, "digits")["eval"]["prompts"][1]["history"][0]["text"] == "nought"

    edit(repo, "system: Answer with a digit.", "system: Answer in digits.")
    apply()
    assert len(generate.generate_requests()) == 6
    assert generate.generate_bodies()[-2]["systemInstruction"] == system("Answer in digits.")
    assert report(repo, "digits")["eval_status"] == "asked"

    apply()
    assert len(generate.generate_requests()) == 6  # the same again: reused


# -- Vertex AI ---------------------------------------------------------------------------------

VERTEX_JOB = """version: 1
name: numbers
base_model: gemini-2.5-flash
hyperparameters:
  epoch_count: 1
training_data: data/numbers.jsonl
system_instruction: Answer with the next number.
backend: {type: vertex, project: my-project, staging_bucket: gs://my-bucket}
"""


@pytest.mark.timeout(120)
def test_vertex_endpoint_and_publisher_model_get_the_system_instruction_and_history(
        repo, cli, monkeypatch, tmp_path):
    without_credentials(monkeypatch, tmp_path)
    repo.write_jsonl("jobs/data/numbers.jsonl", [("1", "2"), ("3", "4"), ("8", "9")])
    repo.write("jobs/numbers.yaml", VERTEX_JOB + EVAL)
    with FakeVertex(polls_until_done=2) as fake:
        for kind in ("tuned", "base"):
            for prompt, answer in (("1", "2"), ("3", "4"), ("5", "6")):
                fake.script(kind, prompt, answer)
        monkeypatch.setenv("JOBSPEC_VERTEX_ENDPOINT", fake.url)
        monkeypatch.setenv("JOBSPEC_STORAGE_ENDPOINT", fake.url)
        monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.vertex-token")
        monkeypatch.setenv("JOBSPEC_OWNER", "team-a")
        result = cli("apply", "jobs/", "--poll-interval", "0.01")
        assert result.code == 0, result.err
        tuned_bodies, base_bodies = fake.generate_bodies("tuned"), fake.generate_bodies("base")

    job_system = system("Answer with the next number.")
    expected = [
        # the job's system instruction, where the prompt has none of its own
        {"systemInstruction": job_system, "contents": [user("1")], "generationConfig": CONFIG},
        # the prompt's own, instead of the job's
        {"systemInstruction": system("Count in ones."),
         "contents": [user("1"), model("2"), user("3")], "generationConfig": CONFIG},
        {"systemInstruction": job_system,
         "contents": [user("3"), model("4"), user("4"), model("5"), user("5")],
         "generationConfig": CONFIG},
    ]
    assert tuned_bodies == expected and base_bodies == expected
    prompts = report(repo, "numbers")["eval"]["prompts"]
    assert [(p["system"], p.get("history")) for p in prompts] == [
        ("Answer with the next number.", None), ("Count in ones.", HISTORY_2),
        ("Answer with the next number.", HISTORY_3)]
    markdown = (repo.root / "reports/numbers.md").read_text()
    assert "| 1 <sub>(system: “Answer with the next number.”)</sub> | equals: 2 |" in markdown
    assert "| 3 <sub>(system: “Count in ones.”; after 2 turns)</sub> |" in markdown
    assert "| 5 <sub>(system: “Answer with the next number.”; after 4 turns)</sub> |" \
        in markdown


# -- the local service -------------------------------------------------------------------------

LONG_SYSTEM = ("You are a careful assistant for a team that counts things: answer every "
               "question with a single number and nothing else, never a sentence, never a unit.")
LOCAL_EVAL = f"""eval:
  compare_base: true
  min_pass_rate: 0
  prompts:
    - input: Hi
      expect: {{not_contains: zzzz-never-said}}
    - input: Hi
      system: Short.
      expect: {{not_contains: zzzz-never-said}}
    - input: Hi
      system: "{LONG_SYSTEM}"
      expect: {{not_contains: zzzz-never-said}}
    - input: Hi
      system: Short.
      history:
        - {{role: user, content: "Hello there, how are you today?"}}
        - {{role: assistant, content: "Very well, thank you for asking."}}
      expect: {{not_contains: zzzz-never-said}}
"""


@pytest.mark.timeout(300)
def test_the_local_service_is_asked_the_whole_conversation_and_reads_it(
        repo, service, cli, monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    repo.job(name="chat", hyperparameters="batch_size: 4\n  epoch_count: 1", extra=LOCAL_EVAL)
    with RecordingProxy(service.url) as proxy:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", proxy.url)
        result = cli("apply", "jobs/")
        assert result.code == 0, result.err
        asked = proxy.generate_exchanges()
    assert len(asked) == 8 and all(e.status == 200 for e in asked)  # 4 prompts, tuned and base
    tuned = [e for e in asked if "/tunedModels/" in e.path]
    base = [e for e in asked if "/models/" in e.path and "/tunedModels/" not in e.path]
    assert [e.json() for e in tuned] == [e.json() for e in base]
    bodies = [e.json() for e in tuned]
    assert bodies[0] == {"contents": [user("Hi")], "generationConfig": CONFIG}
    assert bodies[1] == {"systemInstruction": system("Short."), "contents": [user("Hi")],
                         "generationConfig": CONFIG}
    assert bodies[2]["systemInstruction"] == system(LONG_SYSTEM)
    assert bodies[3] == {"systemInstruction": system("Short."), "contents": [
        user("Hello there, how are you today?"), model("Very well, thank you for asking."),
        user("Hi")], "generationConfig": CONFIG}
    # The service read them: a longer system instruction, or a history, is a longer prompt.
    for side in (tuned, base):
        tokens = [e.answer_json()["usageMetadata"]["promptTokenCount"] for e in side]
        assert tokens[2] > tokens[1] + 20 and tokens[3] > tokens[1] + 10, tokens

    prompts = report(repo, "chat")["eval"]["prompts"]
    assert [p.get("system") for p in prompts] == [None, "Short.", LONG_SYSTEM, "Short."]
    assert prompts[3]["history"] == [
        {"role": "user", "text": "Hello there, how are you today?"},
        {"role": "model", "text": "Very well, thank you for asking."}]
    markdown = (repo.root / "reports/chat.md").read_text()
    assert "| Hi <sub>(system: “Short.”; after 2 turns)</sub> |" in markdown
    # A long system instruction is shown on one line, cut short.
    assert "| Hi <sub>(system: “You are a careful assistant for a team that counts " \
           "things:…”)</sub> |" in markdown
