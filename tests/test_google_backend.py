"""The Google-specific parts of the gemini backend, against fake_gemini (a contract fake of
generativelanguage.googleapis.com built from shared/reference/gemini-tuning-api.md)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from jobspec.backends.gemini import GOOGLE_ENDPOINT
from tests.conftest import ROOT
from tests.fake_gemini import FakeGemini

CREDENTIAL_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN",
                        "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "JOBSPEC_BACKEND",
                        "JOBSPEC_LOCAL_URL")


@pytest.fixture
def google_repo(repo, monkeypatch, tmp_path):
    shutil.copytree(ROOT / "jobs", repo.root / "jobs")
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no gcloud ADC file
    return repo


def apply_with(cli, fake, *extra):
    return cli("apply", "jobs/", "--skip-eval", "--backend", "gemini", "--endpoint", fake.url,
               "--poll-interval", "0.01", *extra)


def test_oauth_token_and_quota_project_on_every_request(google_repo, cli, monkeypatch):
    monkeypatch.setenv("GOOGLE_OAUTH_ACCESS_TOKEN", "ya29.secret-token")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    with FakeGemini() as fake:
        result = apply_with(cli, fake)
    assert result.code == 0, result.err
    assert "ya29.secret-token" not in result.out + result.err
    for request in fake.requests:
        assert request["headers"]["Authorization"] == "Bearer ya29.secret-token"
        assert request["headers"]["x-goog-user-project"] == "my-project"
    creates = [r for r in fake.requests if r["method"] == "POST"]
    assert [r["path"] for r in creates] == ["/v1beta/tunedModels"] * 2
    assert sorted(r["query"]["tunedModelId"][0].rsplit("-", 1)[0] for r in creates) == [
        "antonyms", "number-generator"]
    body = json.loads(next(r["body"] for r in creates if b"number generator" in r["body"]))
    assert body["baseModel"] == "models/gemini-1.0-pro-001"
    assert body["tuningTask"]["hyperparameters"] == {"batchSize": 2, "epochCount": 5,
                                                     "learningRate": 0.001}
    assert body["tuningTask"]["trainingData"]["examples"]["examples"][0] == {
        "textInput": "1", "output": "2"}
    polls = [r["path"] for r in fake.requests if "/operations/" in r["path"]]
    assert polls and all(p.startswith("/v1/tunedModels/") for p in polls)


def test_api_key_goes_in_a_header_never_the_url(google_repo, cli, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-secret-key")
    with FakeGemini() as fake:
        result = apply_with(cli, fake)
        again = apply_with(cli, fake)
    assert result.code == 0 and again.code == 0
    for request in fake.requests:
        assert request["headers"]["x-goog-api-key"] == "AIza-secret-key"
        assert "key" not in request["query"] and "Authorization" not in request["headers"]
    assert "AIza-secret-key" not in result.err + again.err + result.out


def test_application_default_credentials_are_refreshed(google_repo, cli, monkeypatch, tmp_path):
    with FakeGemini() as fake:
        # A service account key (made here) whose token_uri is the fake's token endpoint:
        # google-auth honours token_uri for service accounts, not for authorized_user files.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        adc = tmp_path / "adc.json"
        adc.write_text(json.dumps({
            "type": "service_account", "project_id": "adc-project", "private_key_id": "k1",
            "private_key": pem, "client_email": "tuner@adc-project.iam.gserviceaccount.com",
            "client_id": "1", "token_uri": f"{fake.url}/token"}))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(adc))
        result = apply_with(cli, fake)
    assert result.code == 0, result.err
    api = [r for r in fake.requests if r["path"] != "/token"]
    assert fake.tokens_issued >= 2  # refreshed again once the first token neared expiry
    tokens = {r["headers"]["Authorization"] for r in api}
    assert tokens <= {f"Bearer fresh-{n}" for n in range(1, fake.tokens_issued + 1)}
    assert len(tokens) > 1
    assert {r["headers"]["x-goog-user-project"] for r in api} == {"adc-project"}


def test_adopts_a_model_that_already_exists(google_repo, cli, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    with FakeGemini(polls_until_done=1) as fake:
        assert apply_with(cli, fake, "--no-wait").code == 0
        hidden = dict(fake.models)
        fake.models.clear()  # the listing misses them (as after a lost create response) ...
        original = fake.route

        def route(method, path, query, raw):  # ... but create still finds them taken
            if method == "POST" and query.get("tunedModelId", [""])[0] in hidden:
                fake.models.update(hidden)
            return original(method, path, query, raw)

        fake.route = route
        adopted = apply_with(cli, fake)
        assert adopted.code == 0
        assert "number-generator: adopted tunedModels/number-generator-" in adopted.err
        creates = [r for r in fake.requests if r["method"] == "POST"]
    assert len(creates) == 4 and len(fake.models) == 2


def test_no_credentials_is_a_clear_error(google_repo, cli):
    result = cli("plan", "--backend", "gemini", "--endpoint", "http://127.0.0.1:9")
    assert result.code == 1
    assert result.err.startswith("jobspec: auth error: no credentials for the gemini backend: set "
                                 "GEMINI_API_KEY (or GOOGLE_API_KEY) to an API key, set "
                                 "GOOGLE_OAUTH_ACCESS_TOKEN")


def test_auth_names_the_method_and_endpoint_not_the_secret(google_repo, cli, monkeypatch):
    monkeypatch.setenv("GOOGLE_API_KEY", "AIza-another-secret")
    result = cli("auth", "--backend", "gemini")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[:3] == ["backend: gemini", f"endpoint: {GOOGLE_ENDPOINT}",
                         "credentials: API key from GOOGLE_API_KEY"]
    assert lines[3] == f"owner: {google_repo.root.resolve()} (repository path; id " + \
        hashlib.sha256(str(google_repo.root.resolve()).encode()).hexdigest()[:16] + ")"
    assert "AIza-another-secret" not in result.out + result.err
    assert GOOGLE_ENDPOINT == "https://generativelanguage.googleapis.com"
