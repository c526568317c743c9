"""Shared by the benchmarks: a local service process, and a tiny model of SmolLM2's shape."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class Service:
    def __init__(self, state_dir: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jobspec.server", "--port", "0", "--state-dir", str(state_dir),
             *args], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        ready = threading.Event()
        self.url = ""

        def pump() -> None:
            for line in self.process.stderr:
                self.lines.append(line)
                found = re.search(r"listening on (http://\S+) ", line)
                if found:
                    self.url = found[1]
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        while not ready.wait(0.1):
            if self.process.poll() is not None:
                raise SystemExit("".join(self.lines))

    def requests_logged(self, method: str = "") -> int:
        """Requests the service logged; only those of ``method`` (``:countExampleTokens``) when
        given."""
        return sum(1 for line in self.lines
                   if re.match(r"jobspec serve: (GET|POST|PATCH|DELETE) \S*" + re.escape(method)
                               + r" ", line))

    def requests_logged_as(self, http_method: str, path_start: str) -> int:
        """Requests the service logged with this HTTP method, to a path that starts so."""
        return sum(1 for line in self.lines
                   if line.startswith(f"jobspec serve: {http_method} {path_start}"))

    def wait_settled(self, timeout: float = 60.0) -> float:
        """Wait until the service and its workers are idle (under a tenth of a core for half a
        second): it goes on loading its models and starting its worker after it listens, which
        takes two cores for seconds and would be timed as part of whatever runs meanwhile.
        Returns the seconds waited."""
        started = time.monotonic()
        before = cpu_seconds([self.process.pid, *children(self.process.pid)])
        while time.monotonic() - started < timeout:
            time.sleep(0.5)
            now = cpu_seconds([self.process.pid, *children(self.process.pid)])
            if now - before < 0.05:
                break
            before = now
        return time.monotonic() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux: /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes ``pids`` have used so far (gone ones: none)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def tiny_model(folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from jobspec.server.models import find_smollm2_gguf

    gguf = find_smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wait_active(http, name: str, timeout: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if http.get(f"/v1beta/{name}").json().get("state") == "ACTIVE":
            return time.monotonic() - started
        time.sleep(0.1)
    raise SystemExit(f"{name} not ACTIVE after {timeout}s")
