"""fake_unavailable: the Gemini API's front end (generativelanguage.googleapis.com) on a bad
day, which tests cannot reach: every request, or every request but the listing of tuned models,
is answered with one error in Google's envelope (gemini-tuning-api.md §9), e.g. 503 UNAVAILABLE
or 429 RESOURCE_EXHAUSTED with a ``Retry-After`` header or a RetryInfo detail (``retry_delay``,
as google.rpc.RetryInfo's retryDelay: "0.3s"), or 400 INVALID_ARGUMENT, for ever.
With ``listing_works`` the tunedModels.list call (§3.1) answers an empty ListTunedModelsResponse
(``{}``, §4), so that a plan is made and apply goes on to the request that fails. Every
request is recorded with the time it arrived."""

from __future__ import annotations

from tests.loopback_http import LoopbackJsonServer, Request

CANONICAL = {400: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL",
             503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MESSAGES = {400: "Request contains an invalid argument.",
            429: "Resource has been exhausted (e.g. check quota).",
            503: "The service is currently unavailable."}


class FakeUnavailable(LoopbackJsonServer):
    def __init__(self, code: int = 503, *, retry_after: str | None = None,
                 retry_delay: str | None = None, listing_works: bool = False) -> None:
        super().__init__()
        self.code = code
        self.retry_after = retry_after
        self.retry_delay = retry_delay
        self.listing_works = listing_works

    def route(self, request: Request):
        if self.listing_works and request.method == "GET" and request.path == "/v1beta/tunedModels":
            return 200, {}, {}
        status, body, _ = self.error(self.code, CANONICAL.get(self.code, "UNKNOWN"),
                                     MESSAGES.get(self.code, "fake failure"))
        if self.retry_delay is not None:
            body["error"]["details"] = [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                         "retryDelay": self.retry_delay}]
        return status, body, ({"Retry-After": self.retry_after} if self.retry_after else {})
