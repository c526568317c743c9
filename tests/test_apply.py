"""`jobspec plan` / `apply` / `get` / `delete` through the CLI, against the real local service
(tiny model), reached over HTTP exactly as Google would be."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from jobspec.backends.tunedmodels import marker
from tests.conftest import ROOT


@pytest.fixture
def example_repo(repo, service, monkeypatch):
    """The shipped example jobs in a scratch repository, pointed at the test's local service."""
    shutil.copytree(ROOT / "jobs", repo.root / "jobs")
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    with httpx.Client(base_url=service.url) as http:  # a clean service for each test
        for model in http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
                "tunedModels", []):
            http.delete(f"/v1beta/{model['name']}")
    return repo


def models_on(service) -> list[dict]:
    with httpx.Client(base_url=service.url) as http:
        return http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get("tunedModels", [])


def test_apply_reaches_active_then_changes_nothing(example_repo, service, cli):
    plan = cli("plan", "--detailed-exitcode")
    assert plan.code == 2
    assert "  + antonyms          create tunedModels/antonyms-" in plan.out
    assert plan.out.strip().endswith("Plan: 2 to create, 0 unchanged, 0 in progress, 0 failed, 0 superseded.")
    assert models_on(service) == []  # plan changed nothing

    first = cli("apply", "--skip-eval", "jobs/")
    assert first.code == 0, first.err
    assert "Apply complete: 2/2 jobs ACTIVE" in first.err
    assert "number-generator: created tunedModels/number-generator-" in first.err
    assert sorted(m["state"] for m in models_on(service)) == ["ACTIVE", "ACTIVE"]

    second = cli("apply", "--skip-eval", "jobs/")
    assert second.code == 0
    assert "created" not in second.err
    assert "(1 requests)" in second.err  # one list call, nothing else
    again = cli("plan", "--detailed-exitcode")
    assert again.code == 0
    assert "Plan: 0 to create, 2 unchanged" in again.out


def test_editing_one_example_plans_exactly_one_create(example_repo, service, cli):
    assert cli("apply", "--skip-eval", "jobs/").code == 0
    data = example_repo.root / "jobs/data/number-generator.jsonl"
    data.write_text(data.read_text().replace('"output": "4"', '"output": "four"'))
    plan = cli("plan", "--format", "json", "--detailed-exitcode")
    assert plan.code == 2
    body = plan.json()
    assert [(j["name"], j["action"]) for j in body["jobs"]] == [
        ("antonyms", "unchanged"), ("number-generator", "create")]
    assert body["jobs"][1]["reasons"] == ["training examples changed"]
    assert body["summary"] == {"create": 1, "unchanged": 1, "in_progress": 0, "failed": 0,
                               "superseded": 1}


def test_plan_says_which_hyperparameter_changed(example_repo, service, cli):
    assert cli("apply", "--skip-eval", "--target", "antonyms").code == 0
    job = example_repo.root / "jobs/antonyms.yaml"
    job.write_text(job.read_text().replace("epoch_count: 8", "epoch_count: 6"))
    plan = cli("plan", "--target", "antonyms")
    assert "      because: epoch_count 8 → 6" in plan.out
    assert "  - antonyms  superseded tunedModels/antonyms-" in plan.out
    markdown = cli("plan", "--format", "markdown").out
    assert "| + | `antonyms` | create |" in markdown and "epoch_count 8 → 6" in markdown


def test_prune_deletes_only_superseded_models_of_jobs_in_scope(example_repo, service, cli):
    assert cli("apply", "--skip-eval").code == 0
    with httpx.Client(base_url=service.url) as http:  # a model jobspec did not create
        http.post("/v1beta/tunedModels", params={"tunedModelId": "antonyms-hand-made"}, json={
            "baseModel": "models/tiny-smollm2", "tuningTask": {"trainingData": {"examples": {
                "examples": [{"textInput": "a", "output": "b"}]}}}})
    for name in ("antonyms", "number-generator"):
        job = example_repo.root / f"jobs/{name}.yaml"
        job.write_text(job.read_text().replace("epoch_count: ", "epoch_count: 1"))
    assert cli("apply", "--skip-eval", "--prune", "--target", "antonyms").code == 64  # no --yes, no terminal
    result = cli("apply", "--skip-eval", "--prune", "--yes", "--target", "antonyms")
    assert result.code == 0, result.err
    assert "antonyms: deleted superseded tunedModels/antonyms-" in result.err
    names = sorted(m["name"] for m in models_on(service))
    assert "tunedModels/antonyms-hand-made" in names
    assert sum(n.startswith("tunedModels/antonyms-") for n in names) == 2  # new + hand-made
    assert sum(n.startswith("tunedModels/number-generator-") for n in names) == 1


def test_prune_keeps_the_old_model_until_its_replacement_is_active(example_repo, service, cli):
    assert cli("apply", "--skip-eval", "--target", "antonyms").code == 0
    job = example_repo.root / "jobs/antonyms.yaml"
    job.write_text(job.read_text().replace("epoch_count: 8", "epoch_count: 7"))
    result = cli("apply", "--skip-eval", "--target", "antonyms", "--prune", "--yes", "--no-wait")
    assert "antonyms: kept superseded models: tunedModels/antonyms-" in result.err
    assert "deleted" not in result.err
    assert len(models_on(service)) == 2


