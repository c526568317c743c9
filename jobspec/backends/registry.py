"""The one place that knows the backends by name: which one a command uses, where its requests
go (and whether credentials may go there), and building it.

Each backend module describes itself with a ``BackendType`` (``base.py``); this module chooses
one (``--backend``, then JOBSPEC_BACKEND, then the job files' ``backend``, then local), resolves
its endpoint under the rules of ``endpoints.py``, and opens it for this workspace's owner. The
command line's options are defined by the commands (``commands/common.py``), not here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from .. import workspace
from ..data import DataLimits
from ..errors import ConfigError, UsageError
from ..retrying import RetryPolicy
from ..spec import Job
from . import gemini, local, vertex
from .base import Backend, BackendOptions, BackendType, OpenRequest
from .endpoints import BACKEND_VARIABLE, Endpoint, operator_endpoint

DEFAULT = "local"


def _types() -> dict[str, BackendType]:
    # Read from the modules at each call: a test may put a backend type with other limits there.
    return {t.name: t for t in (local.LOCAL, gemini.GEMINI, vertex.VERTEX)}


def names() -> tuple[str, ...]:
    return tuple(_types())


def backend_type(name: str) -> BackendType:
    return _types()[name]


def poll_summary() -> str:
    return ", ".join(f"{t.poll.initial:g}s {t.name}" for t in _types().values())


def in_effect(declared_type: str | None, chosen: str | None = None) -> str:
    """The backend one job is applied with: ``chosen`` (--backend), then JOBSPEC_BACKEND, then
    the job's own ``declared_type``, then local."""
    if chosen:
        return chosen
    from_environment = os.environ.get(BACKEND_VARIABLE)
    if from_environment:
        if from_environment not in names():
            raise UsageError(f"{BACKEND_VARIABLE}={from_environment}: expected one of "
                             f"{', '.join(names())}")
        return from_environment
    # A type the schema refuses is reported there; meanwhile, limits are the default's.
    return declared_type if declared_type in names() else DEFAULT


def types_taking(setting: str) -> tuple[str, ...]:
    """The backend types that take the job file's ``backend.<setting>``, when only some do
    (empty: every type takes it, as ``type`` and ``endpoint``)."""
    return tuple(t.name for t in _types().values() if setting in t.job_settings)


@dataclass(frozen=True)
class FileRules:
    """What a job file's ``backend`` section must be for its own type, and nothing of the
    backend it is sent to (spec.BackendRules): for a command that reads no examples and sends
    no job (delete by file)."""

    def types_taking(self, setting: str) -> tuple[str, ...]:
        return types_taking(setting)

    def limits(self, declared_type: str | None) -> DataLimits | None:
        return None

    def check(self, job: Job) -> list[ConfigError]:
        return []


@dataclass(frozen=True)
class Rules(FileRules):
    """The rules of the backend each job goes to, for the job loader (spec.BackendRules)."""

    chosen: str | None  # --backend, if given

    def _of(self, declared_type: str | None) -> BackendType:
        return backend_type(in_effect(declared_type, self.chosen))

    def limits(self, declared_type: str | None) -> DataLimits:
        return self._of(declared_type).limits

    def check(self, job: Job) -> list[ConfigError]:
        return self._of(job.backend.type if job.backend else None).check_job(job)


def chosen_by_operator(chosen: str | None) -> bool:
    """Whether the operator named the backend (--backend, JOBSPEC_BACKEND), rather than the job
    files (repository content) or the default."""
    return bool(chosen or os.environ.get(BACKEND_VARIABLE))


def choose(chosen: str | None, jobs: list[Job]) -> str:
    """The one backend for all ``jobs``."""
    if chosen_by_operator(chosen):
        return in_effect(None, chosen)
    declared = {j.backend.type for j in jobs if j.backend is not None}
    if len(declared) > 1:
        listing = ", ".join(f"{j.name}: {j.backend.type if j.backend else DEFAULT}" for j in jobs)
        raise UsageError(f"the jobs name different backends ({listing}); apply them separately "
                         "or pass --backend")
    return declared.pop() if declared else DEFAULT


def declared_endpoint(name: str, jobs: list[Job]) -> Endpoint | None:
    """The endpoint the job files give for backend ``name`` (repository content, untrusted).

    An endpoint belongs to its backend type: a `local` job's endpoint is never used for another
    backend (and so never given Google credentials), whatever chose the backend.
    """
    declared: dict[str, Job] = {}
    for job in jobs:
        if job.backend is not None and job.backend.type == name and job.backend.endpoint:
            declared.setdefault(job.backend.endpoint.rstrip("/"), job)
    if len(declared) > 1:
        listing = ", ".join(f"{job.path}: {url}" for url, job in declared.items())
        raise UsageError(f"the jobs name different {name} endpoints ({listing}); apply them "
                         "separately or pass --endpoint")
    if not declared:
        return None
    url, job = declared.popitem()
    assert job.backend is not None
    return Endpoint(url, f"{job.path}: backend.endpoint", trusted=False,
                    named_at=job.backend.endpoint_at)


def open_backend(chosen: str | None, options: BackendOptions, jobs: list[Job],
                 notify: Callable[[str], None]) -> Backend:
    """The backend for ``jobs``, opened for this workspace; nothing is sent before its endpoint
    and credentials have passed the trust rules."""
    name = choose(chosen, jobs)
    kind = backend_type(name)
    # The operator's endpoint names no backend type: when the job files chose the type, it may
    # not receive that backend's credentials (endpoints.check_destination).
    from_jobs = any(j.backend is not None for j in jobs) and not chosen_by_operator(chosen)
    request = OpenRequest(backend=name, options=options, jobs=jobs,
                          owner=workspace.owner(options.owner),
                          retry=RetryPolicy.from_environment(),
                          operator=operator_endpoint(options.endpoint, name if from_jobs else None),
                          declared=declared_endpoint(name, jobs), notify=notify,
                          known_types=names())
    return kind.open(request)


def describe(chosen: str | None, options: BackendOptions) -> list[str]:
    """What `jobspec auth` shows: backend, endpoint, credentials (the method, never the
    secret) and owner."""
    name = choose(chosen, [])
    kind = backend_type(name)
    credentials = kind.credentials()
    endpoint = operator_endpoint(options.endpoint)
    lines = [f"backend: {name}",
             f"endpoint: {endpoint.url if endpoint else kind.default_endpoint(options, [])}",
             f"credentials: {credentials.method}"]
    if credentials.quota_project:
        lines.append(f"quota project: {credentials.quota_project}")
    lines.append(f"owner: {workspace.owner(options.owner)}")
    return lines
