"""reconcile.compare on its own: job files compared with a service's listing, with no service
(it does no I/O; ``Names`` below is all it asks of a backend). Each action a plan can give a job
(create, unchanged, in progress, failed, recreate), why, and which of the job's models are
superseded or another workspace's; and how the plan shows them. The journeys through `jobspec
plan` and `apply` against the local service are in test_apply.py and test_ownership.py."""

from __future__ import annotations

from typing import Any

import pytest

from jobspec import ownership, reconcile, spec
from jobspec.backends.base import ACTIVE, CREATING, FAILED, RemoteModel, Snapshot
from jobspec.commands import planview
from jobspec.identity import Identity
from jobspec.workspace import Owner

pytestmark = pytest.mark.timeout(30)

ME, THEM = Owner("team-a", "--owner"), Owner("team-b", "--owner")
FP, OLD_FP = "f" * 64, "e" * 64
IDENTITY = Identity(FP, "demo-ffffffff", 15)
BASE = "models/gemini-1.0-pro-001"


class Names:
    """What a plan needs of a backend, as the Gemini backend answers it, and nothing else."""

    name, endpoint, owner = "fake", "http://127.0.0.1:1", ME

    def legacy_name(self, identity: Identity) -> str:
        return f"tunedModels/{identity.tuned_model_id}"

    def planned_name(self, identity: Identity, taken: frozenset[str] = frozenset()) -> str:
        return next(f"tunedModels/{i}" for i in ownership.tuned_model_ids(identity, ME.id)
                    if f"tunedModels/{i}" not in taken)

    def expected_steps(self, job: spec.Job, identity: Identity) -> int | None:
        return 30

    def hyperparameters(self, job: spec.Job) -> dict[str, Any]:
        return job.hyperparameters.as_dict()


@pytest.fixture
def job(repo) -> spec.Job:
    return spec.load_job(str(repo.job("demo").relative_to(repo.root)))


def model(name: str, state: str = ACTIVE, *, fingerprint: str = FP, owner: Owner | None = ME,
          job: str = "demo", **fields: Any) -> RemoteModel:
    hyperparameters = {"batch_size": 2, "epoch_count": 5, "learning_rate": 0.001}
    return RemoteModel(f"tunedModels/{name}", state, fields.pop("base_model", BASE), job=job,
                       fingerprint=fingerprint, owner=owner.id if owner else None,
                       hyperparameters=fields.pop("hyperparameters", hyperparameters),
                       create_time=fields.pop("create_time", "2024-05-01T10:00:00Z"), **fields)


def compare(job: spec.Job, *models: RemoteModel, recreate_failed: bool = False,
            identity: Identity = IDENTITY) -> reconcile.JobPlan:
    plan = reconcile.compare([(job, identity)], list(models), Names(),
                             recreate_failed=recreate_failed)
    assert (plan.backend, plan.endpoint, plan.owner, plan.models) == (
        "fake", "http://127.0.0.1:1", ME, models)
    (planned,) = plan.jobs
    assert (planned.expected_steps, planned.hyperparameters) == (
        30, {"batch_size": 2, "epoch_count": 5, "learning_rate": 0.001})
    return planned


def test_a_job_with_no_model_is_created(job):
    planned = compare(job, model("other-ffffffff", job="other"))  # another job's model
    assert (planned.action, planned.model_name, planned.current) == (
        reconcile.CREATE, "tunedModels/demo-ffffffff", None)
    assert (planned.superseded, planned.foreign, planned.reasons) == ((), (), ())
    assert planned.changes


def test_a_job_whose_model_is_active_is_unchanged(job):
    mine = model("demo-ffffffff")
    planned = compare(job, mine)
    assert (planned.action, planned.model_name, planned.current) == (
        reconcile.UNCHANGED, mine.name, mine)
    assert not planned.changes


@pytest.mark.parametrize("fields, percent", [
    ({"snapshots": (Snapshot(12, 1, 0.5),), "total_steps": 48}, 25.0),  # the service's count
    ({"snapshots": (Snapshot(12, 1, 0.5),)}, 40.0),  # else the backend's: 30 steps
    ({}, 0.0),
])
def test_a_job_whose_model_trains_is_in_progress(job, fields, percent):
    planned = compare(job, model("demo-ffffffff", CREATING, **fields))
    assert (planned.action, planned.progress_percent) == (reconcile.IN_PROGRESS, percent)
    assert not planned.changes


