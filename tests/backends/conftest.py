"""A scratch repository of Vertex AI job files, and fake_vertex (tuningJobs, generateContent and
Cloud Storage, from shared/reference/vertex-tuning-api.md) standing in for Google, reached the
way an operator points jobspec at a private endpoint: JOBSPEC_VERTEX_ENDPOINT and
JOBSPEC_STORAGE_ENDPOINT."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pytest

from tests.conftest import NUMBER_EXAMPLES, Repo
from tests.fake_vertex import FakeVertex

TOKEN = "ya29.vertex-secret-token"
OWNER = "team-a"
OWNER_ID = hashlib.sha256(OWNER.encode()).hexdigest()[:16]
PARENT = "projects/my-project/locations/us-central1"
JOBS_PATH = f"/v1/{PARENT}/tuningJobs"
ANTONYMS = [("hot", "cold"), ("up", "down"), ("big", "small"), ("fast", "slow")]
ENVIRONMENT = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN",
               "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "JOBSPEC_BACKEND",
               "JOBSPEC_ENDPOINT", "JOBSPEC_ALLOWED_ENDPOINTS", "JOBSPEC_LOCAL_URL",
               "JOBSPEC_VERTEX_LOCATION", "JOBSPEC_STAGING_BUCKET", "JOBSPEC_OWNER",
               "JOBSPEC_RETRY_DEADLINE")
BACKEND = "backend: {type: vertex, project: my-project, staging_bucket: gs://my-bucket}\n"


def job_text(name: str, data: str, *, hyperparameters: str = "epoch_count: 3\n"
             "  learning_rate_multiplier: 0.5\n  adapter_size: 4", backend: str = BACKEND,
             extra: str = "") -> str:
    return (f"version: 1\nname: {name}\ndescription: The {name} job.\n"
            f"base_model: gemini-2.5-flash\nhyperparameters:\n  {hyperparameters}\n"
            f"training_data: {data}\n{extra}{backend}")


EVAL = ('eval:\n  prompts:\n    - input: "41"\n      expect: "42"\n    - input: "7"\n'
        '      expect: {regex: "^8$"}\n  compare_base: true\n'
        '  generation_config: {temperature: 0, max_output_tokens: 16}\n')


@dataclass
class Vertex:
    """The fake and the repository, with what a test reads of them."""

    fake: FakeVertex
    repo: Repo

    def write_numbers(self, examples=NUMBER_EXAMPLES, **kwargs) -> None:
        self.repo.write_jsonl("jobs/data/numbers.jsonl", examples)
        self.repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl",
                                                      extra=kwargs.pop("extra", EVAL), **kwargs))

    def write_antonyms(self, **kwargs) -> None:
        self.repo.write_jsonl("jobs/data/antonyms.jsonl", ANTONYMS)
        self.repo.write("jobs/antonyms.yaml", job_text("antonyms", "data/antonyms.jsonl",
                                                       **kwargs))

    def requests(self, method: str | None = None, prefix: str = "/"):
        return [r for r in self.fake.requests_to(prefix) if method in (None, r.method)]

    def creates(self):
        return self.requests("POST", JOBS_PATH)

    def uploads(self):
        return self.requests("POST", "/upload/")

    def cancels(self):
        return [r for r in self.requests("POST", JOBS_PATH) if r.path.endswith(":cancel")]

    def job_of(self, name: str) -> dict:
        """This workspace's one tuning job of job file ``name`` (asserting there is one)."""
        found = [j for j in self.fake.jobs.values()
                 if j.get("labels", {}).get("jobspec-name") == name
                 and j["labels"].get("jobspec-owner") == OWNER_ID]
        assert len(found) == 1, found
        return found[0]

    def report(self, name: str) -> dict:
        return json.loads((self.repo.root / "reports" / f"{name}.json").read_text())


@pytest.fixture
def fake():
    with FakeVertex(polls_until_done=2) as running:
        running.script("tuned", "41", "42")
        running.script("tuned", "7", "8")
        running.script("base", "41", "forty-two")
        running.script("base", "7", "8")
        yield running


@pytest.fixture
def vertex(repo, fake, monkeypatch, tmp_path) -> Vertex:
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no gcloud ADC file
    monkeypatch.setenv("JOBSPEC_VERTEX_ENDPOINT", fake.url)
    monkeypatch.setenv("JOBSPEC_STORAGE_ENDPOINT", fake.url)
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("JOBSPEC_OWNER", OWNER)
    setup = Vertex(fake, repo)
    setup.write_numbers()
    return setup


def apply(cli, *extra: str):
    return cli("apply", "jobs/", "--poll-interval", "0.01", *extra)
