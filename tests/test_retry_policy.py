"""jobspec/retrying.py as a seam: which failures are retried, how long the service may make
jobspec wait (Retry-After in seconds or as an HTTP date, Google's RetryInfo), when the budget is
spent, and how polling a long-running operation backs off, all through the policies' public
API with a sleep that records instead of sleeping; then once through client.py against a
loopback fake of the Gemini API's front end. The CLI journeys are in test_retries.py."""

from __future__ import annotations

import email.utils
import time

import pytest

from jobspec import auth
from jobspec.client import ApiClient
from jobspec.errors import PermanentBackendError, TransientBackendError, UsageError
from jobspec.retrying import (Deadline, PollDefaults, PollPolicy, RetryPolicy, asked_wait,
                              parse_retry_after, retry_info_delay, retryable,
                              retryable_status)
from tests.fake_unavailable import FakeUnavailable

pytestmark = pytest.mark.timeout(30)

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


class Sleeps(list):
    """A sleep that records each wait and returns at once (or, ``real``, sleeps it)."""

    def __init__(self, real: bool = False) -> None:
        super().__init__()
        self.real = real

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.real:
            time.sleep(seconds)


def failing(*errors: Exception, then: object = "done"):
    """A try that raises each of ``errors`` in turn, then returns ``then``; counts its calls."""
    left = list(errors)

    def send():
        send.calls += 1
        if left:
            raise left.pop(0)
        return then

    send.calls = 0
    return send


def unavailable(retry_after: float | None = None) -> TransientBackendError:
    return TransientBackendError("The service is currently unavailable.", http_status=503,
                                 status="UNAVAILABLE", retry_after=retry_after)


# Which failures are retried.

@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_overload_and_server_failures_are_retryable(status):
    assert retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412, 501])
def test_every_other_status_is_not(status):
    assert not retryable_status(status)


def test_a_transient_failure_is_tried_again_and_a_permanent_one_is_not():
    assert retryable(unavailable()) and not retryable(PermanentBackendError("bad request"))
    sleeps = Sleeps()
    send = failing(unavailable(), unavailable())
    assert RetryPolicy().call(send, sleep=sleeps) == "done"
    assert send.calls == 3 and len(sleeps) == 2
    refused = failing(PermanentBackendError("Request contains an invalid argument.",
                                            http_status=400, status="INVALID_ARGUMENT"))
    with pytest.raises(PermanentBackendError) as raised:
        RetryPolicy().call(refused, sleep=sleeps)
    assert refused.calls == 1 and len(sleeps) == 2  # not retried, no wait
    assert str(raised.value) == "400 INVALID_ARGUMENT: Request contains an invalid argument."


# What the service asks for.

def test_retry_after_in_seconds():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("0") == 0.0


def test_retry_after_as_an_http_date():
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now=now) == \
        pytest.approx(30, abs=1)  # HTTP dates have whole seconds
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now=now) == 0.0  # past: now
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 -0000", now=784111777 - 5) == 5.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "nan", "inf",
                                   "Mon, 99 Foo 2024 99:99:99 GMT"])
def test_a_retry_after_that_is_no_number_or_date_is_absent(value):
    assert parse_retry_after(value) is None


def test_retry_info_in_the_error_body():
    error = {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
        {"@type": RETRY_INFO, "retryDelay": "37.5s"}]}
    assert retry_info_delay(error) == 37.5
    assert retry_info_delay({"details": [{"@type": RETRY_INFO, "retryDelay": "soon"}]}) is None
    assert retry_info_delay({"details": [{"retryDelay": "3s"}]}) is None  # not RetryInfo
    assert retry_info_delay({}) is None
    # The header wins over the body; the body stands in when the header says nothing usable.
    assert asked_wait("2", error) == 2.0
    assert asked_wait("soon", error) == 37.5
    assert asked_wait(None, None) is None


def test_what_the_service_asks_for_replaces_the_backoff():
    sleeps = Sleeps()
    send = failing(unavailable(retry_after=2.0), unavailable(retry_after=0.0))
    assert RetryPolicy().call(send, sleep=sleeps) == "done"
    assert sleeps == [2.0, 0.0]  # exactly, no jitter


def test_backoff_doubles_with_up_to_a_second_of_jitter_to_the_longest_wait():
    policy = RetryPolicy(initial_wait=0.5, max_wait=5.0)
    for attempt, base in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0)]:
        waits = [policy.backoff(attempt) for _ in range(50)]
        assert all(base <= wait <= min(base + 1, 5.0) for wait in waits), (attempt, waits)
        assert len(set(waits)) > 1  # jittered
    assert {policy.backoff(attempt) for attempt in (5, 8, 40)} == {5.0}
    assert policy.budget().next_wait(unavailable(), 1) <= 1.5


# When the budget is spent.

def test_the_attempts_run_out():
    sleeps = Sleeps()
    send = failing(*[unavailable(retry_after=0.0)] * 10)
    with pytest.raises(TransientBackendError) as raised:
        RetryPolicy(attempts=3).call(send, sleep=sleeps)
    assert send.calls == 3 and len(sleeps) == 2
    assert str(raised.value) == ("503 UNAVAILABLE: The service is currently unavailable. "
                                 "(gave up after 3 attempts)")
    assert raised.value.http_status == 503


def test_the_deadline_runs_out_and_is_never_slept_past():
    send = failing(*[unavailable()] * 100)
    started = time.monotonic()
    with pytest.raises(TransientBackendError) as raised:
        RetryPolicy(deadline_seconds=0.4, initial_wait=0.05).call(send, sleep=time.sleep)
    took = time.monotonic() - started
    assert str(raised.value).endswith("(gave up after "
                                      f"{send.calls} attempts in 0.4s, the retry deadline)")
    assert 0.4 <= took < 0.8 and send.calls >= 2


