"""Auth of the local service: API key by header, query or bearer token; secrets never logged."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.service import LocalService

KEY = "sk-local-test-7c1f0e9a"


@pytest.fixture(scope="module")
def keyed_service(tiny_model, tmp_path_factory):
    running = LocalService(tmp_path_factory.mktemp("state"), "--model", str(tiny_model),
                           "--api-key", KEY).start()
    yield running
    running.stop()


def test_credentials_are_required_and_checked(keyed_service):
    with keyed_service.client() as http:
        missing = http.get("/v1beta/tunedModels")
        assert (missing.status_code, missing.json()["error"]["status"]) == (401, "UNAUTHENTICATED")
        wrong = http.get("/v1beta/tunedModels", headers={"x-goog-api-key": "nope"})
        assert wrong.status_code == 403
        assert wrong.json()["error"] == {"code": 403, "status": "PERMISSION_DENIED",
                                         "message": "API key not valid. Please pass a valid API key."}
        wrong_bearer = http.get("/v1beta/tunedModels", headers={"Authorization": "Bearer nope"})
        assert wrong_bearer.json()["error"]["status"] == "UNAUTHENTICATED"
        assert http.get("/v1beta/tunedModels", headers={"x-goog-api-key": KEY}).status_code == 200
        assert http.get("/v1beta/tunedModels", params={"key": KEY}).status_code == 200
        assert http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}",
                                               "x-goog-user-project": "p"}).status_code == 200
        http.get("/v1beta/tunedModels", params={"key": "wrong-key-in-url"})
    assert KEY not in keyed_service.log
    assert "wrong-key-in-url" not in keyed_service.log
    assert "GET /v1beta/tunedModels 200" in keyed_service.log


def test_loopback_without_a_key_accepts_anyone(service):
    with service.client() as http:
        assert http.get("/v1beta/tunedModels", headers={"x-goog-api-key": "anything"}).status_code == 200
        assert http.get("/v1beta/tunedModels").status_code == 200


def test_refuses_to_listen_beyond_loopback_without_a_key(tiny_model, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "jobspec.server", "--host", "0.0.0.0", "--model", str(tiny_model),
         "--state-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 64
    assert "refusing to listen on 0.0.0.0 without an API key" in result.stderr
