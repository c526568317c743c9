"""jobspec/ownership.py on its own: each standing a tuned model can have relative to this
workspace and a job, and each decision (adopt, recreate, prune, delete) for each standing, with
the words a user reads. The journeys (two workspaces sharing a service, `jobspec delete`,
`apply --prune`) are in test_ownership.py and test_apply.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobspec import ownership
from jobspec.backends.base import ACTIVE, CREATING, FAILED, RemoteModel
from jobspec.identity import Identity
from jobspec.ownership import Standing

pytestmark = pytest.mark.timeout(30)

ME, THEM = "0123456789abcdef", "fedcba9876543210"
JOB, FP, OLD_FP = "demo", "f" * 64, "e" * 64
LEGACY = "tunedModels/demo-ffffffff"  # the one name a model from before owners could have


def model(name: str, *, job: str | None = JOB, fingerprint: str | None = FP,
          owner: str | None = ME, state: str = ACTIVE,
          created: str = "2024-05-01T10:00:00Z") -> RemoteModel:
    return RemoteModel(name, state, "models/gemini-1.0-pro-001", job=job,
                       fingerprint=fingerprint if job else None, owner=owner if job else None,
                       create_time=created)


# One model of each standing, for the job `demo` with examples FP, seen by the workspace ME.
MODELS = {
    Standing.OWN_CURRENT: model("tunedModels/mine"),
    Standing.OWN_SUPERSEDED: model("tunedModels/mine-old", fingerprint=OLD_FP),
    Standing.OWN: model("tunedModels/other-job", job="other"),
    Standing.LEGACY_CURRENT: model(LEGACY, owner=None),
    Standing.UNRECORDED: model("tunedModels/demo-unrecorded", owner=None),
    Standing.OTHER_OWNER: model("tunedModels/theirs", owner=THEM),
    Standing.NOT_JOBSPECS: model("tunedModels/hand-made", job=None),
}
WHOSE = {
    Standing.LEGACY_CURRENT: "its owner was not recorded (an older jobspec made it)",
    Standing.UNRECORDED: "its owner was not recorded (an older jobspec made it)",
    Standing.OTHER_OWNER: f"another workspace owns it (owner {THEM})",
    Standing.NOT_JOBSPECS: "jobspec did not create it",
}
NOT_OWNED = list(WHOSE)
OWNED = [Standing.OWN_CURRENT, Standing.OWN_SUPERSEDED, Standing.OWN]


def test_every_standing_is_told_apart():
    found = {expected: ownership.standing(m, ME, JOB, FP, legacy_name=LEGACY)
             for expected, m in MODELS.items()}
    assert found == {standing: standing for standing in Standing}


def test_without_a_job_a_model_is_only_whose_it_is():
    found = {expected: ownership.standing(m, ME) for expected, m in MODELS.items()}
    assert found == {
        Standing.OWN_CURRENT: Standing.OWN, Standing.OWN_SUPERSEDED: Standing.OWN,
        Standing.OWN: Standing.OWN, Standing.LEGACY_CURRENT: Standing.UNRECORDED,
        Standing.UNRECORDED: Standing.UNRECORDED, Standing.OTHER_OWNER: Standing.OTHER_OWNER,
        Standing.NOT_JOBSPECS: Standing.NOT_JOBSPECS}


def test_an_unrecorded_model_is_the_jobs_only_under_its_legacy_name():
    legacy = MODELS[Standing.LEGACY_CURRENT]
    assert ownership.standing(legacy, ME, JOB, FP) is Standing.UNRECORDED  # no legacy name here
    assert ownership.standing(legacy, ME, JOB, OLD_FP, LEGACY) is Standing.UNRECORDED
    assert ownership.standing(legacy, THEM, JOB, FP, LEGACY) is Standing.LEGACY_CURRENT


def test_what_get_shows_and_which_standings_are_this_workspaces():
    assert {s: (s.label, s.owned, s.of_these_examples) for s in Standing} == {
        Standing.OWN_CURRENT: ("this workspace", True, True),
        Standing.OWN_SUPERSEDED: ("this workspace", True, False),
        Standing.OWN: ("this workspace", True, False),
        Standing.LEGACY_CURRENT: ("unrecorded", False, True),
        Standing.UNRECORDED: ("unrecorded", False, False),
        Standing.OTHER_OWNER: ("another workspace", False, False),
        Standing.NOT_JOBSPECS: ("not jobspec's", False, False)}


@pytest.mark.parametrize("standing", list(Standing), ids=lambda s: s.name)
def test_adopt(standing):
    decision = ownership.adopt(MODELS[standing], ME, JOB, FP, legacy_name=LEGACY)
    expected = {
        Standing.OWN_CURRENT: (True, "an earlier request already created it"),
        Standing.LEGACY_CURRENT: (True, "an earlier request already created it"),
        Standing.OWN_SUPERSEDED: (False, f"it was trained on other examples (fingerprint "
                                         f"{OLD_FP})"),
        Standing.OWN: (False, "it is job other's model"),
    }.get(standing) or (False, WHOSE[standing])
    assert (decision.allowed, decision.reason) == expected


def test_adopt_takes_a_failed_model_only_when_this_create_may_have_made_it():
    failed = model("tuningJobs/1", state=FAILED)
    before = ownership.adopt(failed, ME, JOB, FP, existed={"tuningJobs/1"})
    assert (before.allowed, before.reason) == (
        False, "it had FAILED before this create (--recreate-failed replaces it)")
    assert ownership.adopt(failed, ME, JOB, FP, existed={"tuningJobs/0"}).allowed
    assert ownership.adopt(failed, ME, JOB, FP).allowed  # a backend that cannot tell


@pytest.mark.parametrize("standing", list(Standing), ids=lambda s: s.name)
def test_recreate(standing):
    failed = ownership.recreate(replace(MODELS[standing], state=FAILED), ME)
    active = ownership.recreate(MODELS[standing], ME)
    if standing in OWNED:
        assert (failed.allowed, failed.reason) == (True, "it FAILED: deleted and created again")
        assert (active.allowed, active.reason) == (False, "it is ACTIVE, not FAILED")
    else:
        assert (failed.allowed, failed.reason) == (False, WHOSE[standing])
        assert (active.allowed, active.reason) == (False, WHOSE[standing])


@pytest.mark.parametrize("standing", list(Standing), ids=lambda s: s.name)
def test_prune(standing):
    new = "tunedModels/new"
    ready = ownership.prune(MODELS[standing], ME, JOB, FP, new, ACTIVE)
    training = ownership.prune(MODELS[standing], ME, JOB, FP, new, CREATING)
    if standing is Standing.OWN_SUPERSEDED:
        assert (ready.allowed, ready.reason) == (True, "superseded by tunedModels/new")
        assert (training.allowed, training.reason) == (False, "tunedModels/new is not ACTIVE yet")
        return
    expected = {Standing.OWN_CURRENT: "it is the job's current model",
                Standing.OWN: "it is job other's model"}.get(standing) or WHOSE[standing]
    assert (ready.allowed, ready.reason) == (False, expected)
    assert (training.allowed, training.reason) == (False, expected)


@pytest.mark.parametrize("standing", list(Standing), ids=lambda s: s.name)
def test_delete(standing):
    found = MODELS[standing]

    def decide(named: bool, force: bool) -> tuple[bool, str]:
        decision = ownership.delete(found, ME, named, force)
        return decision.allowed, decision.reason

    if standing in OWNED:
        assert {decide(n, f) for n in (False, True) for f in (False, True)} == {
            (True, "this workspace's")}
        return
    why = WHOSE[standing]
    assert decide(named=True, force=True) == (True, "named, with --force")
    assert decide(named=True, force=False) == (False, f"{why}; add --force to delete it anyway")
    # Found by its job's name, --force does not reach it: only a model named by its name.
    for force in (False, True):
        assert decide(named=False, force=force) == (
            False, f"{why}; to delete it, name it: jobspec delete {found.name} --force")


def test_plans_say_whose_a_foreign_model_is():
    assert ownership.foreign_note(MODELS[Standing.OTHER_OWNER]) == (
        f"belongs to another workspace (owner {THEM}): left alone")
    assert ownership.foreign_note(MODELS[Standing.UNRECORDED]) == (
        "belongs to another workspace (no recorded owner): left alone")


def test_a_jobs_models_sorted_by_standing():
    retry = model("tunedModels/mine-retry", state=FAILED, created="2024-05-02T00:00:00Z")
    listing = [*MODELS.values(), retry]
    found = ownership.job_models(listing, ME, JOB, FP, legacy_name=LEGACY)
    # The newest that has not failed is current; the older one of the same examples, and a
    # failed retry of them, are neither superseded nor foreign.
    assert found.current is MODELS[Standing.OWN_CURRENT]
    assert found.superseded == (MODELS[Standing.OWN_SUPERSEDED],)
    assert found.foreign == (MODELS[Standing.LEGACY_CURRENT], MODELS[Standing.UNRECORDED],
                             MODELS[Standing.OTHER_OWNER])
    # Without this workspace's model, the legacy one is the job's, and is not foreign.
    older = ownership.job_models([m for m in listing if m.owner != ME], ME, JOB, FP, LEGACY)
    assert older.current is MODELS[Standing.LEGACY_CURRENT]
    assert older.foreign == (MODELS[Standing.UNRECORDED], MODELS[Standing.OTHER_OWNER])


def test_current_is_the_newest_that_has_not_failed_else_the_newest():
    first = model("tunedModels/a", created="2024-05-01T00:00:00Z")
    failed = model("tunedModels/b", state=FAILED, created="2024-05-03T00:00:00Z")
    training = model("tunedModels/c", state=CREATING, created="2024-05-02T00:00:00Z")
    assert ownership.current_model([first, failed, training], ME, JOB, FP) is training
    assert ownership.current_model([failed], ME, JOB, FP) is failed
    assert ownership.current_model([MODELS[Standing.OTHER_OWNER]], ME, JOB, FP) is None


def test_ids_a_jobs_model_may_take_are_the_same_each_run_and_differ_by_owner():
    identity = Identity(FP, "demo-ffffffff", 15)
    mine, theirs = (ownership.tuned_model_ids(identity, ME),
                    ownership.tuned_model_ids(identity, THEM))
    assert mine[0] == theirs[0] == "demo-ffffffff"  # the id every model had before owners
    assert len(mine) == ownership.MODEL_ID_CHOICES and len(set(mine)) == len(mine)
    assert set(mine[1:]).isdisjoint(theirs[1:])
    assert all(i.startswith("demo-") and len(i) == len(mine[0]) for i in mine + theirs)
    assert ownership.tuned_model_ids(identity, ME) == mine

