"""HTTP for the local service: the Gemini API's paths under /v1beta/ and /v1/, auth, logging.

Every request first passes the guard (guard.py: Host, Origin, Content-Type), then auth. Every
answer, errors included, is cut to the Gemini API's published fields unless the caller asked for
jobspec's extensions (``wire.EXTENSIONS_HEADER``; published.py); jobspec's own methods are not.

Google's paths put a method after a colon (``tunedModels/x:generateContent``), which routers'
path templates do not express well, so one catch-all route dispatches on a small table of regular
expressions. Uploads of examples (jobspec's own media path, ``PUT /upload/v1beta/uploads/
{sha256}``, described in jobspec/wire.py) have a route of their own: their body is streamed to
disk (uploads.py) rather than read whole as JSON. A request is logged as one line with its path
but never its query string, which may carry an API key.
"""

from __future__ import annotations

import hmac
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..wire import (EXTENSIONS_HEADER, EXTENSIONS_ON, IDENTITY_PATH, LOCAL_MAX_BODY_BYTES,
                    RENDER_EXAMPLE_METHOD, UPLOAD_CONTENT_TYPE, UPLOAD_PREFIX, UPLOADS,
                    identity_proof)
from . import counting, handshake, preview, protojson
from .guard import RequestGuard
from .published import ERROR_TYPE, published
from .service import TuningService
from .protojson import ApiError

MAX_BODY_BYTES = LOCAL_MAX_BODY_BYTES
NAME = r"([a-z0-9][a-z0-9.-]*)"

Handler = Callable[[TuningService, Request, tuple[str, ...], Any], Any]
# A Hugging Face id as the path of a base model (``Qwen/Qwen2.5-0.5B-Instruct:countExampleTokens``
# or under ``models/``): how jobspec's client addresses the open model a job names.
HUB_PATH = re.compile(r"(?:models/)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(:\w+)?")


def open_model_path(service: TuningService, rest: str) -> str:
    """``rest`` with a Hugging Face id the service serves replaced by its ``models/ID`` (so
    the methods of a base model answer by either name); any other path as it is."""
    found = HUB_PATH.fullmatch(rest)
    if found is None or found[1] not in service.registry.aliases:
        return rest
    return f"models/{service.registry.aliases[found[1]]}{found[2] or ''}"


def _query(request: Request, name: str) -> str | None:
    """A query parameter, by its camelCase or snake_case name."""
    return request.query_params.get(name, request.query_params.get(protojson.snake(name)))


def _paging(request: Request) -> tuple[str | None, str | None]:
    """The raw pageSize and pageToken of a list call (paging.py checks them)."""
    return _query(request, "pageSize"), _query(request, "pageToken")


class Method(NamedTuple):
    http_method: str
    pattern: str
    handler: Handler
    has_body: bool
    # Whether it loads or runs a model or a tokenizer, so it runs in the threadpool.
    blocking: bool
    # The discovery document's method id, whose response type a caller that did not ask for
    # jobspec's extensions is answered in (published.py); None for jobspec's own methods.
    published: str | None