def test_a_job_whose_model_failed_is_failed_unless_recreate_is_asked(job):
    failed = model("demo-ffffffff", FAILED)
    planned = compare(job, failed)
    assert (planned.action, planned.current, planned.reasons) == (
        reconcile.FAILED_ACTION, failed, ())
    recreated = compare(job, failed, recreate_failed=True)
    assert (recreated.action, recreated.model_name) == (reconcile.RECREATE, failed.name)
    assert recreated.changes


def test_recreate_leaves_a_failed_model_that_is_not_this_workspaces(job):
    # An older jobspec's, under the job's first id: the job's model, but not ours to delete.
    legacy = model("demo-ffffffff", FAILED, owner=None)
    planned = compare(job, legacy, recreate_failed=True)
    assert (planned.action, planned.current) == (reconcile.FAILED_ACTION, legacy)
    assert planned.reasons == ("--recreate-failed leaves it: its owner was not recorded (an "
                               "older jobspec made it)",)


def test_a_model_of_other_examples_is_superseded_and_why_is_said(job):
    older = model("demo-eeeeeeee", fingerprint=OLD_FP, create_time="2024-04-01T00:00:00Z",
                  hyperparameters={"batch_size": 2, "epoch_count": 3, "learning_rate": 0.001})
    newer = model("demo-dddddddd", fingerprint="d" * 64, create_time="2024-04-02T00:00:00Z",
                  base_model="models/gemini-1.5-flash-001",
                  hyperparameters={"batch_size": 4, "epoch_count": 5})
    planned = compare(job, older, newer)
    assert (planned.action, planned.superseded, planned.foreign) == (
        reconcile.CREATE, (older, newer), ())
    # Compared with the newest: what it was trained with, and what the job asks now.
    assert planned.reasons == ("base model models/gemini-1.5-flash-001 → "
                               "models/gemini-1.0-pro-001", "batch_size 4 → 2",
                               "learning_rate unset → 0.001")
    assert compare(job, older).reasons == ("epoch_count 3 → 5",)
    same = model("demo-eeeeeeee", fingerprint=OLD_FP)
    assert compare(job, same).reasons == ("training examples changed",)


def test_a_superseded_model_stays_superseded_beside_the_current_one(job):
    mine, old = model("demo-ffffffff"), model("demo-eeeeeeee", fingerprint=OLD_FP)
    planned = compare(job, old, mine)
    assert (planned.action, planned.current, planned.superseded) == (
        reconcile.UNCHANGED, mine, (old,))
    assert planned.reasons == ()  # reasons say why a job is trained, and it is not


def test_another_workspaces_model_is_foreign_and_the_job_gets_its_own(job):
    theirs = model("demo-ffffffff", owner=THEM)  # the same job and examples, their first id
    unrecorded = model("demo-eeeeeeee", fingerprint=OLD_FP, owner=None)
    planned = compare(job, theirs, unrecorded)
    assert (planned.action, planned.current, planned.superseded) == (reconcile.CREATE, None, ())
    assert planned.foreign == (theirs, unrecorded)
    assert planned.model_name != theirs.name and planned.model_name.startswith("tunedModels/demo-")
    assert planned.reasons == ()


def test_a_failed_retry_of_the_same_examples_is_neither_superseded_nor_foreign(job):
    mine = model("demo-ffffffff", create_time="2024-05-01T00:00:00Z")
    retry = model("demo-retry", FAILED, create_time="2024-05-02T00:00:00Z")
    planned = compare(job, mine, retry)
    assert (planned.action, planned.current, planned.superseded, planned.foreign) == (
        reconcile.UNCHANGED, mine, (), ())


