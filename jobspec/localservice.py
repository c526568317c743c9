"""Finding, or starting, the local tuning service that the `local` backend talks to.

``JOBSPEC_LOCAL_URL`` names a running service. Without it, jobspec uses the one it started
before for this directory (recorded in ``.jobspec/local/service.json``) or starts one: a
separate background process on a free loopback port, as a user would with `jobspec serve`.
It stays up for later commands (training continues if apply is interrupted) and exits by itself
after a while with nothing to do.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from .errors import BackendError

URL_VARIABLE = "JOBSPEC_LOCAL_URL"
STATE_DIR = Path(".jobspec/local")
IDLE_EXIT_SECONDS = 1800
START_TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class LocalService:
    url: str
    started: bool  # True when this call started it
    pid: int | None = None


def _responds(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1beta/models", timeout=2.0).status_code < 500
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def record_path(state_dir: Path = STATE_DIR) -> Path:
    return state_dir / "service.json"


def find_or_start(state_dir: Path = STATE_DIR) -> LocalService:
    if os.environ.get(URL_VARIABLE):
        return LocalService(os.environ[URL_VARIABLE].rstrip("/"), started=False)
    record = record_path(state_dir)
    if record.exists():
        try:
            known = json.loads(record.read_text())
            if _responds(known["url"]):
                return LocalService(known["url"], started=False, pid=known.get("pid"))
        except (ValueError, KeyError, OSError):
            pass
    return _start(state_dir)


def _start(state_dir: Path) -> LocalService:
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = state_dir / "service.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobspec.server", "--host", "127.0.0.1", "--port", str(port),
             "--state-dir", str(state_dir), "--idle-exit", str(IDLE_EXIT_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BackendError(f"the local tuning service exited at start ({process.returncode}); "
                               f"its log ({log_path}) ends with:\n{tail}")
        if _responds(url):
            record_path(state_dir).write_text(json.dumps({"url": url, "pid": process.pid}))
            return LocalService(url, started=True, pid=process.pid)
        time.sleep(0.2)
    process.terminate()
    raise BackendError(f"the local tuning service did not answer within "
                       f"{START_TIMEOUT_SECONDS}s; see {log_path}")
