"""A job's ``resources:`` (issue 20): what one training run may use on the local service.

Through the real CLI: the schema's bounds and the backends that refuse it (at its line), `show`,
the fingerprint (not part of the job's identity), and an apply against the real local service
(tiny model) that carries it on the wire to the operation, where a plain service (no Ray) trains
in one process and says so in its log."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(300)

RESOURCES = "resources:\n  workers: 2\n  gpus_per_worker: 0\n"


def test_show_lists_resources_and_the_fingerprint_ignores_them(repo, cli):
    repo.job(name="plain", file="jobs/plain.yaml")
    repo.job(name="plain", file="jobs/sized.yaml", extra=RESOURCES)
    plain = cli("show", "jobs/plain.yaml", "--format", "json")
    sized = cli("show", "jobs/sized.yaml", "--format", "json")
    assert plain.code == 0 and sized.code == 0, plain.err + sized.err
    shown_plain, shown_sized = json.loads(plain.out), json.loads(sized.out)
    assert shown_sized["resources"] == {"workers": 2, "gpus_per_worker": 0.0}
    assert "resources" not in shown_plain
    # The same job on more workers trains the same steps: the same model, not a new one.
    assert shown_sized["fingerprint"] == shown_plain["fingerprint"]
    assert shown_sized["tuned_model_id"] == shown_plain["tuned_model_id"]


@pytest.mark.parametrize("body, field, words", [
    ("resources:\n  workers: 0\n", "resources.workers", "minimum"),
    ("resources:\n  workers: 65\n", "resources.workers", "maximum"),
    ("resources:\n  gpus_per_worker: -1\n", "resources.gpus_per_worker", "minimum"),
    ("resources:\n  nodes: 2\n", "resources.nodes", "unknown field 'nodes'"),
    ("resources: {}\n", "resources", ""),
])
def test_the_schema_bounds_resources(repo, cli, body, field, words):
    path = repo.job(extra=body)
    result = cli("validate", str(path))
    assert result.code != 0
    key = field.rpartition(".")[2] + ":"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1)
                if text.lstrip().startswith(key))
    assert f"{path}:{line}:" in result.err, result.err
    assert field in result.err and words in result.err, result.err


@pytest.mark.parametrize("backend, base_model, words", [
    ("gemini", "models/gemini-1.0-pro-001", "the Gemini API chooses the machines"),
    ("vertex", "gemini-2.0-flash-001", "Vertex AI chooses the machines"),
])
def test_google_backends_refuse_resources_at_its_line(repo, cli, monkeypatch, backend,
                                                      base_model, words):
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "demo-project")
    monkeypatch.setenv("GOOGLE_CLOUD_LOCATION", "us-central1")
    path = repo.job(base_model=base_model, extra=RESOURCES)
    result = cli("validate", "--backend", backend, str(path))
    assert result.code != 0
    line = path.read_text().splitlines().index("resources:") + 1
    assert f":{line}:" in result.err and "resources" in result.err, result.err
    assert words in result.err and "tune on local" in result.err, result.err


def test_apply_carries_resources_to_the_local_service(repo, cli, service, monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    repo.job(name="sized", extra=RESOURCES,
             hyperparameters="batch_size: 4\n  learning_rate: 0.001\n  epoch_count: 1")
    applied = cli("apply", "jobs/sized.yaml")
    assert applied.code == 0, applied.err
    shown = json.loads(cli("show", "jobs/sized.yaml", "--format", "json").out)
    with service.client(extensions=True) as client:
        model = client.get(f"/v1beta/tunedModels/{shown['tuned_model_id']}").json()
    assert model["state"] == "ACTIVE"
    # gpusPerWorker 0 is proto3's default value, which its JSON leaves out.
    assert model["tuningTask"]["resources"] == {"workers": 2}
    assert "asks for 2 data-parallel workers; this service trains in one process" in service.log
    # A client without jobspec's extensions gets Google's published fields only.
    with service.client() as client:
        published = client.get(f"/v1beta/tunedModels/{shown['tuned_model_id']}").json()
    assert "resources" not in published["tuningTask"]


def test_the_service_refuses_resources_out_of_range(service):
    body = {"baseModel": "models/gemini-1.0-pro-001", "tuningTask": {
        "trainingData": {"examples": {"examples": [{"textInput": "1", "output": "2"}]}},
        "resources": {"workers": 0}}}
    with service.client(extensions=True) as client:
        answer = client.post("/v1beta/tunedModels", json=body)
    assert answer.status_code == 400
    assert "tuned_model.tuning_task.resources.workers must be in [1, 64], got 0." in answer.text
