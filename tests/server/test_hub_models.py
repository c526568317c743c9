"""`jobspec serve --model` with a Hugging Face id: found in a Hugging Face cache the test builds
(models--ORG--NAME/snapshots/REV + refs/main under its own HF_HOME, HF_HUB_OFFLINE=1, so
nothing asks the network), served and trained like a folder; offline and not cached, a clear
refusal before anything starts. HF_TOKEN never appears in what the service says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server.test_app import tutorial_body
from tests.service import LocalService

HUB_ID = "test-org/Tiny-Chat-0.1B"
TOKEN = "hf_NotARealTokenButSecret1234567890"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, tiny_model: Path, hub_id: str = HUB_ID) -> Path:
    """``root`` as HF_HOME holding ``hub_id`` as huggingface_hub lays out a fetched model."""
    repo = root / "hub" / f"models--{hub_id.replace('/', '--')}"
    shutil.copytree(tiny_model, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return root


def offline_env(hf_home: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_TOKEN": TOKEN}
    env.pop("HF_HUB_CACHE", None)
    return env


@pytest.fixture(scope="module")
def hub_service(tiny_model, tmp_path_factory):
    """The real service started with ``--model HUB_ID``, found in a cache the test built."""
    hf_home = hub_cache(tmp_path_factory.mktemp("hf"), tiny_model)
    service = LocalService(tmp_path_factory.mktemp("state"), "--model", HUB_ID,
                           env=offline_env(hf_home)).start()
    yield service
    service.stop()
    assert TOKEN not in service.log


@pytest.mark.timeout(300)
def test_a_cached_hugging_face_id_is_served_and_trained(hub_service):
    service = hub_service
    with service.client() as http:
        names = [m["name"] for m in http.get("/v1beta/models").json()["models"]]
        assert "models/tiny-chat-0.1b" in names
        answer = http.post("/v1beta/models/tiny-chat-0.1b:generateContent", json={
            "contents": [{"role": "user", "parts": [{"text": "1"}]}],
            "generationConfig": {"maxOutputTokens": 4}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["candidates"][0]["content"]["role"] == "model"
        # The model's methods answer by its Hugging Face id too, as jobspec addresses the
        # open model a job names.
        by_id = http.post(f"/v1beta/{HUB_ID}:countExampleTokens",
                          json={"examples": [{"textInput": "1", "output": "2"}]})
        assert by_id.status_code == 200, by_id.text
        assert by_id.json() == http.post("/v1beta/models/tiny-chat-0.1b:countExampleTokens", json={
            "examples": [{"textInput": "1", "output": "2"}]}).json()
        assert http.get(f"/v1beta/{HUB_ID}").json()["name"] == "models/tiny-chat-0.1b"
        # A job names the model by its Hugging Face id, as it would for Vertex.
        created = http.post("/v1beta/tunedModels", json=tutorial_body(
            base_model=HUB_ID, epochs=1))
        assert created.status_code == 200, created.text
        unserved = http.post("/v1beta/tunedModels", json=tutorial_body(
            base_model="Qwen/Qwen2.5-0.5B-Instruct", epochs=1))
        assert unserved.status_code == 404
        message = unserved.json()["error"]["message"]
        assert message.startswith("Base model Qwen/Qwen2.5-0.5B-Instruct is not found. This "
                                  "jobspec local service serves models/tiny-chat-0.1b, "
                                  f"{HUB_ID};")
        assert "jobspec serve --model OWNER/NAME" in message
    done = service.wait_done(created.json()["name"], extensions=True)
    assert "error" not in done, done
    assert done["response"]["baseModel"] == HUB_ID
    # What trained it, in the extension field a caller that asks gets (and the report shows):
    # the CPU, fp32, no quantisation.
    assert done["response"]["tuningTask"]["device"] == "cpu (fp32)"
    assert "base models: models/tiny-chat-0.1b" in service.log
    assert TOKEN not in service.log


@pytest.mark.timeout(300)
def test_a_job_naming_the_hugging_face_id_plans_and_applies_on_the_local_service(
        hub_service, repo, cli, monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", hub_service.url)
    repo.job(name="open", base_model=HUB_ID,
             hyperparameters="batch_size: 4\n  learning_rate: 0.001\n  epoch_count: 1")
    plan = cli("plan", "--format", "json")
    assert plan.code == 0, plan.err
    (job,) = plan.json()["jobs"]
    assert job["estimate"]["exact"], job["estimate"]
    applied = cli("apply", "jobs/", "--poll-interval", "0.05")
    assert applied.code == 0, applied.err + applied.out
    assert "Apply complete: 1/1 jobs ACTIVE" in applied.err
    report = json.loads((repo.root / "reports/open.json").read_text())
    assert report["base_model"] == HUB_ID
    assert report["device"] == "cpu (fp32)"  # the CPU trained it, in fp32, not quantised


def test_a_local_folder_still_serves_under_its_folder_name(tiny_model, tmp_path):
    service = LocalService(tmp_path / "state", "--model", str(tiny_model),
                           env={"HF_TOKEN": TOKEN}).start()
    try:
        with service.client() as http:
            answer = http.post("/v1beta/models/tiny-smollm2:generateContent", json={
                "contents": [{"role": "user", "parts": [{"text": "1"}]}],
                "generationConfig": {"maxOutputTokens": 2}})
            assert answer.status_code == 200, answer.text
    finally:
        service.stop()
    assert TOKEN not in service.log


def test_offline_and_not_cached_says_what_to_fetch_and_starts_nothing(tiny_model, tmp_path):
    hf_home = hub_cache(tmp_path / "hf", tiny_model)  # holds another model, not this one
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "jobspec.server", "--port", "0", "--state-dir", str(state),
         "--model", "test-org/Not-Fetched"], env=offline_env(hf_home), capture_output=True,
        text=True, timeout=120)
    assert done.returncode != 0
    assert "--model test-org/Not-Fetched: not in the Hugging Face cache" in done.stderr
    assert str(hf_home / "hub") in done.stderr
    assert "HF_HUB_OFFLINE is set" in done.stderr
    assert "hf download test-org/Not-Fetched" in done.stderr
    assert "listening" not in done.stderr
    assert TOKEN not in done.stderr + done.stdout
    assert not (state / "state.db").exists()


def test_a_path_that_is_neither_a_file_nor_a_hugging_face_id_is_refused(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "jobspec.server", "--port", "0", "--state-dir",
         str(tmp_path / "state"), "--model", str(tmp_path / "no" / "such" / "model")],
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no such file or folder, nor a Hugging Face id" in done.stderr


def test_quantize_is_refused_here_with_the_reason_and_starts_nothing(tmp_path):
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") and torch.cuda.is_available():
        pytest.skip("this machine can quantise: nothing to refuse")
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "jobspec.server", "--port", "0", "--state-dir", str(state),
         "--quantize", "4bit"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 64
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "--quantize 4bit needs bitsandbytes, which is not installed" in done.stderr
    else:
        assert "--quantize 4bit needs a CUDA GPU" in done.stderr
    assert "listening" not in done.stderr
    assert not (state / "state.db").exists()


def test_what_trained_a_model_names_device_dtype_and_quantisation():
    from jobspec.server.worker import trained_on_text

    assert trained_on_text("cpu", "fp32", None) == "cpu (fp32)"
    assert trained_on_text("cuda:0", "bf16", "4bit") == "cuda:0 (bf16, 4-bit NF4 base weights)"


def test_a_folder_of_the_hugging_face_cache_is_known_by_its_id(tiny_model, tmp_path):
    from jobspec.server.models import ModelNotFound, ModelRegistry

    snapshot = hub_cache(tmp_path / "hf", tiny_model) / "hub" / \
        f"models--{HUB_ID.replace('/', '--')}" / "snapshots" / REVISION
    registry = ModelRegistry.build([str(snapshot)], [])
    assert registry.default.id == "tiny-chat-0.1b"
    assert registry.resolve(HUB_ID) == registry.resolve("models/tiny-chat-0.1b")
    with pytest.raises(ModelNotFound):
        registry.resolve("other-org/Tiny-Chat-0.1B")
