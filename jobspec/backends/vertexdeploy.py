"""Deploying a tuned open model on Vertex AI for its eval, and removing the deployment after
(jobspec/backends/reference/vertex-open-models.md §8).

A tuned open model is registered as a model but served only once deployed to an endpoint. An
eval that asks for it (``eval.deploy``) creates an endpoint labelled as the tuning job is
(owner, job name, fingerprint), deploys the model to it on the machine the job names, waits for
both long-running operations, asks the prompts there (OpenAI-style chat completions, which the
serving container answers), then undeploys the model and deletes the endpoint: after the eval,
after a failure, and after Ctrl-C (``try``/``finally``). A run killed before that leaves a
labelled endpoint, which the next eval of the same job finds: it reuses it when it already
serves the model on the machine asked for, and removes it otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..client import ApiClient
from ..conversation import Conversation, to_messages
from ..errors import JobSpecError, PermanentBackendError, TransientBackendError
from ..evalspec import Deployment
from ..retrying import PollPolicy
from ..spec import Job
from . import openmodels
from .base import RemoteModel
from .tuningjobs import job_labels, label_filter

# OpenAI-compatible chat completions on an endpoint of a model-serving container is v1beta1's
# (Google's "Call Vertex AI models using the OpenAI library"; reference §8).
CHAT_VERSION = "v1beta1"

# The job file's generation config (snake_case) by the chat completions names vLLM takes.
_CHAT_NAMES = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
               "max_output_tokens": "max_tokens"}
# Removing what the eval deployed is waited for even after Ctrl-C, but not for ever: a run
# that gives up leaves a labelled endpoint that the next eval of the job removes.
CLEANUP_SECONDS = 900.0
Sleep = Callable[[float, str], None]


def deployed_model_body(model: str, deployment: Deployment, display_name: str) -> dict[str, Any]:
    """The DeployModelRequest: ``model`` on one dedicated replica of the machine asked for,
    taking all the endpoint's traffic."""
    return {"deployedModel": {
        "model": model, "displayName": display_name,
        "dedicatedResources": {
            "machineSpec": {"machineType": deployment.machine_type,
                            "acceleratorType": deployment.accelerator_type,
                            "acceleratorCount": deployment.accelerator_count},
            "minReplicaCount": 1, "maxReplicaCount": 1}},
        "trafficSplit": {"0": 100}}


def chat_body(conversation: Conversation, config: dict[str, Any]) -> dict[str, Any]:
    """A chat completions request: the conversation as messages (its system instruction
    first), then the generation config by vLLM's names."""
    return {**to_messages(conversation),
            **{_CHAT_NAMES.get(k, k): v for k, v in config.items()}}


def chat_answer(answer: dict[str, Any], endpoint: str) -> str:
    choices = answer.get("choices") or []
    if not choices:
        raise PermanentBackendError(f"{endpoint} gave no answer (no choices)")
    return choices[0].get("message", {}).get("content") or ""


def _serves(endpoint: dict[str, Any], model: str, deployment: Deployment) -> bool:
    """Whether ``endpoint`` already serves ``model`` on the machine ``deployment`` asks for."""
    wanted = deployed_model_body(model, deployment, "")["deployedModel"]["dedicatedResources"]
    return any(d.get("model", "").split("@")[0] == model.split("@")[0]
               and d.get("dedicatedResources", {}).get("machineSpec") == wanted["machineSpec"]
               for d in endpoint.get("deployedModels", []))


