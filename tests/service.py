"""Starting the real local tuning service (`python -m jobspec.server`) on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from jobspec.wire import EXTENSIONS_HEADER, EXTENSIONS_ON


class LocalService:
    """One `jobspec serve` process; its stderr is collected in ``log``."""

    def __init__(self, state_dir: Path, *args: str, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.state_dir = state_dir
        self.args = list(args)
        self.port = port or 0  # 0: the service picks a free port and says which
        self.url = ""
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def start(self, timeout: float = 120) -> "LocalService":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobspec.server", "--port", str(self.port),
             "--state-dir", str(self.state_dir), *self.args],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=self.env,
            start_new_session=True)
        ready = threading.Event()

        def pump() -> None:
            assert self.process and self.process.stderr
            for line in self.process.stderr:
                self.lines.append(line)
                found = re.search(r"listening on (http://[\d.]+:(\d+))", line)
                if found:
                    self.url, self.port = found[1], int(found[2])
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"local service did not start:\n{self.log}")
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (server and training workers), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # stray workers, if any
            except ProcessLookupError:
                pass

    def client(self, *, extensions: bool = False, **kwargs) -> httpx.Client:
        """An HTTP client of the service; ``extensions``: one that asks for jobspec's extension
        fields, as jobspec's own client does (without, the Gemini API's published fields only)."""
        headers = {EXTENSIONS_HEADER: EXTENSIONS_ON} if extensions else {}
        return httpx.Client(base_url=self.url, timeout=60, headers=headers, **kwargs)

    def wait_done(self, operation: str, timeout: float = 300, *, extensions: bool = False) -> dict:
        with self.client(extensions=extensions) as http:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                body = http.get(f"/v1/{operation}").json()
                if body.get("done"):
                    return body
                time.sleep(0.2)
        raise TimeoutError(f"{operation} not done after {timeout}s\n{self.log[-3000:]}")
