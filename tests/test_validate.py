"""`jobspec validate`: every bad input gets its exact message, a non-zero exit, and nothing else."""

from __future__ import annotations

import os
import re
import time

import pytest

from jobspec import wire
from tests.conftest import ROOT


def test_shipped_example_jobs_are_valid(cli, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = cli("validate")
    assert result.code == 0, result.err
    assert "jobs/number-generator.yaml: ok (number-generator)" in result.out
    assert "jobs/antonyms.yaml: ok (antonyms)" in result.out


def test_valid_job_exits_zero(repo, cli):
    repo.job()
    result = cli("validate", "jobs/demo.yaml")
    assert (result.code, result.out) == (0, "jobs/demo.yaml: ok (demo)\n")


def errors_of(result) -> list[str]:
    return [line for line in result.err.splitlines()
            if not re.fullmatch(r"\d+ problems? found", line)]


def test_invalid_yaml_reports_parser_position(repo, cli):
    repo.write("jobs/bad.yaml", "version: 1\nname: [a, b\n")
    result = cli("validate", "jobs/bad.yaml")
    assert result.code == 1
    assert errors_of(result) == [
        "jobs/bad.yaml:3:1: invalid YAML: while parsing a flow sequence, "
        "expected ',' or ']', but got '<stream end>'"]


def test_several_documents_are_rejected(repo, cli):
    repo.write("jobs/two.yaml", "version: 1\n---\nversion: 1\n")
    result = cli("validate", "jobs/two.yaml")
    assert errors_of(result) == [
        "jobs/two.yaml:2:1: several YAML documents in one file; a job file holds exactly one"]
    assert result.code == 1


def test_duplicate_keys_are_rejected(repo, cli):
    repo.job(extra="name: other\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:9:1: name: duplicate key 'name' (first defined at line 2); "
        "YAML would keep only the last"]


def test_unknown_field_suggests_the_close_one(repo, cli):
    repo.job(hyperparameters="batch_size: 2\n  epochs: 3")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:6:3: hyperparameters.epochs: unknown field 'epochs' (did you mean 'epoch_count'?)"]


def test_unknown_field_without_a_close_match_lists_the_allowed(repo, cli):
    repo.job(extra="zzz: 1\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result)[0].startswith(
        "jobs/demo.yaml:9:1: zzz: unknown field 'zzz'; allowed fields: backend, base_model,")


def test_wrong_type(repo, cli):
    repo.job(hyperparameters="batch_size: two")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:5:15: hyperparameters.batch_size: 'two' is not an integer"]


def test_out_of_range_hyperparameter_matches_the_documented_example(repo, cli):
    repo.job(hyperparameters="batch_size: -1")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:5:15: hyperparameters.batch_size: -1 is less than the minimum of 1"]


def test_every_problem_is_reported_not_only_the_first(repo, cli):
    repo.job(name="Bad", hyperparameters="batch_size: 0\n  epoch_count: 0")
    result = cli("validate", "jobs/Bad.yaml")
    assert errors_of(result) == [
        "jobs/Bad.yaml:2:7: name: 'Bad' must be lowercase letters, digits and dashes, "
        "start with a letter and not end with a dash",
        "jobs/Bad.yaml:5:15: hyperparameters.batch_size: 0 is less than the minimum of 1",
        "jobs/Bad.yaml:6:16: hyperparameters.epoch_count: 0 is less than the minimum of 1",
    ]
    assert result.err.splitlines()[-1] == "3 problems found"


def test_both_learning_rates(repo, cli):
    repo.job(hyperparameters="learning_rate: 0.001\n  learning_rate_multiplier: 2")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:6:3: hyperparameters.learning_rate_multiplier: "
        "give learning_rate or learning_rate_multiplier, not both"]


def test_name_too_long(repo, cli):
    name = "a" * 32
    repo.job(name=name)
    result = cli("validate", f"jobs/{name}.yaml")
    assert errors_of(result) == [
        f"jobs/{name}.yaml:2:7: name: '{name}' is 32 characters, over the limit of 31"]


def test_missing_required_field_points_at_the_mapping(repo, cli):
    repo.write("jobs/x.yaml", "version: 1\nname: x\ntraining_data: [{text_input: a, output: b}]\n")
    result = cli("validate", "jobs/x.yaml")
    assert errors_of(result) == ["jobs/x.yaml:1:1: base_model: is required"]


