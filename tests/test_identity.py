"""Fingerprint and tuned model id, through `jobspec show`."""

from __future__ import annotations

import csv
import json
import re

from tests.conftest import NUMBER_EXAMPLES


def identity(cli, path="jobs/demo.yaml"):
    result = cli("show", path, "--format", "json")
    assert result.code == 0, result.err
    shown = result.json()
    return shown["fingerprint"], shown["tuned_model_id"]


def test_show_fills_defaults_and_names_the_model(repo, cli):
    repo.job(hyperparameters="batch_size: 2")
    shown = cli("show", "jobs/demo.yaml", "--format", "json").json()
    assert shown["hyperparameters"] == {"batch_size": 2, "epoch_count": 5, "learning_rate_multiplier": 1.0}
    assert shown["training_data"]["example_count"] == 15
    assert re.fullmatch(r"[0-9a-f]{64}", shown["fingerprint"])
    assert shown["tuned_model_id"] == f"demo-{shown['fingerprint'][:8]}"
    assert re.fullmatch(r"[a-z]([a-z0-9-]{0,38}[a-z0-9])?", shown["tuned_model_id"])
    yaml_text = cli("show", "jobs/demo.yaml").out
    assert f"tuned_model_id: {shown['tuned_model_id']}" in yaml_text


def test_longest_name_still_fits_the_gemini_id_rule(repo, cli):
    name = "a" * 31
    repo.job(name=name)
    _, model_id = identity(cli, f"jobs/{name}.yaml")
    assert len(model_id) == 40


def test_presentation_fields_and_eval_do_not_change_the_fingerprint(repo, cli):
    repo.job()
    before = identity(cli)
    repo.job(extra="display_name: shiny\ndescription: words\n"
                   "eval:\n  prompts:\n    - {input: a, expect: b}\n")
    assert identity(cli) == before


def test_key_order_and_explicit_defaults_do_not_change_it(repo, cli):
    repo.job(hyperparameters="batch_size: 4")
    before = identity(cli)
    repo.write("jobs/demo.yaml", """
        training_data: data/demo.jsonl
        hyperparameters: {epoch_count: 5, learning_rate_multiplier: 1, batch_size: 4.0}
        base_model: models/gemini-1.0-pro-001
        name: demo
        version: 1
        """)
    assert identity(cli) == before


def test_examples_file_format_does_not_change_it(repo, cli):
    repo.job()
    before = identity(cli)
    csv_rows = "q,a\n" + "".join(f'"{i}","{o}"\n' for i, o in NUMBER_EXAMPLES)
    repo.write("jobs/data/demo.csv", csv_rows)
    repo.job(data="{path: data/demo.csv, input_field: q, output_field: a}")
    assert identity(cli) == before
    inline = json.dumps([{"text_input": i, "output": o} for i, o in NUMBER_EXAMPLES])
    repo.job(data=inline)
    assert identity(cli) == before


def test_what_determines_the_weights_changes_it(repo, cli):
    repo.job()
    seen = {identity(cli)[0]}
    repo.write_jsonl("jobs/data/demo.jsonl", NUMBER_EXAMPLES[:-1] + [("seven", "eight!")])
    seen.add(identity(cli)[0])
    repo.write_jsonl("jobs/data/demo.jsonl", list(reversed(NUMBER_EXAMPLES)))
    seen.add(identity(cli)[0])
    repo.job(hyperparameters="batch_size: 4\n  learning_rate: 0.001\n  epoch_count: 5")
    seen.add(identity(cli)[0])
    repo.job(base_model="models/gemini-1.5-flash-001-tuning",
             hyperparameters="batch_size: 4\n  learning_rate: 0.001\n  epoch_count: 5")
    seen.add(identity(cli)[0])
    assert len(seen) == 5


def test_show_reports_bad_files_like_validate(repo, cli):
    repo.job(hyperparameters="batch_size: -1")
    result = cli("show", "jobs/demo.yaml")
    assert result.code == 1
    assert result.err == "jobs/demo.yaml:5:15: hyperparameters.batch_size: -1 is less than the minimum of 1\n"


# --- golden fingerprints ----------------------------------------------------------------------
# These literals were computed once, by the code that first shipped the fingerprint, and must
# never change: a fingerprint names every model jobspec has tuned, so an upgrade that changed
# one would silently retrain (and pay for) every user's models on their next apply. If one of
# these fails, the change is to the fingerprint itself and needs a migration, not a new literal.

GOLDEN_EXAMPLES = [
    ("1", "2"),
    ("twenty two", "twenty three"),
    ("naïve café ☕", "😀 ünïcödé"),
    ("line one\nline two", 'tab\there "quoted"'),
]
GOLDEN_JOB = """
    version: 1
    name: golden
    display_name: golden fingerprint
    description: Pinned by tests/test_identity.py.
    base_model: models/gemini-1.0-pro-001
    hyperparameters:
      batch_size: 2
      learning_rate: 0.001
      epoch_count: 5
    training_data: {data}
    """
GOLDEN = ("91be340cd4b063e5f0639c982e83b8de7eefb4b9f2d94b1f8cc7fc752b2285b0", "golden-91be340c")
GOLDEN_DEFAULTS = ("a61f5c354028aa2af98c180d32cb365bfc121103607d0f5fa0d18178374f696f",
                   "defaults-a61f5c35")


