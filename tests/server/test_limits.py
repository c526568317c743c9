"""Limits of the local service measured in tokens: maxOutputTokens caps an answer (it reserves
nothing), examples are measured with the base model's tokenizer when a job is created, and a
batch past --max-batch-tokens trains as micro-batches with the same result.

The tiny model has SmolLM2's tokenizer and a context of 512 tokens.
"""

from __future__ import annotations

import math
import re

import pytest
from transformers import AutoTokenizer

from jobspec.server.chat import encode_example, prompt_ids
from tests.conftest import NUMBER_EXAMPLES
from tests.server.test_app import create, error_of, tutorial_body
from tests.service import LocalService

CONTEXT = 512
GENERATE = "/v1beta/models/tiny-smollm2:generateContent"
EXAMPLES = "tuned_model.tuning_task.training_data.examples.examples"


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def words(count: int) -> str:
    return " ".join(["x"] * count)


def prompt_of(tokenizer, tokens: int) -> str:
    """A user prompt that is exactly ``tokens`` long in the chat template."""
    overhead = len(prompt_ids(tokenizer, [{"role": "user", "content": words(1)}])) - 1
    text = words(tokens - overhead)
    assert len(prompt_ids(tokenizer, [{"role": "user", "content": text}])) == tokens
    return text


def example_of(tokenizer, tokens: int) -> tuple[str, str]:
    """An example that encodes (prompt, answer, end of turn) to exactly ``tokens``."""
    overhead = len(encode_example(tokenizer, words(1), "y")[0]) - 1
    example = (words(tokens - overhead), "y")
    assert len(encode_example(tokenizer, *example)[0]) == tokens
    return example


def ask(http, text: str, **config):
    return http.post(GENERATE, json={"contents": [{"parts": [{"text": text}]}],
                                     "generationConfig": config})


@pytest.mark.timeout(180)
def test_max_output_tokens_is_a_cap_not_a_reservation(service):
    with service.client() as http:
        answer = ask(http, "Count to ten.", maxOutputTokens=8192, temperature=0)
        assert answer.status_code == 200, answer.text
        usage = answer.json()["usageMetadata"]
        # The answer ran to the end of the context: what the prompt left, not 8192.
        assert usage["totalTokenCount"] == CONTEXT
        assert answer.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"
        small = ask(http, "Count to ten.", maxOutputTokens=3).json()
        assert small["usageMetadata"]["candidatesTokenCount"] == 3
        assert small["candidates"][0]["finishReason"] == "MAX_TOKENS"


@pytest.mark.timeout(120)
def test_a_prompt_that_leaves_one_token_is_answered_one_that_fills_the_context_is_not(
        service, tokenizer):
    with service.client() as http:
        answer = ask(http, prompt_of(tokenizer, CONTEXT - 1), maxOutputTokens=8192)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usageMetadata"] == {
            "promptTokenCount": CONTEXT - 1, "candidatesTokenCount": 1, "totalTokenCount": CONTEXT}
        assert answer.json()["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert error_of(ask(http, prompt_of(tokenizer, CONTEXT))) == (
            400, "INVALID_ARGUMENT", f"The input token count ({CONTEXT}) exceeds the maximum "
            f"number of tokens allowed ({CONTEXT - 1}): models/tiny-smollm2 has a context of "
            f"{CONTEXT} tokens, the prompt included, and its answer needs at least one.")


def too_long(index: int, count: int, limit: int) -> str:
    return (f"{EXAMPLES}[{index}] is {count:,} tokens long (input and output, in "
            f"models/tiny-smollm2's tokenizer), over the model's limit of {limit:,} tokens.")


@pytest.mark.timeout(120)
def test_an_example_past_the_context_is_refused_at_create_and_nothing_is_stored(
        service, tokenizer):
    examples = list(NUMBER_EXAMPLES)
    examples.insert(3, example_of(tokenizer, CONTEXT + 1))
    with service.client() as http:
        refused = create(http, tutorial_body(examples=examples), "past-context")
        assert error_of(refused) == (400, "INVALID_ARGUMENT", too_long(3, CONTEXT + 1, CONTEXT))
        assert error_of(http.get("/v1beta/tunedModels/past-context"))[0] == 404
        longest = [example_of(tokenizer, 2000)] + [example_of(tokenizer, CONTEXT + 1)]
        assert error_of(create(http, tutorial_body(examples=longest)))[2] == \
            too_long(0, 2000, CONTEXT)
        # An example that fills the context exactly trains.
        fits = create(http, tutorial_body(examples=[example_of(tokenizer, CONTEXT)], epochs=1),
                      "fills-context")
        assert fits.status_code == 200, fits.text
        assert service.wait_done(fits.json()["name"])["response"]["state"] == "ACTIVE"


@pytest.mark.timeout(60)
def test_character_limits_still_come_first(service):
    with service.client() as http:
        body = tutorial_body(examples=[("1", "2"), ("x" * 40_001, "y")])
        assert error_of(create(http, body)) == (
            400, "INVALID_ARGUMENT", f"{EXAMPLES}[1] is too long: inputs may have 40,000 "
            "characters and outputs 5,000.")


def losses(done: dict) -> list[float]:
    return [s["meanLoss"] for s in done["metadata"]["snapshots"]]


@pytest.fixture(scope="module")
def capped_service(tiny_model, tmp_path_factory):
    running = LocalService(tmp_path_factory.mktemp("state"), "--model", str(tiny_model),
                           "--max-batch-tokens", "80").start()
    yield running
    running.stop()


@pytest.mark.timeout(240)
def test_batches_past_the_token_cap_train_as_micro_batches_with_the_same_losses(
        service, capped_service):
    # The examples are 33 to 51 tokens long: under a cap of 80, a batch of 5 takes 3 to 5
    # micro-batches of 1 or 2 rows, each weighted by its share of the batch's target tokens.
    job = tutorial_body(batch_size=5, epochs=2)
    with service.client() as whole, capped_service.client() as split:
        unsplit = service.wait_done(create(whole, job, "unsplit").json()["name"])
        micro = capped_service.wait_done(create(split, job, "micro").json()["name"])
    assert micro["metadata"]["totalSteps"] == unsplit["metadata"]["totalSteps"] == 6
    assert len(losses(micro)) == len(losses(unsplit)) == 6
    for ours, reference in zip(losses(micro), losses(unsplit)):
        assert math.isclose(ours, reference, rel_tol=1e-5), (losses(micro), losses(unsplit))
    split_steps = re.findall(r"train tunedModels/micro: step (\d)/6 epoch \d loss [\d.]+ "
                             r"\(([3-5]) micro-batches of at most 80 tokens\)", capped_service.log)
    assert [step for step, _ in split_steps] == ["1", "2", "3", "4", "5", "6"]
    assert not re.search(r"tunedModels/unsplit: .*micro-batches", service.log)


@pytest.mark.timeout(120)
def test_an_example_past_the_batch_cap_is_refused_at_create(capped_service, tokenizer):
    with capped_service.client() as http:
        body = tutorial_body(examples=[("1", "2"), example_of(tokenizer, 81)])
        assert error_of(create(http, body, "past-cap")) == (
            400, "INVALID_ARGUMENT", f"{EXAMPLES}[1] is 81 tokens long (input and output, in "
            "models/tiny-smollm2's tokenizer), over this service's limit of 80 tokens in one "
            "batch (jobspec serve --max-batch-tokens).")
        fits = create(http, tutorial_body(examples=[example_of(tokenizer, 80)], epochs=1))
        assert fits.status_code == 200, fits.text
        assert error_of(http.get("/v1beta/tunedModels/past-cap"))[0] == 404
