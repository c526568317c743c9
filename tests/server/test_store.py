"""The store's rules for who may change a training job: only the worker that owns it (same
operation, still training, its pid recorded) records steps or finishes it."""

from __future__ import annotations

import pytest

from jobspec.server.store import ACTIVE, CREATING, FAILED, Snapshot, Store

FIRST, SECOND = 1001, 1002


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "state.db")


def queue(store: Store, model_id: str = "contested"):
    return store.create(model_id=model_id, display_name=None, description=None,
                        base_model="models/tiny", local_model="tiny", temperature=None,
                        top_p=None, top_k=None, hyperparameters={"batchSize": 1, "epochCount": 1},
                        effective_lr=0.001, examples=[("1", "2"), ("3", "4")], total_steps=2)


def restart_and_reclaim(store: Store, pid: int) -> None:
    """What a restarted service does: requeue the job of the worker it no longer has, and let
    one of its own workers take it."""
    assert store.release_orphans(set()) == ["contested"]
    assert store.claim_next(pid).worker_pid == pid


def test_a_worker_that_lost_its_job_can_neither_record_nor_finish_it(store):
    record = queue(store)
    assert store.claim_next(FIRST).worker_pid == FIRST
    restart_and_reclaim(store, SECOND)
    published = []

    assert not store.record_step(record.id, record.operation_id, FIRST, Snapshot(1, 1, 2.5, 0.0))
    assert store.finish(record.id, record.operation_id, FIRST,
                        publish=lambda: published.append(FIRST)) is None
    assert store.finish(record.id, record.operation_id, FIRST, error_code=13,
                        error_message="boom") is None
    now = store.get(record.id)
    assert (now.state, now.worker_pid, now.snapshots, published) == (CREATING, SECOND, (), [])

    assert store.record_step(record.id, record.operation_id, SECOND, Snapshot(1, 1, 2.0, 0.0))
    assert store.finish(record.id, record.operation_id, SECOND,
                        publish=lambda: published.append(SECOND)) == ACTIVE
    done = store.get(record.id)
    assert (done.state, done.worker_pid, [s.mean_loss for s in done.snapshots], published) == (
        ACTIVE, None, [2.0], [SECOND])
    # Once finished, nobody finishes it again.
    assert store.finish(record.id, record.operation_id, SECOND) is None


def test_a_worker_cannot_finish_a_later_model_of_the_same_id(store):
    old = queue(store)
    store.claim_next(FIRST)
    store.delete(old.id)
    new = queue(store)
    assert new.operation_id != old.operation_id
    assert store.finish(old.id, old.operation_id, FIRST) is None
    assert store.get(new.id).state == CREATING


def test_a_failed_publish_changes_nothing(store):
    record = queue(store)
    store.claim_next(FIRST)

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        store.finish(record.id, record.operation_id, FIRST, publish=disk_full)
    assert (store.get(record.id).state, store.get(record.id).worker_pid) == (CREATING, FIRST)


def test_a_cancel_after_the_last_step_wins_over_success(store):
    record = queue(store)
    store.claim_next(FIRST)
    store.request_cancel(record.id)
    published = []
    assert store.finish(record.id, record.operation_id, FIRST,
                        publish=lambda: published.append(1)) == FAILED
    done = store.get(record.id)
    assert (done.error_code, done.error_message, published) == (1, "Operation cancelled.", [])


def test_fail_queued_fails_only_jobs_no_worker_holds(store):
    held = queue(store, "held")
    store.claim_next(FIRST)
    waiting = queue(store, "waiting")
    assert store.fail_queued("no worker can start") == ["waiting"]
    assert store.get(waiting.id).state == FAILED
    assert store.get(waiting.id).error_message == "no worker can start"
    assert store.get(held.id).state == CREATING


def test_the_ray_run_named_on_a_job_stays_through_a_requeue_and_only_its_owner_names_it(store):
    # `serve --ray` records the standby run a job was handed to: a restarted service looks
    # that run up, and a job queued again resumes under the same run's name.
    record = queue(store)
    assert store.claim_next(FIRST).ray_run is None
    assert store.name_ray_run(record.id, record.operation_id, FIRST, "jobspec-standby-abc")
    assert not store.name_ray_run(record.id, record.operation_id, SECOND, "jobspec-standby-x")
    restart_and_reclaim(store, SECOND)
    assert store.get(record.id).ray_run == "jobspec-standby-abc"
    # Taken back (the standby could not take the job): the job's own run trains it.
    assert store.name_ray_run(record.id, record.operation_id, SECOND, None)
    assert store.get(record.id).ray_run is None
