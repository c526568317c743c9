"""Plans count each distinct set of examples once: jobs of one base model and the same examples
share one count, every set goes in one batched request (split only where the service's body
limit requires), and counts are kept by content in the user's private state, so that a plan of
unchanged jobs asks for none again, another tokenizer, base model or example never gets a kept
count, and a damaged cache file is ignored. Through the CLI, against the real local service
(tiny model), each request seen by a recording loopback relay in front of it."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest

from jobspec import wire
from jobspec.backends import tokencount
from tests.conftest import NUMBER_EXAMPLES
from tests.loopback_http import LoopbackJsonServer, Request
from tests.service import LocalService

pytestmark = pytest.mark.timeout(240)

COUNT = "/v1beta/models/gemini-1.0-pro-001:countExampleTokens"
TOKENS_LINE = ("      15 examples: 543 tokens (489 input + 54 output; exact: counted by the local "
               "service with models/gemini-1.0-pro-001's tokenizer)")


class Relay(LoopbackJsonServer):
    """Passes every request on to the local service, and records it (body included)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def route(self, request: Request) -> tuple[int, object, dict[str, str]]:
        passed = ("content-type", wire.EXTENSIONS_HEADER.lower())
        headers = {k: v for k, v in request.headers.items() if k.lower() in passed}
        answer = httpx.request(request.method, self.target + request.path, params=request.query,
                               content=request.body, headers=headers, timeout=120)
        return answer.status_code, answer.json(), {}

    def taken(self) -> list[Request]:
        """The requests since the last call."""
        with self.lock:
            taken, self.requests = self.requests, []
        return taken


def counts_asked(requests: list[Request]) -> list[str]:
    return [r.path for r in requests if r.path.endswith(":countExampleTokens")]


@pytest.fixture
def relay(repo, service, monkeypatch):
    for variable in ("JOBSPEC_BACKEND", "JOBSPEC_PRICE_PER_MILLION_TOKENS"):
        monkeypatch.delenv(variable, raising=False)
    with httpx.Client(base_url=service.url) as http:  # no earlier runs: every job is created
        for model in http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
                "tunedModels", []):
            http.delete(f"/v1beta/{model['name']}")
    with Relay(service.url) as running:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", running.url)
        yield running


def kept_files() -> list:
    directory = os.path.join(os.environ["XDG_STATE_HOME"], "jobspec", "token-counts")
    return sorted(os.scandir(directory), key=lambda e: e.name) if os.path.isdir(directory) else []


def test_jobs_sharing_their_examples_are_counted_once_and_then_not_at_all(repo, relay, cli):
    for n in range(40):
        repo.job(name=f"copy-{n:02d}")  # one data file, the same base model
    first = cli("plan")
    assert first.code == 0, first.err
    asked = relay.taken()
    assert [(r.method, r.path) for r in asked] == [
        ("GET", "/v1beta/tunedModels"), ("GET", "/v1beta/models/gemini-1.0-pro-001"),
        ("POST", COUNT)]
    assert [len(s["examples"]) for s in asked[-1].json()["requests"]] == [15]
    lines = first.out.splitlines()
    for n in range(40):
        at = next(i for i, line in enumerate(lines)
                  if line.startswith(f"  + copy-{n:02d}  create tunedModels/copy-{n:02d}-"))
        assert lines[at + 1] == TOKENS_LINE
    assert "Estimate for 40 jobs to create: 108,600 tokens trained (exact)" in first.out

    # Kept in the user's private state directory, readable by the user alone; not in the
    # repository, where a pull request could plant one.
    (kept,) = kept_files()
    assert stat.S_IMODE(os.stat(os.path.dirname(kept.path)).st_mode) == 0o700
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert not [p for p in repo.root.rglob("*") if "count" in p.name]

    again = cli("plan")
    assert again.code == 0 and again.out == first.out
    assert counts_asked(relay.taken()) == []


def test_other_examples_or_another_base_model_are_counted_anew(repo, relay, cli):
    repo.job(name="first")
    assert cli("plan").code == 0
    assert counts_asked(relay.taken()) == [COUNT]

    # New examples, and the same examples on another base model: one set each, asked in one
    # request per base model; the examples counted before are not asked again.
    other = [("five", "six"), ("10", "11"), ("nine hundred", "nine hundred one")]
    repo.write_jsonl("jobs/data/other.jsonl", other)
    repo.job(name="second", data="data/other.jsonl")
    repo.job(name="third", base_model="models/tiny-smollm2")
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    asked = relay.taken()
    assert sorted(counts_asked(asked)) == [COUNT, "/v1beta/models/tiny-smollm2:countExampleTokens"]
    counted = next(r for r in asked if r.path == COUNT).json()["requests"]
    assert [[e["textInput"] for e in s["examples"]] for s in counted] == [[i for i, _ in other]]
    figures = {j["name"]: j["estimate"] for j in plan.json()["jobs"]}
    assert figures["third"]["tokens"] == figures["first"]["tokens"] == 543
    assert figures["third"]["exact"] and figures["second"]["examples"] == 3
    assert figures["second"]["tokens"] not in (None, 543)

    # An edited example makes another set of examples: counted again.
    edited = [NUMBER_EXAMPLES[0], ("3", "four"), *NUMBER_EXAMPLES[2:]]
    repo.write_jsonl("jobs/data/demo.jsonl", edited)
    assert cli("plan").code == 0
    assert sorted(counts_asked(relay.taken())) == [
        COUNT, "/v1beta/models/tiny-smollm2:countExampleTokens"]
    assert cli("plan").code == 0
    assert counts_asked(relay.taken()) == []