def test_two_files_with_the_same_name(repo, cli):
    repo.job(name="same", file="jobs/a.yaml")
    repo.job(name="same", file="jobs/b.yaml")
    result = cli("validate", "jobs/")
    assert errors_of(result) == [
        "jobs/b.yaml:2:7: name: 'same' is also the name of jobs/a.yaml; job names must be unique"]


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "data/none.jsonl: training data file not found"),
    (lambda r: r.write("jobs/data/none.jsonl", ""), "data/none.jsonl: training data file is empty"),
    (lambda r: (r.root / "jobs/data/none.jsonl").mkdir(parents=True),
     "data/none.jsonl: training data path is a directory, not a file"),
])
def test_missing_empty_or_directory_training_file(repo, cli, setup, message):
    setup(repo)
    repo.job(data="data/none.jsonl")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [f"jobs/demo.yaml:8:16: training_data: {message}"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_training_file(repo, cli):
    path = repo.write("jobs/data/secret.jsonl", '{"text_input": "a", "output": "b"}\n')
    path.chmod(0)
    repo.job(data="data/secret.jsonl")
    result = cli("validate", "jobs/demo.yaml")
    assert "cannot read training data file: Permission denied" in result.err


def test_unsupported_training_format(repo, cli):
    repo.write("jobs/data/x.txt", "hello\n")
    repo.job(data="data/x.txt")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:8:16: training_data: data/x.txt: unsupported training data format '.txt'; "
        "use one of .jsonl, .json, .csv, .yaml, .yml"]


def test_malformed_jsonl_names_the_data_files_own_line(repo, cli):
    repo.write("jobs/data/demo.jsonl", '{"text_input": "a", "output": "b"}\n\n{"text_input": "c",\n'
               '{"text_input": "", "output": "d"}\n{"text_input": 5, "output": "d"}\n[1]\n')
    repo.job()
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/data/demo.jsonl:3:20: invalid JSON: Expecting property name enclosed in double quotes",
        "jobs/data/demo.jsonl:4: text_input: must not be empty",
        "jobs/data/demo.jsonl:5: text_input: must be a string, got number",
        "jobs/data/demo.jsonl:6: expected an object with 'text_input' and 'output', got list",
    ]


def test_csv_missing_column_and_bad_row(repo, cli):
    repo.write("jobs/data/qa.csv", "question,answer\nwhat,that\n,empty input\n")
    repo.job(data="{path: data/qa.csv, input_field: question, output_field: reply}")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/data/qa.csv:1: CSV header has no column 'reply' (columns: question, answer)"]
    repo.job(data="{path: data/qa.csv, input_field: question, output_field: answer}")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == ["jobs/data/qa.csv:3: question: must not be empty"]


def test_json_and_yaml_training_files(repo, cli):
    repo.write("jobs/data/a.json", '[{"text_input": "a", "output": "b"}, {"text_input": "c"}]')
    repo.write("jobs/data/b.yaml", "- {text_input: a, output: b}\n- {text_input: c, output: 7}\n")
    repo.job(name="a", data="data/a.json")
    repo.job(name="b", data="data/b.yaml")
    result = cli("validate", "jobs/")
    assert errors_of(result) == [
        "jobs/data/a.json:1:38: [1].output: missing",
        "jobs/data/b.yaml:2:27: output: must be a string, got number",
    ]


def test_inline_examples_are_checked_at_their_line(repo, cli):
    repo.write("jobs/x.yaml", """
        version: 1
        name: x
        base_model: models/m
        training_data:
          - {text_input: a, output: b}
          - {text_input: "  ", output: b}
        """)
    result = cli("validate", "jobs/x.yaml")
    assert errors_of(result) == ["jobs/x.yaml:6:18: training_data[1].text_input: must not be empty"]


def test_example_size_limits(repo, cli):
    long_input = "x" * (wire.MAX_INPUT_CHARS + 1)
    long_output = "y" * (wire.MAX_OUTPUT_CHARS + 1)
    repo.write_jsonl("jobs/data/demo.jsonl", [(long_input, "ok"), ("ok", long_output)])
    repo.job()
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/data/demo.jsonl:1: text_input: is 40,001 characters, over the limit of 40,000",
        "jobs/data/demo.jsonl:2: output: is 5,001 characters, over the limit of 5,000",
    ]


