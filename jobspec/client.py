"""One HTTP client for the Gemini API and the local service (they speak the same protocol).

Retries, with tenacity, only what is safe to retry: 429, 500, 502, 503, 504 and transport
errors, with exponential backoff and jitter, bounded by attempts and by a deadline. Every other
error surfaces at once with the service's own message. POSTs are retried too: jobspec names
every model it creates, so a repeated create meets ALREADY_EXISTS, never a second model;
generateContent changes nothing.

When the service says how long to wait (a ``Retry-After`` header, in seconds or as an HTTP date,
or Google's ``RetryInfo.retryDelay`` in the error body) that wait replaces the backoff, as RFC
9110 means it to; but jobspec never sleeps longer than ``max_wait`` at once nor past the
deadline: a service that asks for more than that is answered by giving up now, with its error
and the wait it asked for. A value that is neither a number nor a date is treated as absent.
Every wait ends at once when the client is interrupted (Ctrl-C).
"""

from __future__ import annotations

import email.utils
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING, Any

from . import __version__
from .auth import Credentials
from .errors import (AuthError, BackendError, Interrupted, PermanentBackendError,
                     TransientBackendError)

# httpx and tenacity are imported where a request is made, not here: validate, show and schema
# import this module through the backends' rules but send nothing, and httpx imports its own
# command line (click, rich) when they are installed, a third of validate's start-up.
if TYPE_CHECKING:
    import httpx
    import tenacity

RETRYABLE_STATUS = {429, 500, 502, 503, 504}
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)s\s*")  # google.protobuf.Duration in JSON: "37.5s"


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    deadline_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 60.0  # the longest single wait, whether backoff or asked for by the service


def _finite_seconds(value: float) -> float | None:
    return max(0.0, value) if math.isfinite(value) else None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delay-seconds or an HTTP date; None when the
    value is absent or is neither (``soon``)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        return _finite_seconds(float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment is None:
        return None
    if moment.tzinfo is None:  # "-0000": HTTP dates are in UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return _finite_seconds(moment.timestamp() - (time.time() if now is None else now))


def _retry_delay_in_body(error: dict[str, Any]) -> float | None:
    """Google's RetryInfo detail (§9 of the contract), e.g. {"retryDelay": "37s"}."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            found = _DURATION.fullmatch(str(detail.get("retryDelay", "")))
            if found:
                return _finite_seconds(float(found[1]))
    return None


def error_from_response(response: httpx.Response) -> BackendError | AuthError:
    """Google's error envelope → the exception a user can act on."""
    status_name, message = "", response.text[:300].strip() or response.reason_phrase
    asked_in_body = None
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            status_name = str(error.get("status", ""))
            message = str(error.get("message", message))
            asked_in_body = _retry_delay_in_body(error)
    except (ValueError, AttributeError):
        pass
    where = f"{response.request.method} {response.request.url.path}"
    if response.status_code in (401, 403):
        return AuthError(f"{response.status_code} {status_name or 'denied'}: {message} ({where})")
    if response.status_code in RETRYABLE_STATUS:
        asked = parse_retry_after(response.headers.get("retry-after"))
        return TransientBackendError(message, http_status=response.status_code,
                                     status=status_name,
                                     retry_after=asked if asked is not None else asked_in_body)
    return PermanentBackendError(message, http_status=response.status_code, status=status_name)


class _Budget:
    """One request's retry budget: attempts, the deadline, and why it gave up (for the message).
    Made afresh for each request, so that threads never share one."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.gave_up: str | None = None

    def left(self) -> float:
        return self.policy.deadline_seconds - (time.monotonic() - self.started)

    def stop(self, state: tenacity.RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        left = self.left()
        tried = f"{state.attempt_number} attempt{'s' if state.attempt_number > 1 else ''}"
        if state.attempt_number >= self.policy.attempts:
            self.gave_up = f"gave up after {tried}"
        elif left <= 0:
            self.gave_up = (f"gave up after {tried} in {self.policy.deadline_seconds:g}s, "
                            "the retry deadline")
        elif asked is not None and asked > min(left, self.policy.max_wait):
            bound = ("the longest wait between attempts" if left > self.policy.max_wait
                     else "what is left of the retry deadline")
            longest = round(min(left, self.policy.max_wait), 1)
            self.gave_up = (f"the service asked to retry after {asked:g}s, longer than {bound} "
                            f"({longest:g}s); gave up after {tried}")
        return self.gave_up is not None

    def wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        asked = getattr(error, "retry_after", None)
        if asked is None:
            import tenacity  # noqa: PLC0415 - see the imports above

            asked = tenacity.wait_exponential_jitter(initial=self.policy.initial_wait,
                                                     max=self.policy.max_wait)(state)
        return max(0.0, min(asked, self.policy.max_wait, self.left()))


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
        import tenacity  # noqa: PLC0415 - see the imports above

        budget = _Budget(self.retry)
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(TransientBackendError),
            stop=budget.stop, wait=budget.wait, sleep=self._sleep, reraise=True)
        try:
            return retrying(send)
        except TransientBackendError as exc:
            if budget.gave_up is None:
                raise
            raise TransientBackendError(f"{exc.message} ({budget.gave_up})",
                                        http_status=exc.http_status, status=exc.status,
                                        retry_after=exc.retry_after) from None

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
