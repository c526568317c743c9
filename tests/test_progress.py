"""apply's progress display in a real terminal (a pseudo-terminal), against the local service."""

from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys

from tests.conftest import ROOT


def run_in_terminal(command, cwd, env) -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=follower, stdout=follower,
                               stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    process.wait(timeout=120)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_live_display_on_a_terminal_and_no_color(repo, service):
    shutil.copytree(ROOT / "jobs", repo.root / "jobs")
    job = repo.root / "jobs/antonyms.yaml"
    job.write_text(job.read_text().replace("epoch_count: 8", "epoch_count: 60"))
    env = {**os.environ, "JOBSPEC_LOCAL_URL": service.url, "TERM": "xterm"}
    env.pop("NO_COLOR", None)
    command = [sys.executable, "-m", "jobspec", "apply", "--skip-eval", "--target", "antonyms"]
    screen = run_in_terminal(command, repo.root, env)
    assert "\x1b[" in screen and "F\x1b[J" in screen  # the block is redrawn in place
    assert "\x1b[32mantonyms: tunedModels/antonyms-" in screen  # ACTIVE in green
    job.write_text(job.read_text().replace("epoch_count: 60", "epoch_count: 61"))
    plain = run_in_terminal(command, repo.root, {**env, "NO_COLOR": "1"})
    assert "\x1b[32m" not in plain and "is ACTIVE" in plain
