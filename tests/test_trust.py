"""Credentials go only where the operator said: an endpoint that a job file (repository content,
which a pull request can change) names never receives credentials from the environment unless
the operator opts in; no credential crosses a network in clear text."""

from __future__ import annotations

import pytest

from tests.fake_gemini import FakeGemini

SECRET = "AIza-team-secret-key"
CREDENTIAL_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN",
                        "GOOGLE_APPLICATION_CREDENTIALS", "JOBSPEC_BACKEND", "JOBSPEC_LOCAL_URL",
                        "JOBSPEC_LOCAL_API_KEY", "JOBSPEC_ENDPOINT", "JOBSPEC_ALLOWED_ENDPOINTS")


@pytest.fixture
def ci_env(repo, monkeypatch):
    """What examples/github-actions.yml sets: the gemini backend and the team's API key."""
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("JOBSPEC_BACKEND", "gemini")
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)
    return repo


def job_with_backend(repo, backend: str, name: str = "demo"):
    return repo.job(name, extra=f"backend: {backend}\n")


def saw_secret(fake: FakeGemini) -> bool:
    return any(SECRET in str(r["headers"]) + str(r["query"]) for r in fake.requests)


def test_a_local_endpoint_in_a_job_file_never_gets_google_credentials(ci_env, cli, monkeypatch):
    with FakeGemini() as attacker, FakeGemini() as operator:
        job_with_backend(ci_env, f"{{type: local, endpoint: {attacker.url}}}")
        monkeypatch.setenv("JOBSPEC_ENDPOINT", operator.url)  # the operator's choice
        result = cli("plan")
    assert result.code == 0, result.err
    assert attacker.requests == []
    assert operator.requests and all(r["headers"]["x-goog-api-key"] == SECRET
                                     for r in operator.requests)
    assert SECRET not in result.out + result.err


def test_a_job_file_endpoint_gets_no_credentials_without_the_operators_consent(ci_env, cli):
    with FakeGemini() as attacker:
        job_with_backend(ci_env, f"{{type: gemini, endpoint: {attacker.url}}}")
        result = cli("plan")
    assert result.code == 1
    assert attacker.requests == []
    assert result.err.startswith(f"jobs/demo.yaml:9:35: backend.endpoint: {attacker.url} is "
                                 "named by a job file, which a pull request can change, so "
                                 "jobspec will not send it the API key from GEMINI_API_KEY.")
    assert (f"pass --backend gemini --endpoint {attacker.url}, or add gemini={attacker.url} to "
            "JOBSPEC_ALLOWED_ENDPOINTS (comma-separated TYPE=URL entries)") in result.err
    assert SECRET not in result.out + result.err


@pytest.mark.parametrize("consent", ["flag", "allow-list"])
def test_the_operator_can_allow_a_job_file_endpoint(ci_env, cli, monkeypatch, consent):
    with FakeGemini() as chosen:
        job_with_backend(ci_env, f"{{type: gemini, endpoint: {chosen.url}}}")
        if consent == "flag":
            result = cli("plan", "--endpoint", chosen.url)
        else:
            monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS",
                               f"local=https://other.example, gemini={chosen.url}/")
            result = cli("plan")
    assert result.code == 0, result.err
    assert chosen.requests and all(r["headers"]["x-goog-api-key"] == SECRET
                                   for r in chosen.requests)


@pytest.mark.parametrize("chosen_by", ["job file", "JOBSPEC_BACKEND"])
def test_an_endpoint_allowed_for_the_local_service_gets_no_google_credentials(
        ci_env, cli, monkeypatch, chosen_by):
    """The allow-list names a backend type: a pull request that declares the endpoint the
    operator allowed for the local service as `type: gemini` does not get GEMINI_API_KEY sent
    there."""
    if chosen_by == "job file":
        monkeypatch.delenv("JOBSPEC_BACKEND")
    with FakeGemini() as local_service:
        monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", f"local={local_service.url}")
        job_with_backend(ci_env, f"{{type: gemini, endpoint: {local_service.url}}}")
        result = cli("plan")
    assert result.code == 1
    assert local_service.requests == []
    assert result.err.startswith(f"jobs/demo.yaml:9:35: backend.endpoint: {local_service.url} is "
                                 "named by a job file")
    assert f"add gemini={local_service.url} to JOBSPEC_ALLOWED_ENDPOINTS" in result.err
    assert SECRET not in result.out + result.err


@pytest.mark.parametrize("entry", ["{url}", "{url}/v1beta?x=y", "https://a.example,{url}"])
def test_an_allowed_endpoint_without_a_backend_type_is_refused(ci_env, cli, monkeypatch, entry):
    """Before, a bare URL was allowed for every backend: one listed for the local service got the
    Gemini API key. Now it is an error that shows the syntax, and nothing is sent."""
    monkeypatch.delenv("JOBSPEC_BACKEND")
    with FakeGemini() as local_service:
        monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", entry.format(url=local_service.url))
        job_with_backend(ci_env, f"{{type: gemini, endpoint: {local_service.url}}}")
        result = cli("plan")
    assert result.code == 64, result.err
    assert local_service.requests == []
    assert "JOBSPEC_ALLOWED_ENDPOINTS: '" in result.err
    assert ("names no backend type; write TYPE=URL, e.g. gemini=" in result.err)
    assert "with TYPE one of local, gemini, vertex" in result.err
    assert SECRET not in result.out + result.err


