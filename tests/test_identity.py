"""Fingerprint and tuned model id, through `jobspec show`."""

from __future__ import annotations

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
