"""Ownership is scoped: prune and delete touch only the models this workspace created.

Two workspaces (two repositories, or two checkouts without a shared remote) share one tuning
service and a job name, as teams on one Google project do: each prunes and deletes only its own.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import NUMBER_EXAMPLES, Repo
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
