"""Credentials to send to a tuning service: resolved once, and never printed.

The ways Google accepts, as building blocks each backend chains in its own order (see
``backends/``): an API key from an environment variable, sent as x-goog-api-key; an OAuth access
token from GOOGLE_OAUTH_ACCESS_TOKEN (what `gcloud auth application-default print-access-token`
prints); application-default credentials via google-auth, refreshed when they expire. OAuth
requests name the quota project in x-goog-user-project.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import AuthError

TOKEN_VARIABLE = "GOOGLE_OAUTH_ACCESS_TOKEN"


@dataclass
class Credentials:
    """How requests are authenticated. ``method`` is safe to show; the secret never is."""

    method: str
    _api_key: str | None = field(default=None, repr=False)
    _token: str | None = field(default=None, repr=False)
    _google: Any = field(default=None, repr=False)  # google.auth credentials
    quota_project: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def headers(self) -> dict[str, str]:
        if self._api_key:
            return {"x-goog-api-key": self._api_key}
        headers: dict[str, str] = {}
        token = self._token or self._fresh_google_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
            if self.quota_project:
                headers["x-goog-user-project"] = self.quota_project
        return headers

    def _fresh_google_token(self) -> str | None:
        if self._google is None:
            return None
        with self._lock:
            if not self._google.valid:
                from google.auth.exceptions import RefreshError, TransportError  # noqa: PLC0415
                from google.auth.transport.requests import Request  # noqa: PLC0415

                try:
                    self._google.refresh(Request())
                except (RefreshError, TransportError) as exc:
                    raise AuthError(f"could not refresh application-default credentials: {exc}") \
                        from None
            return self._google.token

    @property
    def has_secret(self) -> bool:
        """Whether requests carry anything secret (an API key or an OAuth token)."""
        return bool(self._api_key or self._token or self._google is not None)

    def secrets(self) -> list[str]:
        """Values that must never appear in output, logs or reports."""
        found = [s for s in (self._api_key, self._token) if s]
        if self._google is not None and getattr(self._google, "token", None):
            found.append(self._google.token)
        return found


def _quota_project(explicit: str | None, google_credentials: Any = None) -> str | None:
    return (explicit or os.environ.get("GOOGLE_CLOUD_PROJECT")
            or getattr(google_credentials, "quota_project_id", None))


def no_credentials(method: str) -> Credentials:
    return Credentials(method)


def api_key(variables: tuple[str, ...]) -> Credentials | None:
    """An API key from the first of ``variables`` that is set, sent as x-goog-api-key."""
    for variable in variables:
        if os.environ.get(variable):
            return Credentials(f"API key from {variable}", _api_key=os.environ[variable])
    return None


def oauth(backend: str, scopes: tuple[str, ...], *, quota_project: str | None = None,
          other_ways: str = "") -> Credentials:
    """An OAuth access token from GOOGLE_OAUTH_ACCESS_TOKEN, else application-default
    credentials with ``scopes`` (refreshed when they expire); AuthError naming every way when
    there is none. ``other_ways`` names what else the backend accepts, for that message."""
    token = os.environ.get(TOKEN_VARIABLE)
    if token:
        return Credentials(f"OAuth access token from {TOKEN_VARIABLE}", _token=token,
                           quota_project=_quota_project(quota_project))
    import google.auth  # noqa: PLC0415
    from google.auth.exceptions import DefaultCredentialsError  # noqa: PLC0415

    try:
        google_credentials, project = google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError:
        raise AuthError(
            f"no credentials for the {backend} backend: {other_ways}set {TOKEN_VARIABLE} to an "
            "OAuth access token (gcloud auth application-default print-access-token), or run "
            "`gcloud auth application-default login` for application-default credentials"
        ) from None
    return Credentials("Google application-default credentials", _google=google_credentials,
                       quota_project=_quota_project(quota_project, google_credentials) or project)
