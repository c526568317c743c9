"""`jobspec data preview`: one example as the chosen backend receives it. For the local
service, its base model's chat template rendered over the conversation with the trained pieces
marked, and its token count, asked of the real service (tiny model, SmolLM2's tokenizer and
template); for Vertex AI and the Gemini API, the JSON they are sent, made offline with no
credentials."""

from __future__ import annotations

import json

import pytest

from jobspec import errors

pytestmark = pytest.mark.timeout(120)

CHAT = [
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "one"}, {"role": "assistant", "content": "2"},
                  {"role": "user", "content": "two"},
                  {"role": "assistant", "content": "four", "weight": 0},
                  {"role": "user", "content": "three"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "seven"}, {"role": "assistant", "content": "8"}]},
]


def write_chat(repo, records=CHAT, extra: str = "") -> None:
    """A job every backend takes (Vertex AI chooses the batch size and rate of Gemini models)."""
    repo.write("jobs/data/chat.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    repo.job(name="chat", data="data/chat.jsonl", extra=extra, hyperparameters="epoch_count: 2")


@pytest.fixture
def local(service, monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    return service


def test_local_preview_marks_exactly_the_trained_model_turns(repo, local, cli):
    write_chat(repo)
    shown = cli("data", "preview", "jobs/chat.yaml", "--format", "json")
    assert shown.code == 0, shown.err
    preview = shown.json()
    assert (preview["backend"], preview["example"], preview["examples"]) == ("local", 1, 2)
    assert preview["where"] == "jobs/data/chat.jsonl:1" and preview["exact"] is True
    trained = [s["text"] for s in preview["segments"] if s["trained"]]
    # The answers the model learns, each with SmolLM2's end-of-turn token; not "four" (weight 0).
    assert trained == ["2<|im_end|>", "4<|im_end|>"]
    rendered = "".join(s["text"] for s in preview["segments"])
    assert rendered.index("Answer with a number.") < rendered.index("one") < \
        rendered.index("four") < rendered.index("three")
    assert "<|im_start|>system" in rendered and "<|im_start|>assistant" in rendered
    assert preview["tokens"] == sum(s["tokens"] for s in preview["segments"])
    assert 0 < preview["trained_tokens"] <= sum(s["tokens"] for s in preview["segments"]
                                                if s["trained"])

    text = cli("data", "preview", "jobs/chat.yaml")
    assert text.code == 0, text.err
    assert text.out.startswith("jobs/data/chat.jsonl:1: example 1 of 2, as the local backend "
                               "receives it: the base model's chat template")
    assert "⟦2<|im_end|>⟧" in text.out and "⟦4<|im_end|>⟧" in text.out
    assert "four<|im_end|>" in text.out and "⟦four" not in text.out
    assert f"{preview['tokens']} tokens, {preview['trained_tokens']} trained" in text.out


def test_local_preview_of_a_one_turn_example_applies_the_jobs_system_instruction(
        repo, local, cli):
    write_chat(repo, extra="system_instruction: Count up.\n")
    shown = cli("data", "preview", "jobs/chat.yaml", "--example", "2", "--format", "json")
    assert shown.code == 0, shown.err
    rendered = "".join(s["text"] for s in shown.json()["segments"])
    assert "Count up." in rendered and "seven" in rendered
    assert [s["text"] for s in shown.json()["segments"] if s["trained"]] == ["8<|im_end|>"]


def test_vertex_preview_is_the_staged_line_made_offline(repo, cli, monkeypatch):
    records = [{"systemInstruction": {"parts": [{"text": "Be brief."}]},
                "contents": [{"role": "user", "parts": [{"text": "2+2?"}]},
                             {"role": "model", "parts": [{"text": "4"}]}]}]
    line = json.dumps(records[0], separators=(",", ":"))
    write_chat(repo, records)
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"):
        monkeypatch.delenv(name, raising=False)
    shown = cli("data", "preview", "jobs/chat.yaml", "--backend", "vertex")
    assert shown.code == 0, shown.err
    assert shown.out.splitlines()[0] == (
        "jobs/data/chat.jsonl:1: example 1 of 1, as the vertex backend receives it: a line of "
        "its training file (JSONL staged in Cloud Storage)")
    assert shown.out.splitlines()[2] == line  # byte for byte the user's own line
    # "Be brief." and "2+2?" given, "4" learned: 13 and 1 characters at 4 a token.
    assert "about 5 tokens, about 1 trained" in shown.out


def test_gemini_preview_is_the_tuning_example(repo, cli):
    repo.job(name="numbers", hyperparameters="epoch_count: 2")
    shown = cli("data", "preview", "jobs/numbers.yaml", "--backend", "gemini", "--example", "3",
                "--format", "json")
    assert shown.code == 0, shown.err
    preview = shown.json()
    assert preview["body"] == {"textInput": "-3", "output": "-2"}
    assert preview["where"] == "jobs/data/demo.jsonl:3" and preview["exact"] is False


@pytest.mark.parametrize("args, words", [
    (("--example", "9"), "--example 9: jobs/data/chat.jsonl has 2 examples"),
    (("--example", "0"), "--example 0: examples are counted from 1"),
    (("--validation",), "has no validation_data"),
])
def test_an_example_that_is_not_there_is_a_usage_error(repo, cli, args, words):
    write_chat(repo, [{"messages": [{k: v for k, v in m.items() if k != "weight"}
                                    for m in record["messages"]]} for record in CHAT])
    shown = cli("data", "preview", "jobs/chat.yaml", "--backend", "vertex", *args)
    assert shown.code == errors.EXIT_USAGE
    assert words in shown.err


def test_bad_data_is_refused_at_its_line_before_anything_is_asked(repo, cli):
    write_chat(repo)  # a weight-0 turn: Vertex trains on every model turn
    shown = cli("data", "preview", "jobs/chat.yaml", "--backend", "vertex")
    assert shown.code == errors.EXIT_FAILURE
    assert "jobs/data/chat.jsonl:1:" in shown.err and "messages[4].weight" in shown.err
