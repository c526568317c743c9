"""Where requests go, who chose that, and whether credentials may go there.

A job file is repository content: a pull request can change it before anyone reviews it, and CI
runs `jobspec plan` on that pull request with the team's credentials in its environment. So an
endpoint a job file names never receives credentials unless the operator opts in, by naming the
same URL with ``--endpoint`` / ``JOBSPEC_ENDPOINT``, or listing it in
``JOBSPEC_ALLOWED_ENDPOINTS``. And no credential ever crosses a network in clear text: plain
HTTP is accepted with credentials only to this machine (loopback).

Consent is given for one backend type, because the type is repository content too: an endpoint
the operator allowed for the local service (which sends no Google credentials) must not receive
``GEMINI_API_KEY`` when a pull request declares it ``type: gemini``. So each entry of
``JOBSPEC_ALLOWED_ENDPOINTS`` names its type (``local=http://127.0.0.1:8080``), and the
operator's own ``--endpoint`` / ``JOBSPEC_ENDPOINT``, which name none, receive credentials only
for a backend the operator chose too (``--backend`` or ``JOBSPEC_BACKEND``), never for one the
job files chose.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..auth import Credentials
from ..errors import AuthError, ConfigError, Location, UsageError

ENDPOINT_VARIABLE = "JOBSPEC_ENDPOINT"
ALLOWED_VARIABLE = "JOBSPEC_ALLOWED_ENDPOINTS"
BACKEND_VARIABLE = "JOBSPEC_BACKEND"  # the operator's choice of backend (registry.py reads it)


@dataclass(frozen=True)
class Endpoint:
    url: str
    source: str  # who named it, for messages: "--endpoint", "jobs/x.yaml: backend.endpoint", ...
    trusted: bool  # chosen by the operator (command line, environment), not repository content
    named_at: Location | None = None  # where a job file names it, when one does
    # The operator named this endpoint without a backend type, and the backend it would serve
    # was chosen by the job files (which a pull request can change): that backend's name.
    backend_from_jobs: str | None = None

    def allowed_by_operator(self, backend: str, known: Collection[str]) -> "Endpoint":
        """This endpoint, trusted when the operator listed it in JOBSPEC_ALLOWED_ENDPOINTS for
        ``backend`` (one of the ``known`` backend types)."""
        if normalise(self.url) in allowed_endpoints(known).get(backend, set()):
            return dataclasses.replace(
                self, trusted=True,
                source=f"{self.source}, allowed for {backend} by {ALLOWED_VARIABLE}")
        return self


def allowed_endpoints(known: Collection[str]) -> dict[str, set[str]]:
    """JOBSPEC_ALLOWED_ENDPOINTS: comma-separated ``TYPE=URL`` entries, read as backend type →
    normalised URLs. An entry without a type is refused rather than guessed at: allowed for
    every type, it would hand Google credentials to an endpoint meant for the local service."""
    allowed: dict[str, set[str]] = {}
    for entry in filter(None, (e.strip() for e in os.environ.get(ALLOWED_VARIABLE, "").split(","))):
        kind, separator, url = entry.partition("=")
        kind = kind.strip()
        if not separator or "/" in kind or ":" in kind:
            raise UsageError(
                f"{ALLOWED_VARIABLE}: {entry!r} names no backend type; write TYPE=URL, e.g. "
                f"gemini={entry}, with TYPE one of {', '.join(known)}: an endpoint is allowed "
                "for one backend type, so that one allowed for the local service is never sent "
                "Google credentials")
        if kind not in known:
            raise UsageError(f"{ALLOWED_VARIABLE}: {entry!r}: {kind!r} is not a backend type; "
                             f"expected one of {', '.join(known)}")
        allowed.setdefault(kind, set()).add(normalise(checked_url(url, ALLOWED_VARIABLE)))
    return allowed


def normalise(url: str) -> str:
    return url.strip().rstrip("/").lower()


def is_loopback_host(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def checked_url(url: str, source: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{source} {url!r}: expected an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise UsageError(f"{source}: the URL carries a user name or password; give credentials "
                         "through the environment instead (see `jobspec auth`)")
    return url.strip().rstrip("/")


def operator_endpoint(flag: str | None, backend_from_jobs: str | None = None) -> Endpoint | None:
    """The endpoint the operator named (``--endpoint``, then JOBSPEC_ENDPOINT), if any.
    ``backend_from_jobs``: the backend it would serve, when the job files chose that backend."""
    if flag:
        return Endpoint(checked_url(flag, "--endpoint"), "--endpoint", trusted=True,
                        backend_from_jobs=backend_from_jobs)
    if os.environ.get(ENDPOINT_VARIABLE):
        return Endpoint(checked_url(os.environ[ENDPOINT_VARIABLE], ENDPOINT_VARIABLE),
                        ENDPOINT_VARIABLE, trusted=True, backend_from_jobs=backend_from_jobs)
    return None


def check_destination(endpoint: Endpoint, credentials: Credentials, backend: str) -> None:
    """Refuse, before anything is sent, to hand ``backend``'s ``credentials`` to an endpoint the
    operator did not choose for that backend, or to send them over plain HTTP off this
    machine."""
    if not credentials.has_secret:
        return
    if not endpoint.trusted:
        raise ConfigError(
            endpoint.named_at or Location(endpoint.source, field="backend.endpoint"),
            f"{endpoint.url} is named by a job file, which a pull request can change, so jobspec "
            f"will not send it the {credentials.method}. If you trust it, name it yourself: pass "
            f"--backend {backend} --endpoint {endpoint.url}, or add {backend}={endpoint.url} to "
            f"{ALLOWED_VARIABLE} (comma-separated TYPE=URL entries)")
    if endpoint.backend_from_jobs:
        raise UsageError(
            f"{endpoint.url} ({endpoint.source}) names no backend type, and the "
            f"{endpoint.backend_from_jobs} backend was chosen by the job files, which a pull "
            f"request can change, so jobspec will not send it the {credentials.method}. Choose "
            f"the backend yourself too: --backend {endpoint.backend_from_jobs} or "
            f"{BACKEND_VARIABLE}={endpoint.backend_from_jobs}")
    parts = urlsplit(endpoint.url)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise AuthError(
            f"{endpoint.url} ({endpoint.source}) is plain HTTP to another machine: jobspec sends "
            f"the {credentials.method} only over HTTPS, or over HTTP to this machine (loopback). "
            "Use an https:// URL (a TLS-terminating proxy in front of the service, say)")