class Deployer:
    """Endpoints of one project and region, through ``client`` (Vertex AI's v1); their
    operations polled as ``poll`` says, with ``sleep`` (which Ctrl-C cuts short), except
    while removing, which is waited for after Ctrl-C too, for ``CLEANUP_SECONDS`` at most."""

    def __init__(self, client: ApiClient, parent: str, sleep: Sleep, poll: PollPolicy) -> None:
        self.client = client
        self.parent = parent
        self._sleep = sleep
        self.poll = poll
        self.cleanup_poll = PollPolicy(poll.initial, poll.maximum, CLEANUP_SECONDS, poll.growth)
        self._deploying: dict[str, dict[str, Any]] = {}  # endpoint -> its deploy operation

    def _wait(self, operation: dict[str, Any], what: str, poll: PollPolicy,
              sleep: Sleep) -> dict[str, Any]:
        """The operation once done, polled (``operations.get``) as ``poll`` says; its error as
        a PermanentBackendError."""
        name = operation["name"]
        done = poll.poll(lambda: operation if operation.get("done") else
                         self.client.request("GET", name),
                         lambda seen: bool(seen.get("done")),
                         sleep=lambda seconds: sleep(seconds, f"for Vertex AI to {what}"))
        if not done.get("done"):
            raise TransientBackendError(f"Vertex AI did not {what} in time (operation {name} "
                                        "is still running)")
        if done.get("error"):
            error = done["error"]
            raise PermanentBackendError(f"Vertex AI could not {what}: {error.get('message')} "
                                        f"(code {error.get('code')}, operation {name})")
        return done.get("response", {})

    def leftovers(self, labels: dict[str, str]) -> list[dict[str, Any]]:
        """The endpoints with these labels: what an earlier, killed eval of the job left."""
        return self.client.paginate(f"{self.parent}/endpoints", "endpoints",
                                    params={"filter": label_filter(labels)})

    def create(self, labels: dict[str, str], display_name: str,
               made: Callable[[str], None]) -> str:
        """A new endpoint's name; ``made`` hears it as soon as the create answers, before it is
        ready, so that a failure while waiting still removes it."""
        operation = self.client.request("POST", f"{self.parent}/endpoints", retry=False,
                                        body={"displayName": display_name, "labels": labels})
        endpoint = operation["name"].split("/operations/")[0]
        made(endpoint)
        self._wait(operation, f"create the endpoint {endpoint}", self.poll, self._sleep)
        return endpoint

    def deploy(self, endpoint: str, model: str, deployment: Deployment,
               display_name: str) -> None:
        operation = self.client.request(
            "POST", f"{endpoint}:deployModel", retry=False,
            body=deployed_model_body(model, deployment, display_name))
        self._deploying[endpoint] = operation
        self._wait(operation, f"deploy {model} to {endpoint}", self.poll, self._sleep)
        del self._deploying[endpoint]

    def remove(self, endpoint: str) -> None:
        """Undeploy every model ``endpoint`` serves, then delete it; waited for even after
        Ctrl-C (``cleanup_poll``)."""
        def sleep(seconds: float, why: str) -> None:
            time.sleep(seconds)

        pending = self._deploying.pop(endpoint, None)
        if pending is not None:  # stopped while deploying: Vertex cannot delete it until done
            try:
                self._wait(pending, f"finish deploying to {endpoint}", self.cleanup_poll, sleep)
            except PermanentBackendError:
                pass  # a deploy that failed left nothing deployed
        try:
            found = self.client.request("GET", endpoint)
        except PermanentBackendError as exc:
            if exc.http_status == 404:
                return
            raise
        for deployed in found.get("deployedModels", []):
            operation = self.client.request("POST", f"{endpoint}:undeployModel",
                                            body={"deployedModelId": deployed["id"]})
            self._wait(operation, f"undeploy {deployed['id']} from {endpoint}", self.cleanup_poll,
                       sleep)
        self._wait(self.client.request("DELETE", endpoint), f"delete the endpoint {endpoint}",
                   self.cleanup_poll, sleep)


@contextmanager
def deployed(deployer: Deployer, model: str, deployment: Deployment, labels: dict[str, str],
             display_name: str, say: Callable[[str], None]) -> Iterator[str]:
    """The endpoint serving ``model`` for as long as the ``with`` lasts: an endpoint a killed
    run left is reused when it serves the model on this machine, else removed; a new one is
    created and the model deployed. On leaving (normally, by an error, or by Ctrl-C) the model
    is undeployed and the endpoint deleted."""
    endpoint: str | None = None
    failure: JobSpecError | None = None  # why the deployment or the eval failed, if it did

    def made(name: str) -> None:
        nonlocal endpoint
        endpoint = name

    try:
        for left in deployer.leftovers(labels):
            if endpoint is None and _serves(left, model, deployment):
                endpoint = left["name"]
                say(f"reusing {endpoint}, which an earlier run left serving {model}")
            else:
                say(f"removing {left['name']}, which an earlier run left")
                deployer.remove(left["name"])
        if endpoint is None:
            say(f"deploying {model} on {deployment.machine_type} with "
                f"{deployment.accelerator_count} x {deployment.accelerator_type}")
            new = deployer.create(labels, display_name, made)
            deployer.deploy(new, model, deployment, display_name)
        yield endpoint
    except JobSpecError as exc:
        failure = exc
        raise
    finally:
        if endpoint is not None:
            say(f"undeploying {model} and deleting {endpoint}")
            try:
                deployer.remove(endpoint)
            except JobSpecError as exc:
                if failure is None:
                    raise
                # Both are said: the first is why, the second what may still be billed.
                raise PermanentBackendError(
                    f"{failure}; then removing {endpoint} failed too, so it may still be "
                    f"deployed (the next eval of this job removes it, or remove it by hand): "
                    f"{exc}") from exc



def why_not_served(job: Job) -> str | None:
    """Why the eval of ``job``'s tuned model cannot be asked (None: it can): an open model
    is served only once deployed, which the job must ask for (``eval.deploy``)."""
    if not openmodels.is_open_model(job.base_model):
        return None
    if job.eval is not None and job.eval.deploy is not None:
        return None
    return ("Vertex AI serves a tuned open model only once it is deployed, and the job has no "
            "eval.deploy; add eval.deploy: {machine_type, accelerator_type, accelerator_count} "
            "to deploy it for the eval (billed while deployed) and remove it after")


@contextmanager
def deployed_for(deployer: Deployer, job: Job, model: RemoteModel, owner_id: str,
                 say: Callable[[str], None]) -> Iterator[str]:
    """``job``'s tuned open model (its tuning job ``model``) deployed as ``eval.deploy``
    says, its endpoint labelled as the tuning job is (``deployed``)."""
    assert job.eval is not None and job.eval.deploy is not None, "why_not_served said"
    tuned = deployer.client.request("GET", model.name).get("tunedModel", {}).get("model")
    if not tuned:
        raise PermanentBackendError(f"{model.name} names no tuned model to deploy "
                                    "(tunedModel.model)")
    labels = job_labels(job.name, model.fingerprint or "", owner_id)
    display = f"jobspec {job.name} eval"
    with deployed(deployer, tuned, job.eval.deploy, labels, display, say) as endpoint:
        yield endpoint
