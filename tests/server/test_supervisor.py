"""A training worker that dies while starting fails the queued jobs with the reason, after a few
tries with growing pauses, instead of being respawned forever; the service keeps answering.

The worker is made to die the way a broken install would, without a test hook in the service: a
``sitecustomize`` module on the service's PYTHONPATH exits with code 3 in multiprocessing's
spawned children (the workers) only.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from tests.server.test_app import create, tutorial_body
from tests.service import LocalService

DIE_IN_SPAWNED_CHILDREN = """
import os, sys
if "--multiprocessing-fork" in sys.orig_argv:
    sys.stderr.write("sitecustomize: this worker cannot start\\n")
    sys.stderr.flush()
    os._exit(3)
"""


@pytest.fixture
def broken_service(tiny_model, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(DIE_IN_SPAWNED_CHILDREN)
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    running = LocalService(tmp_path / "state", "--model", str(tiny_model),
                           env={"PYTHONPATH": path}).start()
    yield running
    running.stop()


@pytest.mark.timeout(120)
def test_a_worker_that_cannot_start_fails_the_queued_jobs_with_the_reason(broken_service):
    with broken_service.client() as http:
        started = time.monotonic()
        first = create(http, tutorial_body(epochs=1), "never-trains").json()
        done = broken_service.wait_done(first["name"], timeout=60)
        assert done["error"]["code"] == 13
        reason = re.fullmatch(
            r"No training worker could start: the worker exited with code 3 while starting, "
            r"(\d+) times in a row\. See the service's log \(its standard error\) for its "
            r"error; once that is fixed, create the job again\.", done["error"]["message"])
        assert reason and int(reason[1]) >= 3, done["error"]
        assert http.get("/v1beta/tunedModels/never-trains").json()["state"] == "FAILED"

        # The service keeps answering, and a job queued later fails as promptly.
        assert http.get("/v1beta/models").status_code == 200
        second = create(http, tutorial_body(epochs=1), "neither").json()
        assert "error" in broken_service.wait_done(second["name"], timeout=10)
        assert time.monotonic() - started < 60
    log = broken_service.log
    assert "sitecustomize: this worker cannot start" in log
    assert re.search(r"training worker \d+ exited with code 3 while starting \(1 in a row\); "
                     r"starting another in 1s", log)
    assert re.search(r"\(2 in a row\); starting another in 2s", log)
    assert "failed 1 queued job(s), as no training worker can start: never-trains" in log


@pytest.mark.timeout(60)
def test_respawns_back_off_rather_than_loop(broken_service):
    time.sleep(12)
    # Pauses of 1, 2, 4, 8 s: at most five starts in twelve seconds, not one a second.
    assert 3 <= failures(broken_service) <= 5


def failures(service) -> int:
    counts = re.findall(r"while starting \((\d+) in a row\)", service.log)
    return int(counts[-1]) if counts else 0
