"""A recording HTTP proxy on loopback, between jobspec and the real local service: it relays every
request unchanged and keeps each request's method, path and body and the answer's status and
body, so that a test can assert what the client sent (a generateContent body) and what the
service made of it (its usageMetadata), without touching the service."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# Hop-by-hop headers, and those httpx sets itself from the body it relays.
_NOT_RELAYED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


@dataclass(frozen=True)
class Exchange:
    method: str
    path: str
    body: bytes
    status: int
    answer: bytes

    def json(self):
        return json.loads(self.body)

    def answer_json(self):
        return json.loads(self.answer)


class RecordingProxy:
    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _NOT_RELAYED}
                answer = httpx.request(self.command, proxy.target + self.path, content=body,
                                       headers=headers, timeout=300)
                with proxy.lock:
                    proxy.exchanges.append(Exchange(self.command, self.path.split("?")[0], body,
                                                    answer.status_code, answer.content))
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _NOT_RELAYED | {"content-encoding"}:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def generate_exchanges(self, model: str | None = None) -> list[Exchange]:
        """The generateContent exchanges (of ``model``, e.g. ``models/x``, or all), in order."""
        with self.lock:
            return [e for e in self.exchanges if e.path.endswith(":generateContent")
                    and (model is None or f"/{model}:" in e.path)]

    def __enter__(self) -> RecordingProxy:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
