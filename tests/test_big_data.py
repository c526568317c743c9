"""The local backend takes big data: a data set over the 32 MiB that one request may carry is
validated, planned and applied, its examples uploaded once (named by their content) and trained
on from the upload; a second apply or plan sends nothing; a corrupted upload is refused and
nothing is kept; the limit is the upload's, 2 GiB, named at the job file's line; the official
SDK's inline create still works beside it.

Through the CLI against the real local service (tiny model), on loopback. The data: ~40 MB of
examples that are long in characters but short in tokens (runs of "#", about 64 to a token in
SmolLM2's tokenizer), so that the service measures them in seconds and the tiny model, whose
context is 512 tokens, trains on them.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from pathlib import Path

import httpx
import pytest

from jobspec import wire
from jobspec.backends import local
from tests.loopback_http import LoopbackJsonServer, Request
from tests.service import LocalService
from tests.test_validate import errors_of

MB = 10**6
EXAMPLE_CHARS = 28_000  # ~440 tokens of "#"; with the chat template, 476: within the 512 of the model


def write_big_data(path: Path, megabytes: float, seed: int) -> int:
    """About ``megabytes`` of distinct examples; how many were written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = max(1, int(megabytes * MB) // (EXAMPLE_CHARS + 60))
    with open(path, "w", encoding="utf-8") as out:
        for n in range(count):
            out.write(json.dumps({"text_input": f"{seed}.{n} " + "#" * EXAMPLE_CHARS,
                                  "output": f"answer {n % 7}"}) + "\n")
    return count


def big_job(repo, name: str, megabytes: float = 40, seed: int = 0) -> int:
    """A job whose ~``megabytes`` of training data is its own (``seed`` makes the content)."""
    count = write_big_data(repo.root / f"jobs/data/{name}.jsonl", megabytes, seed)
    repo.write(f"jobs/{name}.yaml", f"""
        version: 1
        name: {name}
        base_model: models/tiny-smollm2
        hyperparameters: {{batch_size: 1, epoch_count: 1, learning_rate: 0.001}}
        training_data: data/{name}.jsonl
        """)
    return count


@pytest.fixture(scope="module")
def big_service(tiny_model, tmp_path_factory):
    """A service of this module's own: what it logs is what these tests sent."""
    running = LocalService(tmp_path_factory.mktemp("state"), "--model", str(tiny_model)).start()
    yield running
    running.stop()


@pytest.fixture
def on_service(big_service, monkeypatch):
    for variable in ("JOBSPEC_BACKEND", "JOBSPEC_PRICE_PER_MILLION_TOKENS", "GEMINI_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", big_service.url)
    return big_service


def logged(service: LocalService, method: str, path_start: str) -> int:
    """Requests the service logged with this method to a path that starts so."""
    return sum(1 for line in list(service.lines)
               if line.startswith(f"jobspec serve: {method} {path_start}"))


def uploads_sent(service: LocalService) -> int:
    return logged(service, "PUT", f"/{wire.UPLOAD_PREFIX}/v1beta/{wire.UPLOADS}/")


def operation_of(service: LocalService, job: str) -> dict:
    with service.client(extensions=True) as http:
        models = http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json()
        (model,) = [m for m in models.get("tunedModels", [])
                    if m["name"].startswith(f"tunedModels/{job}-")]
        return http.get(f"/v1beta/{model['name']}/operations").json()["operations"][-1]


def wait_for_a_step(service: LocalService, job: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        operation = operation_of(service, job)
        assert "error" not in operation, operation
        if operation["metadata"].get("completedSteps", 0) >= 1:
            return operation
        time.sleep(0.3)
    raise AssertionError(f"{job}: no training step after {timeout}s\n{service.log[-3000:]}")


def cancel(service: LocalService, operation: dict) -> None:
    with service.client() as http:
        http.post(f"/v1beta/{operation['name']}:cancel")


@pytest.mark.timeout(240)
def test_data_over_32_mib_is_validated_planned_uploaded_once_and_trained_on(repo, cli, on_service):
    count = big_job(repo, "big", 40, seed=1)
    size = (repo.root / "jobs/data/big.jsonl").stat().st_size
    assert size > 32 * 2**20  # more than one request to the service may carry

    assert cli("validate", "jobs/big.yaml").code == 0
    before = uploads_sent(on_service)
    plan = cli("plan", "jobs/big.yaml")
    assert plan.code == 0, plan.err
    assert f"      {count:,} examples: " in plan.out
    assert "exact: counted by the local service" in plan.out
    # The longest example, found by reading the file again: at its line.
    assert re.search(r"longest example 4\d\d tokens of the 512 allowed "
                     r"\(jobs/data/big\.jsonl:\d+\)", plan.out), plan.out
    assert uploads_sent(on_service) == before + 1  # counted from the upload, sent once
    again = cli("plan", "jobs/big.yaml")  # its counts kept: nothing is asked, nothing sent
    assert again.code == 0 and again.out == plan.out
    assert uploads_sent(on_service) == before + 1

    applied = cli("apply", "--no-wait", "--skip-eval", "jobs/big.yaml")
    assert applied.code == 0, applied.err
    assert uploads_sent(on_service) == before + 1  # the create names the upload the plan sent
    operation = wait_for_a_step(on_service, "big")
    assert operation["metadata"]["totalSteps"] == count  # batch 1, one epoch: trained from it
    second = cli("apply", "--no-wait", "--skip-eval", "jobs/big.yaml")
    assert second.code == 0, second.err
    assert uploads_sent(on_service) == before + 1
    cancel(on_service, operation)


@pytest.mark.timeout(240)
def test_apply_alone_uploads_once_and_the_create_names_the_upload(repo, cli, on_service):
    count = big_job(repo, "alone", 34, seed=2)
    before = uploads_sent(on_service)
    creates = logged(on_service, "POST", "/v1beta/tunedModels ")
    applied = cli("apply", "--no-wait", "--skip-eval", "jobs/alone.yaml")
    assert applied.code == 0, applied.err
    assert uploads_sent(on_service) == before + 1
    assert logged(on_service, "POST", "/v1beta/tunedModels ") == creates + 1
    operation = wait_for_a_step(on_service, "alone")
    assert operation["metadata"]["totalSteps"] == count
    assert cli("apply", "--no-wait", "--skip-eval", "jobs/alone.yaml").code == 0
    assert cli("plan", "jobs/alone.yaml").code == 0
    assert uploads_sent(on_service) == before + 1
    cancel(on_service, operation)


class CorruptingRelay(LoopbackJsonServer):
    """Passes every request on to the service, with one byte of each upload changed."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def route(self, request: Request) -> tuple[int, object, dict[str, str]]:
        body = request.body
        if request.method == "PUT" and body:
            body = body[:100] + (b"%" if body[100:101] != b"%" else b"&") + body[101:]
        passed = ("content-type", wire.EXTENSIONS_HEADER.lower())
        headers = {k: v for k, v in request.headers.items() if k.lower() in passed}
        answer = httpx.request(request.method, self.target + request.path, params=request.query,
                               content=body, headers=headers, timeout=120)
        return answer.status_code, answer.json(), {}


@pytest.mark.timeout(180)
def test_a_corrupted_upload_is_refused_and_nothing_is_kept(repo, cli, big_service, monkeypatch):
    big_job(repo, "corrupted", 0.5, seed=3)  # within what a plan counts inline
    with CorruptingRelay(big_service.url) as relay:
        monkeypatch.setenv("JOBSPEC_LOCAL_URL", relay.url)
        monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "5")
        result = cli("apply", "--no-wait", "--skip-eval", "jobs/corrupted.yaml")
        puts = [r for r in relay.requests if r.method == "PUT"]
    assert result.code == 1
    assert "The upload's content has SHA-256 " in result.err
    assert "as its name says; nothing was kept." in result.err
    assert len(puts) == 1  # refused for good (INVALID_ARGUMENT), not retried
    name = puts[0].path.removeprefix(f"/{wire.UPLOAD_PREFIX}/v1beta/")
    with big_service.client() as http:
        assert http.get(f"/v1beta/{name}").status_code == 404
        models = http.get("/v1beta/tunedModels").json().get("tunedModels", [])
    assert not [m for m in models if m["name"].startswith("tunedModels/corrupted-")]
    assert not list((big_service.state_dir / "uploads").glob(".partial-*"))


def test_over_the_upload_limit_is_refused_at_validate_at_the_job_files_line(repo, cli,
                                                                            monkeypatch):
    limits = local.LOCAL.limits
    assert (limits.carrier, limits.max_bytes, limits.stated()) == ("upload", 2 * 2**30, "2 GiB")
    big_job(repo, "limited", 1, seed=4)
    records = [json.loads(line) for line in
               open(repo.root / "jobs/data/limited.jsonl", encoding="utf-8")]
    upload = sum(len(wire.upload_line(r["text_input"], r["output"])) for r in records)
    # Reading 2 GiB of examples takes minutes, so the test scales the limit down instead: the
    # backend type's limits (the seam validate and plan read them through), with the GiB
    # made so small that this ~1 MB upload is one byte past "2 GiB" (then exactly at it).

    def limit(max_bytes: int) -> None:
        monkeypatch.setattr(local, "LOCAL", dataclasses.replace(
            local.LOCAL, limits=dataclasses.replace(limits, max_bytes=max_bytes,
                                                    unit_bytes=max_bytes / 2)))

    limit(upload - 1)
    assert errors_of(cli("validate", "jobs/limited.yaml")) == [
        "jobs/limited.yaml:5:16: training_data: the examples make an upload of 2.0 GiB; the "
        "local backend accepts at most 2 GiB (the local service's limit on an upload of "
        "examples); use fewer or shorter examples"]
    limit(upload)
    assert cli("validate", "jobs/limited.yaml").code == 0


@pytest.mark.timeout(180)
def test_the_official_sdk_still_creates_with_inline_examples(big_service, monkeypatch):
    """google-generativeai 0.8 (strict protobuf parsing) sends its examples inline, as the
    Gemini API takes them; on the same service, beside the uploads, its create trains and
    every answer parses (published fields only)."""
    with warnings.catch_warnings():  # "support has ended": the point is that old code works
        warnings.simplefilter("ignore", FutureWarning)
        import google.generativeai as genai
    from google.generativeai import client as client_lib

    monkeypatch.setattr(client_lib, "_client_manager", client_lib._ClientManager())
    genai.configure(api_key="local", transport="rest",
                    client_options={"api_endpoint": big_service.url})
    operation = genai.create_tuned_model(
        "models/gemini-1.5-flash-001-tuning",
        [{"text_input": str(n), "output": str(n + 1)} for n in range(6)], id="inline-sdk",
        epoch_count=1, batch_size=2, learning_rate=0.001)
    assert operation.metadata.total_steps == 3
    deadline = time.monotonic() + 120
    while not operation.done():
        assert time.monotonic() < deadline, big_service.log[-3000:]
        time.sleep(0.2)
    assert (operation.result().name, operation.result().state.name) == (
        "tunedModels/inline-sdk", "ACTIVE")
