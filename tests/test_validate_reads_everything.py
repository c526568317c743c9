"""validate reads and checks everything plan and apply will (issue 16 §5.5): the examples of a
validation_data file, whether a validation_split can be drawn, and the training and validation
examples together where one request carries both. Each case failed validate's check before, and
was found only by plan or apply; each is now refused by validate, show and plan alike, at the
same line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobspec.backends import local
from tests.conftest import NUMBER_EXAMPLES

pytestmark = pytest.mark.timeout(60)


def _refused_alike(cli, message: str) -> None:
    """validate and show (which fingerprints, as plan does) both refuse, with ``message``."""
    for command in (("validate", "jobs/demo.yaml"), ("show", "jobs/demo.yaml")):
        result = cli(*command)
        assert result.code == 1, (command, result.out)
        assert message in result.err, (command, result.err)


def test_a_bad_line_in_the_validation_file_is_refused_by_validate(repo, cli):
    repo.write("jobs/data/held-out.jsonl", '{"text_input": "5", "output": "6"}\n'
                                           '{"text_input": "7", "output": \n')
    repo.job(extra="validation_data: data/held-out.jsonl\n")
    _refused_alike(cli, "jobs/data/held-out.jsonl:2:")
    repo.write("jobs/data/held-out.jsonl", '{"text_input": "5", "output": ""}\n')
    _refused_alike(cli, "jobs/data/held-out.jsonl:1:")  # an empty output, not only bad JSON


def test_a_missing_validation_file_is_refused_by_validate(repo, cli):
    repo.job(extra="validation_data: data/nowhere.jsonl\n")
    _refused_alike(cli, "training data file not found")


def test_a_split_of_one_example_is_refused_by_validate(repo, cli):
    repo.write_jsonl("jobs/data/one.jsonl", NUMBER_EXAMPLES[:1])
    repo.job(data="data/one.jsonl", extra="validation_split: 0.2\n")
    _refused_alike(cli, "jobs/demo.yaml:9:19: validation_split: cannot split 1 example: a "
                        "validation split needs at least two")


def test_a_split_of_examples_all_the_same_is_refused_by_validate(repo, cli):
    repo.write_jsonl("jobs/data/same.jsonl", [NUMBER_EXAMPLES[0]] * 3)
    repo.job(data="data/same.jsonl", extra="validation_split: 0.5\n")
    _refused_alike(cli, "validation_split: cannot split 3 examples that are all the same")


def _limit(monkeypatch, max_bytes: int) -> None:
    limits = dataclasses.replace(local.LOCAL.limits, max_bytes=max_bytes, unit_bytes=1,
                                 unit="bytes", stated_by="a test's limit")
    monkeypatch.setattr(local, "LOCAL", dataclasses.replace(local.LOCAL, limits=limits))


def test_training_and_validation_together_over_the_limit_is_refused_by_validate(
        repo, cli, monkeypatch):
    examples = [(f"question {i} " + "x" * 200, f"answer {i}") for i in range(20)]
    repo.write_jsonl("jobs/data/train.jsonl", examples[:10])
    repo.write_jsonl("jobs/data/held-out.jsonl", examples[10:])
    repo.job(data="data/train.jsonl")
    _limit(monkeypatch, 10**9)
    # Measure what each part carries: the limit at which the training examples alone just fit.
    alone = cli("validate", "jobs/demo.yaml")
    assert alone.code == 0, alone.err
    envelope = local.LOCAL.limits.envelope_bytes
    one_part = len(json.dumps([{"textInput": i, "output": o} for i, o in examples[:10]]))
    limit = envelope + one_part + one_part // 2  # either part alone fits, both do not
    _limit(monkeypatch, limit)
    assert cli("validate", "jobs/demo.yaml").code == 0
    repo.job(data="data/held-out.jsonl")
    assert cli("validate", "jobs/demo.yaml").code == 0
    repo.job(data="data/train.jsonl", extra="validation_data: data/held-out.jsonl\n")
    _refused_alike(cli, "jobs/demo.yaml:9:18: validation_data: the training and validation "
                        "examples together make an upload of ")
    result = cli("validate", "jobs/demo.yaml")
    assert "bytes; the local backend accepts at most" in result.err
    assert f"at most {limit} bytes (a test's limit)" in result.err


@pytest.mark.timeout(120)
def test_plan_refuses_what_validate_refuses(repo, cli, service, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    repo.write_jsonl("jobs/data/one.jsonl", NUMBER_EXAMPLES[:1])
    repo.job(data="data/one.jsonl", extra="validation_split: 0.2\n")
    planned = cli("plan", "jobs/demo.yaml")
    assert planned.code == 1
    assert ("jobs/demo.yaml:9:19: validation_split: cannot split 1 example" in planned.err)
