"""Which requests the local service answers: a guard against web pages, checked before anything
else (authentication, routing, reading the body).

A service on a developer's loopback is reachable from any web page the developer opens. Two
attacks use that. A *cross-site request*: a page posts a form (``text/plain``, no preflight) to
http://127.0.0.1:8765/v1beta/tunedModels and queues training. *DNS rebinding*: a page at
evil.example re-points evil.example to 127.0.0.1 and then reads and deletes models as a
same-origin page would. So a request is answered only when

- its ``Host`` is a loopback name (``localhost``, ``127.0.0.0/8``, ``[::1]``), the specific address
  the service is bound to, or a name the operator allowed (``--allow-host``); a rebinding page
  still sends its own name, so it is refused;
- its ``Origin``, when a browser sent one, names one of those hosts, on any port (``Origin:
  null``, sent by sandboxed frames and local files, does not); without an ``Origin``, a request
  a browser marked ``Sec-Fetch-Site: cross-site`` is refused too. (A page on
  http://localhost:3000 calling http://127.0.0.1:8765 is "cross-site" to the browser, yet it is
  served from this machine: its loopback Origin decides.)
- its body, if it has one, is declared ``application/json``: a form cannot send that without a
  CORS preflight, which this service never grants.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from email.message import Message
from urllib.parse import urlsplit

from ..wire import UPLOAD_CONTENT_TYPE
from .protojson import ApiError

ALLOWED_HOSTS_ENV = "JOBSPEC_SERVE_ALLOWED_HOSTS"
HOW_TO_ALLOW = f"start the service with --allow-host NAME (or set {ALLOWED_HOSTS_ENV}=NAME,...)"


def host_name(authority: str) -> str:
    """``Example.org:8765`` → ``example.org``; ``[::1]:8765`` → ``::1``; ports are ignored."""
    authority = authority.strip().lower()
    if authority.startswith("["):
        return authority[1:].partition("]")[0]
    if authority.count(":") > 1:  # a bare IPv6 address, as an operator may write one
        return authority
    return authority.partition(":")[0]


def is_loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def allowed_host_names(configured: Iterable[str], environment: str | None) -> frozenset[str]:
    """The operator's extra host names: ``--allow-host`` values and the environment variable's
    comma-separated list, normalised like a Host header."""
    names = list(configured) + (environment or "").split(",")
    return frozenset(host_name(name) for name in names if name.strip())


class RequestGuard:
    def __init__(self, bound_host: str, extra_hosts: Iterable[str] = ()) -> None:
        hosts = set(extra_hosts)
        bound = host_name(bound_host)
        if bound and not _is_wildcard(bound) and not is_loopback(bound):
            hosts.add(bound)  # clients of a service bound to 10.0.0.5 address it as 10.0.0.5
        self.extra_hosts = frozenset(hosts)

    def allows_host(self, name: str) -> bool:
        return is_loopback(name) or name in self.extra_hosts

    def check(self, headers: Mapping[str, str], body_type: str = "application/json") -> None:
        """Raise ApiError for a request this service must not answer. ``body_type``: what its
        body must be (JSON; an upload's JSON Lines), never a type a web page may send across
        sites without asking (text/plain, a form)."""
        self._check_host(headers.get("host"))
        self._check_origin(headers.get("origin"), headers.get("sec-fetch-site"))
        if _has_body(headers):
            _check_content_type(headers.get("content-type"), body_type)

    def _check_host(self, host: str | None) -> None:
        if not host:
            raise ApiError("PERMISSION_DENIED", "The request has no Host header; the local tuning "
                           "service answers only requests addressed to localhost, 127.0.0.1 or "
                           "[::1] (a guard against DNS rebinding).")
        name = host_name(host)
        if not self.allows_host(name):
            raise ApiError("PERMISSION_DENIED", f"Host {host!r} is not allowed: the local tuning "
                           f"service answers only requests addressed to localhost, 127.0.0.1 or "
                           f"[::1]{self._also()} (a guard against DNS rebinding). To serve it "
                           f"as {name}, {HOW_TO_ALLOW.replace('NAME', name)}.")

    def _check_origin(self, origin: str | None, fetch_site: str | None) -> None:
        if origin is not None:
            parts = urlsplit(origin.strip()) if origin.strip() != "null" else None
            name = host_name(parts.netloc) if parts is not None and parts.netloc else None
            if name is None or not self.allows_host(name):
                raise ApiError("PERMISSION_DENIED", f"Origin {origin!r} is not allowed: the local "
                               f"tuning service refuses requests made by web pages from other "
                               f"sites. Call it from a program (jobspec, curl, an SDK), which "
                               f"sends no Origin; to allow pages served from another host, "
                               f"{HOW_TO_ALLOW}.")
        elif (fetch_site or "").strip().lower() == "cross-site":
            raise ApiError("PERMISSION_DENIED", "Cross-site requests are not allowed "
                           "(Sec-Fetch-Site: cross-site): the local tuning service refuses "
                           "requests made by web pages from other sites. Call it from a program "
                           "(jobspec, curl, an SDK) instead.")

    def _also(self) -> str:
        if not self.extra_hosts:
            return ""
        names = (f"[{name}]" if ":" in name else name for name in sorted(self.extra_hosts))
        return f", or to {', '.join(names)}"


def _is_wildcard(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_unspecified
    except ValueError:
        return False


def _has_body(headers: Mapping[str, str]) -> bool:
    """Whether the request carries a body: HTTP/1.1 frames one by Content-Length or chunking."""
    if "transfer-encoding" in headers:
        return True
    return headers.get("content-length", "0").strip() not in ("", "0")


_BODY_NAMES = {"application/json": "JSON", UPLOAD_CONTENT_TYPE: "JSON Lines"}


def _check_content_type(content_type: str | None, expected: str) -> None:
    name = _BODY_NAMES.get(expected, expected)
    if not content_type:
        raise ApiError("INVALID_ARGUMENT", f"The request has a body but no Content-Type: send the "
                       f"body as {name} with Content-Type: {expected}.")
    parsed = Message()
    parsed["content-type"] = content_type
    charset = parsed.get_param("charset") or "utf-8"
    if parsed.get_content_type() != expected or not isinstance(charset, str) \
            or charset.lower() not in ("utf-8", "utf8"):
        raise ApiError("INVALID_ARGUMENT", f"Content-Type {content_type!r} is not supported: send "
                       f"the body as {name} (UTF-8) with Content-Type: {expected}.")
