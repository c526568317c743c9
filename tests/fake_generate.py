"""fake_generate: a stand-in for the Gemini API's tuned models and their answers
(generativelanguage.googleapis.com), which tests cannot reach, with answers scripted per prompt.

Built from ../shared/reference/gemini-tuning-api.md: tunedModels.list with pageSize, pageToken
and nextPageToken, tunedModels.get and delete (§3.1; the TunedModel of §4 in camelCase, timestamps
with 9 fractional digits and a Z as Google writes them); tunedModels.create answering the
Operation without ``done`` (§5), polled on /v1/ and listed on /v1beta/ (§3.3, §3.4), training
for as long as the test says (for ever by default: a job that takes hours); and
generateContent on ``tunedModels/*`` and ``models/*`` (§6; the request is
GenerateContentRequest of ../shared/reference/generativelanguage.v1beta.json: ``contents``, the
conversation so far, each Content a ``role`` of user or model, unset meaning user, and text
``parts``; an optional ``systemInstruction`` Content, text only; ``generationConfig``): the
prompt is the last Content, the user's, and the answer, scripted per model and prompt (and, if
the test says, per system instruction), is ``candidates[0].content.parts[].text`` with ``role``,
``finishReason``, ``index``, ``usageMetadata`` and ``modelVersion``. A body the reference does
not allow, an unscripted prompt, and anything else, is answered in Google's error envelope
(§9). Every request is recorded; ``generate_bodies`` gives the generateContent bodies received.
``generate_content`` is that handling, for other fakes of the Gemini API (fake_gemini).
"""

from __future__ import annotations

import json

from collections.abc import Callable

from tests.loopback_http import LoopbackJsonServer, Request

TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta."
CREATED, STARTED, COMPLETED = ("2024-05-01T09:59:59.987654321Z", "2024-05-01T10:00:00.123456789Z",
                               "2024-05-01T10:01:30.5Z")


