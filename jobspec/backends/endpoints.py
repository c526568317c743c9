"""Where requests go, who chose that, and whether credentials may go there.

A job file is repository content: a pull request can change it before anyone reviews it, and CI
runs `jobspec plan` on that pull request with the team's credentials in its environment. So an
endpoint a job file names never receives credentials unless the operator opts in, by naming the
same URL with ``--endpoint`` / ``JOBSPEC_ENDPOINT``, or listing it in
``JOBSPEC_ALLOWED_ENDPOINTS``. And no credential ever crosses a network in clear text: plain
HTTP is accepted with credentials only to this machine (loopback).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..auth import Credentials
from ..errors import AuthError, ConfigError, Location, UsageError

ENDPOINT_VARIABLE = "JOBSPEC_ENDPOINT"
ALLOWED_VARIABLE = "JOBSPEC_ALLOWED_ENDPOINTS"


@dataclass(frozen=True)
class Endpoint:
    url: str
    source: str  # who named it, for messages: "--endpoint", "jobs/x.yaml: backend.endpoint", ...
    trusted: bool  # chosen by the operator (command line, environment), not repository content
    named_at: Location | None = None  # where a job file names it, when one does

    def allowed_by_operator(self) -> "Endpoint":
        """This endpoint, trusted when the operator listed it in JOBSPEC_ALLOWED_ENDPOINTS."""
        allowed = {normalise(u) for u in os.environ.get(ALLOWED_VARIABLE, "").split(",")
                   if u.strip()}
        if normalise(self.url) in allowed:
            return dataclasses.replace(self, trusted=True,
                                       source=f"{self.source}, allowed by {ALLOWED_VARIABLE}")
        return self


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


def operator_endpoint(flag: str | None) -> Endpoint | None:
    """The endpoint the operator named (``--endpoint``, then JOBSPEC_ENDPOINT), if any."""
    if flag:
        return Endpoint(checked_url(flag, "--endpoint"), "--endpoint", trusted=True)
    if os.environ.get(ENDPOINT_VARIABLE):
        return Endpoint(checked_url(os.environ[ENDPOINT_VARIABLE], ENDPOINT_VARIABLE),
                        ENDPOINT_VARIABLE, trusted=True)
    return None


def check_destination(endpoint: Endpoint, credentials: Credentials) -> None:
    """Refuse, before anything is sent, to hand ``credentials`` to an endpoint the operator did
    not choose, or to send them over plain HTTP off this machine."""
    if not credentials.has_secret:
        return
    if not endpoint.trusted:
        raise ConfigError(
            endpoint.named_at or Location(endpoint.source, field="backend.endpoint"),
            f"{endpoint.url} is named by a job file, which a pull request can change, so jobspec "
            f"will not send it the {credentials.method}. If you trust it, name it yourself: pass "
            f"--endpoint {endpoint.url}, or add it to {ALLOWED_VARIABLE} (comma-separated URLs)")
    parts = urlsplit(endpoint.url)
    if parts.scheme != "https" and not is_loopback_host(parts.hostname):
        raise AuthError(
            f"{endpoint.url} ({endpoint.source}) is plain HTTP to another machine: jobspec sends "
            f"the {credentials.method} only over HTTPS, or over HTTP to this machine (loopback). "
            "Use an https:// URL (a TLS-terminating proxy in front of the service, say)")
