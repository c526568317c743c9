"""fake_gemini: a stand-in for generativelanguage.googleapis.com, which tests cannot reach.

Built from the contract in ../shared/reference/gemini-tuning-api.md (§3 paths, §4 schemas, §5
wire examples, §9 error envelope): create on /v1beta/tunedModels?tunedModelId= answering the
Operation without `done`, operations polled on /v1/, the TunedModel with `@type` in the
response, ALREADY_EXISTS as 409, paging with nextPageToken; generateContent on
``tunedModels/*`` and ``models/*`` as fake_generate answers it (answers scripted with
``script``). It also serves an OAuth token endpoint, so google-auth's refresh of
application-default credentials can be observed. It records every request's method, path,
query, headers and body; ``generate_bodies`` gives the generateContent bodies received.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from tests.fake_generate import generate_content

TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."


class FakeGemini:
    def __init__(self, polls_until_done: int = 2) -> None:
        self.requests: list[dict] = []
        self.models: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.tokens_issued = 0
        self.polls_until_done = polls_until_done
        self.answers: dict[tuple[str, str], list[str]] = {}
        self.system_answers: dict[tuple[str, str, str], list[str]] = {}  # asked with a system
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                url = urlparse(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                with fake.lock:
                    fake.requests.append({"method": self.command, "path": url.path,
                                          "query": parse_qs(url.query), "headers": dict(self.headers),
                                          "body": raw})
                    status, body, *_ = fake.route(self.command, url.path,
                                                  parse_qs(url.query), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FakeGemini":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def script(self, model: str, prompt: str, *parts: str, system: str | None = None) -> None:
        """What ``model`` (``tunedModels/x`` or ``models/x``) answers to ``prompt``: the text of
        each part of the first candidate; with ``system``, only when asked with that system
        instruction."""
        if system is None:
            self.answers[(model, prompt)] = list(parts)
        else:
            self.system_answers[(model, prompt, system)] = list(parts)

    def generate_bodies(self, model: str | None = None) -> list[dict]:
        """The GenerateContentRequest bodies received (for ``model``, or all), in order."""
        return [json.loads(r["body"]) for r in self.requests
                if r["path"].endswith(":generateContent")
                and (model is None or r["path"] == f"/v1beta/{model}:generateContent")]

    def _scripted(self, model: str, prompt: str, system: str | None) -> list[str] | None:
        return self.system_answers.get((model, prompt, system or "")) \
            or self.answers.get((model, prompt))

    @staticmethod
    def error(code: int, status: str, message: str) -> tuple[int, dict]:
        return code, {"error": {"code": code, "message": message, "status": status}}

    def operation(self, model_id: str) -> dict:
        model = self.models[model_id]
        body = {"name": f"tunedModels/{model_id}/operations/op{model_id[-4:]}",
                "metadata": {"@type": TYPE + "CreateTunedModelMetadata", "totalSteps": 38,
                             "tunedModel": f"tunedModels/{model_id}"}}
        if model["state"] == "ACTIVE":
            body["done"] = True
            body["metadata"].update(completedSteps=38, completedPercent=100)
            body["response"] = {"@type": TYPE + "TunedModel", **model}
        return body

    def route(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, dict]:
        if path == "/token":
            self.tokens_issued += 1
            # expires_in under google-auth's refresh threshold: every use refreshes it again.
            return 200, {"access_token": f"fresh-{self.tokens_issued}", "expires_in": 60,
                         "token_type": "Bearer"}
        if method == "POST" and path == "/v1beta/tunedModels":
            model_id = query["tunedModelId"][0]
            if model_id in self.models:
                return self.error(409, "ALREADY_EXISTS", f"tunedModels/{model_id} already exists")
            body = json.loads(raw)
            self.models[model_id] = {
                "name": f"tunedModels/{model_id}", "baseModel": body["baseModel"],
                "displayName": body.get("displayName"), "description": body.get("description"),
                "state": "CREATING", "createTime": "2024-03-14T15:00:00.000000Z",
                "tuningTask": {"hyperparameters": body["tuningTask"]["hyperparameters"]}}
            return 200, self.operation(model_id)
        if method == "GET" and path == "/v1beta/tunedModels":
            items = list(self.models.values())
            size = int(query.get("pageSize", ["10"])[0])
            start = int(query.get("pageToken", ["0"])[0])
            page: dict = {"tunedModels": items[start:start + size]} if items[start:start + size] else {}
            if start + size < len(items):
                page["nextPageToken"] = str(start + size)
            return 200, page
        parts = path.strip("/").split("/")
        if method == "POST" and path.endswith(":generateContent") and len(parts) == 3 \
                and parts[1] in ("tunedModels", "models"):
            model = f"{parts[1]}/{parts[2].split(':')[0]}"
            if parts[1] == "tunedModels" and model.split("/")[1] not in self.models:
                return self.error(404, "NOT_FOUND", f"{model} is not found")
            return generate_content(model, raw, self._scripted)
        if method == "GET" and len(parts) == 5 and parts[0] == "v1" and parts[3] == "operations":
            model_id = parts[2]
            self.polls[model_id] = self.polls.get(model_id, 0) + 1
            if self.polls[model_id] >= self.polls_until_done:
                self.models[model_id]["state"] = "ACTIVE"
            return 200, self.operation(model_id)
        if method == "GET" and len(parts) == 4 and parts[1] == "tunedModels" \
                and parts[3] == "operations":  # §3.3 tunedModels.operations.list
            if parts[2] not in self.models:
                return self.error(404, "NOT_FOUND", "not found")
            return 200, {"operations": [self.operation(parts[2])]}
        if method == "GET" and len(parts) == 3 and parts[1] == "tunedModels":
            model = self.models.get(parts[2])
            return (200, model) if model else self.error(404, "NOT_FOUND", "not found")
        return self.error(404, "NOT_FOUND", f"{method} {path} is not part of the fake")