def test_an_allowed_endpoint_of_an_unknown_backend_type_is_refused(ci_env, cli, monkeypatch):
    monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", "gemni=https://a.example")
    job_with_backend(ci_env, "{type: gemini, endpoint: 'https://a.example'}")
    result = cli("plan")
    assert result.code == 64
    assert ("JOBSPEC_ALLOWED_ENDPOINTS: 'gemni=https://a.example': 'gemni' is not a backend "
            "type; expected one of local, gemini, vertex") in result.err


def test_an_endpoint_allowed_for_the_local_service_serves_it(repo, cli, monkeypatch):
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_API_KEY", "local-secret")
    monkeypatch.setenv("GEMINI_API_KEY", SECRET)  # in the environment, and never sent
    with FakeGemini() as local_service:
        monkeypatch.setenv("JOBSPEC_ALLOWED_ENDPOINTS", f"local={local_service.url}")
        job_with_backend(repo, f"{{type: local, endpoint: {local_service.url}}}")
        result = cli("plan")
    assert result.code == 0, result.err
    assert local_service.requests and all(r["headers"]["x-goog-api-key"] == "local-secret"
                                          for r in local_service.requests)
    assert not saw_secret(local_service)


def test_the_operators_endpoint_gets_no_credentials_for_a_backend_the_job_files_chose(
        ci_env, cli, monkeypatch):
    """JOBSPEC_ENDPOINT names no backend type: set for the local service, it must not receive
    the Gemini API key because a pull request declared `type: gemini`."""
    monkeypatch.delenv("JOBSPEC_BACKEND")
    with FakeGemini() as local_service:
        monkeypatch.setenv("JOBSPEC_ENDPOINT", local_service.url)
        job_with_backend(ci_env, "gemini")
        refused = cli("plan")
        by_flag = cli("plan", "--endpoint", local_service.url)
        assert local_service.requests == []
        chosen = cli("plan", "--backend", "gemini")
    assert refused.code == 64
    assert refused.err.startswith(
        f"jobspec: error: {local_service.url} (JOBSPEC_ENDPOINT) names no backend type, and "
        "the gemini backend was chosen by the job files, which a pull request can change, so "
        "jobspec will not send it the API key from GEMINI_API_KEY. Choose the backend yourself "
        "too: --backend gemini or JOBSPEC_BACKEND=gemini")
    assert by_flag.code == 64 and "(--endpoint) names no backend type" in by_flag.err
    assert chosen.code == 0, chosen.err
    assert local_service.requests and all(r["headers"]["x-goog-api-key"] == SECRET
                                          for r in local_service.requests)


def test_the_local_service_key_is_not_sent_to_a_job_file_endpoint(repo, cli, monkeypatch):
    for variable in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("JOBSPEC_LOCAL_API_KEY", "local-secret")
    with FakeGemini() as attacker:
        job_with_backend(repo, f"{{type: local, endpoint: {attacker.url}}}")
        refused = cli("plan")
        monkeypatch.delenv("JOBSPEC_LOCAL_API_KEY")
        without_key = cli("plan")  # nothing secret to leak: the job file's endpoint is used
    assert refused.code == 1 and "API key from JOBSPEC_LOCAL_API_KEY" in refused.err
    assert not any("local-secret" in str(r["headers"]) for r in attacker.requests)
    assert without_key.code == 0, without_key.err
    assert attacker.requests and f"Backend: local ({attacker.url})" in without_key.out


def test_credentials_never_travel_over_plain_http_to_another_machine(ci_env, cli):
    ci_env.job("demo")
    result = cli("plan", "--endpoint", "http://10.1.2.3:8765")
    assert result.code == 1
    assert result.err.startswith("jobspec: auth error: http://10.1.2.3:8765 (--endpoint) is plain "
                                 "HTTP to another machine: jobspec sends the API key from "
                                 "GEMINI_API_KEY only over HTTPS")


def test_bad_endpoints_are_usage_errors(ci_env, cli):
    ci_env.job("demo")
    with_password = cli("plan", "--endpoint", "https://user:pw@example.com")
    assert with_password.code == 64 and "carries a user name or password" in with_password.err
    not_a_url = cli("plan", "--endpoint", "example.com")
    assert not_a_url.code == 64 and "expected an http:// or https:// URL" in not_a_url.err


def test_jobs_naming_different_endpoints_are_refused(ci_env, cli):
    job_with_backend(ci_env, "{type: gemini, endpoint: 'https://a.example'}", name="one")
    job_with_backend(ci_env, "{type: gemini, endpoint: 'https://b.example'}", name="two")
    result = cli("plan")
    assert result.code == 64
    assert "the jobs name different gemini endpoints" in result.err