def test_regex_that_does_not_compile(repo, cli):
    repo.job(extra="eval:\n  prompts:\n    - input: a\n      expect: {regex: '(('}\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:12:23: eval.prompts[0].expect.regex: invalid regular expression: "
        "missing ), unterminated subpattern at position 1"]


def test_expectation_needs_exactly_one_matcher(repo, cli):
    repo.job(extra="eval:\n  prompts:\n    - input: a\n      expect: {case_sensitive: false}\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:12:15: eval.prompts[0].expect: give exactly one of equals, contains, "
        "regex, one_of, not_contains (found: none)"]


def test_training_path_outside_the_repository(repo, cli):
    repo.job(data="../../etc/passwd")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        f"jobs/demo.yaml:8:16: training_data: '../../etc/passwd' resolves outside the repository "
        f"({repo.root.resolve()}); pass --allow-outside-paths to allow it"]


def test_symlink_pointing_outside_the_repository(repo, cli, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside") / "data.jsonl"
    outside.write_text('{"text_input": "a", "output": "b"}\n')
    (repo.root / "jobs/data").mkdir(parents=True)
    (repo.root / "jobs/data/link.jsonl").symlink_to(outside)
    repo.job(data="data/link.jsonl")
    assert "resolves outside the repository" in cli("validate", "jobs/demo.yaml").err
    assert cli("validate", "--allow-outside-paths", "jobs/demo.yaml").code == 0


def test_python_tags_are_errors_not_code(repo, cli, tmp_path):
    marker = tmp_path / "pwned"
    repo.write("jobs/x.yaml", f"name: !!python/object/apply:os.system ['touch {marker}']\n")
    result = cli("validate", "jobs/x.yaml")
    assert errors_of(result) == [
        "jobs/x.yaml:1:7: name: unsupported YAML tag !!python/object/apply:os.system"]
    assert not marker.exists()


def test_billion_laughs_is_refused_quickly(repo, cli):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{','.join(['*' + previous] * 9)}]")
    repo.write("jobs/bomb.yaml", "\n".join(lines) + "\n")
    started = time.perf_counter()
    result = cli("validate", "jobs/bomb.yaml")
    assert time.perf_counter() - started < 2
    assert result.code == 1
    assert errors_of(result) == [
        "jobs/bomb.yaml:1:50: f[0][3][3][7][3][7]: aliases expand to more than 100,000 YAML "
        "nodes; jobspec stops there, as against an alias bomb (write the repeated values out)"]


def test_job_file_size_limit(repo, cli):
    repo.write("jobs/big.yaml", "description: " + "x" * (1024 * 1024) + "\n")
    result = cli("validate", "jobs/big.yaml")
    assert errors_of(result) == [
        "jobs/big.yaml: job file is 1,048,590 bytes, over the limit of 1,048,576 bytes"]


def test_json_output_lists_every_problem(repo, cli):
    repo.job(hyperparameters="batch_size: -1")
    result = cli("validate", "--format", "json", "jobs/demo.yaml")
    assert result.code == 1
    assert result.json() == [{
        "path": "jobs/demo.yaml", "line": 5, "column": 15, "field": "hyperparameters.batch_size",
        "message": "-1 is less than the minimum of 1"}]


def test_globs_and_directories(repo, cli):
    repo.job(name="one")
    repo.job(name="two")
    assert cli("validate", "jobs/*.yaml").out.count(": ok") == 2
    assert cli("validate", "jobs").out.count(": ok") == 2


def test_usage_errors_exit_64(repo, cli):
    assert cli("validate", "--no-such-flag").code == 64
    assert cli("validate", "jobs/*.nothing").code == 64
    assert cli("frobnicate").code == 64


def test_backend_options_belong_to_vertex(repo, cli):
    repo.job(extra="backend: {type: gemini, project: p}\n")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == [
        "jobs/demo.yaml:9:25: backend.project: applies only to the vertex backend, not gemini"]
    repo.job(extra="backend: cloud\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:9:10: backend: 'cloud' must be one of local, gemini, vertex"]
