"""Bad networks through the CLI, against fake_unavailable (the Gemini API's front end failing
in Google's error envelope): what is retried, for how long, how often, and how a user stops it.
The local backend is pointed at the fake with JOBSPEC_LOCAL_URL, as an operator would."""

from __future__ import annotations

import email.utils
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ctrl_c_works
from tests.fake_generate import ENVIRONMENT
from tests.fake_unavailable import FakeUnavailable


@pytest.fixture
def job_repo(repo, monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    repo.job(name="flaky")
    return repo


def plan_against(cli, monkeypatch, fake, deadline: str | None = None):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", fake.url)
    if deadline is not None:
        monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", deadline)
    started = time.monotonic()
    result = cli("plan")
    return result, time.monotonic() - started


def test_503_for_ever_stops_at_the_deadline(job_repo, cli, monkeypatch):
    with FakeUnavailable(503) as fake:
        result, took = plan_against(cli, monkeypatch, fake, deadline="3")
    assert result.code == 1
    assert result.err.startswith("jobspec: backend error: 503 UNAVAILABLE: The service is "
                                 "currently unavailable. (gave up after ")
    assert "in 3s, the retry deadline)" in result.err
    assert "Traceback" not in result.err
    assert 3 <= took < 4.5, took  # never sleeps past the deadline
    assert 2 <= len(fake.requests) <= 8
    assert fake.requests[1].at - fake.requests[0].at >= 0.5  # backoff, not a burst


def test_503_for_ever_stops_at_the_attempt_limit(job_repo, cli, monkeypatch):
    # The service asks for a short wait each time: the attempt limit ends it, not the deadline.
    with FakeUnavailable(503, retry_after="0.05") as fake:
        result, took = plan_against(cli, monkeypatch, fake)
    assert result.code == 1
    assert result.err.strip().endswith("The service is currently unavailable. "
                                       "(gave up after 8 attempts)")
    assert len(fake.requests) == 8
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:])]
    assert all(gap >= 0.045 for gap in gaps), gaps  # each Retry-After honoured
    assert took < 5


def test_a_400_is_never_retried(job_repo, cli, monkeypatch):
    with FakeUnavailable(400) as fake:
        result, _ = plan_against(cli, monkeypatch, fake)
    assert result.code == 1
    assert result.err == ("jobspec: backend error: 400 INVALID_ARGUMENT: Request contains an "
                          "invalid argument.\n")
    assert len(fake.requests) == 1


def test_retry_after_past_the_deadline_gives_up_at_once(job_repo, cli, monkeypatch):
    with FakeUnavailable(429, retry_after="3600") as fake:
        result, took = plan_against(cli, monkeypatch, fake, deadline="5")
    assert result.code == 1
    assert re.fullmatch(
        r"jobspec: backend error: 429 RESOURCE_EXHAUSTED: Resource has been exhausted \(e\.g\. "
        r"check quota\)\. \(the service asked to retry after 3600s, longer than what is left of "
        r"the retry deadline \((5|4\.\d)s\); gave up after 1 attempt\)\n", result.err), result.err
    assert len(fake.requests) == 1 and took < 2


def test_retry_after_longer_than_the_longest_wait_gives_up_at_once(job_repo, cli, monkeypatch):
    with FakeUnavailable(503, retry_after="3600") as fake:
        result, took = plan_against(cli, monkeypatch, fake)  # default deadline: 300 s
    assert result.code == 1
    assert ("(the service asked to retry after 3600s, longer than the longest wait between "
            "attempts (60s); gave up after 1 attempt)") in result.err
    assert len(fake.requests) == 1 and took < 2


def test_retry_after_as_an_http_date_is_honoured(job_repo, cli, monkeypatch):
    soon = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s away
    with FakeUnavailable(503, retry_after=soon) as fake:
        result, _ = plan_against(cli, monkeypatch, fake, deadline="2.5")
    assert result.code == 1 and "Traceback" not in result.err
    assert len(fake.requests) >= 2
    assert fake.requests[1].at - fake.requests[0].at >= 0.9


@pytest.mark.parametrize("value", ["soon", "", "-5", "nan", "Mon, 99 Foo 2024 99:99:99 GMT"])
def test_a_retry_after_that_is_no_number_or_date_is_ignored(job_repo, cli, monkeypatch, value):
    with FakeUnavailable(503, retry_after=value) as fake:
        result, took = plan_against(cli, monkeypatch, fake, deadline="1.5")
    assert result.code == 1
    assert result.err.startswith("jobspec: backend error: 503 UNAVAILABLE: The service is "
                                 "currently unavailable. (gave up after ")
    assert "Traceback" not in result.err
    assert len(fake.requests) >= 2 and took < 3  # retried with backoff, as without the header


def run_until_waiting(fake, repo_root, requests: int):
    """jobspec apply in its own process, against ``fake``, once ``requests`` requests reached
    it and it waits to retry the last (the service asked for 50 s)."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env["JOBSPEC_LOCAL_URL"] = fake.url
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT then prints every thread's stack (see below)
    process = subprocess.Popen([sys.executable, "-m", "jobspec", "apply", "--skip-eval"],
                               cwd=repo_root, env=env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_works)
    deadline = time.monotonic() + 60
    while len(fake.requests) < requests and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    return process


@pytest.mark.parametrize("listing_works", [False, True], ids=["while planning", "while creating"])
def test_ctrl_c_ends_a_retry_wait_at_once(job_repo, listing_works):
    with FakeUnavailable(503, retry_after="50", listing_works=listing_works) as fake:
        process = run_until_waiting(fake, job_repo.root, requests=2 if listing_works else 1)
        assert process.poll() is None, process.stderr.read()
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)  # where it is stuck, from faulthandler
            try:
                stacks = process.communicate(timeout=10)[1]
            except subprocess.TimeoutExpired:
                process.kill()
                stacks = process.communicate()[1]
            pytest.fail(f"apply still ran 5 s after Ctrl-C ({len(fake.requests)} requests "
                        f"reached the fake):\n{stacks}")
        took = time.monotonic() - interrupted
    assert process.returncode == 130, err
    assert took < 2, took
    assert "Traceback" not in err
    if listing_works:  # training had been asked for: say how to resume
        assert "Interrupted: training goes on in the service. Resume with:\n" \
               "  jobspec apply --skip-eval\n" in err
        # The listing, then the create's first request: whether the service has the
        # examples' upload already (backends/uploads.py).
        assert [r.method for r in fake.requests] == ["GET", "GET"]
        assert fake.requests[1].path.startswith("/v1beta/uploads/")
    else:
        assert err.strip().endswith("jobspec: interrupted")
        assert len(fake.requests) == 1
