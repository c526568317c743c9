"""A JSON-over-HTTP server on a free loopback port, for the fakes that stand in for services
tests cannot reach. A subclass answers ``route``; every request is recorded first."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self):
        return json.loads(self.body)


class LoopbackJsonServer:
    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("content-length") or 0)
                request = Request(self.command, url.path, parse_qs(url.query), dict(self.headers),
                                  self.rfile.read(length) if length else b"")
                with fake.lock:
                    fake.requests.append(request)
                    status, body, headers = fake.route(request)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def route(self, request: Request) -> tuple[int, object, dict[str, str]]:
        raise NotImplementedError

    @staticmethod
    def error(code: int, status: str, message: str) -> tuple[int, dict, dict[str, str]]:
        """Google's error envelope (gemini-tuning-api.md §9)."""
        return code, {"error": {"code": code, "message": message, "status": status}}, {}

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
