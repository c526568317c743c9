"""HTTP for the local service: the Gemini API's paths under /v1beta/ and /v1/, auth, logging.

Every request first passes the guard (guard.py: Host, Origin, Content-Type), then auth.

Google's paths put a method after a colon (``tunedModels/x:generateContent``), which routers'
path templates do not express well, so one catch-all route dispatches on a small table of regular
expressions. A request is logged as one line with its path but never its query string, which may
carry an API key.
"""

from __future__ import annotations

import hmac
import re
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..wire import LOCAL_MAX_BODY_BYTES
from . import counting, identity, wire
from .guard import RequestGuard
from .service import TuningService
from .wire import ApiError

MAX_BODY_BYTES = LOCAL_MAX_BODY_BYTES
NAME = r"([a-z0-9][a-z0-9.-]*)"

Handler = Callable[[TuningService, Request, tuple[str, ...], Any], Any]


def _query(request: Request, name: str) -> str | None:
    """A query parameter, by its camelCase or snake_case name."""
    return request.query_params.get(name, request.query_params.get(wire.snake(name)))


def _int_query(request: Request, name: str) -> int | None:
    value = _query(request, name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value for {name}: {value!r} is not an "
                       "integer.") from None


# (method, path pattern, handler, whether it reads a body, whether it blocks: loads or
# runs a model or a tokenizer, so it runs in the threadpool)
ROUTES: list[tuple[str, str, Handler, bool, bool]] = [
    ("GET", r"models", lambda s, r, m, b: s.list_models(), False, False),
    # models.get loads the model's tokenizer (once) to say how it counts
    ("GET", rf"models/{NAME}", lambda s, r, m, b: s.get_model(m[0]), False, True),
    ("POST", rf"models/{NAME}:generateContent",
     lambda s, r, m, b: s.generate(b, base=m[0]), True, True),
    ("POST", rf"models/{NAME}:countTokens",
     lambda s, r, m, b: counting.count_tokens(s, m[0], b), True, True),
    # jobspec's own: every tuning example's tokens, for plans (counting.py)
    ("POST", rf"models/{NAME}:countExampleTokens",
     lambda s, r, m, b: counting.count_example_tokens(s, m[0], b), True, True),
    ("GET", r"tunedModels", lambda s, r, m, b: s.list_tuned_models(
        _int_query(r, "pageSize"), _query(r, "pageToken")), False, False),
    # create tokenizes every example: in the threadpool, so other requests are not held up
    ("POST", r"tunedModels", lambda s, r, m, b: s.create(b, _query(r, "tunedModelId")),
     True, True),
    ("GET", rf"tunedModels/{NAME}", lambda s, r, m, b: s.get_tuned_model(m[0]), False, False),
    ("PATCH", rf"tunedModels/{NAME}", lambda s, r, m, b: s.patch(
        m[0], b, _query(r, "updateMask")), True, False),
    ("DELETE", rf"tunedModels/{NAME}", lambda s, r, m, b: s.delete(m[0]), False, False),
    ("POST", rf"tunedModels/{NAME}:generateContent",
     lambda s, r, m, b: s.generate(b, tuned=m[0]), True, True),
    ("GET", rf"tunedModels/{NAME}/operations", lambda s, r, m, b: s.list_operations(m[0]),
     False, False),
    ("GET", rf"tunedModels/{NAME}/operations/{NAME}",
     lambda s, r, m, b: s.get_operation(m[0], m[1]), False, False),
    ("POST", rf"tunedModels/{NAME}/operations/{NAME}:cancel",
     lambda s, r, m, b: s.cancel_operation(m[0], m[1]), False, False),
]
_COMPILED = [(method, re.compile(pattern), handler, body, blocking)
             for method, pattern, handler, body, blocking in ROUTES]


def _credentials(request: Request) -> tuple[str, str] | None:
    """("key", value) or ("bearer", value) or None."""
    key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
    if key:
        return "key", key
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        return "bearer", authorization[7:].strip()
    return None


def check_auth(request: Request, api_key: str | None) -> None:
    if api_key is None:  # loopback without a key: anyone on this machine may call
        return
    given = _credentials(request)
    if given is None:
        raise ApiError("UNAUTHENTICATED", "Method doesn't allow unregistered callers (callers "
                       "without established identity). Please use API Key or other form of API "
                       "consumer identity to call this API.")
    kind, value = given
    if hmac.compare_digest(value.encode(), api_key.encode()):
        return
    if kind == "key":
        raise ApiError("PERMISSION_DENIED", "API key not valid. Please pass a valid API key.")
    raise ApiError("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected "
                   "OAuth 2 access token, login cookie or other valid authentication credential.")


async def _read_body(request: Request) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError("INVALID_ARGUMENT", f"Request payload size exceeds the limit: "
                       f"{MAX_BODY_BYTES} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError("INVALID_ARGUMENT", f"Request payload size exceeds the limit: "
                           f"{MAX_BODY_BYTES} bytes.")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    return wire.loads_lenient(raw)


def build_app(service: TuningService, api_key: str | None, guard: RequestGuard,
              identity_secret: str | None = None) -> Starlette:
    async def dispatch(request: Request) -> JSONResponse:
        started = time.perf_counter()
        service.last_activity = time.monotonic()
        path = request.path_params["path"]
        try:
            response = JSONResponse(await _handle(request, path))
        except ApiError as exc:
            response = JSONResponse(exc.body(), status_code=exc.http_status)
        except Exception:  # noqa: BLE001 - answer in Google's envelope, keep serving
            traceback.print_exc(file=sys.stderr)
            error = ApiError("INTERNAL", "Internal error in the local tuning service; see its log.")
            response = JSONResponse(error.body(), status_code=500)
        elapsed = (time.perf_counter() - started) * 1000
        print(f"jobspec serve: {request.method} {request.url.path} {response.status_code} "
              f"{elapsed:.1f}ms", file=sys.stderr, flush=True)
        return response

    async def _handle(request: Request, path: str) -> Any:
        guard.check(request.headers)
        check_auth(request, api_key)
        version, _, rest = path.partition("/")
        if version not in ("v1beta", "v1"):
            raise ApiError("NOT_FOUND", f"Unknown API version in /{path}; use /v1beta/ or /v1/.")
        allowed = []
        for method, pattern, handler, has_body, blocking in _COMPILED:
            match = pattern.fullmatch(rest)
            if not match:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            body = await _read_body(request) if has_body else None
            if blocking:
                return await run_in_threadpool(handler, service, request, match.groups(), body)
            return handler(service, request, match.groups(), body)
        if allowed:
            raise ApiError("UNIMPLEMENTED", f"Method {request.method} is not allowed on /{path} "
                           f"(allowed: {', '.join(sorted(set(allowed)))}).")
        raise ApiError("NOT_FOUND", f"No such method: {request.method} /{path}.")

    async def prove_identity(request: Request) -> JSONResponse:
        """jobspec's check that this is the service it started (identity.py)."""
        try:
            guard.check(request.headers)
            challenge = request.query_params.get("challenge")
            if identity_secret is None:
                raise ApiError("NOT_FOUND", "This service was not started by jobspec (it holds "
                               "no identity secret).")
            if not identity.valid_challenge(challenge):
                raise ApiError("INVALID_ARGUMENT", "challenge must be 16 to 128 hex digits.")
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.http_status)
        return JSONResponse({"proof": identity.proof(identity_secret, challenge)})

    methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    return Starlette(routes=[Route(identity.PATH, prove_identity, methods=["GET"]),
                             Route("/{path:path}", dispatch, methods=methods)])
