"""Training and validation examples as conversations (issue 18), through `jobspec validate` and
`jobspec show`: the three forms of a data file (text, contents, messages), each rule of a
conversation at its data-file line and field, a file of mixed forms, ``format:``, the job's
system_instruction, the fingerprint of a conversation, the Gemini API's refusal, and what each
backend's carrier holds of a conversation."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobspec import data, spec, wire
from jobspec.backends import registry, uploads
from jobspec.backends.base import TokenCount
from jobspec.backends.tuningjobs import jsonl_line
from jobspec.conversation import MODEL, USER, Conversation, Turn
from jobspec.data import Example
from jobspec.identity import example_record

pytestmark = pytest.mark.timeout(60)

SYSTEM = "Answer with one word."
# The same three conversations, in each form.
CONVERSATIONS = [
    (SYSTEM, [("user", "hot?"), ("model", "cold"), ("user", "up?"), ("model", "down")]),
    (None, [("user", "big?"), ("model", "small")]),  # one turn: today's example
    (SYSTEM, [("user", "fast?"), ("model", "slow")]),
]


def contents_record(system, turns) -> dict:
    record: dict = {}
    if system is not None:
        record["systemInstruction"] = {"parts": [{"text": system}]}
    record["contents"] = [{"role": role, "parts": [{"text": text}]} for role, text in turns]
    return record


def messages_record(system, turns) -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": "assistant" if role == "model" else "user", "content": text}
                 for role, text in turns]
    return {"messages": messages}


def jsonl(records) -> str:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)


def errors_of(result) -> list[str]:
    return [line for line in result.err.splitlines()
            if not re.fullmatch(r"\d+ problems? found", line)]


def shown(cli, path="jobs/demo.yaml") -> dict:
    result = cli("show", path, "--format", "json")
    assert result.code == 0, result.err
    return result.json()


def fingerprint(cli, path="jobs/demo.yaml") -> str:
    return shown(cli, path)["fingerprint"]


# --- the forms ---------------------------------------------------------------------------------


def test_the_same_conversations_in_every_form_validate_and_fingerprint_alike(repo, cli):
    contents = [contents_record(*c) for c in CONVERSATIONS]
    messages = [messages_record(*c) for c in CONVERSATIONS]
    repo.write("jobs/data/contents.jsonl", jsonl(contents))
    repo.write("jobs/data/messages.jsonl", jsonl(messages))
    repo.write("jobs/data/contents.json", json.dumps(contents, indent=1))
    repo.write("jobs/data/messages.yaml", "".join(
        "- " + json.dumps(m, ensure_ascii=False) + "\n" for m in messages))
    sources = {"contents-jsonl": "data/contents.jsonl", "messages-jsonl": "data/messages.jsonl",
               "contents-json": "data/contents.json", "messages-yaml": "data/messages.yaml",
               "inline": json.dumps(messages), "format": "{path: data/messages.jsonl, "
                                                         "format: messages}"}
    prints = {}
    for name, source in sources.items():
        repo.job(name=name.replace("-", ""), data=source)
        path = f"jobs/{name.replace('-', '')}.yaml"
        result = cli("validate", path)
        assert result.code == 0, (name, result.err)
        prints[name] = fingerprint(cli, path)
    assert len(set(prints.values())) == 1, prints
    assert shown(cli, "jobs/contentsjsonl.yaml")["training_data"] == {
        "path": "jobs/data/contents.jsonl", "format": "jsonl", "form": "contents",
        "example_count": 3}
    assert shown(cli, "jobs/messagesyaml.yaml")["training_data"]["form"] == "messages"
    assert shown(cli, "jobs/inline.yaml")["training_data"] == {
        "inline": True, "form": "messages", "example_count": 3}


def test_one_turn_conversations_in_any_form_keep_the_text_forms_fingerprint(repo, cli):
    pairs = [("1", "2"), ("twenty two", "twenty three")]
    repo.write_jsonl("jobs/data/demo.jsonl", pairs)
    repo.job()
    text = fingerprint(cli)
    assert shown(cli)["training_data"]["form"] == "text"
    repo.write("jobs/data/demo.jsonl", jsonl(
        contents_record(None, [("user", i), ("model", o)]) for i, o in pairs))
    assert fingerprint(cli) == text
    repo.write("jobs/data/demo.jsonl", jsonl(
        messages_record(None, [("user", i), ("model", o)]) for i, o in pairs))
    assert fingerprint(cli) == text


def test_what_a_conversation_is_made_of_changes_its_fingerprint(repo, cli):
    base = messages_record(*CONVERSATIONS[0])
    variants = [base,
                {"messages": base["messages"][1:]},  # no system instruction
                {"messages": [{**m, "content": m["content"] + "!"} if m["role"] == "system"
                              else m for m in base["messages"]]},
                {"messages": [{**m, "weight": 0} if m["content"] == "cold" else m
                              for m in base["messages"]]},  # the first answer is context
                {"messages": base["messages"][:1] + base["messages"][3:]}]  # fewer turns
    repo.job()
    prints = set()
    for record in variants:
        repo.write("jobs/data/demo.jsonl", jsonl([record]))
        prints.add(fingerprint(cli))
    assert len(prints) == len(variants)


# --- the rules, at their line and field ------------------------------------------------------


def user(text="q"):
    return {"role": "user", "parts": [{"text": text}]}


def model(text="a"):
    return {"role": "model", "parts": [{"text": text}]}


GOOD = {"contents": [user(), model()]}
# (record, field, message, what the field's value starts with, first in the record's line)
RULES = [
    ({"contents": [model(), user(), model()]}, "contents[0].role",
     "roles out of order: the first turn comes a user turn, not model; turns alternate user / "
     "model, starting with user", '"model"'),
    ({"contents": [user(), model(), user()]}, "contents",
     "ends with a user turn; a conversation ends with the model turn the model learns", "["),
    ({"contents": [user(), {"role": "tool", "parts": [{"text": "x"}]}]}, "contents[1].role",
     "unknown role 'tool': a turn is user or model", '"tool"'),
    ({"contents": [user(), model(" ")]}, "contents[1]", "is empty: a turn must have text",
     '{"role":"model"'),
    ({"contents": [{"role": "user", "parts": [{"inlineData": {"mimeType": "image/png"}}]},
                   model()]}, "contents[0].parts[0]",
     "only text parts are supported, got inlineData", '{"inlineData"'),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "messages[1].role",
     "a system message is allowed only as the first message", '"system"'),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "function", "content": "a"}]},
     "messages[1].role", "unknown role 'function': a message is system, user, assistant",
     '"function"'),
    ({"messages": [{"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a", "weight": 0}]}, "messages",
     "every model turn has weight 0: nothing to learn; at least one model turn must be trained",
     "["),
]


@pytest.mark.parametrize("record, field, message, marker", RULES)
def test_each_rule_is_reported_at_its_jsonl_line_and_column(repo, cli, record, field, message,
                                                            marker):
    good = GOOD if "contents" in record else {"messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    repo.write("jobs/data/demo.jsonl", jsonl([good, good, record]))
    repo.job()
    result = cli("validate", "jobs/demo.yaml")
    assert result.code == 1
    column = jsonl([record]).index(marker) + 1
    assert errors_of(result) == [f"jobs/data/demo.jsonl:3:{column}: {field}: {message}"]


def test_a_field_on_another_line_of_a_json_file_is_shown_at_its_own_line(repo, cli):
    records = [GOOD, {"contents": [user("naïve ☕"), {"role": "tool", "parts": [{"text": "x"}]}]}]
    text = json.dumps(records, indent=2, ensure_ascii=False)
    repo.write("jobs/data/demo.json", text)
    repo.job(data="data/demo.json")
    at = text.index('"tool"')
    line, column = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/demo.json:{line}:{column}: [1].contents[1].role: unknown role 'tool': a turn "
        "is user or model"]


def test_a_text_examples_problem_in_json_is_still_shown_at_its_record(repo, cli):
    repo.write("jobs/data/demo.jsonl", '{"text_input": "q", "output": 7}\n')
    repo.job()
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/demo.jsonl:1: output: must be a string, got number"]


def test_rules_are_reported_at_the_line_and_column_of_yaml_and_json_fields(repo, cli):
    repo.write("jobs/data/demo.yaml", """
        - messages:
            - {role: user, content: q}
            - {role: assistant, content: a}
        - messages:
            - {role: user, content: q}
            - {role: tool, content: a}
        """)
    repo.write("jobs/data/demo.json", '[\n  {"contents": [{"role": "user", "parts": [{"text": '
               '"q"}]}]},\n  {"contents": []}\n]\n')
    repo.job(name="yaml", data="data/demo.yaml")
    repo.job(name="json", data="data/demo.json")
    assert errors_of(cli("validate", "jobs/")) == [
        "jobs/data/demo.json:2:16: [0].contents: ends with a user turn; a conversation ends "
        "with the model turn the model learns",
        "jobs/data/demo.json:3:16: [1].contents: has no turns; a conversation is user and model "
        "turns, starting with user and ending with model",
        "jobs/data/demo.yaml:6:14: messages[1].role: unknown role 'tool': a message is system, "
        "user, assistant"]


def test_inline_conversations_are_checked_at_their_job_file_line(repo, cli):
    repo.write("jobs/x.yaml", """
        version: 1
        name: x
        base_model: models/m
        training_data:
          - messages:
              - {role: user, content: q}
              - {role: assistant, content: a}
          - contents:
              - {role: user, parts: [{text: q}]}
              - {role: model, parts: [{text: a}, {fileData: {fileUri: "gs://b/o"}}]}
        """)
    assert errors_of(cli("validate", "jobs/x.yaml")) == [
        "jobs/x.yaml:8:5: training_data[1]: a contents record in a file of messages records (its "
        "first record, line 5, is messages); a file holds one form: write this one in the "
        "messages form too"]
    repo.write("jobs/x.yaml", """
        version: 1
        name: x
        base_model: models/m
        training_data:
          - contents:
              - {role: user, parts: [{text: q}]}
              - {role: model, parts: [{text: a}, {fileData: {fileUri: "gs://b/o"}}]}
        """)
    assert errors_of(cli("validate", "jobs/x.yaml")) == [
        "jobs/x.yaml:7:42: training_data[0].contents[1].parts[1]: only text parts are "
        "supported, got fileData"]


def test_a_record_of_another_form_than_the_first_is_an_error_at_its_line(repo, cli):
    repo.write("jobs/data/demo.jsonl", jsonl([
        messages_record(None, [("user", "q"), ("model", "a")]),
        {"text_input": "q", "output": "a"},
        contents_record(None, [("user", "q"), ("model", "a")]),
        messages_record(None, [("user", "q2"), ("model", "a2")])]))
    repo.job()
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/demo.jsonl:2: a text record in a file of messages records (its first record, "
        "line 1, is messages); a file holds one form: write this one in the messages form too",
        "jobs/data/demo.jsonl:3: a contents record in a file of messages records (its first "
        "record, line 1, is messages); a file holds one form: write this one in the messages "
        "form too"]


# --- format: -----------------------------------------------------------------------------------


def test_format_names_the_form_and_nothing_is_detected(repo, cli):
    repo.write("jobs/data/demo.jsonl", jsonl([messages_record(*c) for c in CONVERSATIONS]))
    repo.job(data="{path: data/demo.jsonl, format: contents}")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/demo.jsonl:{n}:1: contents: missing" for n in (1, 2, 3)]
    repo.job(data="{path: data/demo.jsonl, format: messages}")
    assert cli("validate", "jobs/demo.yaml").code == 0
    assert shown(cli)["training_data"]["form"] == "messages"


def test_format_that_a_file_cannot_have_is_refused_at_the_job_file_line(repo, cli):
    repo.write("jobs/data/demo.csv", "q,a\n1,2\n")
    repo.write("jobs/data/demo.jsonl", jsonl([GOOD]))
    repo.job(data="{path: data/demo.csv, format: messages}")
    repo.job(name="fields", data="{path: data/demo.jsonl, format: contents, input_field: q}")
    repo.job(name="unknown", data="{path: data/demo.jsonl, format: chat}")
    assert errors_of(cli("validate", "jobs/")) == [
        "jobs/demo.yaml:8:46: training_data.format: a CSV file holds text examples only (one "
        "column each for input and output), not messages; write the conversations as .jsonl, "
        ".json or .yaml",
        "jobs/fields.yaml:8:58: training_data.input_field: input_field names a field of the "
        "text form; the contents form has none: remove it",
        "jobs/unknown.yaml:8:48: training_data.format: 'chat' is not one of the allowed values: "
        "text, contents, messages"]


def test_a_csv_file_is_text_whatever_its_columns_are_called(repo, cli):
    repo.write("jobs/data/demo.csv", "contents,output\nq,a\n")
    repo.job(data="{path: data/demo.csv, input_field: contents}")
    assert cli("validate", "jobs/demo.yaml").code == 0
    assert shown(cli)["training_data"]["form"] == "text"


def test_text_fields_named_like_another_form_are_text(repo, cli):
    repo.write_jsonl("jobs/data/demo.jsonl", [("q", "a")], output_field="messages")
    repo.job(data="{path: data/demo.jsonl, output_field: messages}")
    assert cli("validate", "jobs/demo.yaml").code == 0
    assert shown(cli)["training_data"]["form"] == "text"


def test_validation_data_has_its_own_form(repo, cli):
    repo.write("jobs/data/held.jsonl", jsonl([messages_record(*c) for c in CONVERSATIONS]))
    repo.write("jobs/data/held.yaml", "- contents: []\n")
    repo.job(extra="validation_data: {path: data/held.jsonl, format: messages}\n")
    assert cli("validate", "jobs/demo.yaml").code == 0
    repo.job(extra="validation_data: data/held.yaml\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/held.yaml:1:13: contents: has no turns; a conversation is user and model "
        "turns, starting with user and ending with model"]


# --- the job's system instruction ------------------------------------------------------------


def test_system_instruction_applies_to_examples_without_one_and_changes_the_fingerprint(
        repo, cli):
    pairs = [("hot?", "cold"), ("up?", "down")]
    repo.write_jsonl("jobs/data/demo.jsonl", pairs)
    repo.job()
    without = fingerprint(cli)
    repo.job(extra=f"system_instruction: {SYSTEM}\n")
    with_system = fingerprint(cli)
    assert with_system != without
    assert shown(cli)["system_instruction"] == SYSTEM
    # The same as every example carrying it itself, in any form.
    repo.write("jobs/data/demo.jsonl", jsonl(
        messages_record(SYSTEM, [("user", i), ("model", o)]) for i, o in pairs))
    repo.job()
    assert fingerprint(cli) == with_system
    # An example's own system instruction is kept: the job's only fills in where none is.
    repo.job(extra="system_instruction: Something else.\n")
    assert fingerprint(cli) == with_system


def test_a_system_instruction_longer_than_the_backend_takes_is_refused_at_its_line(repo, cli):
    repo.job(extra=f"system_instruction: {'s' * (wire.MAX_INPUT_CHARS + 1)}\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:9:21: system_instruction: is 40,001 characters, over the limit of "
        "40,000"]


# --- the backends ------------------------------------------------------------------------------


def test_the_gemini_api_refuses_conversations_at_their_line_naming_the_backends_that_take_them(
        repo, cli, monkeypatch):
    # Should anything try to send, it would reach nothing (nothing does: the examples are
    # refused first).
    monkeypatch.setenv("GEMINI_API_KEY", "not-used")
    monkeypatch.setenv("JOBSPEC_ENDPOINT", "http://127.0.0.1:9")
    repo.write("jobs/data/demo.jsonl", jsonl([messages_record(*c) for c in CONVERSATIONS]))
    repo.job(extra="backend: gemini\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [  # at the messages' array, column 13 of {"messages":[
        "jobs/data/demo.jsonl:1:13: messages: the gemini backend takes one-turn text examples "
        "only (a user turn and the model's answer, no system instruction); this example has 4 "
        "turns and a system instruction: tune it on local or vertex, which take conversations",
        "jobs/data/demo.jsonl:3:13: messages: the gemini backend takes one-turn text examples only "
        "(a user turn and the model's answer, no system instruction); this example has a system "
        "instruction: tune it on local or vertex, which take conversations"]
    # Plan and apply say the same, before anything is opened or sent.
    for command in ("plan", "apply"):
        refused = cli(command, "jobs/demo.yaml")
        assert refused.code == 1
        assert [line for line in refused.err.splitlines() if "jobs/data" in line] == \
            errors_of(result)
    # --backend gemini refuses them too; the local backend takes them.
    repo.job()
    assert errors_of(cli("validate", "--backend", "gemini", "jobs/demo.yaml"))[0].startswith(
        "jobs/data/demo.jsonl:1:13: messages: the gemini backend takes one-turn text examples")
    assert cli("validate", "jobs/demo.yaml").code == 0


def test_the_gemini_api_refuses_a_job_system_instruction_at_its_line(repo, cli):
    repo.job(extra="system_instruction: Be brief.\nbackend: gemini\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:9:21: system_instruction: the Gemini API's tuning takes no system "
        "instruction (a tuning example is one text input and its output); remove it, or tune on "
        "local or vertex, which take conversations"]


def test_vertex_refuses_a_turn_of_weight_zero_at_its_field(repo, cli):
    record = messages_record(*CONVERSATIONS[0])
    record["messages"][2]["weight"] = 0
    repo.write("jobs/data/demo.jsonl", jsonl([record]))
    column = jsonl([record]).index('"weight":0') + len('"weight":') + 1
    repo.job(extra="backend: {type: vertex, project: my-project, staging_bucket: gs://b}\n",
             hyperparameters="epoch_count: 2")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/demo.jsonl:1:{column}: messages[2].weight: the vertex backend trains on every model "
        "turn and takes no weights: a turn of weight 0 (context, not learned) cannot be sent to "
        "it; remove the weight (the turn is then learned) or the turn, or tune on local, which "
        "takes them"]
    repo.job(hyperparameters="epoch_count: 2")  # local takes it
    assert cli("validate", "jobs/demo.yaml").code == 0


def test_character_limits_apply_to_each_turn(repo, cli):
    long_user, long_model = "x" * (wire.MAX_INPUT_CHARS + 1), "y" * (wire.MAX_OUTPUT_CHARS + 1)
    written = jsonl([
        messages_record(None, [("user", "q"), ("model", "a"), ("user", long_user),
                               ("model", "a")]),
        messages_record("s", [("user", "q"), ("model", long_model)]),
        messages_record("z" * (wire.MAX_INPUT_CHARS + 1), [("user", "q"), ("model", "a")])])
    repo.write("jobs/data/demo.jsonl", written)
    repo.job()
    columns = [line.index(f'"{letter}') + 1
               for line, letter in zip(written.splitlines(), "xyz")]
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/demo.jsonl:1:{columns[0]}: messages[2].content: is 40,001 characters, over "
        "the limit of 40,000",
        f"jobs/data/demo.jsonl:2:{columns[1]}: messages[2].content: is 5,001 characters, over "
        "the limit of 5,000",
        f"jobs/data/demo.jsonl:3:{columns[2]}: messages[0].content: is 40,001 characters, over "
        "the limit of 40,000"]


def _source(repo, backend: str) -> data.DataSource:
    job = spec.load_job("jobs/demo.yaml", rules=registry.Rules(backend))
    return job.training_data


@pytest.mark.parametrize("backend", ["local", "vertex"])
def test_the_carrier_is_counted_as_it_is_sent(repo, backend):
    """What validate counts of a file of conversations is the bytes of what carries them: the
    local service's upload, Vertex AI's training file."""
    records = [messages_record(*c) for c in CONVERSATIONS] + [
        messages_record(None, [("user", 'quote " and \\ and é'), ("model", "😀\n")])]
    repo.write("jobs/data/demo.jsonl", jsonl(records))
    repo.job(hyperparameters="epoch_count: 2")
    source = _source(repo, backend)
    tally = data.tally_examples(source)
    examples = list(data.iter_examples(source))
    if backend == "local":
        sent = b"".join(uploads.lines(examples))
    else:
        sent = b"".join(jsonl_line(e.conversation) for e in examples)
    assert tally.carried_bytes == len(sent)


def test_estimates_count_every_text_of_a_conversation(repo):
    repo.write("jobs/data/demo.jsonl", jsonl([
        messages_record("s" * 8, [("user", "u" * 8), ("model", "m" * 8), ("user", "u" * 4),
                                  ("model", "m" * 4)]),
        {"messages": [{"role": "user", "content": "u" * 4},
                      {"role": "assistant", "content": "c" * 40, "weight": 0},
                      {"role": "user", "content": "u" * 4},
                      {"role": "assistant", "content": "m" * 4}]}]))
    repo.job()
    examples = list(data.iter_examples(_source(repo, "local")))
    estimate = TokenCount.estimated(examples)
    # The system instruction, user turns and context as input; the trained turns as output.
    assert (estimate.inputs, estimate.outputs) == ((5, 12), (3, 1))
    assert estimate.longest == (1, 13)


# --- the fingerprint's record of a conversation ----------------------------------------------

_TEXTS = st.text(alphabet="ab1:Cnsumc\n", min_size=1, max_size=4)


@st.composite
def _examples(draw) -> Example:
    """Any example: a one-turn text pair, or a conversation with or without a system
    instruction, of 1-3 exchanges, any model turn but one possibly of weight 0."""
    if draw(st.booleans()):
        return Example.one_turn(draw(_TEXTS), draw(_TEXTS))
    exchanges = draw(st.integers(1, 3))
    trained_at = draw(st.integers(0, exchanges - 1))
    turns = []
    for n in range(exchanges):
        turns += [Turn(USER, draw(_TEXTS)),
                  Turn(MODEL, draw(_TEXTS), n == trained_at or draw(st.booleans()))]
    return Example(Conversation(tuple(turns), draw(st.none() | _TEXTS)))


def _decode(stream: bytes) -> list[Example]:
    """The examples of a stream of records, read by the form identity.example_record states:
    ``LEN:INPUTLEN:OUTPUT`` for a one-turn example; ``C``, ``n`` or ``s``LEN:SYSTEM, the number
    of turns and ``:``, then each turn as its role letter and LEN:TEXT for any other."""
    at = 0

    def text() -> str:
        nonlocal at
        colon = stream.index(b":", at)
        length = int(stream[at:colon])
        at = colon + 1 + length
        return stream[colon + 1:at].decode()

    examples = []
    while at < len(stream):
        if stream[at:at + 1] != b"C":
            examples.append(Example.one_turn(text(), text()))
            continue
        at += 1
        system = None
        if stream[at:at + 1] == b"s":
            at += 1
            system = text()
        else:
            assert stream[at:at + 1] == b"n"
            at += 1
        colon = stream.index(b":", at)
        count, at = int(stream[at:colon]), colon + 1
        turns = []
        for _ in range(count):
            role, at = stream[at:at + 1], at + 1
            turns.append(Turn(USER if role == b"u" else MODEL, text(), role != b"c"))
        examples.append(Example(Conversation(tuple(turns), system)))
    return examples


@given(st.lists(_examples(), max_size=4))
def test_the_fingerprints_records_are_unambiguous(examples):
    """The records of any examples, one after another, read back as those examples and no
    others: no record of a conversation can be read as a one-turn example's or run into the
    next (the texts are drawn from the record form's own letters and separators)."""
    assert _decode(b"".join(example_record(e) for e in examples)) == examples
