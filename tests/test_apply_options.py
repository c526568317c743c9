"""apply's options: what it accepts (argparse errors exit 64), the defaults --help shows, and
the resume command Ctrl-C prints, which repeats every option that matters. Against
fake_generate (a contract fake of the Gemini API's tuned models), whose training never ends."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ctrl_c_works
from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job


DURATION = "expected a positive duration in seconds, or with a unit: 90s, 30m, 24h, 2d"
PARALLEL = "expected a whole number from 1 to 64"


@pytest.mark.parametrize("option, value, complaint", [
    ("--poll-interval", "0", DURATION), ("--poll-interval", "-1", DURATION),
    ("--poll-interval", "soon", DURATION), ("--poll-interval", "inf", DURATION),
    ("--timeout", "0", DURATION), ("--timeout", "nan", DURATION),
    ("--timeout", "1e999", DURATION),
    ("--parallel", "0", PARALLEL), ("--parallel", "65", PARALLEL), ("--parallel", "two", PARALLEL),
])
def test_insane_values_are_usage_errors(repo, cli, option, value, complaint):
    repo.job()
    result = cli("apply", option, value)
    assert result.code == 64
    assert result.err.splitlines()[-1] == \
        f"jobspec apply: error: argument {option}: {value!r}: {complaint}"


def test_help_shows_the_defaults(cli):
    help_text = " ".join(cli("apply", "--help").out.split())
    assert ("--timeout DURATION stop waiting for training after this long, in seconds or with a "
            "unit (90s, 30m, 24h); training goes on in the service, and apply exits 1 "
            "(default: 24h)") in help_text
    assert "--parallel N create up to N models at once, 1..64 (default: 4)" in help_text
    assert "--poll-interval SECONDS first wait between polls, growing 1.5x up to 12x it; " \
           "positive (default: the backend's: 0.5s local, 5s gemini, 30s vertex)" in help_text


@pytest.fixture
def training_for_ever(repo, monkeypatch):
    repo.job(name="good")
    repo.job(name="broken", hyperparameters="batch_size: 1\n  epoch_count: 2")
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env.update(GEMINI_API_KEY="fake-key-for-fake-generate", JOBSPEC_OWNER="team a")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with FakeGenerate() as fake:
        fake.env = env
        yield fake


def interrupt_apply(fake, cwd, arguments: list[str], polls: int) -> tuple[int, str]:
    """Run apply until ``polls`` jobs are polled, press Ctrl-C; its exit code and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "jobspec", "apply", *arguments], cwd=cwd,
                               env=fake.env, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_works)
    deadline = time.monotonic() + 60
    while len(fake.polls) < polls and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1]
    process.send_signal(signal.SIGINT)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"apply still ran 10 s after Ctrl-C: {process.communicate()[1]}")
    return process.returncode, err


def printed_resume_command(err: str) -> list[str]:
    lines = err.splitlines()
    assert "Interrupted: training goes on in the service. Resume with:" in lines, err
    return shlex.split(lines[lines.index("Interrupted: training goes on in the service. "
                                         "Resume with:") + 1])


def test_the_resume_command_repeats_every_option_that_matters(repo, training_for_ever, cli):
    fake = training_for_ever
    serve_job(fake, cli, "jobs/broken.yaml", state="FAILED")
    arguments = ["jobs/", "--target", "good", "--target", "broken", "--backend", "gemini",
                 "--endpoint", fake.url, "--owner", "team a", "--report-dir", "my reports",
                 "--allow-outside-paths", "--skip-eval", "--timeout", "2h",
                 "--poll-interval", "0.05", "--parallel", "2", "--recreate-failed", "--prune",
                 "--yes", "--quiet"]
    code, err = interrupt_apply(fake, repo.root, arguments, polls=2)
    assert code == 130, err
    assert "broken: deleted failed tunedModels/broken-" in err
    assert printed_resume_command(err) == [
        "jobspec", "apply", "jobs/", "--target", "good", "--target", "broken", "--backend",
        "gemini", "--endpoint", fake.url, "--owner", "team a", "--report-dir", "my reports",
        "--timeout", "7200", "--poll-interval", "0.05", "--parallel", "2",
        "--allow-outside-paths", "--skip-eval", "--recreate-failed", "--prune", "--yes",
        "--quiet"]
    assert "'my reports'" in err and "'team a'" in err  # shell-quoted


def test_the_resume_command_leaves_out_what_no_longer_matters(repo, training_for_ever):
    fake = training_for_ever
    arguments = ["--backend", "gemini", "--endpoint", fake.url, "--recreate-failed", "--yes",
                 "--timeout", "24h", "--parallel", "4", "--poll-interval", "0.05"]
    code, err = interrupt_apply(fake, repo.root, arguments, polls=2)
    assert code == 130, err
    # No failed model to recreate, --yes confirms nothing without --prune, defaults are defaults.
    assert printed_resume_command(err) == [
        "jobspec", "apply", "--backend", "gemini", "--endpoint", fake.url,
        "--poll-interval", "0.05"]
