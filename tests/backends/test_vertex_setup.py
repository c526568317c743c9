"""The vertex backend's set-up, credentials and refusals, through the CLI against fake_vertex:
settings from flags, job files and variables; OAuth only (API keys refused, application-default
credentials refreshed), the token never shown; what is refused before any request; Google's
errors as a user can act on them; the staged training file (streamed, checked, never
overwritten) and Vertex's limits on it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jobspec.backends import gcs, vertex as vertex_backend
from tests.backends.conftest import (BACKEND, JOBS_PATH, TOKEN, Vertex, apply, job_text)
from tests.conftest import NUMBER_EXAMPLES
from tests.fake_gcs import StoredObject, google_error

pytestmark = pytest.mark.timeout(120)


def fingerprint(cli, path: str = "jobs/numbers.yaml") -> str:
    shown = cli("show", path)
    return next(line.split(": ", 1)[1] for line in shown.out.splitlines()
                if line.startswith("fingerprint: "))


def everything_written(repo_root: Path, *results) -> str:
    """What the runs printed and every report they wrote."""
    reports = repo_root / "reports"
    files = sorted(reports.rglob("*")) if reports.exists() else []
    return "".join(r.out + r.err for r in results) + "".join(
        f.read_text(errors="replace") for f in files if f.is_file())


# What is refused before anything is sent.

def test_hyperparameters_vertex_v1_does_not_take_are_refused_at_their_lines(vertex, cli):
    vertex.repo.write("jobs/numbers.yaml", job_text(
        "numbers", "data/numbers.jsonl",
        hyperparameters="batch_size: 2\n  learning_rate: 0.001\n  epoch_count: 3"))
    for command in ("validate", "plan", "apply"):
        result = cli(command, "jobs/") if command != "apply" else apply(cli)
        assert result.code == 1, (command, result.err)
        assert ("jobs/numbers.yaml:6:15: hyperparameters.batch_size: Vertex AI takes no batch "
                "size for a Gemini model (it chooses one; it takes one only for an open "
                "model); remove batch_size") in result.out + result.err
        assert ("jobs/numbers.yaml:7:18: hyperparameters.learning_rate: Vertex AI takes no "
                "learning rate for a Gemini model (only for an open model); use "
                "learning_rate_multiplier (a multiplier on Vertex's recommended rate for the "
                "base model) instead") in result.out + result.err
    assert vertex.fake.requests == []


def test_an_api_key_is_refused_with_what_to_do_instead(vertex, cli, monkeypatch):
    monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN")
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-vertex-secret-key")
    result = apply(cli)
    assert result.code == 1
    assert result.err.startswith(
        "jobspec: auth error: Vertex AI does not accept API keys (GEMINI_API_KEY is set: the "
        "gemini backend uses it), only OAuth: run `gcloud auth application-default login`")
    assert "GOOGLE_OAUTH_ACCESS_TOKEN" in result.err
    assert "AIza-vertex-secret-key" not in result.out + result.err
    assert vertex.fake.requests == []


def test_no_credentials_names_the_ways_to_give_them(vertex, cli, monkeypatch):
    monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN")
    result = cli("plan", "jobs/")
    assert result.code == 1
    assert result.err.startswith("jobspec: auth error: no credentials for the vertex backend: "
                                 "set GOOGLE_OAUTH_ACCESS_TOKEN")
    assert vertex.fake.requests == []


def test_application_default_credentials_are_refreshed_for_vertex_and_storage(
        vertex, cli, monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_OAUTH_ACCESS_TOKEN")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    adc = tmp_path / "adc.json"  # a service account whose token URI is the fake's
    adc.write_text(json.dumps({
        "type": "service_account", "project_id": "adc-project", "private_key_id": "k1",
        "private_key": pem, "client_email": "tuner@adc-project.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{vertex.fake.url}/token"}))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
    result = apply(cli)
    assert result.code == 0, result.err
    fake = vertex.fake
    api = [r for r in fake.requests if r.path != "/token"]
    assert fake.tokens_issued >= 2  # its tokens last 60 s: every use refreshes
    tokens = [r.headers["Authorization"] for r in api]
    assert set(tokens) <= {f"Bearer fake-vertex-token-{n}"
                           for n in range(1, fake.tokens_issued + 1)}
    assert len(set(tokens)) > 1
    storage = [r for r in api if "/storage/" in r.path]
    assert storage and all(r.headers["Authorization"].startswith("Bearer fake-vertex-token-")
                           for r in storage)
    assert {r.headers.get("x-goog-user-project") for r in api} == {"adc-project"}
    for n in range(1, fake.tokens_issued + 1):
        assert f"fake-vertex-token-{n}" not in everything_written(vertex.repo.root, result)


def test_the_token_is_never_printed_nor_written(vertex, cli):
    vertex.fake.fail_next_job("The job could not read its data.")
    results = [cli("plan", "jobs/"), apply(cli), cli("report", "jobs/"),
               cli("get", "--backend", "vertex", "--project", "my-project"),
               cli("get", "--backend", "vertex", "--project", "my-project", "-o", "json"),
               cli("auth", "--backend", "vertex", "--project", "my-project"),
               apply(cli, "--recreate-failed"), cli("eval", "jobs/"),
               cli("delete", "numbers", "--yes", "--backend", "vertex", "--project",
                   "my-project")]
    assert [r.code for r in results] == [0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert TOKEN not in everything_written(vertex.repo.root, *results)
    assert "credentials: OAuth access token from GOOGLE_OAUTH_ACCESS_TOKEN" in results[5].out


def test_auth_names_the_regional_endpoint_and_the_method(vertex, cli, monkeypatch):
    monkeypatch.delenv("JOBSPEC_VERTEX_ENDPOINT")
    result = cli("auth", "--backend", "vertex", "--location", "europe-west4")
    assert result.code == 0, result.err
    assert result.out.splitlines()[:3] == [
        "backend: vertex", "endpoint: https://europe-west4-aiplatform.googleapis.com",
        "credentials: OAuth access token from GOOGLE_OAUTH_ACCESS_TOKEN"]


# Settings.

def test_a_missing_project_or_bucket_is_a_usage_error_naming_every_way(vertex, cli):
    vertex.repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl",
                                                    backend="backend: vertex\n"))
    result = cli("plan", "jobs/")
    assert result.code == 64
    assert ("the vertex backend needs a Google Cloud project: pass --project, set "
            "backend.project in the job file, or set GOOGLE_CLOUD_PROJECT") in result.err
    result = cli("plan", "jobs/", "--project", "my-project")
    assert result.code == 64
    assert ("the vertex backend needs a Cloud Storage bucket for the training data (in the same "
            "region as the tuning jobs): pass --staging-bucket gs://BUCKET, set "
            "backend.staging_bucket in the job file, or set JOBSPEC_STAGING_BUCKET") in result.err
    assert vertex.fake.requests == []


def test_settings_come_from_flags_then_job_files_then_variables(vertex, cli, monkeypatch):
    vertex.repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl",
                                                    backend="backend: vertex\n"))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("JOBSPEC_STAGING_BUCKET", "gs://my-bucket/team/a")
    monkeypatch.setenv("JOBSPEC_VERTEX_LOCATION", "europe-west4")  # the fake is us-central1 ...
    result = apply(cli, "--skip-eval", "--location", "us-central1")  # ... so the flag wins
    assert result.code == 0, result.err
    fp = fingerprint(cli)
    assert [o.name for o in vertex.fake.uploads] == [f"team/a/jobspec/training/{fp}.jsonl"]
    create = next(r for r in vertex.fake.requests if r.method == "POST"
                  and r.path == JOBS_PATH).json()
    uri = create["supervisedTuningSpec"]["trainingDatasetUri"]
    assert uri == f"gs://my-bucket/team/a/jobspec/training/{fp}.jsonl"


def test_jobs_that_name_different_projects_are_applied_separately(vertex, cli):
    vertex.write_antonyms(backend=BACKEND.replace("my-project", "other-project"))
    result = cli("plan", "jobs/")
    assert result.code == 64
    assert "the jobs name different vertex backend.project values (" in result.err
    assert "jobs/antonyms.yaml: other-project" in result.err
    assert "jobs/numbers.yaml: my-project" in result.err
    assert vertex.fake.requests == []


def test_a_location_that_is_not_a_region_never_reaches_a_host_name(vertex, cli, monkeypatch):
    monkeypatch.delenv("JOBSPEC_VERTEX_ENDPOINT")  # the host would be made from it
    vertex.repo.write("jobs/numbers.yaml", job_text(
        "numbers", "data/numbers.jsonl",
        backend="backend: {type: vertex, project: my-project, location: 'evil.example#', "
                "staging_bucket: gs://my-bucket}\n"))
    for command in ("validate", "plan"):
        result = cli(command, "jobs/")
        assert result.code == 1
        assert ("jobs/numbers.yaml:10:56: backend.location: 'evil.example#' is not a Google "
                "Cloud region such as us-central1") in result.err
    monkeypatch.setenv("JOBSPEC_VERTEX_LOCATION", "evil.example#")
    vertex.write_numbers()
    refused = cli("plan", "jobs/")
    assert refused.code == 64
    assert refused.err.startswith(
        "jobspec: error: JOBSPEC_VERTEX_LOCATION 'evil.example#': expected a Google Cloud "
        "region such as us-central1")
    assert vertex.fake.requests == []


def test_a_wrong_project_is_googles_404_with_what_to_check(vertex, cli):
    vertex.repo.write("jobs/numbers.yaml", job_text(
        "numbers", "data/numbers.jsonl", backend=BACKEND.replace("my-project", "nope-project")))
    result = cli("plan", "jobs/")
    assert result.code == 1
    assert ('404 NOT_FOUND: Project "nope-project" not found or permission denied. (project '
            "nope-project, location us-central1: check --project and --location") in result.err


def test_a_missing_bucket_says_so_and_where_it_should_be(vertex, cli):
    vertex.repo.write("jobs/numbers.yaml", job_text(
        "numbers", "data/numbers.jsonl", backend=BACKEND.replace("my-bucket", "no-such-bucket")))
    result = apply(cli)
    assert result.code == 1
    assert ("the staging bucket gs://no-such-bucket was not found (The specified bucket does "
            "not exist.); create it in the job's project, in the job's region (us-central1)"
            ) in result.err
    assert vertex.creates() == []


# The staged training file.

def test_an_upload_whose_answer_was_lost_finds_its_object_and_goes_on(vertex: Vertex, cli):
    storage = vertex.fake.storage
    real_insert = storage.insert

    def stored_but_unanswered(bucket, request):
        storage.insert = real_insert
        real_insert(bucket, request)  # Cloud Storage stored it; the answer never came
        return google_error(503, "The service is currently unavailable.")

    storage.insert = stored_but_unanswered
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    uploads = vertex.uploads()
    assert len(uploads) == 2 and uploads[0].body == uploads[1].body  # resent whole
    assert len(vertex.fake.uploads) == 1  # stored once: the retry met ifGenerationMatch=0
    assert len(vertex.fake.jobs) == 1


def test_an_object_holding_other_bytes_is_never_trained_on(vertex: Vertex, cli):
    fp = fingerprint(cli)
    name = f"jobspec/training/{fp}.jsonl"
    storage = vertex.fake.storage
    storage.objects[("my-bucket", name)] = StoredObject(
        "my-bucket", name, b'{"contents": []}\n', "application/jsonl", 1, storage.clock.now())
    result = apply(cli)
    assert result.code == 1
    assert (f"gs://my-bucket/{name} exists but holds other data than this job's training "
            "file") in result.err
    assert f"gcloud storage rm gs://my-bucket/{name}" in result.err
    assert vertex.creates() == [] and vertex.uploads() == []


def test_the_training_file_is_streamed_in_chunks_with_its_length(vertex, cli, monkeypatch):
    examples = [(f"question {n} " + "x" * 50, f"answer {n}") for n in range(2000)]
    vertex.write_numbers(examples, extra="")
    monkeypatch.setattr(gcs, "CHUNK_BYTES", 4096)
    chunks: list[int] = []
    real = gcs.ApiClient.send_stream

    def recording(self, method, path, *, content, **kwargs):
        def counted():
            for chunk in content():
                chunks.append(len(chunk))
                yield chunk
        return real(self, method, path, content=counted, **kwargs)

    monkeypatch.setattr(gcs.ApiClient, "send_stream", recording)
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    (upload,) = vertex.uploads()
    assert upload.headers["Content-Length"] == str(len(upload.body)) == str(sum(chunks))
    longest_line = max(len(line) + 1 for line in upload.body.split(b"\n"))
    assert len(chunks) > 20 and max(chunks) < 4096 + longest_line
    assert len(vertex.fake.uploads[0].lines()) == 2000


def test_validate_counts_the_training_file_exactly_as_it_is_uploaded(vertex, cli, monkeypatch):
    examples = [*NUMBER_EXAMPLES, ('quote " and \\ back', "naïve ✓\n"), ("tab\there", "bell\u0007")]
    vertex.write_numbers(examples, extra="")
    assert apply(cli, "--skip-eval").code == 0
    size = len(vertex.fake.uploads[0].data)

    def limited(max_bytes: int):
        limits = dataclasses.replace(vertex_backend.LIMITS, max_bytes=max_bytes)
        monkeypatch.setattr(vertex_backend, "VERTEX",
                            dataclasses.replace(vertex_backend.VERTEX, limits=limits))

    limited(size)
    assert cli("validate", "jobs/").code == 0
    limited(size - 1)
    refused = cli("validate", "jobs/")
    assert refused.code == 1
    assert ("jobs/numbers.yaml:9:16: training_data: the examples make a training file of 0.0 "
            "GB; the vertex backend accepts at most ") in refused.err


def test_more_examples_than_vertex_takes_are_refused_by_validate(vertex, cli, monkeypatch):
    monkeypatch.setattr(vertex_backend, "VERTEX", dataclasses.replace(
        vertex_backend.VERTEX, limits=dataclasses.replace(vertex_backend.LIMITS,
                                                          max_examples=10)))
    result = cli("validate", "jobs/")
    assert result.code == 1
    assert ("15 examples; the vertex backend accepts at most 10 (Vertex AI's published limits "
            "for supervised tuning: a JSONL training file of at most 1 GB and 1M text "
            "examples)") in result.err
    assert vertex_backend.LIMITS.max_examples == 1_000_000
    assert vertex_backend.LIMITS.max_bytes == 10**9


def test_a_job_files_endpoint_gets_no_token_unless_the_operator_allows_it(vertex, cli,
                                                                          monkeypatch):
    monkeypatch.delenv("JOBSPEC_VERTEX_ENDPOINT")
    url = vertex.fake.url
    vertex.repo.write("jobs/numbers.yaml", job_text(
        "numbers", "data/numbers.jsonl",
        backend=f"backend: {{type: vertex, endpoint: '{url}', project: my-project, "
                "staging_bucket: gs://my-bucket}\n"))
    refused = cli("plan", "jobs/")
    assert refused.code == 1
    assert (f"{url} is named by a job file, which a pull request can change, so jobspec will "
            "not send it the OAuth access token from GOOGLE_OAUTH_ACCESS_TOKEN") in refused.err
    assert vertex.fake.requests == []
    monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", f"local={url}")  # for another backend
    assert cli("plan", "jobs/").code == 1 and vertex.fake.requests == []
    monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", f"vertex={url}")
    allowed = cli("plan", "jobs/")
    assert allowed.code == 0, allowed.err
    assert vertex.fake.requests and {r.path for r in vertex.fake.requests} == {JOBS_PATH}


def test_data_that_changes_while_it_is_uploaded_is_not_stored(vertex, cli, monkeypatch):
    real = vertex_backend.VertexBackend._lines  # the JSONL of the job's examples
    calls = []

    def growing(examples):
        calls.append(1)
        lines = list(real(examples))
        return iter(lines + [b'{"contents":[]}\n'] * (len(calls) > 1))  # longer when sent

    monkeypatch.setattr(vertex_backend.VertexBackend, "_lines", staticmethod(growing))
    result = apply(cli)
    assert result.code == 1
    assert ("the training data changed while it was being uploaded; nothing was stored. Apply "
            "again") in result.err
    # The upload stopped short of its Content-Length, so Cloud Storage stores nothing (the
    # fake, which keeps whatever it read before the connection closed, is laxer than that).
    (upload,) = vertex.uploads()
    assert len(upload.body) < int(upload.headers["Content-Length"])
    assert vertex.creates() == []
