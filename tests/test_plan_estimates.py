"""Plans say how big each change is before anyone pays for it: tokens (counted exactly by the
local service, estimated for a backend that cannot count), tokens trained, steps, the longest
example against the limit, a training time from the rate the service measured, and a cost at
the operator's price; in text, JSON and the pull-request Markdown. Through the CLI, against the
real local service (tiny model) and fake_generate (the Gemini API, which counts nothing)."""

from __future__ import annotations

import re
import shutil

import httpx
import pytest

from tests.conftest import ROOT
from tests.fake_generate import ENVIRONMENT, FakeGenerate

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def local_repo(repo, service, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    for variable in ("JOBSPEC_BACKEND", "JOBSPEC_PRICE_PER_MILLION_TOKENS"):
        monkeypatch.delenv(variable, raising=False)
    with httpx.Client(base_url=service.url) as http:  # no earlier runs: no measured rate
        for model in http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
                "tunedModels", []):
            http.delete(f"/v1beta/{model['name']}")
    return repo


def trainer_counts(tiny_model, examples):
    """What the trainer feeds the model for each example: the prompt turn, the answer turn."""
    from transformers import AutoTokenizer

    from jobspec.server.chat import IGNORE_INDEX, encode_example

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    counts = []
    for text_input, output in examples:
        ids, labels = encode_example(tokenizer, text_input, output)
        trained = sum(label != IGNORE_INDEX for label in labels)
        counts.append((len(ids) - trained, trained))
    return counts


def test_plan_counts_tokens_exactly_with_the_trainers_encoding(local_repo, tiny_model, cli):
    from tests.conftest import NUMBER_EXAMPLES

    local_repo.job(name="counted")  # 15 examples, batch 2, 5 epochs
    counts = trainer_counts(tiny_model, NUMBER_EXAMPLES)
    inputs, outputs = sum(i for i, _ in counts), sum(o for _, o in counts)
    longest = max(range(15), key=lambda n: sum(counts[n]))

    plan = cli("plan")
    assert plan.code == 0, plan.err
    lines = plan.out.splitlines()
    at = next(i for i, line in enumerate(lines) if "+ counted  create" in line)
    assert lines[at + 1] == (
        f"      15 examples: {inputs + outputs:,} tokens ({inputs:,} input + {outputs:,} output; "
        "exact: counted by the local service with models/gemini-1.0-pro-001's tokenizer)")
    assert lines[at + 2] == (
        f"      {(inputs + outputs) * 5:,} tokens trained (5 epochs) in 38 steps; longest "
        f"example {sum(counts[longest])} tokens of the 512 allowed "
        f"(jobs/data/demo.jsonl:{longest + 1})")
    assert lines[at + 3] == ("      time unknown (this backend has not trained "
                             "models/gemini-1.0-pro-001 before)")
    assert lines[-1] == "Plan: 1 to create, 0 unchanged, 0 in progress, 0 failed, 0 superseded."
    assert lines[-2] == (f"Estimate for 1 job to create: {(inputs + outputs) * 5:,} tokens "
                         "trained (exact), time unknown, cost: give --price-per-million-tokens "
                         "(or $JOBSPEC_PRICE_PER_MILLION_TOKENS).")

    as_json = cli("plan", "--format", "json", "--price-per-million-tokens", "2").json()
    figures = as_json["jobs"][0]["estimate"]
    assert figures["examples"] == 15 and figures["exact"] is True
    assert (figures["input_tokens"], figures["output_tokens"]) == (inputs, outputs)
    assert figures["tokens_trained"] == (inputs + outputs) * 5 and figures["steps"] == 38
    assert figures["example_token_limit"] == 512 and figures["over_limit"] == []
    assert figures["cost"] == pytest.approx((inputs + outputs) * 5 / 1e6 * 2)
    assert figures["seconds"] is None and figures["measured_runs"] == 0
    assert as_json["totals"]["tokens_trained"] == (inputs + outputs) * 5


