"""fake_vertex's endpoints: deploying a tuned open model to serve it, as Vertex AI's v1 REST
contract states it (jobspec/backends/reference/vertex-open-models.md §8, its sources there).

* ``endpoints.create`` (POST ``{parent}/endpoints``, body Endpoint: ``displayName`` required,
  ``labels``) answers a long-running Operation named ``{endpoint}/operations/{id}``;
  ``endpoints.list`` with ``filter`` (``labels.KEY="VALUE"`` terms), ``endpoints.get``;
* ``endpoints.deployModel`` (POST ``{endpoint}:deployModel``, body ``{deployedModel: {model,
  displayName, dedicatedResources: {machineSpec: {machineType, acceleratorType,
  acceleratorCount}, minReplicaCount, maxReplicaCount}}, trafficSplit}``) -> Operation whose
  response is ``DeployModelResponse`` ``{deployedModel: {id, ...}}``; the model is in the
  endpoint's ``deployedModels`` once the operation is done;
* ``endpoints.undeployModel`` (POST ``{endpoint}:undeployModel``, ``{deployedModelId}``) ->
  Operation; ``endpoints.delete`` (DELETE ``{endpoint}``) -> Operation, refused 400
  FAILED_PRECONDITION while models are deployed or deploying;
* ``operations.get`` (GET ``{...}/operations/{id}``): each get is one observation, and an
  operation is done after ``polls_until_done`` of them (the resource changes then);
* chat completions on a deployed endpoint (POST ``v1beta1/{endpoint}/chat/completions``,
  OpenAI's body ``{messages, temperature, max_tokens, ...}``) -> ``{choices: [{message:
  {role: "assistant", content}, finish_reason}], usage}``; the answer is the fake's
  ``("tuned", prompt)`` answer for the last user message; an endpoint serving nothing: 400.

Hooks: ``fail_next_deploy`` (the deploy operation ends with an error), ``slow_next_deploy``
(it takes that many polls), ``fail_next_delete`` (the delete operation ends with an error and
the endpoint stays); ``calls`` records
(verb, resource) in order for tests to read.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fake_gcs import Reply, google_error

OPERATION_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."
MACHINE_SPEC = {"machineType", "acceleratorType", "acceleratorCount"}
DEDICATED = {"machineSpec", "minReplicaCount", "maxReplicaCount"}
DEPLOYED_MODEL = {"model", "displayName", "dedicatedResources"}


@dataclass
class Operation:
    name: str
    metadata_type: str
    finish: Callable[[], tuple[dict | None, dict | None]]  # -> (response, error) when done
    polls_left: int
    done: bool = False
    response: dict | None = None
    error: dict | None = None

    def wire(self) -> dict:
        body: dict = {"name": self.name,
                      "metadata": {"@type": OPERATION_TYPE + self.metadata_type}}
        if self.done:
            body["done"] = True
            if self.error:
                body["error"] = self.error
            else:
                body["response"] = self.response or {}
        return body


@dataclass
class FakeEndpoints:
    """The endpoints of ``parent``; ``models`` says which model names may be deployed."""

    parent: str
    models: Callable[[], set[str]]
    answer: Callable[[str, str], str | None]  # (endpoint, prompt) -> text
    polls_until_done: int = 1
    endpoints: dict[str, dict] = field(default_factory=dict)
    operations: dict[str, Operation] = field(default_factory=dict)
    deploying: set[str] = field(default_factory=set)  # endpoints with a deploy in progress
    calls: list[tuple[str, str]] = field(default_factory=list)
    deploy_bodies: list[dict] = field(default_factory=list)
    chat_bodies: list[dict] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    _failing_deploys: list[str] = field(default_factory=list)
    _slow_deploys: list[int] = field(default_factory=list)
    _failing_deletes: list[str] = field(default_factory=list)

    def fail_next_deploy(self, message: str = "Machine type temporarily unavailable.") -> None:
        self._failing_deploys.append(message)

    def fail_next_delete(self, message: str = "Internal error deleting the endpoint.") -> None:
        self._failing_deletes.append(message)

    def slow_next_deploy(self, polls: int) -> None:
        """The next deploy operation is done after ``polls`` gets (a deployment takes
        minutes)."""
        self._slow_deploys.append(polls)

    def _operation(self, resource: str, metadata_type: str,
                   finish: Callable[[], tuple[dict | None, dict | None]]) -> Reply:
        name = f"{resource}/operations/{6_000_000_000_000_000_000 + next(self._ids)}"
        operation = Operation(name, metadata_type, finish, self.polls_until_done)
        self.operations[name] = operation
        return 200, operation.wire(), {}

    def _observe(self, operation: Operation) -> None:
        if operation.done:
            return
        operation.polls_left -= 1
        if operation.polls_left <= 0:
            operation.response, operation.error = operation.finish()
            operation.done = True

    def route(self, method: str, rest: list[str], version: str, body: bytes,
              query: dict[str, str]) -> Reply | None:
        """The answer to an endpoints request (``rest``: the path after the location), or
        None when it is not one."""
        if not rest or not rest[0].startswith("endpoints"):
            return None
        if rest == ["endpoints"] and method == "POST":
            return self._create(body)
        if rest == ["endpoints"] and method == "GET":
            return self._list(query.get("filter", ""))
        endpoint_id, _, verb = rest[1].partition(":") if len(rest) > 1 else ("", "", "")
        name = f"{self.parent}/endpoints/{endpoint_id}"
        if len(rest) == 4 and rest[2] == "operations" and method == "GET":
            operation = self.operations.get(f"{name}/operations/{rest[3]}")
            if operation is None:
                return google_error(404, f"Operation {'/'.join(rest)} not found.")
            self._observe(operation)
            return 200, operation.wire(), {}
        if name not in self.endpoints:
            # A Gemini tuning job's endpoint is fake_vertex's own (generateContent).
            return None if verb == "generateContent" else google_error(
                404, f"Endpoint `{name}` not found.")
        if len(rest) == 4 and rest[2:] == ["chat", "completions"] and method == "POST":
            if version != "v1beta1":
                return google_error(404, "fake_vertex serves chat completions on v1beta1 only")
            return self._chat(name, body)
        if len(rest) != 2:
            return None
        if method == "GET" and not verb:
            return 200, self.endpoints[name], {}
        if method == "POST" and verb == "deployModel":
            return self._deploy(name, body)
        if method == "POST" and verb == "undeployModel":
            return self._undeploy(name, body)
        if method == "DELETE" and not verb:
            return self._delete(name)
        return None

    def _create(self, raw: bytes) -> Reply:
        endpoint = json.loads(raw or b"{}")
        unknown = set(endpoint) - {"displayName", "labels", "description"}
        if unknown:
            return google_error(400, f'Invalid JSON payload received. Unknown name '
                                     f'"{sorted(unknown)[0]}" at \'endpoint\': Cannot find field.')
        if not endpoint.get("displayName"):
            return google_error(400, "Endpoint.display_name is required.")
        name = f"{self.parent}/endpoints/{5_000_000_000_000_000_000 + next(self._ids)}"
        self.calls.append(("create", name))
        resource = {"name": name, "displayName": endpoint["displayName"],
                    "labels": endpoint.get("labels", {})}

        def finish() -> tuple[dict | None, dict | None]:
            self.endpoints[name] = resource
            return {"@type": OPERATION_TYPE + "Endpoint", **resource}, None

        self.endpoints[name] = resource  # listed from the start, as Vertex lists it
        return self._operation(name, "CreateEndpointOperationMetadata", finish)

    def _list(self, text: str) -> Reply:
        wanted = re.findall(r'labels\."?([a-z0-9_-]+)"?="([^"]*)"', text)
        found = [e for e in self.endpoints.values()
                 if all(e.get("labels", {}).get(k) == v for k, v in wanted)]
        return 200, ({"endpoints": found} if found else {}), {}

    def _deploy(self, name: str, raw: bytes) -> Reply:
        request = json.loads(raw or b"{}")
        deployed = request.get("deployedModel", {})
        resources = deployed.get("dedicatedResources", {})
        spec = resources.get("machineSpec", {})
        problems = [f"deployedModel.{k}" for k in set(deployed) - DEPLOYED_MODEL]
        problems += [f"deployedModel.dedicatedResources.{k}" for k in set(resources) - DEDICATED]
        problems += [f"deployedModel.dedicatedResources.machineSpec.{k}"
                     for k in set(spec) - MACHINE_SPEC]
        if problems:
            return google_error(400, f'Invalid JSON payload received. Unknown name '
                                     f'"{problems[0]}": Cannot find field.')
        if deployed.get("model") not in self.models():
            return google_error(400, f"Model {deployed.get('model')} does not exist.")
        if not spec.get("machineType") or resources.get("minReplicaCount", 0) < 1:
            return google_error(400, "dedicatedResources needs machineSpec.machineType and "
                                     "minReplicaCount >= 1.")
        self.deploy_bodies.append(request)
        self.calls.append(("deploy", name))
        self.deploying.add(name)
        failure = self._failing_deploys.pop(0) if self._failing_deploys else None
        model_id = str(4_000_000_000_000_000_000 + next(self._ids))

        def finish() -> tuple[dict | None, dict | None]:
            self.deploying.discard(name)
            if failure:
                return None, {"code": 8, "message": failure}
            served = {"id": model_id, **deployed}
            self.endpoints[name].setdefault("deployedModels", []).append(served)
            self.endpoints[name]["trafficSplit"] = {model_id: 100}
            return {"@type": OPERATION_TYPE + "DeployModelResponse",
                    "deployedModel": {"id": model_id}}, None

        reply = self._operation(name, "DeployModelOperationMetadata", finish)
        if self._slow_deploys:
            self.operations[reply[1]["name"]].polls_left = self._slow_deploys.pop(0)
        return reply

    def _undeploy(self, name: str, raw: bytes) -> Reply:
        wanted = json.loads(raw or b"{}").get("deployedModelId")
        models = self.endpoints[name].get("deployedModels", [])
        if not any(m["id"] == wanted for m in models):
            return google_error(400, f"Model {wanted} is not deployed to endpoint {name}.")
        self.calls.append(("undeploy", name))

        def finish() -> tuple[dict | None, dict | None]:
            endpoint = self.endpoints[name]
            endpoint["deployedModels"] = [m for m in models if m["id"] != wanted]
            endpoint.pop("trafficSplit", None)
            if not endpoint["deployedModels"]:
                del endpoint["deployedModels"]
            return {"@type": OPERATION_TYPE + "UndeployModelResponse"}, None

        return self._operation(name, "UndeployModelOperationMetadata", finish)

    def _delete(self, name: str) -> Reply:
        if self.endpoints[name].get("deployedModels") or name in self.deploying:
            return google_error(400, f"Endpoint {name} has deployed or being deployed "
                                     "DeployedModel(s).", "FAILED_PRECONDITION")
        self.calls.append(("delete", name))
        failure = self._failing_deletes.pop(0) if self._failing_deletes else None

        def finish() -> tuple[dict | None, dict | None]:
            if failure:
                return None, {"code": 13, "message": failure}
            self.endpoints.pop(name, None)
            return {"@type": "type.googleapis.com/google.protobuf.Empty"}, None

        return self._operation(name, "DeleteOperationMetadata", finish)

    def _chat(self, name: str, raw: bytes) -> Reply:
        if not self.endpoints[name].get("deployedModels"):
            return google_error(400, f"Endpoint {name} has no deployed model.",
                                "FAILED_PRECONDITION")
        body = json.loads(raw or b"{}")
        self.chat_bodies.append(body)
        asked = [m for m in body.get("messages", []) if m.get("role") == "user"]
        if not asked:
            return google_error(400, "messages must hold a user message.")
        prompt = asked[-1].get("content", "")
        answer = self.answer(name, prompt)
        if answer is None:
            return google_error(400, f"fake_vertex has no answer scripted for ('tuned', "
                                     f"{prompt!r}) ({name})")
        return 200, {"object": "chat.completion",
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": answer}}],
                     "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                               "total_tokens": 2}}, {}
