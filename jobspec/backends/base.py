"""Backend-neutral state of tuned models, and the interface every backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ..data import Example
from ..identity import Identity
from ..spec import Job
from ..workspace import Owner

CREATING, ACTIVE, FAILED = "CREATING", "ACTIVE", "FAILED"


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
    # What jobspec recorded when it created the model (each backend records it its own way);
    # all None for a model jobspec did not create, which it never prunes or deletes.
    job: str | None = None
    fingerprint: str | None = None
    owner: str | None = None  # the owning workspace's id (workspace.Owner.id); None: unrecorded

    @property
    def model_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def managed(self) -> bool:
        """Whether jobspec created this model."""
        return self.job is not None

    def owned_by(self, owner_id: str) -> bool:
        return self.managed and self.owner == owner_id


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
    owner: Owner  # whose models this backend creates, prunes and deletes

    def list_models(self) -> list[RemoteModel]: ...
    def get_model(self, model_id: str) -> RemoteModel | None: ...
    def create(self, job: Job, identity: Identity, examples: list[Example]) -> Progress: ...
    def progress(self, model_id: str, operation: str | None = None) -> Progress: ...
    def delete(self, model_id: str) -> None: ...
    def generate(self, model: str, prompt: str, config: dict[str, Any]) -> str: ...
    def request_count(self) -> int: ...
    def interrupt(self) -> None: ...  # cut every retry wait short (Ctrl-C)
    def close(self) -> None: ...