def test_golden_fingerprint_and_model_id(repo, cli):
    repo.write_jsonl("jobs/data/golden.jsonl", GOLDEN_EXAMPLES)
    repo.write("jobs/golden.yaml", GOLDEN_JOB.format(data="data/golden.jsonl"))
    assert identity(cli, "jobs/golden.yaml") == GOLDEN


def test_golden_fingerprint_with_default_hyperparameters(repo, cli):
    """The defaults jobspec fills in are part of the fingerprint: they are pinned too."""
    repo.write_jsonl("jobs/data/golden.jsonl", GOLDEN_EXAMPLES)
    repo.write("jobs/defaults.yaml", "version: 1\nname: defaults\n"
               "base_model: models/gemini-1.5-flash-001-tuning\n"
               "training_data: data/golden.jsonl\n")
    assert identity(cli, "jobs/defaults.yaml") == GOLDEN_DEFAULTS


def test_golden_fingerprint_from_every_format(repo, cli):
    """Each reader yields the very same examples: the golden literal from all five formats."""
    records = [{"text_input": i, "output": o} for i, o in GOLDEN_EXAMPLES]
    repo.write("jobs/data/golden.json", json.dumps(records))
    repo.write("jobs/data/golden.yaml", "".join(
        f"- text_input: {json.dumps(i, ensure_ascii=False)}\n"
        f"  output: {json.dumps(o, ensure_ascii=False)}\n" for i, o in GOLDEN_EXAMPLES))
    with open(repo.root / "jobs/data/golden.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("q", "a"), *GOLDEN_EXAMPLES])
    sources = ["data/golden.json", "data/golden.yaml",
               "{path: data/golden.csv, input_field: q, output_field: a}",
               json.dumps(records, ensure_ascii=False)]  # YAML has no surrogate-pair escapes
    for source in sources:
        repo.write("jobs/golden.yaml", GOLDEN_JOB.format(data=source))
        assert identity(cli, "jobs/golden.yaml") == GOLDEN, source


# A conversation job (issue 18): a system instruction, two exchanges, one answer of weight 0.
# Pinned when conversations were first fingerprinted, as the literals above were: the same
# conversations in the contents and messages forms give it, and the one-turn examples of the
# other golden jobs keep theirs.
GOLDEN_CONVERSATIONS = [
    {"messages": [{"role": "system", "content": "Answer with a number."},
                  {"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
                  {"role": "user", "content": "naïve café ☕"},
                  {"role": "assistant", "content": "😀 ünïcödé", "weight": 0},
                  {"role": "user", "content": "line one\nline two"},
                  {"role": "assistant", "content": 'tab\there "quoted"'}]},
    {"messages": [{"role": "user", "content": "twenty two"},
                  {"role": "assistant", "content": "twenty three"}]},
]
GOLDEN_CONVERSATION = ("4df28cedb03bf2d418cf36cc3fdec783dd934786796f81bbef1aa1747fcc1c30",
                       "golden-4df28ced")


def _as_contents(record: dict) -> dict:
    messages = record["messages"]
    found: dict = {}
    if messages[0]["role"] == "system":
        found["systemInstruction"] = {"parts": [{"text": messages[0]["content"]}]}
        messages = messages[1:]
    found["contents"] = [{"role": "model" if m["role"] == "assistant" else "user",
                          "parts": [{"text": m["content"]}]} for m in messages]
    return found


def test_golden_fingerprint_of_conversations(repo, cli):
    repo.write("jobs/data/golden.jsonl", "".join(
        json.dumps(record, ensure_ascii=False) + "\n" for record in GOLDEN_CONVERSATIONS))
    repo.write("jobs/golden.yaml", GOLDEN_JOB.format(data="data/golden.jsonl"))
    assert identity(cli, "jobs/golden.yaml") == GOLDEN_CONVERSATION
    # The contents form has no weights: without the weight-0 answer, the contents and messages
    # forms of the same conversations fingerprint alike.
    trained = [{"messages": [{k: v for k, v in m.items() if k != "weight"}
                             for m in record["messages"]]} for record in GOLDEN_CONVERSATIONS]
    repo.write("jobs/data/golden.jsonl", "".join(
        json.dumps(record, ensure_ascii=False) + "\n" for record in trained))
    as_messages = identity(cli, "jobs/golden.yaml")
    assert as_messages != GOLDEN_CONVERSATION
    repo.write("jobs/data/golden.json", json.dumps([_as_contents(r) for r in trained]))
    repo.write("jobs/golden.yaml", GOLDEN_JOB.format(data="data/golden.json"))
    assert identity(cli, "jobs/golden.yaml") == as_messages


def test_golden_fingerprint_of_conversations_with_the_jobs_system_instruction(repo, cli):
    """A job-level system_instruction fills in where an example has none: the golden job's
    second example gains it, so the fingerprint moves; without it, the golden stays."""
    repo.write("jobs/data/golden.jsonl", "".join(
        json.dumps(record, ensure_ascii=False) + "\n" for record in GOLDEN_CONVERSATIONS))
    repo.write("jobs/golden.yaml", GOLDEN_JOB.format(data="data/golden.jsonl")
               + "system_instruction: Answer with a number.\n")
    assert identity(cli, "jobs/golden.yaml") != GOLDEN_CONVERSATION
    repo.write_jsonl("jobs/data/golden.jsonl", GOLDEN_EXAMPLES)
    assert identity(cli, "jobs/golden.yaml") != GOLDEN
