"""Every wait jobspec makes between tries, on tenacity: retrying a request that failed in a way
that is safe to retry, and polling a long-running operation until it is done.

Retrying (``RetryPolicy``): only what is safe to retry is retried: 429, 500, 502, 503, 504 and
transport errors (``TransientBackendError``), with exponential backoff and jitter, bounded by
attempts and by a deadline (``JOBSPEC_RETRY_DEADLINE``). When the service says how long to wait (a
``Retry-After`` header, in seconds or as an HTTP date, or Google's ``RetryInfo.retryDelay`` in the
error body) that wait replaces the backoff, as RFC 9110 means it to; but jobspec never sleeps
longer than ``max_wait`` at once nor past the deadline: a service that asks for more than that is
answered by giving up now, with its error and the wait it asked for. A value that is neither a
number nor a date is treated as absent.

Polling (``PollPolicy``): a first wait that grows by a factor to a longest one, until the
operation is done or a timeout passes. Each backend states how often its runs are worth polling
(``PollDefaults``, its module's ``POLL``).

Who waits decides how a wait is cut short (Ctrl-C): every wait here goes through the caller's
``sleep``.
"""

from __future__ import annotations

import email.utils
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timezone
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import TransientBackendError, UsageError

# tenacity is imported where a wait is made, not here: validate, show and schema import this
# module through the backends' rules but never wait.
if TYPE_CHECKING:
    import tenacity

T = TypeVar("T")
Sleep = Callable[[float], None]

DEADLINE_VARIABLE = "JOBSPEC_RETRY_DEADLINE"
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)s\s*")  # google.protobuf.Duration in JSON: "37.5s"


def retryable_status(http_status: int) -> bool:
    """Whether an HTTP answer with this status may be retried: the service refused for now
    (429, 503) or failed on its side (500, 502, 504). Every other error surfaces at once."""
    return http_status in RETRYABLE_STATUS


def retryable(error: BaseException) -> bool:
    """Whether a failed try may be repeated: a transient backend error (a retryable status, or
    no answer at all), never an error that would be the same again."""
    return isinstance(error, TransientBackendError)


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


def retry_info_delay(error: dict[str, Any]) -> float | None:
    """Seconds from Google's RetryInfo detail in an error envelope's ``error`` (§9 of the
    contract), e.g. {"retryDelay": "37s"}; None when there is none."""
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("@type") == _RETRY_INFO:
            found = _DURATION.fullmatch(str(detail.get("retryDelay", "")))
            if found:
                return _finite_seconds(float(found[1]))
    return None


def asked_wait(retry_after: str | None, error: dict[str, Any] | None) -> float | None:
    """How long the service asked to wait: its Retry-After header, else the RetryInfo in its
    error body; None when it asked nothing."""
    asked = parse_retry_after(retry_after)
    if asked is None and error is not None:
        asked = retry_info_delay(error)
    return asked


class Deadline:
    """A moment ``seconds`` from now, on the monotonic clock."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    @staticmethod
    def earliest(*deadlines: Deadline) -> Deadline:
        return min(deadlines, key=lambda deadline: deadline.at)


def _attempt_state(attempt: int) -> tenacity.RetryCallState:
    """What tenacity's wait strategies read (the attempt's number) for a wait that is not
    made inside tenacity.Retrying."""
    import tenacity  # noqa: PLC0415 - see the imports above

    state = tenacity.RetryCallState(None, None, (), {})
    state.attempt_number = attempt
    return state


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    deadline_seconds: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 60.0  # the longest single wait, whether backoff or asked for by the service

    @classmethod
    def from_environment(cls) -> RetryPolicy:
        """The default policy, with the deadline from JOBSPEC_RETRY_DEADLINE when it is set."""
        deadline = os.environ.get(DEADLINE_VARIABLE)
        if not deadline:
            return cls()
        try:
            return cls(deadline_seconds=float(deadline))
        except ValueError:
            raise UsageError(f"{DEADLINE_VARIABLE}={deadline}: expected seconds") from None

    def budget(self) -> Budget:
        """A fresh budget for one operation's tries, its deadline starting now."""
        return Budget(self)

    def backoff(self, attempt: int) -> float:
        """The wait after ``attempt`` failed tries when the service asked for none:
        exponential from ``initial_wait``, doubling, with up to a second of jitter, at most
        ``max_wait``."""
        import tenacity  # noqa: PLC0415 - see the imports above

        return tenacity.wait_exponential_jitter(initial=self.initial_wait,
                                                max=self.max_wait)(_attempt_state(attempt))

    def call(self, send: Callable[[], T], *, sleep: Sleep) -> T:
        """``send()`` until it succeeds, fails in a way that is not retryable (raised at once),
        or the budget is spent: then its last TransientBackendError is raised, saying why
        jobspec gave up."""
        import tenacity  # noqa: PLC0415 - see the imports above

        budget = self.budget()
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(retryable), stop=budget.stop,
            wait=budget.wait, sleep=sleep, reraise=True)
        try:
            return retrying(send)
        except TransientBackendError as exc:
            if budget.gave_up is None:
                raise
            raise TransientBackendError(f"{exc.message} ({budget.gave_up})",
                                        http_status=exc.http_status, status=exc.status,
                                        retry_after=exc.retry_after) from None


