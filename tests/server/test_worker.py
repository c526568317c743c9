"""Training workers that lost their job (the service restarted meanwhile and gave it to another
worker) leave alone what the run that owns it records and publishes.

Two real workers train in this process on one state directory, told apart by the pid each
records as owner; then the real service serves what the owning run published.
"""

from __future__ import annotations

import pytest

from jobspec.server.adapters import adapter_dir
from jobspec.server.models import ModelRegistry
from jobspec.server.store import ACTIVE, CREATING, Store
from jobspec.server.worker import Worker
from tests.conftest import NUMBER_EXAMPLES
from tests.service import LocalService

FIRST, SECOND = 1001, 1002
STEPS = 8  # 15 examples, batch size 2, one epoch


@pytest.fixture
def state(tmp_path):
    return tmp_path / "state"


@pytest.fixture
def store(state) -> Store:
    return Store(state / "state.db")


@pytest.fixture
def workers(tiny_model, state):
    registry = ModelRegistry.build([str(tiny_model)], [])
    return Worker(state, registry, pid=FIRST), Worker(state, registry, pid=SECOND)


def queue(store: Store):
    return store.create(model_id="contested", display_name=None, description=None,
                        base_model="models/tiny-smollm2", local_model="tiny-smollm2",
                        temperature=None, top_p=None, top_k=None,
                        hyperparameters={"batchSize": 2, "epochCount": 1, "learningRate": 0.001},
                        effective_lr=0.001, examples=NUMBER_EXAMPLES, total_steps=STEPS)


def restart_and_reclaim(store: Store) -> None:
    """The service restarts: the job goes back to the queue and the new service's worker
    takes it."""
    assert store.release_orphans(set()) == ["contested"]
    assert store.claim_next(SECOND).worker_pid == SECOND


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


class RestartAfterLastStep:
    """The real store, except that the service restarts just after this worker records its
    last step: the window between training and finishing that ownership checks close."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str):
        return getattr(self.store, name)

    def record_step(self, model_id, operation_id, worker_pid, snapshot, validation=None) -> bool:
        recorded = self.store.record_step(model_id, operation_id, worker_pid, snapshot, validation)
        if snapshot.step == STEPS:
            restart_and_reclaim(self.store)
        return recorded


@pytest.mark.timeout(180)
def test_a_worker_that_trained_a_job_it_lost_publishes_nothing(store, workers, state, capsys):
    first, second = workers
    record = queue(store)
    claimed = store.claim_next(FIRST)
    first.store = RestartAfterLastStep(store)

    first.run(claimed)

    assert "trained, but the job was deleted or is no longer this worker's" in \
        capsys.readouterr().err
    taken = store.get(record.id)
    assert (taken.state, taken.worker_pid) == (CREATING, SECOND)
    assert files_under(state / "adapters") == []  # no adapter, no partial left behind

    second.run(taken)
    assert store.get(record.id).state == ACTIVE
    assert len(store.get(record.id).snapshots) == STEPS
    assert (adapter_dir(state, record.id, record.operation_id) / "adapter_config.json").is_file()


@pytest.mark.timeout(180)
def test_a_worker_that_lost_its_job_stops_and_leaves_the_owners_run_alone(
        store, workers, state, tiny_model):
    first, second = workers
    record = queue(store)
    claimed_first = store.claim_next(FIRST)
    restart_and_reclaim(store)

    first.run(claimed_first)  # carries on with a job it no longer owns: stops at its first step
    untouched = store.get(record.id)
    assert (untouched.state, untouched.worker_pid, untouched.snapshots) == (CREATING, SECOND, ())

    second.run(store.get(record.id))
    finished = store.get(record.id)
    assert (finished.state, len(finished.snapshots)) == (ACTIVE, STEPS)
    published = files_under(state / "adapters")
    assert [name for name in published if name.count("/") < 2] == [
        "contested", f"contested/{record.operation_id}"]  # the owner's adapter, no partials
    assert f"contested/{record.operation_id}/adapter_model.safetensors" in published

    first.run(claimed_first)  # and once more, now that the job is ACTIVE
    assert store.get(record.id) == finished
    assert files_under(state / "adapters") == published

    service = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with service.client() as http:
            answer = http.post("/v1beta/tunedModels/contested:generateContent",
                               json={"contents": [{"parts": [{"text": "7"}]}]})
            assert answer.status_code == 200, answer.text
    finally:
        service.stop()
