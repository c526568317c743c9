"""The trainer's state as a value (jobspec/server/training_state.py): the one decision whether a
run resumes, a snapshot written and read back, early stopping's bookkeeping, and a run resumed
from its checkpoint that carries on the step and loss series of a run never interrupted.

Checkpoints are the worker's own (``WorkerCheckpoints``: atomic, owner-checked by the real
store); runs train the tiny random model of SmolLM2's shape (tests/conftest.py).
"""

from __future__ import annotations

import pytest

from jobspec.server.checkpoints import PARTIAL, WorkerCheckpoints, checkpoint_path
from jobspec.server.models import ModelRegistry, load_base
from jobspec.server.recipe import RECIPE
from jobspec.server.store import ACTIVE, Store
from jobspec.server.trainer import train
from jobspec.server.training_state import (Best, EarlyStopping, Progress, TrainingState,
                                           resume, run_key, snapshot)
from jobspec.server.worker import Worker
from tests.conftest import NUMBER_EXAMPLES

PID = 4242
VALIDATION = [("5", "6"), ("-7", "-6")]
# 15 examples, batch 4, 4 epochs: 15 steps; epochs end at steps 4, 8, 12 and 15.
EPOCHS, BATCH, STEPS, LEARNING_RATE, PATIENCE = 4, 4, 15, 1e-2, 10
KEY = run_key(NUMBER_EXAMPLES, VALIDATION, EPOCHS, BATCH, LEARNING_RATE, PATIENCE, RECIPE)


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def store(state) -> Store:
    return Store(state / "state.db")


@pytest.fixture
def record(store):
    """A queued job this test's worker pid has claimed: the store lets it save checkpoints."""
    store.create(model_id="resumable", display_name=None, description=None,
                 base_model="models/tiny-smollm2", local_model="tiny-smollm2", temperature=None,
                 top_p=None, top_k=None,
                 hyperparameters={"batchSize": BATCH, "epochCount": EPOCHS,
                                  "learningRate": LEARNING_RATE},
                 effective_lr=LEARNING_RATE, examples=NUMBER_EXAMPLES, total_steps=STEPS,
                 validation=VALIDATION, early_stopping_patience=PATIENCE)
    return store.claim_next(PID)


@pytest.fixture
def checkpoints(state, store, record) -> WorkerCheckpoints:
    return WorkerCheckpoints(state, store, record.id, record.operation_id, PID)


@pytest.fixture(scope="module")
def tiny(tiny_model, tmp_path_factory):
    """(model, tokenizer) as a worker loads them."""
    registry = ModelRegistry.build([str(tiny_model)], [])
    return load_base(registry.models["tiny-smollm2"], tmp_path_factory.mktemp("models"))


def run(tiny, *, stop_after: int | None = None, checkpoints=None, start=None):
    """Train the job; its (step, epoch, loss, validation loss) series and its result (None when
    stopped after ``stop_after`` steps, as a cancel stops it)."""
    network, tokenizer = tiny
    series = []

    def on_step(step):
        series.append((step.step, step.epoch, step.loss, step.validation_loss))
        return stop_after is None or step.step < stop_after

    result = train(network, tokenizer, NUMBER_EXAMPLES, epochs=EPOCHS, batch_size=BATCH,
                   learning_rate=LEARNING_RATE, on_step=on_step, validation=VALIDATION,
                   patience=PATIENCE, checkpoints=checkpoints, resume=start)
    return series, result


def adapter(result) -> dict:
    return {n: p.detach().clone() for n, p in result.model.named_parameters() if "lora_" in n}


# The resume decision.

def test_no_checkpoint_starts_fresh(checkpoints):
    for where in (checkpoints, None):
        start = resume(where, KEY, STEPS, PATIENCE)
        assert (start.state, start.step, start.found) == (None, 0, False)
        assert start.reason == "no checkpoint; training from the start"


