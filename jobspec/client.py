"""One HTTP client for the Gemini API and the local service (they speak the same protocol).

Retries only what is safe to retry, as ``retrying.RetryPolicy`` rules (429, 500, 502, 503, 504
and transport errors, with backoff, honouring what the service asks for, within a deadline).
Every other error surfaces at once with the service's own message. POSTs are retried too:
jobspec names every model it creates, so a repeated create meets ALREADY_EXISTS, never a second
model; generateContent changes nothing. Every wait ends at once when the client is interrupted
(Ctrl-C).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import __version__
from .auth import Credentials
from .errors import (AuthError, BackendError, Interrupted, PermanentBackendError,
                     TransientBackendError)
from .retrying import RetryPolicy, asked_wait, retryable_status

# httpx is imported where a request is made, not here: validate, show and schema import this
# module through the backends' rules but send nothing, and httpx imports its own command line
# (click, rich) when they are installed, a third of validate's start-up.
if TYPE_CHECKING:
    import httpx


def error_from_response(response: httpx.Response) -> BackendError | AuthError:
    """Google's error envelope → the exception a user can act on."""
    status_name, message = "", response.text[:300].strip() or response.reason_phrase
    envelope = None
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            status_name = str(error.get("status", ""))
            message = str(error.get("message", message))
            envelope = error
    except (ValueError, AttributeError):
        pass
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (401, 403):
        return AuthError(f"{response.status_code} {status_name or 'denied'}: {message} ({where})")
    if retryable_status(response.status_code):
        return TransientBackendError(message, http_status=response.status_code,
                                     status=status_name,
                                     retry_after=asked_wait(response.headers.get("retry-after"),
                                                            envelope))
    return PermanentBackendError(message, http_status=response.status_code, status=status_name)


class ApiClient:
    """httpx with base URL, timeouts, a connection pool, auth headers and safe retries;
    ``headers`` go with every request."""

    def __init__(self, base_url: str, credentials: Credentials, *,
                 retry: RetryPolicy = RetryPolicy(), timeout: float = 60.0,
                 api_version: str = "v1beta", headers: dict[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.credentials = credentials
        self.retry = retry
        self.api_version = api_version
        import httpx  # noqa: PLC0415 - see the imports above

        self._http = httpx.Client(
            base_url=self.base_url, timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
            headers={"User-Agent": f"jobspec/{__version__}", **(headers or {})})
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

    def _send_once(self, method: str, path: str, params: dict[str, Any] | None,
                   body: Any, content: Iterable[bytes] | None = None,
                   headers: dict[str, str] | None = None,
                   timeout: float | None = None) -> dict[str, Any]:
        import httpx  # noqa: PLC0415 - see the imports above

        with self._count_lock:
            self.request_count += 1
        # Only a longer wait for the answer than the client's (a request whose work grows with
        # the data it names); the client's own timeouts otherwise.
        waits = {} if timeout is None else {
            "timeout": httpx.Timeout(self._http.timeout.read, read=timeout,
                                     connect=self._http.timeout.connect)}
        try:
            response = self._http.request(method, path, params=params, json=body,
                                          content=content,
                                          headers={**self.credentials.headers(),
                                                   **(headers or {})}, **waits)
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
                body: Any = None, version: str | None = None,
                retry: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """``path`` is relative to the API version, e.g. ``tunedModels/x``. ``retry=False``
        sends once: for a request that must not be repeated blindly (a create whose repeat
        would make a second resource), whose caller decides what to do after a transient
        error. ``timeout``: how long to wait for the answer, when longer than usual."""
        url = f"/{version or self.api_version}/{path}"
        if not retry:
            return self._send_once(method, url, params, body, timeout=timeout)
        return self._retried(lambda: self._send_once(method, url, params, body,
                                                     timeout=timeout))

    def send_stream(self, method: str, path: str, *, content: Callable[[], Iterable[bytes]],
                    length: int, content_type: str, params: dict[str, Any] | None = None,
                    version: str | None = None) -> dict[str, Any]:
        """A request whose body is ``length`` bytes, streamed from ``content()`` (called afresh
        for each attempt, so that a retry sends the whole body again) and never held whole,
        with an explicit Content-Length (no chunked encoding) and Content-Type; retried as
        ``request`` is. The caller makes sure a repeat is harmless (Cloud Storage's
        ifGenerationMatch=0, say)."""
        url = f"/{version or self.api_version}/{path}"
        headers = {"Content-Type": content_type, "Content-Length": str(length)}
        return self._retried(lambda: self._send_once(method, url, params, None,
                                                     content=content(), headers=headers))

    def _retried(self, send: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return self.retry.call(send, sleep=self._sleep)

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