def test_training_time_comes_from_the_rate_the_service_measured(local_repo, cli):
    local_repo.job(name="timed", hyperparameters="batch_size: 2\n  epoch_count: 4")
    assert cli("apply", "--skip-eval", "jobs/").code == 0
    shown = cli("get", "-o", "json").json()
    assert len(shown) == 1

    # The same base model, trained once: a new job (and the same one, edited) has a time.
    job = local_repo.root / "jobs/timed.yaml"
    job.write_text(job.read_text().replace("epoch_count: 4", "epoch_count: 8"))
    plan = cli("plan", "--price-per-million-tokens", "0.5")
    assert plan.code == 0, plan.err
    # The time is "45s", or "1m 25s" on a busy machine.
    found = re.search(r"time ≈ (\d+[smh](?: \d+[sm])?) \(at the (\S+) s per example trained "
                      r"measured in 1 earlier run of models/gemini-1\.0-pro-001 here\); cost ≈ "
                      r"(\S+) at 0\.5 per million tokens trained", plan.out)
    assert found, plan.out
    figures = cli("plan", "--format", "json").json()["jobs"][0]["estimate"]
    assert figures["measured_runs"] == 1 and figures["seconds"] > 0
    # 15 examples x 8 epochs at the measured rate, plus the measured start-up time.
    assert figures["seconds"] >= 120 * figures["seconds_per_example"]
    assert re.search(r"Estimate for 1 job to create: [\d,]+ tokens trained \(exact\), time ≈ "
                     r"\S+, cost ≈ \S+\.", plan.out)


def test_an_example_over_the_models_limit_is_an_error_at_its_line(local_repo, cli):
    long_input = "word " * 700  # ~700 tokens: over the tiny model's 512
    local_repo.write_jsonl("jobs/data/long.jsonl", [("1", "2"), (long_input, "x"), ("3", "4")])
    local_repo.job(name="toolong", data="data/long.jsonl")
    plan = cli("plan")
    assert plan.code == 1
    assert "1 example OVER THE LIMIT" in plan.out
    assert re.search(r"^jobs/data/long\.jsonl:2: this example is [\d,]+ tokens \(input and "
                     r"output, counted by the local service with models/gemini-1\.0-pro-001's "
                     r"tokenizer\), over the limit of 512 tokens for one example$", plan.err, re.M), plan.err
    markdown = cli("plan", "--format", "markdown")
    assert markdown.code == 1 and "| ❌ " in markdown.out


def test_markdown_has_a_compact_estimates_table_within_githubs_limit(local_repo, cli):
    shutil.copytree(ROOT / "jobs", local_repo.root / "jobs")
    result = cli("plan", "--format", "markdown", "--price-per-million-tokens", "3")
    assert result.code == 0, result.err
    text = result.out
    assert "#### Estimates" in text
    assert "| job | examples | tokens (input + output) | tokens trained | steps | longest / limit " \
           "| time | cost |" in text
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    estimate_rows = [r for r in rows if r.count("|") == 9]
    assert {r.split("|")[1].strip() for r in estimate_rows} == {"`antonyms`", "`number-generator`"}
    assert re.search(r"\| \*\*total\*\* \| \| \| \*\*[\d,]+\*\* \| \| \| \*\*unknown\*\* \| "
                     r"\*\*[\d.]+\*\* \|", text)
    assert "Cost at 3 per million tokens trained." in text
    assert len(text) <= 65_536


def test_markdown_stays_within_the_limit_with_many_jobs(local_repo, cli):
    for n in range(400):  # ~210 characters of rows each: past GitHub's 65,536
        local_repo.job(name=f"many-{n:03d}-" + "x" * 22, data="data/demo.jsonl")
    result = cli("plan", "--format", "markdown")
    assert result.code == 0, result.err
    assert len(result.out) <= 65_536
    assert result.out.count("| + | `many-") == 400  # the plan's rows come first
    more = re.search(r"\| … (\d+) more jobs not shown \|", result.out)
    assert more and result.out.count("| `many-") - result.out.count("| + | `many-") == \
        400 - int(more[1])
    assert "| **total** |" in result.out  # the totals are never cut
    assert result.out.rstrip().endswith("</sub>")