@pytest.mark.parametrize("deadline, bound", [
    (300.0, "the longest wait between attempts (60s)"),
    (10.0, "what is left of the retry deadline (10s)")])
def test_a_wait_longer_than_jobspec_makes_gives_up_at_once(deadline, bound):
    sleeps = Sleeps()
    send = failing(unavailable(retry_after=120.0))
    with pytest.raises(TransientBackendError) as raised:
        RetryPolicy(deadline_seconds=deadline).call(send, sleep=sleeps)
    assert send.calls == 1 and sleeps == []
    assert str(raised.value).endswith(f"(the service asked to retry after 120s, longer than "
                                      f"{bound}; gave up after 1 attempt)")
    assert raised.value.retry_after == 120.0


def test_one_budget_gives_a_caller_that_retries_by_hand_the_same_rules():
    budget = RetryPolicy(attempts=3, max_wait=10.0).budget()
    assert budget.next_wait(unavailable(retry_after=4.0), 1) == 4.0
    assert budget.gave_up is None
    assert budget.next_wait(unavailable(retry_after=4.0), 3) is None
    assert budget.gave_up == "gave up after 3 attempts"
    longer = RetryPolicy(max_wait=10.0).budget()
    assert longer.next_wait(unavailable(retry_after=11.0), 1) is None
    assert longer.gave_up.startswith("the service asked to retry after 11s")


def test_the_deadline_comes_from_jobspec_retry_deadline(monkeypatch):
    monkeypatch.delenv("JOBSPEC_RETRY_DEADLINE", raising=False)
    assert RetryPolicy.from_environment() == RetryPolicy()
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "12.5")
    assert RetryPolicy.from_environment().deadline_seconds == 12.5
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "a while")
    with pytest.raises(UsageError, match="JOBSPEC_RETRY_DEADLINE=a while: expected seconds"):
        RetryPolicy.from_environment()


# Polling a long-running operation.

def looks(*seen: bool):
    """A look at an operation that answers ``seen`` in turn (done or not); counts its calls."""
    answers = list(seen)

    def look():
        look.calls += 1
        return answers.pop(0)

    look.calls = 0
    return look


def test_poll_waits_grow_by_half_to_the_longest_then_stay():
    sleeps = Sleeps()
    look = looks(*[False] * 7, True)
    assert PollPolicy(1.0, 5.0).poll(look, bool, sleep=sleeps) is True
    assert look.calls == 8
    assert sleeps == pytest.approx([1.0, 1.5, 2.25, 3.375, 5.0, 5.0, 5.0])
    assert [PollPolicy(2.0, 60.0, growth=2.0).wait(n) for n in (1, 2, 3, 6, 7)] == \
        [2.0, 4.0, 8.0, 60.0, 60.0]


def test_poll_stops_at_its_timeout_with_the_last_look():
    look = looks(*[False] * 1000)
    started = time.monotonic()
    assert PollPolicy(0.02, 0.02, timeout=0.2).poll(look, bool, sleep=time.sleep) is False
    assert 0.2 <= time.monotonic() - started < 0.6 and look.calls >= 5


def test_poll_never_sleeps_past_a_deadline():
    sleeps = Sleeps(real=True)
    look = looks(*[False] * 1000)
    started = time.monotonic()
    assert PollPolicy(0.2, 60.0, growth=2.0).poll(look, bool, sleep=sleeps,
                                                  until=Deadline(0.5)) is False
    took = time.monotonic() - started
    assert sleeps[:2] == [0.2, pytest.approx(0.3, abs=0.05)]  # 0.4 cut to what was left
    assert 0.5 <= took < 0.8 and look.calls in (3, 4)  # 4: a last look at the very end


def test_poll_ends_with_the_error_a_look_raises():
    def look():
        raise PermanentBackendError("not found", http_status=404)

    with pytest.raises(PermanentBackendError):
        PollPolicy(1.0, 5.0).poll(look, bool, sleep=Sleeps())


def test_a_backends_defaults_keep_their_ratio_from_another_first_wait():
    vertex_like = PollDefaults(initial=30.0, maximum=300.0)
    assert PollPolicy.for_backend(vertex_like) == PollPolicy(30.0, 300.0)
    assert PollPolicy.for_backend(vertex_like, timeout=60.0, initial=0.5) == \
        PollPolicy(0.5, 5.0, 60.0)


# Through the HTTP client.

@pytest.mark.parametrize("asked", [
    {"retry_delay": "0.3s"}, {"retry_after": "0.3"},
    {"retry_after": "soon", "retry_delay": "0.3s"}], ids=["RetryInfo", "seconds", "fallback"])
def test_the_client_waits_as_the_service_asks_then_gives_up(asked):
    with FakeUnavailable(429, **asked) as fake, ApiClient(
            fake.url, auth.no_credentials("none"), retry=RetryPolicy(attempts=3)) as client:
        with pytest.raises(TransientBackendError) as raised:
            client.request("GET", "tunedModels")
    assert str(raised.value) == ("429 RESOURCE_EXHAUSTED: Resource has been exhausted (e.g. "
                                 "check quota). (gave up after 3 attempts)")
    assert raised.value.retry_after == 0.3
    assert len(fake.requests) == 3 == client.request_count
    gaps = [b.at - a.at for a, b in zip(fake.requests, fake.requests[1:])]
    assert all(0.29 <= gap < 1.0 for gap in gaps), gaps  # as asked, not the backoff's jitter


def test_the_client_sends_a_refused_request_once():
    with FakeUnavailable(400) as fake, ApiClient(fake.url, auth.no_credentials("none")) as client:
        with pytest.raises(PermanentBackendError):
            client.request("GET", "tunedModels")
    assert len(fake.requests) == 1
