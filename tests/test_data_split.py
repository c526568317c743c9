"""The validation split's one home (jobspec/split.py): how a split is drawn and the sizes of its
sides, and that everything which says how many examples a job trains on agrees with what its
backend is sent and trains on: show and identify (Identity.held_out, trained_count), the
backends' example streams, plans' trained examples (their count and digest), and plan's
estimate and steps against the local service's own count once applied."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jobspec import spec, wire
from jobspec.backends.base import example_streams
from jobspec.data import Example
from jobspec.errors import ConfigErrors
from jobspec.identity import draw_split, example_rank, examples_digest, identify
from jobspec.server import datasets
from jobspec.server.store import Store
from jobspec.server.uploads import Uploads
from jobspec.split import split_count
from jobspec.trained import trained_examples

FRACTIONS = st.floats(min_value=0.01, max_value=0.99)


@st.composite
def examples_with_repeats(draw) -> list[Example]:
    """Examples drawn from a few different ones, so that equal examples are common."""
    pool = draw(st.lists(st.tuples(st.text(max_size=4), st.text(max_size=4)), min_size=1,
                         max_size=6, unique=True))
    return [Example.one_turn(*pair) for pair in draw(st.lists(st.sampled_from(pool), max_size=40))]


@given(examples_with_repeats(), FRACTIONS)
def test_a_splits_sizes_are_those_of_its_sides(examples, fraction):
    drawn = draw_split(examples, fraction)
    training, validation = drawn.divide(examples)
    assert (drawn.total, drawn.trained, drawn.held) == (len(examples), len(training),
                                                        len(validation))
    streamed = drawn.sides(lambda: iter(examples))
    assert [list(side()) for side in streamed] == [training, validation]
    assert drawn == draw_split(examples[::-1], fraction)  # whatever the examples' order


@given(examples_with_repeats(), FRACTIONS)
def test_a_split_holds_out_whole_groups_nearest_the_count_asked_for(examples, fraction):
    """Groups of equal examples, lowest rank first: of the ways to hold out the first k of
    them (leaving at least one to train on), the count nearest split_count, the fewer on a
    tie; nothing when there are fewer than two different examples."""
    sizes: dict[bytes, int] = {}
    for example in examples:
        sizes[example_rank(example)] = sizes.get(example_rank(example), 0) + 1
    held_by_prefix = [sum(sizes[r] for r in sorted(sizes)[:k]) for k in range(1, len(sizes))]
    target = split_count(len(examples), fraction)
    expected = min(held_by_prefix, key=lambda held: (abs(held - target), held), default=0)
    assert draw_split(examples, fraction).held == expected
    if len(sizes) == len(examples) >= 2:  # all different: exactly the count asked for
        assert expected == target


def test_split_count_rounds_and_leaves_one_on_each_side():
    assert [split_count(n, 0.2) for n in (0, 1, 2, 3, 10, 15)] == [0, 0, 1, 1, 2, 3]
    assert (split_count(2, 0.01), split_count(2, 0.99), split_count(10, 0.99)) == (1, 1, 9)


def _job(repo, examples, extra="validation_split: 0.25\n", hyperparameters=None):
    repo.write_jsonl("jobs/data/split.jsonl", examples)
    settings = {"hyperparameters": hyperparameters} if hyperparameters else {}
    path = repo.job("split", data="data/split.jsonl", extra=extra, **settings)
    return spec.load_job(str(path.relative_to(repo.root)))


def _lowest_ranked_first(pool: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(pool, key=lambda pair: example_rank(Example.one_turn(*pair)))


POOL = [(f"{n} plus one", str(n + 1)) for n in range(12)]


def _repeated(times: int) -> list[tuple[str, str]]:
    """Eight different examples, the one a split holds out first written ``times`` times."""
    first, *rest = _lowest_ranked_first(POOL)[:8]
    return [first] * times + rest


@pytest.mark.parametrize("examples, extra", [
    (_repeated(3), "validation_split: 0.2\n"),  # aims at 2 held out, holds out the three
    (_repeated(1), "validation_split: 0.2\n"),
    (POOL[:2] * 5, "validation_split: 0.5\n"),
    (POOL, "validation_split: 0.99\n"),
    (POOL, ""),
])
def test_identity_streams_and_plans_trained_examples_agree(repo, examples, extra):
    job = _job(repo, examples, extra)
    identity = identify(job)
    streams = example_streams(job, identity)
    training = list(streams.training())
    validation = list(streams.validation()) if streams.validation is not None else []
    assert (identity.example_count, identity.trained_count, identity.held_out) == (
        len(examples), len(training), len(validation))
    assert sorted(training + validation, key=repr) == sorted(
        (Example.one_turn(*pair) for pair in examples), key=repr)
    assert not set(training) & set(validation)
    planned = trained_examples(job, identity)
    assert (len(planned), list(planned)) == (len(training), training)
    assert planned.digest == examples_digest(training)


def test_validation_data_is_not_a_split(repo):
    repo.write_jsonl("jobs/data/held-out.jsonl", POOL[:3])
    job = _job(repo, POOL, "validation_data: data/held-out.jsonl\n")
    identity = identify(job)
    streams = example_streams(job, identity)
    assert identity.split is None and (identity.trained_count, identity.held_out) == (12, 0)
    assert streams.validation is not None
    assert ([e.text_input for e in streams.validation()], len(list(streams.training()))) == (
        [i for i, _ in POOL[:3]], 12)


def test_examples_that_cannot_be_split_are_refused_before_any_split_is_used(repo):
    job = _job(repo, [POOL[0]] * 3)
    with pytest.raises(ConfigErrors) as refused:
        identify(job)
    assert "cannot split 3 examples that are all the same" in str(refused.value)


@pytest.mark.timeout(180)
def test_plan_says_the_steps_and_examples_the_service_trains(repo, cli, clean_service):
    """Ten examples, the first that a split of 0.2 holds out written three times: the split
    aims at two held out and holds out the three together, so the job trains on seven. Steps
    were counted from the aim (eight examples: 8 steps) before the split had one home."""
    examples = _repeated(3)
    _job(repo, examples, "validation_split: 0.2\n",
         "batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 2")
    shown = cli("show", "jobs/split.yaml", "--format", "json").json()
    assert (shown["training_data"]["example_count"], shown["training_data"]["held_out"]) == (
        10, 3)
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    [job] = plan.json()["jobs"]
    assert (job["estimate"]["examples"], job["estimate"]["steps"]) == (7, 7)  # ceil(7 * 2 / 2)
    applied = cli("apply", "--skip-eval", "--no-wait")
    assert applied.code == 0, applied.err
    model_id = job["tuned_model"].removeprefix("tunedModels/")
    store = Store(clean_service.state_dir / "state.db")
    training, validation = datasets.stored(store, Uploads(clean_service.state_dir), model_id)
    record = store.get(model_id, with_snapshots=False)
    assert record is not None
    assert (len(training), len(validation)) == (7, 3)
    assert [(e.text_input, e.output) for e in validation] == [examples[0]] * 3
    assert record.total_steps == wire.total_steps(len(training), 2, 2) == 7
