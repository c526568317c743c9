"""Backend-neutral state of tuned models, and the interface every backend implements."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..data import Example
from ..identity import Identity
from ..spec import Job

CREATING, ACTIVE, FAILED = "CREATING", "ACTIVE", "FAILED"

# jobspec marks the models it creates in their description, so that it never touches others.
_MARKER = re.compile(r"\[jobspec job=(?P<job>[a-z][a-z0-9-]*) fingerprint=(?P<fp>[0-9a-f]{64})\]")


def marker(job_name: str, fingerprint: str) -> str:
    return f"[jobspec job={job_name} fingerprint={fingerprint}]"


def parse_marker(description: str | None) -> tuple[str, str] | None:
    found = _MARKER.search(description or "")
    return (found["job"], found["fp"]) if found else None


@dataclass(frozen=True)
class Snapshot:
    step: int
    epoch: int
    mean_loss: float
    compute_time: str | None = None


@dataclass(frozen=True)
class RemoteModel:
    name: str  # e.g. tunedModels/number-generator-19bdb71b
    state: str
    base_model: str
    display_name: str | None = None
    description: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)  # snake_case keys
    create_time: str | None = None
    start_time: str | None = None
    complete_time: str | None = None
    snapshots: tuple[Snapshot, ...] = ()

    @property
    def model_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def managed(self) -> tuple[str, str] | None:
        """(job name, fingerprint) when jobspec created this model, else None."""
        return parse_marker(self.description)


@dataclass(frozen=True)
class Progress:
    """A tuning operation as last seen."""

    model_name: str
    operation: str | None
    done: bool
    total_steps: int | None = None
    completed_steps: int = 0
    snapshots: tuple[Snapshot, ...] = ()
    error: str | None = None
    model: RemoteModel | None = None  # set once done without error
    adopted: bool = False  # create found the model already there (an earlier run made it)

    @property
    def percent(self) -> float:
        if self.done and self.error is None:
            return 100.0
        if not self.total_steps:
            return 0.0
        return 100.0 * self.completed_steps / self.total_steps


class Backend(Protocol):
    name: str
    endpoint: str

    def list_models(self) -> list[RemoteModel]: ...
    def get_model(self, model_id: str) -> RemoteModel | None: ...
    def create(self, job: Job, identity: Identity, examples: list[Example]) -> Progress: ...
    def progress(self, model_id: str, operation: str | None = None) -> Progress: ...
    def delete(self, model_id: str) -> None: ...
    def generate(self, model: str, prompt: str, config: dict[str, Any]) -> str: ...
    def request_count(self) -> int: ...
    def interrupt(self) -> None: ...  # cut every retry wait short (Ctrl-C)
    def close(self) -> None: ...
