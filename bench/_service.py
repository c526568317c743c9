"""Shared by the benchmarks: a local service process, and a tiny model of SmolLM2's shape."""

from __future__ import annotations

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

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


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
