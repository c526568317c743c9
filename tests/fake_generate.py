"""fake_generate: a stand-in for the Gemini API's tuned models and their answers
(generativelanguage.googleapis.com), which tests cannot reach, with answers scripted per prompt.

Built from ../shared/reference/gemini-tuning-api.md: tunedModels.list with pageSize, pageToken
and nextPageToken, tunedModels.get and delete (§3.1; the TunedModel of §4 in camelCase, timestamps
with 9 fractional digits and a Z as Google writes them); tunedModels.create answering the
Operation without ``done`` (§5), polled on /v1/ and listed on /v1beta/ (§3.3, §3.4), training
for as long as the test says (for ever by default: a job that takes hours); and
generateContent on ``tunedModels/*`` and ``models/*`` (§6): the prompt is
``contents[0].parts[].text``, the answer ``candidates[0].content.parts[].text`` with ``role``,
``finishReason``, ``index``, ``usageMetadata`` and ``modelVersion``. An unscripted prompt, and
anything else, is answered in Google's error envelope (§9). Every request is recorded.
"""

from __future__ import annotations

import json

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

    def script(self, model: str, prompt: str, *parts: str) -> None:
        """What ``model`` (``tunedModels/x`` or ``models/x``) answers to ``prompt``: the text of
        each part of the first candidate."""
        self.answers[(model, prompt)] = list(parts)

    def generate_requests(self, model: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.path.endswith(":generateContent")
                and (model is None or r.path == f"/v1beta/{model}:generateContent")]

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
        body = json.loads(request.body)
        prompt = "".join(p.get("text", "") for p in body["contents"][0]["parts"])
        answer = self.answers.get((model, prompt))
        if answer is None:
            return self.error(400, "INVALID_ARGUMENT",
                              f"fake_generate: no answer scripted for {prompt!r} of {model}")
        return 200, {
            "candidates": [{"content": {"parts": [{"text": t} for t in answer], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": len(prompt.split()),
                              "candidatesTokenCount": len(answer),
                              "totalTokenCount": len(prompt.split()) + len(answer)},
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
