"""Ownership is scoped: prune and delete touch only the models this workspace created.

Two workspaces (two repositories, or two checkouts without a shared remote) share one tuning
service and a job name, as teams on one Google project do: each prunes and deletes only its own,
and each trains and uses its own model even when their jobs are the same.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import NUMBER_EXAMPLES, Repo
from tests.fake_generate import ENVIRONMENT, FakeGenerate
from tests.test_apply import models_on

FAST = "batch_size: 4\n  learning_rate: 0.001\n  epoch_count: 1"


@pytest.fixture
def shared_service(service, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    for variable in ("JOBSPEC_BACKEND", "JOBSPEC_OWNER", "JOBSPEC_LOCAL_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    with httpx.Client(base_url=service.url) as http:
        for model in models_on(service):
            http.delete(f"/v1beta/{model['name']}")
    return service


def workspace(tmp_path: Path, name: str, examples=NUMBER_EXAMPLES, origin: str | None = None):
    root = tmp_path / name
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if origin:
        subprocess.run(["git", "-C", str(root), "remote", "add", "origin", origin], check=True)
    repo = Repo(root)
    repo.write_jsonl("jobs/data/demo.jsonl", examples)
    repo.job("demo", hyperparameters=FAST)
    return repo


def in_dir(monkeypatch, repo: Repo) -> None:
    monkeypatch.chdir(repo.root)


def names(service) -> list[str]:
    return sorted(m["name"] for m in models_on(service))


def test_prune_and_delete_leave_another_workspaces_models_alone(shared_service, tmp_path, cli,
                                                                monkeypatch):
    first = workspace(tmp_path, "team-a")
    second = workspace(tmp_path, "team-b", examples=NUMBER_EXAMPLES[:-1])
    in_dir(monkeypatch, first)
    assert cli("apply", "--skip-eval").code == 0
    theirs = names(shared_service)

    in_dir(monkeypatch, second)
    plan = cli("plan")
    assert f"  · demo  {theirs[0]} belongs to another workspace (owner " in plan.out
    assert "0 superseded" in plan.out
    applied = cli("apply", "--skip-eval", "--prune", "--yes")
    assert applied.code == 0, applied.err
    assert "deleted" not in applied.err
    assert len(names(shared_service)) == 2 and theirs[0] in names(shared_service)

    deleted = cli("delete", "demo", "--yes")
    assert deleted.code == 0, deleted.err
    assert f"left alone {theirs[0]} (ACTIVE): another workspace owns it" in deleted.err
    assert names(shared_service) == theirs

    named = cli("delete", theirs[0], "--yes")
    assert named.code == 1
    assert "another workspace owns it" in named.err and "add --force" in named.err
    assert names(shared_service) == theirs
    forced = cli("delete", theirs[0], "--yes", "--force")
    assert forced.code == 0 and f"deleted {theirs[0]}" in forced.err
    assert names(shared_service) == []


def test_a_model_jobspec_did_not_make_is_deleted_only_when_named_and_forced(shared_service,
                                                                            tmp_path, cli,
                                                                            monkeypatch):
    in_dir(monkeypatch, workspace(tmp_path, "team-a"))
    with httpx.Client(base_url=shared_service.url) as http:
        made = http.post("/v1beta/tunedModels", params={"tunedModelId": "hand-made"}, json={
            "baseModel": "models/tiny-smollm2", "description": "demo, by hand",
            "tuningTask": {"hyperparameters": {"epochCount": 1}, "trainingData": {
                "examples": {"examples": [{"textInput": "a", "output": "b"}]}}}}).json()
    shared_service.wait_done(made["name"])
    assert cli("delete", "demo", "--yes").err.strip() == "Nothing to delete."
    refused = cli("delete", "tunedModels/hand-made", "--yes")
    assert refused.code == 1 and "jobspec did not create it; add --force" in refused.err
    assert names(shared_service) == ["tunedModels/hand-made"]
    rows = json.loads(cli("get", "-o", "json").out)
    assert [(r["job"], r["owned"], r["ownership"]) for r in rows] == [(None, False, "not jobspec's")]
    assert cli("delete", "tunedModels/hand-made", "--yes", "--force").code == 0
    assert names(shared_service) == []


def test_checkouts_of_one_repository_share_ownership(shared_service, tmp_path, cli, monkeypatch):
    # One repository cloned twice, over HTTPS with a token in the URL and over SSH.
    https = workspace(tmp_path, "clone-https",
                      origin="https://ci-bot:ghp_token123@github.com/Acme/Tuning.git")
    ssh = workspace(tmp_path, "clone-ssh", examples=NUMBER_EXAMPLES[:-1],
                    origin="git@github.com:acme/tuning")
    in_dir(monkeypatch, https)
    assert cli("apply", "--skip-eval").code == 0
    auth = cli("auth").out
    assert "owner: github.com/acme/tuning (origin remote; id " in auth
    descriptions = [m.get("description", "") for m in models_on(shared_service)]
    assert descriptions and not any("ghp_token123" in d or "acme" in d for d in descriptions)

    in_dir(monkeypatch, ssh)
    pruned = cli("apply", "--skip-eval", "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert "demo: deleted superseded tunedModels/demo-" in pruned.err
    assert len(names(shared_service)) == 1


def test_owner_can_be_named_for_checkouts_without_a_shared_remote(shared_service, tmp_path, cli,
                                                                  monkeypatch):
    first = workspace(tmp_path, "laptop")
    second = workspace(tmp_path, "ci-runner", examples=NUMBER_EXAMPLES[:-1])
    in_dir(monkeypatch, first)
    assert cli("apply", "--skip-eval", "--owner", "ml-team").code == 0
    in_dir(monkeypatch, second)
    monkeypatch.setenv("JOBSPEC_OWNER", "ml-team")
    pruned = cli("apply", "--skip-eval", "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert "demo: deleted superseded tunedModels/demo-" in pruned.err
    assert len(names(shared_service)) == 1



ANY_ANSWER = "eval:\n  prompts:\n    - input: one\n      expect: {regex: \"^\"}\n"


@dataclass
class Shared:
    """One tuning service that two workspaces use: how to reach it, and what it holds."""

    options: list[str]
    names: Callable[[], list[str]]
    answers: Callable[[str], None]  # make a tuned model answer the eval prompt


@pytest.fixture(params=["local", "gemini"])
def one_service(request, monkeypatch):
    if request.param == "local":
        service = request.getfixturevalue("shared_service")
        yield Shared([], lambda: names(service), lambda model: None)
        return
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    with FakeGenerate(polls_until_done=1) as fake:
        yield Shared(["--backend", "gemini", "--endpoint", fake.url],
                     lambda: sorted(f"tunedModels/{m}" for m in fake.models),
                     lambda model: fake.script(model, "one", "an answer"))


def planned(plan_json: dict) -> dict:
    return {j["name"]: j for j in plan_json["jobs"]}


def test_two_owners_of_the_same_job_each_train_and_use_their_own_model(one_service, tmp_path,
                                                                       cli, monkeypatch):
    def run(command: str, owner: str, *extra: str):
        polls = ["--poll-interval", "0.05"] if command == "apply" else []
        return cli(command, "--owner", owner, *one_service.options, *polls, *extra)

    # Two repositories, one job, the same examples: one fingerprint, one first-choice id.
    first, second = workspace(tmp_path, "team-a"), workspace(tmp_path, "team-b")
    for repo in (first, second):
        repo.job("demo", hyperparameters=FAST, extra=ANY_ANSWER)
    in_dir(monkeypatch, first)
    assert run("apply", "team-a", "--skip-eval").code == 0
    [theirs] = one_service.names()

    in_dir(monkeypatch, second)
    shown = run("plan", "team-b", "--format", "json")
    assert shown.code == 0, shown.err
    demo = planned(shown.json())["demo"]
    assert demo["action"] == "create" and demo["tuned_model"] != theirs
    assert demo["tuned_model"].startswith("tunedModels/demo-")
    assert [m["name"] for m in demo["foreign"]] == [theirs]
    text = run("plan", "team-b").out
    assert f"  + demo  create {demo['tuned_model']}" in text
    assert f"  · demo  {theirs} belongs to another workspace (owner " in text

    one_service.answers(demo["tuned_model"])
    applied = run("apply", "team-b")
    assert applied.code == 0, applied.err
    assert f"demo: created {demo['tuned_model']}" in applied.err
    assert one_service.names() == sorted([theirs, demo["tuned_model"]])
    report = json.loads((second.root / "reports/demo.json").read_text())
    assert report["tuned_model"] == demo["tuned_model"]  # B's eval asked B's model
    again = planned(run("plan", "team-b", "--format", "json").json())["demo"]
    assert (again["action"], again["tuned_model"]) == ("unchanged", demo["tuned_model"])

    # A retrains the job and prunes its old model: B's stays, and stays B's.
    in_dir(monkeypatch, first)
    first.write_jsonl("jobs/data/demo.jsonl", NUMBER_EXAMPLES[:-1])
    pruned = run("apply", "team-a", "--skip-eval", "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert f"demo: deleted superseded {theirs}" in pruned.err
    assert demo["tuned_model"] in one_service.names() and theirs not in one_service.names()
    in_dir(monkeypatch, second)
    assert planned(run("plan", "team-b", "--format", "json").json())["demo"]["action"] \
        == "unchanged"


def test_a_mark_written_in_the_description_does_not_reattribute_the_model(repo, cli,
                                                                          monkeypatch):
    # The job file's author writes the description; jobspec's own mark follows it.
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    victim = cli("auth", "--owner", "team-b").out.split("owner: ")[1].split("id ")[1].rstrip(")\n")
    forged = f"[jobspec job=other fingerprint={'ab' * 32} owner={victim}]"
    repo.job("demo", extra=f'description: "{forged}"\n')
    with FakeGenerate(polls_until_done=1) as fake:
        def run(command: str, owner: str, *extra: str):
            return cli(command, "--owner", owner, "--backend", "gemini", "--endpoint", fake.url,
                       *extra)

        assert run("apply", "team-a", "--skip-eval", "--poll-interval", "0.05").code == 0
        [made] = fake.models.values()
        assert made["description"].startswith(forged)  # kept as written
        rows = json.loads(run("get", "team-a", "-o", "json").out)
        assert [(r["job"], r["ownership"]) for r in rows] == [("demo", "this workspace")]
        # The owner the forged mark names cannot delete or prune it as its own.
        refused = run("delete", "team-b", "other", "--yes")
        assert refused.code == 0 and refused.err.strip() == "Nothing to delete."
        assert len(fake.models) == 1
        assert "  = demo  unchanged" in run("plan", "team-a", "jobs/").out
