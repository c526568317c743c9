"""The local service refuses what a web page could send it: a foreign Host (DNS rebinding), a
foreign or null Origin and cross-site fetches, and bodies that are not declared JSON (cross-site
form posts). Each refusal changes nothing, and says what to do instead."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from jobspec.server.guard import RequestGuard
from tests.server.test_app import create, error_of, tutorial_body
from tests.service import LocalService

MODELS = "/v1beta/models"
HOST_REFUSED = ("Host {host!r} is not allowed: the local tuning service answers only requests "
                "addressed to localhost, 127.0.0.1 or [::1]{also} (a guard against DNS "
                "rebinding). To serve it as {name}, start the service with --allow-host {name} "
                "(or set JOBSPEC_SERVE_ALLOWED_HOSTS={name},...).")
ORIGIN_REFUSED = ("Origin {origin!r} is not allowed: the local tuning service refuses requests "
                  "made by web pages from other sites. Call it from a program (jobspec, curl, an "
                  "SDK), which sends no Origin; to allow pages served from another host, start "
                  "the service with --allow-host NAME (or set JOBSPEC_SERVE_ALLOWED_HOSTS="
                  "NAME,...).")


def model_names(http) -> list[str]:
    return [m["name"] for m in http.get("/v1beta/tunedModels", params={"pageSize": 1000})
            .json().get("tunedModels", [])]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host", ["localhost", "localhost:{port}", "127.0.0.1:{port}",
                                  "127.8.9.10", "[::1]:{port}", "LOCALHOST:{port}"])
def test_loopback_host_names_are_answered(service, host):
    with service.client() as http:
        response = http.get(MODELS, headers={"Host": host.format(port=service.port)})
        assert response.status_code == 200, response.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("host, name", [
    ("evil.example", "evil.example"), ("evil.example:{port}", "evil.example"),
    ("127.0.0.1.nip.io:{port}", "127.0.0.1.nip.io"),
    ("localhost.evil.example", "localhost.evil.example"),
    ("192.168.1.20:{port}", "192.168.1.20"),
])
def test_other_host_names_are_refused_with_how_to_allow_them(service, host, name):
    host = host.format(port=service.port)
    with service.client() as http:
        assert error_of(http.get(MODELS, headers={"Host": host})) == (
            403, "PERMISSION_DENIED", HOST_REFUSED.format(host=host, name=name, also=""))


@pytest.mark.timeout(60)
def test_a_request_without_host_is_refused(service):
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as raw:
        raw.sendall(b"GET /v1beta/models HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403")
    assert b'"status":"PERMISSION_DENIED"' in body
    assert b"The request has no Host header" in body


@pytest.mark.timeout(120)
def test_a_rebinding_page_can_neither_delete_nor_create(service):
    with service.client() as http:
        assert create(http, tutorial_body(epochs=1), "guarded").status_code == 200
        rebound = {"Host": f"attacker.example:{service.port}"}
        assert error_of(http.delete("/v1beta/tunedModels/guarded", headers=rebound))[:2] == (
            403, "PERMISSION_DENIED")
        before = model_names(http)
        refused = http.post("/v1beta/tunedModels", json=tutorial_body(epochs=1),
                            params={"tunedModelId": "rebound"}, headers=rebound)
        assert error_of(refused)[:2] == (403, "PERMISSION_DENIED")
        assert http.get("/v1beta/tunedModels/guarded").status_code == 200
        assert model_names(http) == before
        assert "tunedModels/rebound" not in before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("origin", ["https://evil.example", "http://evil.example:{port}", "null",
                                    "file://", "http://127.0.0.1.evil.example"])
def test_foreign_and_null_origins_are_refused(service, origin):
    origin = origin.format(port=service.port)
    with service.client() as http:
        before = model_names(http)
        refused = http.post("/v1beta/tunedModels", json=tutorial_body(epochs=1),
                            params={"tunedModelId": "from-a-page"}, headers={"Origin": origin})
        assert error_of(refused) == (403, "PERMISSION_DENIED", ORIGIN_REFUSED.format(origin=origin))
        assert error_of(http.get(MODELS, headers={"Origin": origin}))[0] == 403
        assert model_names(http) == before


@pytest.mark.timeout(60)
@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:{port}",
                                    "http://[::1]:8080"])
def test_pages_served_from_this_machine_are_answered(service, origin):
    origin = origin.format(port=service.port)
    with service.client() as http:
        # A loopback page calling another loopback port is "cross-site" to a browser (localhost
        # and 127.0.0.1 are different sites); its loopback Origin decides.
        headers = {"Origin": origin, "Sec-Fetch-Site": "cross-site"}
        assert http.get(MODELS, headers=headers).status_code == 200


@pytest.mark.timeout(60)
def test_cross_site_fetches_without_origin_are_refused(service):
    with service.client() as http:
        assert error_of(http.get(MODELS, headers={"Sec-Fetch-Site": "cross-site"})) == (
            403, "PERMISSION_DENIED", "Cross-site requests are not allowed (Sec-Fetch-Site: "
            "cross-site): the local tuning service refuses requests made by web pages from other "
            "sites. Call it from a program (jobspec, curl, an SDK) instead.")
        for same in ("same-origin", "same-site", "none"):
            assert http.get(MODELS, headers={"Sec-Fetch-Site": same}).status_code == 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x",
                                          "application/json; charset=latin-1",
                                          "application/jsonp"])
def test_bodies_not_declared_json_are_refused_and_create_nothing(service, content_type):
    raw = b'{"display_name": "form post", "base_model": "models/tiny-smollm2", "tuning_task": ' \
          b'{"training_data": {"examples": {"examples": [{"text_input": "1", "output": "2"}]}}}}'
    with service.client() as http:
        before = model_names(http)
        refused = http.post("/v1beta/tunedModels", content=raw,
                            params={"tunedModelId": "form-post"},
                            headers={"Content-Type": content_type})
        assert error_of(refused) == (
            400, "INVALID_ARGUMENT", f"Content-Type {content_type!r} is not supported: send the "
            "body as JSON (UTF-8) with Content-Type: application/json.")
        assert model_names(http) == before


@pytest.mark.timeout(60)
def test_a_body_without_content_type_is_refused(service):
    with service.client() as http:
        refused = http.post("/v1beta/tunedModels", content=b'{"base_model": "models/x"}')
        assert error_of(refused) == (
            400, "INVALID_ARGUMENT", "The request has a body but no Content-Type: send the body "
            "as JSON with Content-Type: application/json.")
        chunked = http.post("/v1beta/tunedModels", content=iter([b'{"base_model": ', b'"x"}']))
        assert error_of(chunked)[:2] == (400, "INVALID_ARGUMENT")


@pytest.mark.timeout(120)
def test_json_with_charset_is_accepted_and_bodyless_posts_need_no_content_type(service):
    with service.client() as http:
        body = tutorial_body(batch_size=1, epochs=1000)
        created = http.post("/v1beta/tunedModels", content=json.dumps(body).encode(),
                            params={"tunedModelId": "charset-ok"},
                            headers={"Content-Type": "Application/JSON; charset=UTF-8"})
        assert created.status_code == 200, created.text
        name = created.json()["name"]
        cancelled = http.post(f"/v1beta/{name}:cancel")  # no body, no Content-Type
        assert "content-type" not in cancelled.request.headers
        assert cancelled.status_code == 200 and cancelled.json() == {}
        assert service.wait_done(name, timeout=60)["error"]["message"] == "Operation cancelled."


@pytest.mark.timeout(60)
def test_a_refused_cancel_cancels_nothing(service):
    with service.client() as http:
        long_job = tutorial_body(batch_size=1, epochs=1000)
        name = create(http, long_job, "keep-training").json()["name"]
        refused = http.post(f"/v1beta/{name}:cancel", headers={"Origin": "https://evil.example"})
        assert error_of(refused)[:2] == (403, "PERMISSION_DENIED")
        assert "done" not in http.get(f"/v1beta/{name}").json()
        assert http.delete("/v1beta/tunedModels/keep-training").status_code == 200


@pytest.fixture(scope="module")
def named_service(tiny_model, tmp_path_factory):
    running = LocalService(tmp_path_factory.mktemp("state"), "--model", str(tiny_model),
                           "--allow-host", "tuning.internal", "--allow-host", "[fd00::5]",
                           env={"JOBSPEC_SERVE_ALLOWED_HOSTS": "a.example, B.Example"}).start()
    yield running
    running.stop()


@pytest.mark.timeout(120)
def test_operator_configured_names_are_answered(named_service):
    with named_service.client() as http:
        for host in ("tuning.internal", "tuning.internal:443", "a.example", "b.example:8765",
                     "[fd00::5]:8765", "localhost"):
            assert http.get(MODELS, headers={"Host": host}).status_code == 200, host
        assert http.get(MODELS, headers={"Origin": "https://b.example"}).status_code == 200
        also = ", or to a.example, b.example, [fd00::5], tuning.internal"
        assert error_of(http.get(MODELS, headers={"Host": "evil.example"})) == (
            403, "PERMISSION_DENIED",
            HOST_REFUSED.format(host="evil.example", name="evil.example", also=also))


def test_the_bound_address_is_an_allowed_host():
    assert RequestGuard("10.0.0.5").allows_host("10.0.0.5")
    assert not RequestGuard("10.0.0.5").allows_host("10.0.0.6")
    assert not RequestGuard("0.0.0.0").allows_host("0.0.0.0")  # a wildcard is not a name
    assert RequestGuard("0.0.0.0").extra_hosts == frozenset()


@pytest.mark.timeout(60)
def test_help_documents_the_flags():
    result = subprocess.run([sys.executable, "-m", "jobspec.server", "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    help_text = " ".join(result.stdout.split())
    assert "--allow-host NAME" in help_text
    assert "JOBSPEC_SERVE_ALLOWED_HOSTS" in help_text
    assert "--max-batch-tokens N" in help_text