class FakeGenerate(LoopbackJsonServer):
    def __init__(self, *, polls_until_done: int | None = None,
                 refuse_creates: str | None = None) -> None:
        super().__init__()
        self.refuse_creates = refuse_creates  # answer every create 400 INVALID_ARGUMENT, thus
        self.models: dict[str, dict] = {}
        self.answers: dict[tuple[str, str], list[str]] = {}
        self.system_answers: dict[tuple[str, str, str], list[str]] = {}  # asked with a system
        self.polls: dict[str, int] = {}
        self.polls_until_done = polls_until_done  # None: training never ends

    # What a test sets up.

    def add_model(self, model_id: str, *, base_model: str, description: str,
                  state: str = "ACTIVE", steps: int = 3) -> dict:
        """A tuned model as tunedModels.get returns it, trained (or not) long ago."""
        task: dict = {"hyperparameters": {"batchSize": 4, "epochCount": 5,
                                          "learningRateMultiplier": 1.0}}
        if state != "CREATING":
            task.update(startTime=STARTED, snapshots=[
                {"step": step, "epoch": 1, "meanLoss": 2.0 / step,
                 "computeTime": f"2024-05-01T10:00:{step:02d}.000000001Z"}
                for step in range(1, steps + 1)])
        if state == "ACTIVE":
            task["completeTime"] = COMPLETED
        self.models[model_id] = {
            "name": f"tunedModels/{model_id}", "baseModel": base_model, "displayName": model_id,
            "description": description, "state": state, "createTime": CREATED,
            "updateTime": COMPLETED, "tuningTask": task}
        return self.models[model_id]

    def script(self, model: str, prompt: str, *parts: str, system: str | None = None) -> None:
        """What ``model`` (``tunedModels/x`` or ``models/x``) answers to ``prompt``: the text of
        each part of the first candidate; with ``system``, only when asked with that system
        instruction (before an answer scripted without one)."""
        if system is None:
            self.answers[(model, prompt)] = list(parts)
        else:
            self.system_answers[(model, prompt, system)] = list(parts)

    def generate_requests(self, model: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(":generateContent")
                and (model is None or r.path == f"/v1beta/{model}:generateContent")]

    def generate_bodies(self, model: str | None = None) -> list[dict]:
        """The GenerateContentRequest bodies received (for ``model``, or all), in order."""
        return [r.json() for r in self.generate_requests(model)]

    # The wire.

    def operation(self, model_id: str) -> dict:
        model = self.models[model_id]
        done = model["state"] != "CREATING"
        steps = 38 if done else min(37, self.polls.get(model_id, 0))
        body = {"name": f"tunedModels/{model_id}/operations/op-{model_id[-8:]}",
                "metadata": {"@type": TYPE + "CreateTunedModelMetadata", "totalSteps": 38,
                             "completedSteps": steps, "completedPercent": 100 * steps / 38,
                             "tunedModel": f"tunedModels/{model_id}"}}
        if done:
            body["done"] = True
            body["response"] = {"@type": TYPE + "TunedModel", **model}
        return body

    def route(self, request: Request):
        parts = request.path.strip("/").split("/")
        if request.path.endswith(":generateContent") and len(parts) == 3 \
                and parts[1] in ("tunedModels", "models"):
            return self._generate(f"{parts[1]}/{parts[2].split(':')[0]}", request)
        if request.method == "GET" and request.path == "/v1beta/tunedModels":
            return self._list(request.query)
        if request.method == "POST" and request.path == "/v1beta/tunedModels":
            return self._create(request)
        if request.method == "GET" and len(parts) == 5 and parts[0] == "v1" \
                and parts[3] == "operations" and parts[2] in self.models:
            self.polls[parts[2]] = self.polls.get(parts[2], 0) + 1
            if self.polls_until_done is not None and self.polls[parts[2]] >= self.polls_until_done:
                self.add_model(parts[2], base_model=self.models[parts[2]]["baseModel"],
                               description=self.models[parts[2]]["description"])
            return 200, self.operation(parts[2]), {}
        if request.method == "GET" and len(parts) == 4 and parts[:2] == ["v1beta", "tunedModels"] \
                and parts[3] == "operations" and parts[2] in self.models:
            return 200, {"operations": [self.operation(parts[2])]}, {}
        if len(parts) == 3 and parts[:2] == ["v1beta", "tunedModels"] and parts[2] in self.models:
            if request.method == "GET":
                return 200, self.models[parts[2]], {}
            if request.method == "DELETE":  # tunedModels.delete answers Empty
                del self.models[parts[2]]
                return 200, {}, {}
        return self.error(404, "NOT_FOUND", f"{request.method} {request.path} is not found "
                                            "(fake_generate)")

    def _list(self, query: dict):
        items = list(self.models.values())
        size = int(query.get("pageSize", ["10"])[0])
        start = int(query.get("pageToken", ["0"])[0])
        page: dict = {"tunedModels": items[start:start + size]} if items[start:start + size] else {}
        if start + size < len(items):
            page["nextPageToken"] = str(start + size)
        return 200, page, {}

    def _create(self, request: Request):
        model_id = request.query["tunedModelId"][0]
        if self.refuse_creates:
            return self.error(400, "INVALID_ARGUMENT", self.refuse_creates)
        if model_id in self.models:
            return self.error(409, "ALREADY_EXISTS", f"tunedModels/{model_id} already exists")
        body = request.json()
        self.add_model(model_id, base_model=body["baseModel"], description=body["description"],
                       state="CREATING")
        return 200, self.operation(model_id), {}

    def _generate(self, model: str, request: Request):
        if model.startswith("tunedModels/") and model.split("/")[1] not in self.models:
            return self.error(404, "NOT_FOUND", f"{model} is not found")
        return generate_content(model, request.body, self._scripted)

    def _scripted(self, model: str, prompt: str, system: str | None) -> list[str] | None:
        return self.system_answers.get((model, prompt, system or "")) \
            or self.answers.get((model, prompt))


