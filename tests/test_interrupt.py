"""Ctrl-C during apply, pressed in a real terminal (a pseudo-terminal whose line discipline
turns ^C into SIGINT), against the real local service (tiny model): apply exits 130 and prints
the command that resumes; the service trains on; the printed command adopts the same model and
waits for it, and no second model is ever made."""

from __future__ import annotations

import fcntl
import os
import pty
import shlex
import subprocess
import sys
import termios
import threading
import time

import httpx
import pytest

from tests.fake_generate import ENVIRONMENT

RESUME_HEADING = "Interrupted: training goes on in the service. Resume with:"


class Terminal:
    """A command running on a pseudo-terminal that is its controlling terminal."""

    def __init__(self, command: list[str], cwd, env) -> None:
        self.leader, follower = pty.openpty()
        self.process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=follower, stdout=follower, stderr=follower,
            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(follower)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.leader, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def screen(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"never saw {text!r}:\n{self.screen}")
            time.sleep(0.05)

    def press_ctrl_c(self) -> None:
        os.write(self.leader, b"\x03")

    def finish(self, timeout: float) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=5)
        os.close(self.leader)
        return code


def tuned_models(service) -> list[dict]:
    with httpx.Client(base_url=service.url) as http:
        return http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
            "tunedModels", [])


def steps_of(model: dict) -> int:
    snapshots = model.get("tuningTask", {}).get("snapshots", [])
    return snapshots[-1]["step"] if snapshots else 0


def test_ctrl_c_in_a_terminal_then_the_printed_command_resumes(repo, service):
    repo.job(name="patient", hyperparameters="batch_size: 1\n  epoch_count: 5")  # 75 steps
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    env.update(JOBSPEC_LOCAL_URL=service.url, TERM="xterm", NO_COLOR="1")
    command = ["jobspec", "apply", "--report-dir", "ci reports", "--poll-interval", "0.2",
               "--skip-eval"]  # in the order the resume command gives options
    terminal = Terminal([sys.executable, "-m", *command], repo.root, env)
    terminal.wait_for("patient: created tunedModels/patient-", timeout=60)
    terminal.wait_for(" step ", timeout=120)  # training has begun: the live block shows steps
    terminal.press_ctrl_c()
    assert terminal.finish(timeout=10) == 130, terminal.screen
    screen = terminal.screen.replace("\r\n", "\n")
    assert "Traceback" not in screen
    lines = screen.splitlines()
    assert RESUME_HEADING in lines, screen
    printed = lines[lines.index(RESUME_HEADING) + 1].strip()
    assert shlex.split(printed) == command

    [model] = tuned_models(service)
    assert model["state"] == "CREATING", model  # it was still training when interrupted
    seen = steps_of(model)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        [model] = tuned_models(service)
        if steps_of(model) > seen or model["state"] == "ACTIVE":
            break
        time.sleep(0.2)
    assert steps_of(model) > seen or model["state"] == "ACTIVE", "the service stopped training"

    words = shlex.split(printed)
    resumed = subprocess.run([sys.executable, "-m", *words], cwd=repo.root, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"  ~ patient  in progress {model['name']}" in resumed.stderr
    assert "created" not in resumed.stderr
    assert "Apply complete: 1/1 jobs ACTIVE" in resumed.stderr
    assert [m["name"] for m in tuned_models(service)] == [model["name"]]  # no second model
    assert (repo.root / "ci reports/patient.json").exists()