def test_a_service_that_counts_otherwise_is_asked_again(repo, relay, cli, tiny_model,
                                                        tmp_path, monkeypatch):
    """The same examples and base model on a service with another limit on one example (as
    another tokenizer would) are not given the count kept from the first service."""
    repo.job(name="counted")
    assert "of the 512 allowed" in cli("plan").out
    assert counts_asked(relay.taken()) == [COUNT]
    other = LocalService(tmp_path / "other-state", "--model", str(tiny_model),
                         "--max-batch-tokens", "300").start()
    try:
        with Relay(other.url) as other_relay:
            monkeypatch.setenv("JOBSPEC_LOCAL_URL", other_relay.url)
            plan = cli("plan")
            assert plan.code == 0, plan.err
            assert counts_asked(other_relay.taken()) == [COUNT]
    finally:
        other.stop()
    assert "longest example 51 tokens of the 300 allowed" in plan.out
    assert len(kept_files()) == 2


@pytest.mark.parametrize("damage", [
    "not json", "wrong key", "a count that is not a number", "a negative count",
    "one count too few", "true for a count", "a link", "a directory", "a pipe"])
def test_a_damaged_cache_file_is_ignored_and_replaced(repo, relay, cli, tmp_path, damage):
    repo.job(name="counted")
    first = cli("plan")
    assert first.code == 0, first.err
    assert counts_asked(relay.taken()) == [COUNT]
    (kept,) = kept_files()
    path = kept.path
    values = json.loads(open(path, encoding="utf-8").read())
    if damage == "not json":
        written = b"\x00{ not json"
    elif damage == "wrong key":  # a count of other examples, under this name
        written = json.dumps({**values, "key": "0" * 64}).encode()
    elif damage == "a count that is not a number":
        written = json.dumps({**values, "inputs": ["9"] * 15}).encode()
    elif damage == "a negative count":
        written = json.dumps({**values, "outputs": [-1] * 15}).encode()
    elif damage == "one count too few":
        written = json.dumps({**values, "inputs": values["inputs"][1:],
                              "outputs": values["outputs"][1:]}).encode()
    elif damage == "true for a count":
        written = json.dumps({**values, "inputs": [True] * 15}).encode()
    else:
        written = b""
    os.remove(path)
    if damage == "a link":
        elsewhere = tmp_path / "elsewhere.json"
        elsewhere.write_text(json.dumps({**values, "inputs": [1] * 15}))
        os.symlink(elsewhere, path)
    elif damage == "a directory":
        os.mkdir(path)
    elif damage == "a pipe":  # read, it would wait for a writer for ever
        os.mkfifo(path)
    else:
        with open(path, "wb") as out:
            out.write(written)

    again = cli("plan")
    assert again.code == 0, again.err
    assert again.out == first.out  # not misled, and not stopped
    assert counts_asked(relay.taken()) == [COUNT]
    if damage != "a directory":  # the next count replaced it: kept again
        assert not os.path.islink(path)
        assert json.loads(open(path, encoding="utf-8").read()) == values
        assert cli("plan").out == first.out
        assert counts_asked(relay.taken()) == []


def test_examples_past_one_request_body_are_counted_in_several(repo, relay, cli, monkeypatch):
    """Sets of examples that would pass the service's body limit together are sent in several
    requests, each within it, a set cut across two where it must; the counts are the same."""
    for n in range(3):
        repo.write_jsonl(f"jobs/data/set{n}.jsonl",
                         [(f"{i} {n}", o) for i, o in NUMBER_EXAMPLES])
        repo.job(name=f"set-{n}", data=f"data/set{n}.jsonl")
    whole = cli("plan")
    assert whole.code == 0, whole.err
    assert counts_asked(relay.taken()) == [COUNT]
    for kept in kept_files():
        os.remove(kept.path)

    monkeypatch.setattr(tokencount, "BATCH_BYTES", 400)  # about 550 bytes a set
    split = cli("plan")
    asked = [r for r in relay.taken() if r.path == COUNT]
    assert len(asked) >= 5 and all(len(r.body) <= 400 for r in asked)
    sent = [[e["textInput"] for s in r.json()["requests"] for e in s["examples"]] for r in asked]
    assert sum(sent, []) == [f"{i} {n}" for n in range(3) for i, _ in NUMBER_EXAMPLES]
    assert any(len(r.json()["requests"]) > 1 for r in asked)  # the end of one set, another's start
    assert split.out == whole.out


def test_count_example_tokens_takes_a_batch_and_models_say_how_they_count(service):
    """The batched form of the local service's countExampleTokens answers each set as the
    single form does; models.get reports what counts depend on (countingDigest)."""
    single = [{"textInput": "1", "output": "2"}, {"textInput": "twenty", "output": "one"}]
    other = [{"textInput": "three", "output": "four"}]
    with service.client(extensions=True) as http:  # countingDigest is jobspec's extension
        alone = [http.post(COUNT, json={"examples": s}).json() for s in (single, other)]
        batched = http.post(COUNT, json={"requests": [{"examples": single},
                                                      {"examples": other}]})
        assert batched.status_code == 200 and batched.json() == {"responses": alone}
        for body, message in (
                ({"requests": []}, "requests is required: at least one set of examples."),
                ({"requests": [{"examples": single}, {"examples": []}]},
                 "requests[1].examples is required: at least one example."),
                ({"examples": single, "requests": [{"examples": other}]},
                 "Give examples (one set) or requests (several), not both.")):
            refused = http.post(COUNT, json=body)
            assert refused.status_code == 400
            assert refused.json()["error"]["message"] == message
        digests = {name: http.get(f"/v1beta/models/{name}").json()["countingDigest"]
                   for name in ("gemini-1.0-pro-001", "tiny-smollm2")}
    # An alias is the model it names: the same tokenizer, layout and limit.
    assert len(set(digests.values())) == 1
    assert len(digests["tiny-smollm2"]) == 64
