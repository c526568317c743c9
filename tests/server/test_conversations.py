"""Conversations on the local service: rendered by the base model's chat template, trained with
the loss on the model turns only, counted, previewed (renderExample) and asked (generateContent
with a system instruction and history).

The encoding tests use SmolLM2's real tokenizer and template (the tiny model's); the HTTP tests
run the real service with the tiny model over loopback.
"""

from __future__ import annotations

import hashlib

import pytest
from transformers import AutoTokenizer

from jobspec import wire
from jobspec.conversation import MODEL, USER, Conversation, Turn, to_contents
from jobspec.server.chat import (IGNORE_INDEX, conversation_prompt_ids, encode_conversation,
                                 encode_example, render)
from jobspec.server.recipe import RECIPE
from jobspec.server.training_state import run_key
from tests.conftest import NUMBER_EXAMPLES
from tests.server.test_app import error_of
from tests.server.test_uploads import put, uploaded_body

END = "<|im_end|>"
DIALOGUE = Conversation((
    Turn(USER, "Add one: 1"), Turn(MODEL, "2"),
    Turn(USER, "Add one: 7"), Turn(MODEL, "eight, I think", trained=False),
    Turn(USER, "Digits only: 7"), Turn(MODEL, "8"),
), system="You add one to a number.")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def labelled_runs(tokenizer, labels: list[int]) -> list[str]:
    """The decoded text of each run of consecutive labelled tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for label in labels:
        if label != IGNORE_INDEX:
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(label)
        previous = label
    return [tokenizer.decode(run) for run in runs]


def as_messages(conversation: Conversation) -> list[dict[str, str]]:
    system = [] if conversation.system is None else [{"role": "system",
                                                      "content": conversation.system}]
    return system + [{"role": "assistant" if t.role == MODEL else "user", "content": t.text}
                     for t in conversation.turns]


def test_the_loss_covers_exactly_the_trained_model_turns_and_their_end_of_turn(tokenizer):
    ids, labels = encode_conversation(tokenizer, DIALOGUE)
    assert len(ids) == len(labels)
    # Labels are the ids where they are targets.
    assert all(label in (IGNORE_INDEX, token) for token, label in zip(ids, labels))
    assert labelled_runs(tokenizer, labels) == ["2" + END, "8" + END]
    # The ids are the template's whole conversation (up to the end of its last model turn):
    # the system instruction as its system turn, the weight-0 turn as context.
    whole = tokenizer.apply_chat_template(as_messages(DIALOGUE), tokenize=False)
    assert tokenizer.decode(ids) == whole.removesuffix("\n")
    assert "<|im_start|>system\nYou add one to a number.<|im_end|>" in whole
    assert "SmolLM" not in whole  # the instruction replaces the template's default system turn
    # Weight 0 changes labels only: trained, the third turn is labelled too, same ids.
    every = Conversation(tuple(Turn(t.role, t.text) for t in DIALOGUE.turns), DIALOGUE.system)
    all_ids, all_labels = encode_conversation(tokenizer, every)
    assert all_ids == ids
    assert labelled_runs(tokenizer, all_labels) == ["2" + END, "eight, I think" + END, "8" + END]


def legacy_encode(tokenizer, text_input: str, output: str, system=None, chat=True):
    """chat.encode_example as it was before conversations (commit 1a3512c), kept verbatim in
    substance: the prompt rendered whole, then the answer and end-of-turn."""
    messages = [{"role": "user", "content": text_input}]
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    templated = chat and bool(tokenizer.chat_template)
    if templated:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    else:
        text = "".join(f"{m['content']}\n" if m["role"] == "system" else
                       f"Input: {m['content']}\n" for m in messages) + "Output:"
    prompt = tokenizer(text, add_special_tokens=False)["input_ids"]
    answer = tokenizer(("" if templated else " ") + output + END,
                       add_special_tokens=False)["input_ids"]
    return prompt + answer, [IGNORE_INDEX] * len(prompt) + answer


@pytest.mark.parametrize("system", [None, "Be brief."])
@pytest.mark.parametrize("chat", [True, False])
def test_a_one_turn_conversation_encodes_exactly_as_examples_did_before(tokenizer, system, chat):
    examples = [*NUMBER_EXAMPLES[:4], ("  spaced  ", " x\n"), ("naïve ✓", "a\n\nb")]
    for text_input, output in examples:
        before = legacy_encode(tokenizer, text_input, output, system, chat)
        assert encode_example(tokenizer, text_input, output, system, chat) == before
        assert encode_conversation(tokenizer, Conversation.one_turn(text_input, output), system,
                                   chat) == before
    # ... and so resumes the checkpoints of runs made before (their key: the pairs).
    conversations = [Conversation.one_turn(*e) for e in NUMBER_EXAMPLES]
    settings = (3, 2, 0.001, None, RECIPE)
    assert run_key(conversations, conversations[:1], *settings) == run_key(
        NUMBER_EXAMPLES, NUMBER_EXAMPLES[:1], *settings)
    assert run_key([DIALOGUE], [], *settings) != run_key([Conversation(DIALOGUE.turns)], [],
                                                         *settings)


def test_a_template_without_a_system_turn_gets_the_instruction_before_the_first_user_turn(
        tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    # Gemma's way: the template refuses a system message.
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role "
        "not supported') }}{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
        "\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    ids, labels = encode_conversation(tokenizer, DIALOGUE)
    assert tokenizer.decode(ids).startswith(
        "<|im_start|>user\nYou add one to a number.\n\nAdd one: 1<|im_end|>\n")
    assert labelled_runs(tokenizer, labels) == ["2" + END, "8" + END]


def test_the_plain_layout_puts_the_instruction_first_and_inputs_and_outputs_in_turn(tokenizer):
    segments = render(tokenizer, DIALOGUE, chat=False)
    assert "".join(s.text for s in segments) == (
        "You add one to a number.\nInput: Add one: 1\nOutput: 2<|im_end|>\nInput: Add one: 7\n"
        "Output: eight, I think<|im_end|>\nInput: Digits only: 7\nOutput: 8<|im_end|>")
    assert [s.text for s in segments if s.trained] == [" 2" + END, " 8" + END]


def conversation_upload(conversations) -> bytes:
    return b"".join(wire.conversation_line(c) for c in conversations)


CONVERSATIONS = [DIALOGUE, *(Conversation.one_turn(*e) for e in NUMBER_EXAMPLES[:5]),
                 Conversation((Turn(USER, "3"), Turn(MODEL, "4")), "Answer with a number.")]


@pytest.mark.timeout(180)
def test_a_job_trains_on_an_upload_of_conversations_and_counts_them_as_rendered(
        service, tokenizer):
    content = conversation_upload(CONVERSATIONS)
    sha256 = hashlib.sha256(content).hexdigest()
    with service.client() as http:
        assert put(http, content).status_code == 200
        count = "/v1beta/models/tiny-smollm2:countExampleTokens"
        by_upload = http.post(count, json={"upload": f"uploads/{sha256}"}).json()
        inline = http.post(count, json={"examples": [
            to_contents(c, weights=True) if not c.is_one_turn else
            {"textInput": c.turns[0].text, "output": c.turns[1].text} for c in CONVERSATIONS]})
        assert inline.status_code == 200, inline.text
        assert inline.json() == by_upload
        expected = [encode_conversation(tokenizer, c) for c in CONVERSATIONS]
        assert by_upload["outputTokens"] == [
            sum(label != IGNORE_INDEX for label in labels) for _, labels in expected]
        assert [i + o for i, o in zip(by_upload["inputTokens"], by_upload["outputTokens"])] == [
            len(ids) for ids, _ in expected]
        operation = http.post("/v1beta/tunedModels", json=uploaded_body(sha256, epochs=1),
                              params={"tunedModelId": "conversations"}).json()
        assert operation["metadata"]["totalSteps"] == 4, operation  # 7 examples, batch 2
        done = service.wait_done(operation["name"])
        assert "error" not in done, done
        assert http.get("/v1beta/tunedModels/conversations").json()["state"] == "ACTIVE"
        # The tuned model is asked with the system instruction and the history.
        answer = http.post("/v1beta/tunedModels/conversations:generateContent", json={
            "systemInstruction": {"parts": [{"text": DIALOGUE.system}]},
            "contents": to_contents(DIALOGUE)["contents"][:-1],
            "generationConfig": {"maxOutputTokens": 3}})
        assert answer.status_code == 200, answer.text
        prompt = Conversation(DIALOGUE.turns[:-1], DIALOGUE.system)
        assert answer.json()["usageMetadata"]["promptTokenCount"] == len(
            conversation_prompt_ids(tokenizer, prompt))
    with service.client(extensions=True) as http:  # laid out as the tuned model was trained
        rendered = http.post(f"/v1beta/tunedModels/conversations:{wire.RENDER_EXAMPLE_METHOD}",
                             json={"example": to_contents(DIALOGUE, weights=True)})
    assert rendered.status_code == 200, rendered.text
    assert rendered.json()["tokenCount"] == len(expected[0][0])


@pytest.mark.timeout(60)
def test_a_bad_conversation_line_is_refused_at_its_line(service, tokenizer):
    good = conversation_upload(CONVERSATIONS[:2])
    cases = [
        (b'{"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "user", '
         b'"parts": [{"text": "b"}]}]}\n',
         "upload[2].contents[1].role (line 3 of the upload): roles out of order: after a user "
         "turn comes a model turn, not user; turns alternate user / model, starting with user."),
        (b'{"contents": [{"role": "user", "parts": [{"inlineData": {}}]}, {"role": "model", '
         b'"parts": [{"text": "b"}]}]}\n',
         "upload[2].contents[0].parts[0] (line 3 of the upload): only text parts are "
         "supported, got inlineData."),
        (b'{"contents": [{"role": "user", "parts": [{"text": "a"}]}, {"role": "model", '
         b'"parts": [{"text": "b"}], "weight": 0}]}\n',
         "upload[2].contents (line 3 of the upload): every model turn has weight 0: nothing to "
         "learn; at least one model turn must be trained."),
    ]
    # Each turn is short, the conversation as rendered is over the tiny model's 512 tokens.
    chatty = Conversation(tuple(Turn(USER if i % 2 == 0 else MODEL, " ".join(["x"] * 30))
                                for i in range(20)))
    tokens = len(encode_conversation(tokenizer, chatty)[0])
    assert tokens > 512
    cases.append((wire.conversation_line(chatty),
                  f"upload[2] is {tokens:,} tokens long (input and output, in "
                  "models/tiny-smollm2's tokenizer), over the model's limit of 512 tokens."))
    with service.client() as http:
        for bad, message in cases:
            content = good + bad
            assert put(http, content).status_code == 200
            assert error_of(http.post("/v1beta/tunedModels", json=uploaded_body(
                hashlib.sha256(content).hexdigest()))) == (
                400, "INVALID_ARGUMENT", f"{wire.UPLOADED_EXAMPLES_FIELD[:-len('upload')]}"
                f"{message}")


@pytest.mark.timeout(60)
def test_render_example_shows_the_template_with_the_trained_pieces_marked(service, tokenizer):
    url = f"/v1beta/models/tiny-smollm2:{wire.RENDER_EXAMPLE_METHOD}"
    line = to_contents(DIALOGUE, weights=True)
    with service.client() as http:  # not jobspec's client: the extension is not there
        assert error_of(http.post(url, json={"example": line}))[:2] == (404, "NOT_FOUND")
    with service.client(extensions=True) as http:
        answer = http.post(url, json={"example": line})
        assert answer.status_code == 200, answer.text
        rendered = answer.json()
        one_turn = http.post(url, json={"example": {"textInput": "1", "output": "2"}}).json()
        bad = http.post(url, json={"example": {"contents": [{"role": "model", "parts": [
            {"text": "x"}]}]}})
    segments = rendered[wire.RENDER_SEGMENTS_FIELD]
    ids, labels = encode_conversation(tokenizer, DIALOGUE)
    assert "".join(s["text"] for s in segments) == tokenizer.decode(ids)
    assert [s["text"] for s in segments if s["trained"]] == ["2" + END, "8" + END]
    assert "eight, I think" + END in [s["text"] for s in segments if not s["trained"]]
    assert rendered["tokenCount"] == len(ids) == sum(s["tokenCount"] for s in segments)
    assert rendered["trainedTokenCount"] == sum(label != IGNORE_INDEX for label in labels)
    assert [s["trained"] for s in one_turn["segments"]] == [False, True]
    assert one_turn["segments"][1]["text"] == "2" + END
    assert error_of(bad) == (400, "INVALID_ARGUMENT", "example.contents[0].role: roles out of "
                             "order: the first turn comes a user turn, not model; turns "
                             "alternate user / model, starting with user.")


@pytest.mark.timeout(60)
def test_generate_content_renders_the_system_instruction_and_history(service, tokenizer):
    url = "/v1beta/models/tiny-smollm2:generateContent"
    history = to_contents(DIALOGUE)["contents"][:-1]
    asked = {"contents": history[-1:], "generationConfig": {"maxOutputTokens": 2}}
    with service.client() as http:
        alone = http.post(url, json=asked).json()
        with_history = http.post(url, json={**asked, "contents": history}).json()
        with_system = http.post(url, json={
            **asked, "contents": history,
            "systemInstruction": {"parts": [{"text": DIALOGUE.system}]}}).json()
        counted = http.post("/v1beta/models/tiny-smollm2:countTokens", json={
            "generateContentRequest": {"model": "models/tiny-smollm2", "contents": history,
                                       "systemInstruction": {"parts": [
                                           {"text": DIALOGUE.system}]}}}).json()
        out_of_order = http.post(url, json={"contents": history[:2]})
    assert set(alone) == {"candidates", "usageMetadata"}  # the published fields only
    prompts = [Conversation(DIALOGUE.turns[-2:-1]), Conversation(DIALOGUE.turns[:-1]),
               Conversation(DIALOGUE.turns[:-1], DIALOGUE.system)]
    expected = [len(conversation_prompt_ids(tokenizer, p)) for p in prompts]
    assert [a["usageMetadata"]["promptTokenCount"] for a in (alone, with_history, with_system)] \
        == expected
    assert expected[0] < expected[1] and expected[1] != expected[2]
    assert counted == {"totalTokens": expected[2]}
    assert error_of(out_of_order) == (
        400, "INVALID_ARGUMENT", "contents: ends with a model turn; a conversation ends with the "
        "user turn it answers.")