def test_a_backend_that_cannot_count_says_estimate(repo, cli, monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_PRICE_PER_MILLION_TOKENS", "4")
    repo.write_jsonl("jobs/data/chars.jsonl", [("a" * 40, "b" * 8), ("c" * 10, "d")])
    repo.job(name="cloud", data="data/chars.jsonl",
             hyperparameters="batch_size: 1\n  epoch_count: 3")
    with FakeGenerate() as fake:
        plan = cli("plan", "--backend", "gemini", "--endpoint", fake.url)
        as_json = cli("plan", "--backend", "gemini", "--endpoint", fake.url,
                      "--format", "json").json()
    assert plan.code == 0, plan.err
    # ceil(40/4) + ceil(10/4) = 13 input, ceil(8/4) + ceil(1/4) = 3 output; x 3 epochs = 48.
    assert ("2 examples: 16 tokens (13 input + 3 output; estimate: estimated at 4 characters "
            "per token (this backend does not count tuning examples))") in plan.out
    assert ("48 tokens trained (3 epochs) in 6 steps; longest example 12 tokens "
            "(jobs/data/chars.jsonl:1)") in plan.out
    assert "cost ≈ 0.00019 at 4 per million tokens trained" in plan.out
    assert "Estimate for 1 job to create: 48 tokens trained (estimate)" in plan.out
    figures = as_json["jobs"][0]["estimate"]
    assert figures["exact"] is False and figures["example_token_limit"] is None
    assert figures["cost"] == pytest.approx(48 * 4 / 1e6)


def test_a_bad_price_is_a_usage_error(repo, cli, monkeypatch):
    repo.job(name="priced")
    bad = cli("plan", "--price-per-million-tokens", "-1")
    assert bad.code == 64 and "expected a price" in bad.err
    monkeypatch.setenv("JOBSPEC_PRICE_PER_MILLION_TOKENS", "free")
    assert cli("plan").code == 64


def test_count_tokens_speaks_the_gemini_wire(service, tiny_model):
    """models.countTokens as the discovery document defines it, and the batch method."""
    from transformers import AutoTokenizer

    from jobspec.server.chat import prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = len(prompt_ids(tokenizer, [{"role": "user", "content": "Hello there"}]))
    with httpx.Client(base_url=service.url, timeout=60) as http:
        body = {"contents": [{"role": "user", "parts": [{"text": "Hello there"}]}]}
        plain = http.post("/v1beta/models/gemini-1.0-pro-001:countTokens", json=body)
        assert plain.status_code == 200 and plain.json() == {"totalTokens": expected}
        wrapped = http.post("/v1beta/models/gemini-1.0-pro-001:countTokens",
                            json={"generateContentRequest": {"model": "models/x", **body}})
        assert wrapped.json() == {"totalTokens": expected}
        empty = http.post("/v1beta/models/gemini-1.0-pro-001:countTokens", json={})
        assert empty.status_code == 400 and empty.json()["error"]["status"] == "INVALID_ARGUMENT"
        missing = http.post("/v1beta/models/no-such-model:countTokens", json=body)
        assert missing.status_code == 404
        batch = http.post("/v1beta/models/gemini-1.0-pro-001:countExampleTokens",
                          json={"examples": [{"textInput": "1", "output": "2"}]}).json()
    ((inputs, outputs),) = trainer_counts(tiny_model, [("1", "2")])
    assert batch == {"inputTokens": [inputs], "outputTokens": [outputs],
                     "totalTokens": inputs + outputs, "exampleTokenLimit": 512}


def test_a_local_service_without_the_count_method_gets_an_estimate(repo, cli, monkeypatch):
    """An older local service (still running after an upgrade) answers 404 to
    countExampleTokens: the plan estimates instead of failing."""
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    repo.write_jsonl("jobs/data/chars.jsonl", [("a" * 40, "b" * 8)])
    repo.job(name="older", data="data/chars.jsonl")
    with FakeGenerate() as older:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", older.url)
        plan = cli("plan")
        asked = [r.path for r in older.requests if r.method == "POST"]
    assert plan.code == 0, plan.err
    assert asked == ["/v1beta/models/gemini-1.0-pro-001:countExampleTokens"]
    assert "1 example: 12 tokens (10 input + 2 output; estimate: estimated at 4 characters" \
        in plan.out


def test_examples_held_out_for_validation_are_not_counted_as_trained(local_repo, cli):
    local_repo.job(name="split", extra="validation_split: 0.2\n")  # 3 of the 15 held out
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    figures = plan.json()["jobs"][0]["estimate"]
    assert figures["examples"] == 12 and figures["steps"] == 30  # ceil(12 x 5 / 2)
    assert figures["tokens_trained"] == figures["tokens"] * 5
