"""One HTTP client for the Gemini API and the local service (they speak the same protocol).

Retries, with tenacity, only what is safe to retry: 429, 500, 502, 503, 504 and transport
errors, with exponential backoff and jitter, honouring Retry-After, bounded by attempts and by a
deadline. Every other error surfaces at once with the service's own message. POSTs are retried
too: jobspec names every model it creates, so a repeated create meets ALREADY_EXISTS, never a
second model; generateContent changes nothing.
"""

from __future__ import annotations

import email.utils
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from . import __version__
from .auth import Credentials
from .errors import (AuthError, BackendError, Interrupted, PermanentBackendError,
                     TransientBackendError)

RETRYABLE_STATUS = {429, 500, 502, 503, 504}


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    deadline_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 30.0


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def error_from_response(response: httpx.Response) -> BackendError | AuthError:
    """Google's error envelope → the exception a user can act on."""
    status_name, message = "", response.text[:300].strip() or response.reason_phrase
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            status_name = str(error.get("status", ""))
            message = str(error.get("message", message))
    except (ValueError, AttributeError):
        pass
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (401, 403):
        return AuthError(f"{response.status_code} {status_name or 'denied'}: {message} ({where})")
    if response.status_code in RETRYABLE_STATUS:
        return TransientBackendError(message, http_status=response.status_code,
                                     status=status_name, retry_after=_retry_after(response))
    return PermanentBackendError(message, http_status=response.status_code, status=status_name)


class ApiClient:
    """httpx with base URL, timeouts, a connection pool, auth headers and safe retries."""

    def __init__(self, base_url: str, credentials: Credentials, *,
                 retry: RetryPolicy = RetryPolicy(), timeout: float = 60.0,
                 api_version: str = "v1beta") -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.retry = retry
        self.api_version = api_version
        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": f"jobspec/{__version__}"})
        self._count_lock = threading.Lock()
        self.request_count = 0
        self._interrupted = threading.Event()

    def close(self) -> None:
        self._http.close()

    def interrupt(self) -> None:
        """Stop every retry wait at once (Ctrl-C): the waiting call raises Interrupted."""
        self._interrupted.set()

    def _sleep(self, seconds: float) -> None:
        if self._interrupted.wait(seconds):
            raise Interrupted(f"interrupted while waiting to retry a request to {self.base_url}")

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = tenacity.wait_exponential_jitter(initial=self.retry.initial_wait,
                                                   max=self.retry.max_wait)(state)
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        return max(backoff, retry_after) if retry_after is not None else backoff

    def _send_once(self, method: str, path: str, params: dict[str, Any] | None,
                   body: Any) -> dict[str, Any]:
        with self._count_lock:
            self.request_count += 1
        try:
            response = self._http.request(method, path, params=params, json=body,
                                          headers=self.credentials.headers())
        except httpx.TransportError as exc:
            raise TransientBackendError(f"{type(exc).__name__} talking to {self.base_url}: "
                                        f"{exc}") from None
        if response.status_code >= 400:
            raise error_from_response(response)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise TransientBackendError(f"{method} {path}: the service answered "
                                        f"{response.status_code} with a body that is not JSON") \
                from None

    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                body: Any = None, version: str | None = None) -> dict[str, Any]:
        """``path`` is relative to the API version, e.g. ``tunedModels/x``."""
        url = f"/{version or self.api_version}/{path}"
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientBackendError),
            stop=(tenacity.stop_after_attempt(self.retry.attempts)
                  | tenacity.stop_after_delay(self.retry.deadline_seconds)),
            wait=self._wait, sleep=self._sleep, reraise=True)
        return retrying(self._send_once, method, url, params, body)

    def paginate(self, path: str, key: str, *, page_size: int = 1000,
                 params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every item of a list method, following nextPageToken."""
        items: list[dict[str, Any]] = []
        token = None
        while True:
            query = {**(params or {}), "pageSize": page_size}
            if token:
                query["pageToken"] = token
            page = self.request("GET", path, params=query)
            items.extend(page.get(key, []))
            token = page.get("nextPageToken")
            if not token:
                return items
