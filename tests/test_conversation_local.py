"""Conversations to the local backend (issue 18), through `jobspec plan` and `jobspec apply`
against the real local service (tiny model), each request seen by a recording loopback relay in
front of it: a plan counts a conversation as its contents line and a one-turn example as the
TuningExample it always was; an apply uploads each example as its upload line
(``wire.conversation_line``: the system instruction, every turn, a weight-0 turn marked) and
trains to ACTIVE.

The service's side (reading those lines, rendering and masking them) is jobspec/server's
(branch i18-service); these tests hold the two sides to one wire, and pass once both are in."""

from __future__ import annotations

import json

import httpx
import pytest

from jobspec import wire
from jobspec.conversation import from_messages
from tests.test_plan_token_counts import Relay

pytestmark = pytest.mark.timeout(300)

RECORDS = [
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
                  {"role": "user", "content": "2"},
                  {"role": "assistant", "content": "four", "weight": 0},
                  {"role": "user", "content": "3"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "user", "content": "seven"}, {"role": "assistant", "content": "8"}]},
    {"messages": [{"role": "user", "content": "10"}, {"role": "assistant", "content": "11"}]},
]
COUNT = "/v1beta/models/gemini-1.0-pro-001:countExampleTokens"


@pytest.fixture
def relay(repo, service, monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    with Relay(service.url) as running:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", running.url)
        yield running


def write_job(repo, extra: str = "") -> None:
    repo.write("jobs/data/chat.jsonl", "".join(json.dumps(r) + "\n" for r in RECORDS))
    repo.job(name="chat", data="data/chat.jsonl", extra=extra,
             hyperparameters="batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 1")


def test_a_plan_counts_conversations_as_their_contents_lines(repo, relay, cli):
    write_job(repo)
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    (asked,) = [r for r in relay.taken() if r.path == COUNT]
    (counted,) = asked.json()["requests"]
    conversation = from_messages(RECORDS[0])
    assert counted["examples"] == [
        json.loads(wire.conversation_line(conversation)),
        {"textInput": "seven", "output": "8"}, {"textInput": "10", "output": "11"}]
    assert counted["examples"][0]["contents"][3]["weight"] == 0
    (job,) = plan.json()["jobs"]
    estimate = job["estimate"]
    assert estimate["exact"] and estimate["examples"] == 3
    # The conversation is the longest example: its turns and system instruction all count.
    answer = httpx.post(f"{relay.target}{COUNT}", json={"examples": counted["examples"]},
                        timeout=60).json()
    sizes = [i + o for i, o in zip(answer["inputTokens"], answer["outputTokens"])]
    assert sizes[0] == max(sizes) and estimate["tokens"] == sum(sizes)


def test_apply_uploads_each_example_as_its_upload_line_and_trains(repo, relay, cli):
    write_job(repo, extra="system_instruction: Be exact.\n")
    result = cli("apply", "jobs/", "--poll-interval", "0.05")
    assert result.code == 0, result.err
    (upload,) = [r for r in relay.requests if r.method == "PUT"]
    job_system = "Be exact."
    expected = [from_messages(r).with_system(job_system) for r in RECORDS]
    assert upload.body == b"".join(wire.conversation_line(c) for c in expected)
    lines = [json.loads(line) for line in upload.body.splitlines()]
    # The file's own system instruction is kept; the job's fills in where there is none.
    assert [line["systemInstruction"]["parts"][0]["text"] for line in lines] == [
        "Answer with a number.", job_system, job_system]
    with httpx.Client(base_url=relay.target, timeout=30) as http:
        models = http.get("/v1beta/tunedModels").json()["tunedModels"]
    assert [m["state"] for m in models if m["name"].startswith("tunedModels/chat-")] == [
        "ACTIVE"]