METHODS: list[Method] = [
    Method("GET", r"models", lambda s, r, m, b: s.list_models(*_paging(r)), False, False,
           "models.list"),
    # models.get loads the model's tokenizer (once) to say how it counts
    Method("GET", rf"models/{NAME}", lambda s, r, m, b: s.get_model(m[0]), False, True,
           "models.get"),
    Method("POST", rf"models/{NAME}:generateContent",
           lambda s, r, m, b: s.generate(b, base=m[0]), True, True, "models.generateContent"),
    Method("POST", rf"models/{NAME}:countTokens",
           lambda s, r, m, b: counting.count_tokens(s, m[0], b), True, True, "models.countTokens"),
    # jobspec's own: every tuning example's tokens, for plans (counting.py)
    Method("POST", rf"models/{NAME}:countExampleTokens",
           lambda s, r, m, b: counting.count_example_tokens(s, m[0], b), True, True, None),
    # jobspec's own: an example as it is trained (preview.py), for callers that ask for
    # extensions only
    Method("POST", rf"models/{NAME}:{RENDER_EXAMPLE_METHOD}",
           lambda s, r, m, b: preview.render_example(s, _extension_body(r, b), base=m[0]), True,
           True, None),
    Method("POST", rf"tunedModels/{NAME}:{RENDER_EXAMPLE_METHOD}",
           lambda s, r, m, b: preview.render_example(s, _extension_body(r, b), tuned=m[0]),
           True, True, None),
    Method("GET", r"tunedModels", lambda s, r, m, b: s.list_tuned_models(
        *_paging(r)), False, False, "tunedModels.list"),
    # create tokenizes every example: in the threadpool, so other requests are not held up
    Method("POST", r"tunedModels", lambda s, r, m, b: s.create(b, _query(r, "tunedModelId")),
           True, True, "tunedModels.create"),
    Method("GET", rf"tunedModels/{NAME}", lambda s, r, m, b: s.get_tuned_model(m[0]), False,
           False, "tunedModels.get"),
    Method("PATCH", rf"tunedModels/{NAME}", lambda s, r, m, b: s.patch(
        m[0], b, _query(r, "updateMask")), True, False, "tunedModels.patch"),
    Method("DELETE", rf"tunedModels/{NAME}", lambda s, r, m, b: s.delete(m[0]), False, False,
           "tunedModels.delete"),
    Method("POST", rf"tunedModels/{NAME}:generateContent",
           lambda s, r, m, b: s.generate(b, tuned=m[0]), True, True,
           "tunedModels.generateContent"),
    Method("GET", rf"tunedModels/{NAME}/operations", lambda s, r, m, b: s.list_operations(
        m[0], *_paging(r)), False, False, "tunedModels.operations.list"),
    Method("GET", rf"tunedModels/{NAME}/operations/{NAME}",
           lambda s, r, m, b: s.get_operation(m[0], m[1]), False, False,
           "tunedModels.operations.get"),
    Method("POST", rf"tunedModels/{NAME}/operations/{NAME}:cancel",
           lambda s, r, m, b: s.cancel_operation(m[0], m[1]), False, False,
           "tunedModels.operations.cancel"),
    # jobspec's own: whether an upload of examples is here (its PUT is on the media path, below)
    Method("GET", rf"{UPLOADS}/([^/:]+)", lambda s, r, m, b: s.upload_info(m[0]), False, False,
           None),
]
_COMPILED = [(re.compile(method.pattern), method) for method in METHODS]


def asks_for_extensions(request: Request) -> bool:
    """Whether the caller asked for jobspec's extension fields (wire.EXTENSIONS_HEADER)."""
    value = request.headers.get(EXTENSIONS_HEADER)
    if value is None or value.strip() == "0":
        return False
    if value.strip() == EXTENSIONS_ON:
        return True
    raise ApiError("INVALID_ARGUMENT", f"{EXTENSIONS_HEADER}: {value[:40]!r} is not understood; "
                   f"send {EXTENSIONS_ON} for jobspec's extension fields, or leave it out for "
                   "the Gemini API's published fields only.")


def _extension_body(request: Request, body: Any) -> Any:
    """``body``, for a method that is jobspec's extension: one a caller that did not ask for
    extensions does not have (it is not the Gemini API's)."""
    if not asks_for_extensions(request):
        raise ApiError("NOT_FOUND", f"No such method: {request.method} {request.url.path} (a "
                       f"jobspec extension: send {EXTENSIONS_HEADER}: {EXTENSIONS_ON}).")
    return body


def _answer(body: Any, type_name: str | None, extensions: bool) -> Any:
    """The body as sent: cut to its published type unless the caller asked for extensions."""
    if extensions or type_name is None:
        return body
    return published().restrict(body, type_name)


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
    return protojson.loads_lenient(raw)


