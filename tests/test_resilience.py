"""apply under faults and interruptions: it converges, never duplicates, and stays bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.faultproxy import FaultProxy
from tests.test_apply import example_repo, models_on  # noqa: F401 - fixture

__all__ = ["example_repo"]


def test_apply_converges_through_a_faulty_network(example_repo, service, cli, monkeypatch):
    with FaultProxy(service.url, rate=0.35) as proxy:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", proxy.url)
        result = cli("apply", "--skip-eval", "jobs/")
        assert result.code == 0, result.err
        assert "Apply complete: 2/2 jobs ACTIVE" in result.err
        # The first create reached the service but its answer was lost: the retry adopts it.
        assert "which an earlier request already created" in result.err
        again = cli("apply", "--skip-eval", "jobs/")
        assert again.code == 0, again.err
    assert all(count > 0 for count in proxy.injected.values()), proxy.injected
    names = sorted(m["name"] for m in models_on(service))
    assert len(names) == 2 and all(m["state"] == "ACTIVE" for m in models_on(service))
    assert proxy.requests < 150, (proxy.requests, proxy.injected)


def test_kill_minus_9_of_apply_then_apply_again_resumes(example_repo, service):
    job = example_repo.root / "jobs/number-generator.yaml"
    job.write_text(job.read_text().replace("epoch_count: 5", "epoch_count: 150")
                   .replace("batch_size: 2", "batch_size: 1"))
    env = {**os.environ, "JOBSPEC_LOCAL_URL": service.url}
    command = [sys.executable, "-m", "jobspec", "apply", "jobs/", "--parallel", "2", "--skip-eval"]
    first = subprocess.Popen(command, cwd=example_repo.root, env=env, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=service.url) as http:
        while time.monotonic() < deadline:
            models = http.get("/v1beta/tunedModels").json().get("tunedModels", [])
            training = [m for m in models if m["name"].startswith("tunedModels/number-generator-")
                        and m.get("tuningTask", {}).get("snapshots")]
            if training:
                break
            time.sleep(0.05)
    assert training, "the job never started training"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert training[0]["state"] == "CREATING"

    second = subprocess.run(command, cwd=example_repo.root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "number-generator: created" not in second.stderr
    assert "  ~ number-generator  in progress" in second.stderr
    names = [m["name"] for m in models_on(service)]
    assert sorted(n.rsplit("-", 1)[0] for n in names) == [
        "tunedModels/antonyms", "tunedModels/number-generator"]
