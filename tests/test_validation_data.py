"""validation_data, validation_split and early_stopping in job files: what validate accepts and
refuses (the Gemini API has none of them), what they do to the fingerprint, how a split is
drawn, and a job that uses them applied through the CLI to the local service (tiny model), its
report listing the validation curve, the kept epoch, why training stopped and the device."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobspec.data import Example
from jobspec.identity import draw_split
from jobspec.server import datasets
from jobspec.server.store import Store
from jobspec.server.uploads import Uploads
from jobspec.split import split_count
from tests.conftest import NUMBER_EXAMPLES
from tests.test_identity import identity

HELD_OUT = [("5", "6"), ("twelve", "thirteen"), ("-7", "-6")]


def split_examples(examples: list[Example],
                   fraction: float) -> tuple[list[Example], list[Example]]:
    """(training, validation) of a split drawn as identify draws it (split.py)."""
    return draw_split(examples, fraction).divide(examples)


def test_validation_fields_are_accepted_and_fingerprinted_only_when_given(repo, cli):
    repo.job()
    plain = identity(cli)
    repo.write_jsonl("jobs/data/held-out.jsonl", HELD_OUT)
    repo.job(extra="validation_data: data/held-out.jsonl\n")
    given = identity(cli)
    repo.write_jsonl("jobs/data/held-out.jsonl", HELD_OUT[:2])
    fewer = identity(cli)
    repo.job(extra="validation_data: data/held-out.jsonl\nearly_stopping: 2\n")
    stopping = identity(cli)
    repo.job(extra="validation_data: data/held-out.jsonl\nearly_stopping: {patience: 2}\n")
    stopping_mapping = identity(cli)
    repo.job(extra="validation_split: 0.2\n")
    split = identity(cli)
    repo.job(extra="validation_split: 0.3\n")
    other_split = identity(cli)
    assert len({plain, given, fewer, stopping, split, other_split}) == 6
    assert stopping == stopping_mapping
    repo.job()
    assert identity(cli) == plain  # and without them, the fingerprint of before (test_identity)


@pytest.mark.parametrize("extra, message", [
    ("validation_data: data/demo.jsonl\nvalidation_split: 0.2\n",
     "jobs/demo.yaml:10:1: validation_split: give validation_data or validation_split, not both"),
    ("early_stopping: 2\n",
     "jobs/demo.yaml:9:1: early_stopping: early stopping watches the validation loss: give "
     "validation_data or validation_split too"),
    ("validation_split: 1\n", "jobs/demo.yaml:9:19: validation_split: "),
    ("validation_data: data/missing.jsonl\n",
     "jobs/demo.yaml:9:18: validation_data: data/missing.jsonl: training data file not found"),
    ("validation_split: 0.2\nearly_stopping: {patience: 0}\n",
     "jobs/demo.yaml:10:28: early_stopping.patience: 0 is less than the minimum of 1"),
    ("validation_split: 0.2\nearly_stopping: 0\n",
     "jobs/demo.yaml:10:17: early_stopping: 0 is less than the minimum of 1"),
    ("validation_split: 0.2\nearly_stopping: {patience: 2, wait: 1}\n",
     "jobs/demo.yaml:10:31: early_stopping.wait: unknown field 'wait'"),
    ("validation_split: 0.2\nearly_stopping: yes\n",
     "jobs/demo.yaml:10:17: early_stopping: true is not an integer or a mapping"),
])
def test_validate_refuses_what_cannot_work(repo, cli, extra, message):
    repo.job(extra=extra)
    result = cli("validate", "jobs/demo.yaml")
    assert result.code == 1
    assert message in result.err + result.out


@pytest.mark.parametrize("extra, key", [
    ("validation_data: data/demo.jsonl\n", "validation_data"),
    ("validation_split: 0.2\n", "validation_split"),
    ("validation_split: 0.2\nearly_stopping: 2\n", "early_stopping"),
])
def test_the_gemini_api_takes_no_validation_data(repo, cli, extra, key):
    repo.job(extra=extra)
    result = cli("validate", "--backend", "gemini", "jobs/demo.yaml")
    assert result.code == 1
    text = result.err + result.out
    assert f": {key}: the Gemini API " in text
    assert cli("validate", "--backend", "local", "jobs/demo.yaml").code == 0


def test_a_split_is_drawn_from_the_examples_themselves():
    examples = [Example.one_turn(i, o) for i, o in NUMBER_EXAMPLES]
    training, held = split_examples(examples, 0.2)
    assert len(held) == 3 and len(training) == 12
    assert [e for e in examples if e not in held] == training  # order kept
    again_training, again_held = split_examples(list(reversed(examples)), 0.2)
    assert set(again_held) == set(held)  # whatever their order
    assert split_examples(examples + [examples[0]], 0.2)[1].count(examples[0]) in (0, 2)
    assert [split_count(n, 0.2) for n in (1, 2, 3, 10, 15)] == [0, 1, 1, 2, 3]
    assert split_count(10, 0.99) == 9  # always one left to train on


@st.composite
def examples_with_repeats(draw) -> list[Example]:
    """Examples drawn from a few different ones, so that equal examples are common."""
    pool = draw(st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), min_size=1,
                         max_size=5, unique=True))
    return [Example.one_turn(*pair) for pair in draw(st.lists(st.sampled_from(pool), max_size=30))]


@given(examples_with_repeats(), st.floats(min_value=0.01, max_value=0.99))
def test_a_split_puts_equal_examples_on_one_side_and_something_on_each(examples, fraction):
    training, validation = split_examples(examples, fraction)
    assert not set(training) & set(validation)  # no example both trained on and measured
    held = set(validation)
    assert training == [e for e in examples if e not in held]  # a partition, order kept
    assert validation == [e for e in examples if e in held]
    if len(set(examples)) >= 2:
        assert training and validation
    else:
        assert validation == []  # nothing to split: the job is refused (see below)
    if len(set(examples)) == len(examples):  # all different: exactly the count asked for
        assert len(validation) == split_count(len(examples), fraction)
    assert split_examples(examples, fraction) == (training, validation)  # deterministic
    assert set(split_examples(examples[::-1], fraction)[1]) == held  # whatever the order


# The issue's [a, a, b, c] at 0.25: the two a's rank first, and used to be cut apart.
REPEATED = [("a", "1"), ("a", "1"), ("b", "2"), ("c", "3")]
SPLIT_JOB = """
    version: 1
    name: split
    base_model: models/gemini-1.0-pro-001
    hyperparameters:
      batch_size: 1
      learning_rate: 0.001
      epoch_count: 1
    training_data: data/repeated.jsonl
    validation_split: 0.25
    """
SPLIT_FINGERPRINT = "eeecdf93de09c0ac22ed1d3fd41ef00a14a25acd14b430c4e7fb598be9697087"  # pinned


@pytest.mark.timeout(240)
def test_apply_reports_validation_loss_kept_epoch_and_device(repo, cli, clean_service):
    repo.job(extra="validation_split: 0.2\nearly_stopping: {patience: 1}\n",
             hyperparameters="batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 5")
    plan = cli("plan")
    assert plan.code == 0, plan.err
    result = cli("apply", "--skip-eval", "jobs/")
    assert result.code == 0, result.err
    report = json.loads((repo.root / "reports/demo.json").read_text())
    # 12 of the 15 examples train (3 held out), batch 2: epochs end at steps 6, 12, 18, 24, 30.
    curve = report["validation_curve"]
    assert [(p["step"], p["epoch"]) for p in curve][:2] == [(6, 1), (12, 2)]
    assert all(p["mean_loss"] > 0 for p in curve)
    losses = [p["mean_loss"] for p in curve]
    assert report["kept_epoch"] == losses.index(min(losses)) + 1
    if len(curve) < 5:  # stopped early: the report says why
        assert report["stop_reason"].startswith("early stopping: the validation loss did not "
                                                "improve for 1 epoch after epoch ")
    else:
        assert report["stop_reason"] is None
    assert report["device"].startswith(("cpu", "cuda"))
    assert len(report["loss_curve"]) == curve[-1]["step"]


def test_equal_examples_are_held_out_together_in_show_plan_and_training(repo, cli,
                                                                       clean_service):
    repo.write_jsonl("jobs/data/repeated.jsonl", REPEATED)
    repo.write("jobs/split.yaml", SPLIT_JOB)
    shown = cli("show", "jobs/split.yaml", "--format", "json").json()
    assert shown["fingerprint"] == SPLIT_FINGERPRINT  # as before equal examples stayed together
    assert (shown["training_data"]["example_count"], shown["training_data"]["held_out"]) == (4, 2)
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    [job] = plan.json()["jobs"]
    assert (job["estimate"]["examples"], job["estimate"]["steps"]) == (2, 2)
    applied = cli("apply", "--skip-eval", "--no-wait")
    assert applied.code == 0, applied.err
    model_id = job["tuned_model"].removeprefix("tunedModels/")
    # What the service was sent (uploaded apart, server/datasets.py reads them back).
    training, validation = datasets.stored(Store(clean_service.state_dir / "state.db"),
                                           Uploads(clean_service.state_dir), model_id)
    assert [(e.text_input, e.output) for e in training] == [("b", "2"), ("c", "3")]
    assert [(e.text_input, e.output) for e in validation] == [("a", "1"), ("a", "1")]


def test_a_split_of_examples_that_are_all_the_same_is_refused(repo, cli, clean_service):
    repo.write_jsonl("jobs/data/repeated.jsonl", REPEATED[:2])
    repo.write("jobs/split.yaml", SPLIT_JOB)
    applied = cli("apply", "--skip-eval", "--no-wait")
    assert applied.code == 1
    assert ("jobs/split.yaml:9:19: validation_split: cannot split 2 examples that are all the "
            "same: a validation split needs at least two different examples") in applied.err