@pytest.mark.timeout(120)
def test_a_checkpoint_resumes_at_its_step_and_a_half_written_one_is_never_read(
        tiny, checkpoints):
    series, result = run(tiny, stop_after=10, checkpoints=checkpoints,
                         start=resume(checkpoints, KEY, STEPS, PATIENCE))
    assert result is None and [s[0] for s in series] == list(range(1, 11))
    # A save cut short by a kill -9 leaves its partial file beside the last good checkpoint.
    partial = checkpoints.path.with_name(f".{checkpoints.operation_id}{PARTIAL}999")
    partial.write_bytes(checkpoints.path.read_bytes()[:1000])

    start = resume(checkpoints, KEY, STEPS, PATIENCE)
    assert start.step == 8  # the last epoch's end before step 10
    assert (start.found, start.reason) == (True, "resuming from its checkpoint at step 8")
    assert [(s, e) for s, e, _ in start.state.progress.validation] == [(4, 1), (8, 2)]
    assert [v for *_, v in start.state.progress.validation] == [s[3] for s in series[3:8:4]]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_checkpoint_starts_fresh_saying_why(tiny, checkpoints, damage):
    run(tiny, stop_after=5, checkpoints=checkpoints,
        start=resume(checkpoints, KEY, STEPS, PATIENCE))
    whole = checkpoints.path.read_bytes()
    checkpoints.path.write_bytes(b"not a checkpoint" if damage == "garbage"
                                 else whole[:len(whole) // 2])
    start = resume(checkpoints, KEY, STEPS, PATIENCE)
    assert (start.state, start.step, start.found) == (None, 0, True)
    assert start.reason.startswith("its checkpoint cannot be read (")
    assert start.reason.endswith("); training from the start")


def test_an_incomplete_checkpoint_starts_fresh_naming_what_it_lacks(checkpoints):
    assert checkpoints.save({"format": 1, "key": KEY, "step": 4, "adapter": {}})
    start = resume(checkpoints, KEY, STEPS, PATIENCE)
    assert (start.state, start.found) == (None, True)
    assert start.reason == ("its checkpoint cannot be read (ValueError: an incomplete checkpoint: "
                            "it lacks optimizer, scheduler, rng, validation, best, bad_epochs); "
                            "training from the start")


@pytest.mark.timeout(120)
def test_a_checkpoint_of_another_job_or_past_the_run_starts_fresh(tiny, checkpoints):
    run(tiny, stop_after=5, checkpoints=checkpoints,
        start=resume(checkpoints, KEY, STEPS, PATIENCE))
    other = run_key(NUMBER_EXAMPLES, VALIDATION, EPOCHS, BATCH, LEARNING_RATE / 2, PATIENCE,
                    RECIPE)
    assert resume(checkpoints, other, STEPS, PATIENCE).reason == (
        "its checkpoint was made for another job or recipe; training from the start")
    past = resume(checkpoints, KEY, 3, PATIENCE)
    assert (past.state, past.reason) == (None, "its checkpoint is at step 4, outside this "
                                               "run's steps 1 to 3; training from the start")


# Snapshots.

def test_a_snapshot_survives_the_round_trip_through_a_checkpoint(checkpoints):
    import torch

    weights = {"a": torch.nn.Parameter(torch.randn(3, 2)), "b": torch.nn.Parameter(torch.ones(4))}
    optimizer = torch.optim.AdamW(list(weights.values()), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    noise = torch.Generator().manual_seed(7)
    for _ in range(3):
        sum(p.square().sum() for p in weights.values()).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    torch.rand(5, generator=noise)
    stopping = EarlyStopping(2)
    stopping.record(1, 0.5, lambda: {n: p.detach().clone() for n, p in weights.items()})
    stopping.record(2, 0.7, lambda: pytest.fail("not the best epoch: nothing to copy"))
    taken = snapshot(KEY, Progress(3, [(2, 1, 0.5), (3, 2, 0.7)], stopping), weights,
                     optimizer, scheduler, noise)
    assert checkpoints.save(taken.to_checkpoint())

    back = TrainingState.from_checkpoint(checkpoints.load(), 2)
    assert (back.key, back.step, back.progress.validation) == (
        KEY, 3, [(2, 1, 0.5), (3, 2, 0.7)])
    assert (back.progress.stopping.bad_epochs, back.progress.stopping.patience_left) == (1, 1)
    assert back.progress.stopping.best.epoch == 1
    assert back.progress.stopping.best.loss == 0.5
    expected_next = torch.rand(4, generator=noise)
    after_snapshot = {n: p.detach().clone() for n, p in weights.items()}

    # Into fresh objects: the same weights, optimiser moments, schedule and random streams.
    fresh = {n: torch.nn.Parameter(torch.zeros_like(p)) for n, p in weights.items()}
    fresh_optimizer = torch.optim.AdamW(list(fresh.values()), lr=0.1)
    fresh_scheduler = torch.optim.lr_scheduler.LambdaLR(fresh_optimizer,
                                                        lambda step: 1 / (step + 1))
    fresh_noise = torch.Generator()
    progress = back.restore(fresh, fresh_optimizer, fresh_scheduler, fresh_noise)
    assert progress == back.progress and progress is not back.progress
    for name, value in after_snapshot.items():
        assert fresh[name].equal(value), name
    assert fresh_scheduler.state_dict() == scheduler.state_dict()
    for name in weights:
        ours, theirs = fresh_optimizer.state[fresh[name]], optimizer.state[weights[name]]
        assert all(ours[k].equal(theirs[k]) for k in ("step", "exp_avg", "exp_avg_sq")), name
    assert torch.rand(4, generator=fresh_noise).equal(expected_next)
    progress.validation.append((4, 3, 0.1))  # advancing the copy leaves the value alone
    assert len(back.progress.validation) == 2


# Early stopping's bookkeeping.

def test_early_stopping_keeps_the_best_epoch_and_counts_the_epochs_since():
    copies = []

    def weights():
        copies.append(len(copies))
        return {"copy": copies[-1]}

    stopping = EarlyStopping(2)
    assert (stopping.patience_left, stopping.exhausted) == (2, False)
    for epoch, loss in [(1, 3.0), (2, 2.0), (3, 2.5), (4, 1.5), (5, 1.5)]:
        stopping.record(epoch, loss, weights)
    assert stopping.best == Best(4, 1.5, {"copy": 2})  # equal is no better: a copy per best
    assert (stopping.bad_epochs, stopping.patience_left, stopping.exhausted) == (1, 1, False)
    stopping.record(6, 1.7, weights)
    assert (stopping.bad_epochs, stopping.patience_left, stopping.exhausted) == (2, 0, True)
    assert stopping.reason(6, 22, 30) == (
        "early stopping: the validation loss did not improve for 2 epochs after epoch 4 "
        "(best 1.5000); stopped after epoch 6, step 22 of 30")

    without = EarlyStopping(None)
    without.record(1, 1.0, weights)
    assert (without.best, without.patience_left, without.exhausted) == (None, None, False)
    assert len(copies) == 3


# A run resumed from its checkpoint.

@pytest.mark.timeout(180)
def test_a_resumed_run_carries_on_the_series_of_an_uninterrupted_one(tiny, checkpoints):
    straight, whole = run(tiny)
    assert [s[0] for s in straight] == list(range(1, STEPS + 1))

    interrupted, _ = run(tiny, stop_after=10, checkpoints=checkpoints,
                         start=resume(checkpoints, KEY, STEPS, PATIENCE))
    start = resume(checkpoints, KEY, STEPS, PATIENCE)
    assert start.step == 8
    rest, resumed = run(tiny, checkpoints=checkpoints, start=start)

    assert interrupted == straight[:10]
    assert interrupted[:8] + rest == straight  # steps 9 to 15 trained again, the same way
    assert resumed.resumed_from == 8 and whole.resumed_from is None
    assert (resumed.steps, resumed.validation, resumed.kept_epoch) == (
        whole.steps, whole.validation, whole.kept_epoch)
    ours, theirs = adapter(resumed), adapter(whole)
    assert ours.keys() == theirs.keys() and ours
    for name, value in theirs.items():
        assert ours[name].equal(value), name


# Through the worker: it asks once, logs why, and tells the store where the run starts.

@pytest.mark.timeout(180)
def test_the_worker_trains_from_the_start_when_its_checkpoint_is_corrupt(
        tiny_model, state, store, record, capsys):
    path = checkpoint_path(state, record.id, record.operation_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x02 half a pickle")
    Worker(state, ModelRegistry.build([str(tiny_model)], []), pid=PID).run(record)

    log = capsys.readouterr().err
    assert "train tunedModels/resumable: its checkpoint cannot be read (" in log
    assert "); training from the start\n" in log
    assert "train tunedModels/resumable: started (15 examples, 2 validation examples, " \
           "15 steps" in log
    finished = store.get(record.id)
    assert finished.state == ACTIVE
    assert [s.step for s in finished.snapshots] == list(range(1, STEPS + 1))
    assert not path.exists()  # removed once the run ended