class Budget:
    """One operation's retry budget: attempts, the deadline, and why it gave up (for the
    message). Made afresh for each operation, so that threads never share one."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.deadline = Deadline(policy.deadline_seconds)
        self.gave_up: str | None = None

    def left(self) -> float:
        return self.deadline.left()

    def next_wait(self, error: BaseException | None, attempt: int) -> float | None:
        """Seconds to wait before trying again after ``attempt`` tries, the last failing with
        ``error``: what the service asked for, else the backoff, never past the deadline. None:
        give up now (``gave_up`` says why), the attempts or the deadline being spent, or the
        service asking for a longer wait than jobspec makes."""
        asked = getattr(error, "retry_after", None)
        left, policy = self.left(), self.policy
        tried = f"{attempt} attempt{'s' if attempt > 1 else ''}"
        if attempt >= policy.attempts:
            self.gave_up = f"gave up after {tried}"
        elif left <= 0:
            self.gave_up = (f"gave up after {tried} in {policy.deadline_seconds:g}s, "
                            "the retry deadline")
        elif asked is not None and asked > min(left, policy.max_wait):
            bound = ("the longest wait between attempts" if left > policy.max_wait
                     else "what is left of the retry deadline")
            longest = round(min(left, policy.max_wait), 1)
            self.gave_up = (f"the service asked to retry after {asked:g}s, longer than {bound} "
                            f"({longest:g}s); gave up after {tried}")
        if self.gave_up is not None:
            return None
        wait = asked if asked is not None else policy.backoff(attempt)
        return max(0.0, min(wait, policy.max_wait, self.left()))

    # As tenacity.Retrying's stop and wait.

    def stop(self, state: tenacity.RetryCallState) -> bool:
        error = state.outcome.exception() if state.outcome else None
        return self.next_wait(error, state.attempt_number) is None

    def wait(self, state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        return self.next_wait(error, state.attempt_number) or 0.0


@dataclass(frozen=True)
class PollDefaults:
    """How often a backend's runs are worth polling: the first wait, and the longest."""

    initial: float
    maximum: float


@dataclass(frozen=True)
class PollPolicy:
    """Polling a long-running operation: waits from ``initial`` growing by ``growth`` to
    ``maximum``, until it is done or ``timeout`` seconds have passed (seen after each look, so
    a wait that began before it is slept whole)."""

    initial: float
    maximum: float
    timeout: float | None = None  # seconds; None waits for ever
    growth: float = 1.5

    @classmethod
    def for_backend(cls, defaults: PollDefaults, timeout: float | None = None,
                    initial: float | None = None) -> PollPolicy:
        """The backend's polling, from ``initial`` when given (the longest wait keeps the
        backend's ratio to the first)."""
        first = initial if initial is not None else defaults.initial
        return cls(first, first * defaults.maximum / defaults.initial, timeout)

    def wait(self, looks: int) -> float:
        """The wait after ``looks`` looks at an operation that is not done."""
        return self._waits()(_attempt_state(looks))

    def _waits(self) -> tenacity.wait.wait_base:
        import tenacity  # noqa: PLC0415 - see the imports above

        return tenacity.wait_exponential(multiplier=self.initial, min=self.initial,
                                         max=self.maximum, exp_base=self.growth)

    def poll(self, look: Callable[[], T], done: Callable[[T], bool], *, sleep: Sleep,
             until: Deadline | None = None) -> T:
        """``look()`` again until ``done`` with what it returns, the timeout passes, or
        ``until`` comes (never slept past); returns the last look, done or not. An error a look
        raises ends the polling with it."""
        import tenacity  # noqa: PLC0415 - see the imports above

        stop: Any = (tenacity.stop_never if self.timeout is None
                     else tenacity.stop_after_delay(self.timeout))
        waits = self._waits()
        wait: Callable[[tenacity.RetryCallState], float] = waits
        if until is not None:
            stop = stop | (lambda state: until.left() <= 0)

            def bounded(state: tenacity.RetryCallState) -> float:
                return max(0.0, min(waits(state), until.left()))

            wait = bounded

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda seen: not done(seen)), wait=wait, stop=stop,
            sleep=sleep, retry_error_callback=lambda state: state.outcome.result())
        return retrying(look)
