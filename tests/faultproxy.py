"""A fault-injecting HTTP proxy on loopback, between jobspec and the local service.

It answers 429 with Retry-After, answers 503, drops the connection before forwarding, drops it
*after* forwarding (the service acted, the client never hears), or answers slowly: each kind
once within the first requests (so every kind is exercised), then at a set rate from a fixed
seed. The first POST is always dropped after forwarding: a create the service performed but the
client never heard about. Every request is counted.
"""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

FAULTS = ("429", "503", "drop_before", "drop_after", "slow")


class FaultProxy:
    def __init__(self, target: str, rate: float, seed: int = 7, slow_seconds: float = 0.3) -> None:
        self.target = target
        self.rate = rate
        self.random = random.Random(seed)
        self.slow_seconds = slow_seconds
        self.lock = threading.Lock()
        self.requests = 0
        self.injected: dict[str, int] = {fault: 0 for fault in FAULTS}
        self.scheduled = [None, "429", None, "503", None, "drop_before", None, "slow"]
        self.first_post_dropped = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                with proxy.lock:
                    proxy.requests += 1
                    if self.command == "POST" and not proxy.first_post_dropped:
                        proxy.first_post_dropped, fault = True, "drop_after"
                    elif proxy.scheduled:
                        fault = proxy.scheduled.pop(0)
                    elif proxy.random.random() < proxy.rate:
                        fault = proxy.random.choice(FAULTS)
                    else:
                        fault = None
                    if fault:
                        proxy.injected[fault] += 1
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                if fault == "429":
                    return self._answer(429, b'{"error": {"code": 429, "message": "Resource has '
                                        b'been exhausted.", "status": "RESOURCE_EXHAUSTED"}}',
                                        {"Retry-After": "0.2"})
                if fault == "503":
                    return self._answer(503, b'{"error": {"code": 503, "message": "The service is '
                                        b'currently unavailable.", "status": "UNAVAILABLE"}}')
                if fault == "drop_before":
                    return self._drop()
                if fault == "slow":
                    time.sleep(proxy.slow_seconds)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection")}
                response = httpx.request(self.command, proxy.target + self.path, content=body,
                                         headers=headers, timeout=60)
                if fault == "drop_after":
                    return self._drop()
                self._answer(response.status_code, response.content)

            def _answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(2)

            do_GET = do_POST = do_PATCH = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