def test_a_plan_of_several_jobs_counts_each_action(repo):
    jobs = [spec.load_job(str(repo.job(name).relative_to(repo.root)))
            for name in ("alpha", "beta", "gamma")]
    identities = [Identity(c * 64, f"{j.name}-{c * 8}", 15) for j, c in zip(jobs, "abc")]
    listing = [model("alpha-aaaaaaaa", job="alpha", fingerprint="a" * 64),
               model("beta-00000000", job="beta", fingerprint="0" * 64),
               model("gamma-cccccccc", CREATING, job="gamma", fingerprint="c" * 64)]
    plan = reconcile.compare(list(zip(jobs, identities)), listing, Names())
    assert [(j.job.name, j.action) for j in plan.jobs] == [
        ("alpha", reconcile.UNCHANGED), ("beta", reconcile.CREATE),
        ("gamma", reconcile.IN_PROGRESS)]
    assert [m.name for m in plan.superseded] == ["tunedModels/beta-00000000"]
    assert plan.has_changes and plan.count(reconcile.CREATE) == 1
    assert planview.summary(plan) == ("Plan: 1 to create, 1 unchanged, 1 in progress, 0 failed, "
                                      "1 superseded.")
    assert not reconcile.compare(list(zip(jobs, identities))[:1], listing, Names()).has_changes


def test_each_model_is_judged_for_its_own_job_only(repo, monkeypatch):
    """A plan of many jobs looks at each listed model for the job it records, not for every job:
    the standing of a model is decided twice (its job's current model, then the rest), whatever
    the number of jobs. Deciding it for every job made plans of 1,000 jobs against 1,000 models
    three times slower (a million decisions)."""
    jobs = [spec.load_job(str(repo.job(f"job-{i:02d}").relative_to(repo.root)))
            for i in range(40)]
    identities = [Identity(FP, f"{j.name}-ffffffff", 15) for j in jobs]
    listing = [model(f"{j.name}-ffffffff", job=j.name) for j in jobs]  # every job's, unchanged
    listing += [model(f"{j.name}-eeeeeeee", job=j.name, fingerprint=OLD_FP) for j in jobs[:10]]
    listing += [model("stranger", job=None, owner=None)]  # not jobspec's: no job's
    decided = []
    judge = ownership.standing

    def counted(found: RemoteModel, *args: Any, **kwargs: Any) -> ownership.Standing:
        decided.append(found.name)
        return judge(found, *args, **kwargs)

    monkeypatch.setattr(ownership, "standing", counted)
    plan = reconcile.compare(list(zip(jobs, identities)), listing, Names())
    assert [j.action for j in plan.jobs] == [reconcile.UNCHANGED] * 40
    assert len(plan.superseded) == 10
    assert len(decided) == 2 * (len(listing) - 1)  # twice each, the stranger never
    assert max(decided.count(name) for name in set(decided)) == 2


def test_the_plan_shows_superseded_and_foreign_models(job):
    theirs, old = model("demo-ffffffff", owner=THEM), model("demo-eeeeeeee", fingerprint=OLD_FP)
    plan = reconcile.compare([(job, IDENTITY)], [theirs, old], Names())
    (planned,) = plan.jobs
    lines = planview.text(plan).splitlines()
    assert lines[0] == f"Backend: fake (http://127.0.0.1:1); owner {ME}"
    assert lines[2:6] == [
        f"  + demo  create {planned.model_name}",
        "      because: training examples changed",
        "  - demo  superseded tunedModels/demo-eeeeeeee (apply --prune deletes it)",
        f"  · demo  tunedModels/demo-ffffffff belongs to another workspace (owner {THEM.id}): "
        "left alone"]
    markdown = planview.markdown(plan)
    assert "| · | `demo` | other workspace | `tunedModels/demo-ffffffff` | left alone |" in markdown
    assert "| - | `demo` | superseded | `tunedModels/demo-eeeeeeee` | deleted by `apply --prune` |" \
        in markdown


def test_the_comparison_reads_nothing_but_what_it_is_given(job):
    # Names has no list_models, get_model or any way to reach a service: compare needs none.
    assert not hasattr(Names(), "list_models")
    listing = (model("demo-ffffffff"),)
    planned = reconcile.compare([(job, IDENTITY)], listing, Names()).jobs[0]
    assert (planned.action, planned.current) == (reconcile.UNCHANGED, listing[0])