def build_app(service: TuningService, api_key: str | None, guard: RequestGuard,
              identity_secret: str | None = None) -> Starlette:
    async def answered(request: Request,
                       handle: Callable[[Request], Awaitable[tuple[Any, str | None]]]
                       ) -> JSONResponse:
        """``handle``'s answer, cut to its published type unless the caller asked for more,
        or the error in Google's envelope; logged as one line."""
        started = time.perf_counter()
        service.last_activity = time.monotonic()
        extensions = False
        try:
            extensions = asks_for_extensions(request)
            response = JSONResponse(_answer(*await handle(request), extensions))
        except ApiError as exc:
            response = JSONResponse(_answer(exc.body(), ERROR_TYPE, extensions),
                                    status_code=exc.http_status)
        except Exception:  # noqa: BLE001 - answer in Google's envelope, keep serving
            traceback.print_exc(file=sys.stderr)
            error = ApiError("INTERNAL", "Internal error in the local tuning service; see its log.")
            response = JSONResponse(error.body(), status_code=500)
        elapsed = (time.perf_counter() - started) * 1000
        print(f"jobspec serve: {request.method} {request.url.path} {response.status_code} "
              f"{elapsed:.1f}ms", file=sys.stderr, flush=True)
        return response

    async def dispatch(request: Request) -> JSONResponse:
        return await answered(request, lambda r: _handle(r, r.path_params["path"]))

    async def upload(request: Request) -> JSONResponse:
        return await answered(request, _upload)

    async def _handle(request: Request, path: str) -> tuple[Any, str | None]:
        """The method's answer and its published response type (None: jobspec's own)."""
        guard.check(request.headers)
        check_auth(request, api_key)
        version, _, rest = path.partition("/")
        if version not in ("v1beta", "v1"):
            raise ApiError("NOT_FOUND", f"Unknown API version in /{path}; use /v1beta/ or /v1/.")
        rest = open_model_path(service, rest)
        allowed = []
        for pattern, method in _COMPILED:
            match = pattern.fullmatch(rest)
            if not match:
                continue
            if method.http_method != request.method:
                allowed.append(method.http_method)
                continue
            body = await _read_body(request) if method.has_body else None
            call = (service, request, match.groups(), body)
            answer = await run_in_threadpool(method.handler, *call) if method.blocking \
                else method.handler(*call)
            return answer, method.published and published().response_type(method.published)
        if allowed:
            raise ApiError("UNIMPLEMENTED", f"Method {request.method} is not allowed on /{path} "
                           f"(allowed: {', '.join(sorted(set(allowed)))}).")
        raise ApiError("NOT_FOUND", f"No such method: {request.method} /{path}.")

    async def _upload(request: Request) -> tuple[Any, None]:
        """PUT /upload/v1beta/uploads/{sha256}: examples streamed into the service's state
        directory (uploads.py), measured as they arrive, never held whole."""
        guard.check(request.headers, UPLOAD_CONTENT_TYPE)
        check_auth(request, api_key)
        declared = request.headers.get("content-length", "").strip()

        def active() -> None:  # a long upload is activity: the service must not idle out
            service.last_activity = time.monotonic()

        try:
            info = await service.uploads.receive(request.path_params["sha256"],
                                                 int(declared) if declared.isdigit() else None,
                                                 request.stream(), active)
        except ClientDisconnect:
            raise ApiError("CANCELLED", "The client went away before the upload ended; nothing "
                           "was kept.") from None
        return info, None

    async def prove_identity(request: Request) -> JSONResponse:
        """jobspec's check that this is the service it started (handshake.py)."""
        try:
            guard.check(request.headers)
            challenge = request.query_params.get("challenge")
            if identity_secret is None:
                raise ApiError("NOT_FOUND", "This service was not started by jobspec (it holds "
                               "no identity secret).")
            if not handshake.valid_challenge(challenge):
                raise ApiError("INVALID_ARGUMENT", "challenge must be 16 to 128 hex digits.")
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.http_status)
        return JSONResponse({"proof": identity_proof(identity_secret, challenge)})

    methods = ["GET", "POST", "PATCH", "DELETE", "PUT"]
    return Starlette(routes=[Route(IDENTITY_PATH, prove_identity, methods=["GET"]),
                             Route(f"/{UPLOAD_PREFIX}/v1beta/{UPLOADS}/{{sha256}}", upload,
                                   methods=["PUT"]),
                             Route("/{path:path}", dispatch, methods=methods)])