def test_get_and_delete(example_repo, service, cli):
    assert cli("apply", "--skip-eval", "--target", "antonyms").code == 0
    table = cli("get").out.splitlines()
    assert table[0].split() == ["NAME", "STATE", "STEP", "LOSS", "BASE", "MODEL", "JOB", "OWNER",
                                "TRAINED", "ON"]
    assert "ACTIVE" in table[1] and table[1].endswith("antonyms  this workspace  cpu (fp32)")
    rows = json.loads(cli("get", "antonyms", "-o", "json").out)
    assert [r["job"] for r in rows] == ["antonyms"] and rows[0]["step"] == 24
    assert cli("delete", "jobs/antonyms.yaml").code == 64
    deleted = cli("delete", "jobs/antonyms.yaml", "--yes")
    assert deleted.code == 0 and "deleted tunedModels/antonyms-" in deleted.err
    assert models_on(service) == []


def occupy_with_failed_model(service, model_id: str, description: str) -> None:
    """Create ``model_id`` on the service with a job that is cancelled at once (FAILED)."""
    with service.client() as http:
        operation = http.post("/v1beta/tunedModels", params={"tunedModelId": model_id},
                              json={"baseModel": "models/tiny-smollm2", "description": description,
                                    "tuningTask": {"hyperparameters": {"epochCount": 1000},
                                                   "trainingData": {"examples": {"examples": [
                                                       {"textInput": "a", "output": "b"}]}}}}).json()
        http.post(f"/v1/{operation['name']}:cancel")
        service.wait_done(operation["name"])


def test_failed_models_are_reported_and_recreated_on_request(example_repo, service, cli):
    show = cli("show", "jobs/antonyms.yaml", "--format", "json").json()
    owner = cli("auth").out.split("owner: ")[1].split("id ")[1].rstrip(")\n")
    occupy_with_failed_model(service, show["tuned_model_id"], marker(
        "antonyms", show["fingerprint"], owner))  # what an earlier, failed apply leaves
    failed = cli("apply", "--skip-eval", "--target", "antonyms")
    assert failed.code == 1
    assert "antonyms: FAILED: the model's tuning failed; re-run with --recreate-failed" in failed.err
    assert "  ! antonyms  failed" in cli("plan", "--target", "antonyms").out
    retried = cli("apply", "--skip-eval", "--target", "antonyms", "--recreate-failed")
    assert retried.code == 0, retried.err
    assert f"antonyms: deleted failed tunedModels/{show['tuned_model_id']}" in retried.err


def test_recreate_failed_never_deletes_a_model_jobspec_did_not_make(example_repo, service, cli):
    show = cli("show", "jobs/antonyms.yaml", "--format", "json").json()
    occupy_with_failed_model(service, show["tuned_model_id"], "made by hand")
    hand_made = f"tunedModels/{show['tuned_model_id']}"
    # Not the job's model (it has no jobspec mark): the job's own takes another id.
    plan = cli("plan", "--target", "antonyms", "--recreate-failed").out
    assert "  + antonyms  create tunedModels/antonyms-" in plan and hand_made not in plan
    retried = cli("apply", "--skip-eval", "--target", "antonyms", "--recreate-failed",
                  "--no-wait")
    assert retried.code == 0, retried.err
    assert "antonyms: created tunedModels/antonyms-" in retried.err
    assert "deleted" not in retried.err
    states = {m["name"]: m["state"] for m in models_on(service)}
    assert len(states) == 2 and states[hand_made] == "FAILED"


def test_no_wait_submits_and_returns(example_repo, service, cli):
    result = cli("apply", "--skip-eval", "--no-wait", "--target", "number-generator")
    assert result.code == 0
    assert "number-generator: created tunedModels/number-generator-" in result.err
    assert "number-generator: CREATING: submitted; not waited for" in result.err
    assert [m["name"].rsplit("-", 1)[0] for m in models_on(service)] == [
        "tunedModels/number-generator"]


def test_backend_errors_and_usage(example_repo, cli, monkeypatch):
    assert cli("apply", "--skip-eval", "--target", "nope").code == 64
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "1")
    result = cli("plan")
    assert result.code == 1
    assert result.err.startswith("jobspec: backend error: ConnectError talking to http://127.0.0.1:9")


def test_an_example_past_the_models_context_is_shown_at_its_data_file_line(example_repo, service,
                                                                          cli):
    examples = [("1", "2"), ("2", "3"), (" ".join(["word"] * 700), "long"), ("4", "5")]
    example_repo.write_jsonl("jobs/data/demo.jsonl", examples)
    example_repo.job("demo")
    result = cli("apply", "--skip-eval", "--target", "demo")
    assert result.code == 1
    line = next(l for l in result.err.splitlines() if l.startswith("demo: "))
    assert line.startswith("demo: jobs/data/demo.jsonl:3")
    assert "the local backend refused this example (400 INVALID_ARGUMENT)" in line
    # The examples went as an upload, whose line 3 (index 2) the service refused.
    assert "training_data.upload[2] is " in line and "over the model's limit of 512 tokens" in line
    assert models_on(service) == []