# GenerateContentRequest's fields (generativelanguage.v1beta.json); the fake reads the three
# jobspec sends and accepts the rest as the API does.
REQUEST_FIELDS = {"model", "contents", "systemInstruction", "generationConfig", "tools",
                  "toolConfig", "safetySettings", "cachedContent"}


def _text(content: object, where: str) -> tuple[str | None, str | None]:
    """A Content's text (its text parts joined), or what is wrong with it."""
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list) \
            or not content["parts"]:
        return None, f"{where}.parts must be a non-empty list of parts."
    texts = []
    for index, part in enumerate(content["parts"]):
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            return None, f"{where}.parts[{index}]: only text parts are answered by this fake."
        texts.append(part["text"])
    return "".join(texts), None


def generate_content(model: str, raw: bytes,
                     scripted: Callable[[str, str, str | None], list[str] | None]):
    """A generateContent request for ``model`` answered as the Gemini API answers it (a
    (status, body, headers) reply): ``scripted(model, prompt, system)`` gives the answer's
    parts for the last user turn and the system instruction, None when there is none."""
    def invalid(message: str):
        return 400, {"error": {"code": 400, "message": message,
                               "status": "INVALID_ARGUMENT"}}, {}

    try:
        body = json.loads(raw)
    except ValueError as exc:
        return invalid(f"Invalid JSON payload received. {exc}")
    unknown = sorted(set(body) - REQUEST_FIELDS) if isinstance(body, dict) else []
    if not isinstance(body, dict) or unknown:
        return invalid(f'Invalid JSON payload received. Unknown name "{unknown[0]}": '
                       "Cannot find field." if unknown else "Invalid JSON payload received.")
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return invalid("* GenerateContentRequest.contents: contents is not specified")
    for index, content in enumerate(contents):
        role = content.get("role", "user") if isinstance(content, dict) else None
        if role not in ("user", "model"):
            return invalid(f"* GenerateContentRequest.contents[{index}].role: Please use a "
                           "valid role: user, model.")
        _, problem = _text(content, f"contents[{index}]")
        if problem:
            return invalid(problem)
    if contents[-1].get("role", "user") != "user":
        return invalid("* GenerateContentRequest.contents: the last content must be the "
                       "user's.")
    system = None
    if "systemInstruction" in body:
        system, problem = _text(body["systemInstruction"], "systemInstruction")
        if problem:
            return invalid(problem)
    prompt, _ = _text(contents[-1], "")
    assert prompt is not None
    answer = scripted(model, prompt, system)
    if answer is None:
        return invalid(f"fake_generate: no answer scripted for {prompt!r} of {model}")
    asked = sum(len((_text(c, "")[0] or "").split()) for c in contents) + len(
        (system or "").split())
    return 200, {
        "candidates": [{"content": {"parts": [{"text": t} for t in answer], "role": "model"},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": asked, "candidatesTokenCount": len(answer),
                          "totalTokenCount": asked + len(answer)},
        "modelVersion": model}, {}


# Variables that would change which backend, endpoint, owner or credentials a test's jobspec uses.
ENVIRONMENT = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_OAUTH_ACCESS_TOKEN",
               "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "JOBSPEC_BACKEND",
               "JOBSPEC_LOCAL_URL", "JOBSPEC_ENDPOINT", "JOBSPEC_OWNER", "JOBSPEC_RETRY_DEADLINE")


def serve_job(fake: FakeGenerate, cli, job_file, *, state: str = "ACTIVE") -> str:
    """Put the tuned model of ``job_file`` on ``fake``, as jobspec would have created it (its
    id, and jobspec's mark with this workspace as owner); its resource name."""
    from jobspec.backends.tunedmodels import marker
    from jobspec.workspace import owner

    shown = cli("show", str(job_file), "--format", "json").json()
    fake.add_model(shown["tuned_model_id"], base_model=shown["base_model"], state=state,
                   description=marker(shown["name"], shown["fingerprint"], owner().id))
    return f"tunedModels/{shown['tuned_model_id']}"
