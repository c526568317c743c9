"""The one place that knows the backends by name: which one a command uses, where its requests
go (and whether credentials may go there), and building it.

Each backend module describes itself with a ``BackendType``; this module chooses one (``--backend``,
then JOBSPEC_BACKEND, then the job files' ``backend``, then local), resolves its endpoint under
the rules of ``endpoints.py``, and opens it for this workspace's owner.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import workspace
from ..auth import Credentials
from ..client import RetryPolicy
from ..data import DataLimits
from ..errors import ConfigError, UsageError
from ..spec import Job
from ..workspace import Owner
from .base import Backend, PollDefaults
from .endpoints import BACKEND_VARIABLE, Endpoint, operator_endpoint

RETRY_DEADLINE_VARIABLE = "JOBSPEC_RETRY_DEADLINE"
DEFAULT = "local"


@dataclass(frozen=True)
class BackendOptions:
    """What the operator chose on the command line (None: not given)."""

    endpoint: str | None = None
    owner: str | None = None
    project: str | None = None
    location: str | None = None
    staging_bucket: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "BackendOptions":
        return cls(**{name: getattr(args, name, None) for name in
                      ("endpoint", "owner", "project", "location", "staging_bucket")})


@dataclass(frozen=True)
class OpenRequest:
    """Everything a backend needs to open: the operator's options, the jobs in scope, the
    endpoint the operator named (trusted) and the one the job files name (untrusted)."""

    backend: str  # the type being opened
    options: BackendOptions
    jobs: list[Job]
    owner: Owner
    retry: RetryPolicy
    operator: Endpoint | None
    declared: Endpoint | None
    notify: Callable[[str], None]  # the CLI's, for what a user should know (a service started)

    @property
    def chosen_endpoint(self) -> Endpoint | None:
        """The operator's endpoint, else the job files' (trusted only if allowed)."""
        return self.operator or self.allowed_declared

    @property
    def allowed_declared(self) -> Endpoint | None:
        """The job files' endpoint, trusted if the operator allowed it for this backend type."""
        if self.declared is None:
            return None
        return self.declared.allowed_by_operator(self.backend, names())


@dataclass(frozen=True)
class BackendType:
    name: str
    summary: str  # one line, for --help
    limits: DataLimits  # what one job's data may be, checked by validate and plan
    open: Callable[[OpenRequest], Backend]
    poll: PollDefaults
    credentials: Callable[[], Credentials]  # what `jobspec auth` shows
    default_endpoint: Callable[[BackendOptions, list[Job]], str]
    # Rules of the backend that the job-file schema cannot state (checked before anything is
    # sent): each a ConfigError at the job file's line.
    check_job: Callable[[Job], list[ConfigError]] = field(default=lambda job: [])


def _types() -> dict[str, BackendType]:
    from . import gemini, local, vertex  # noqa: PLC0415 - they import this module's types

    return {t.name: t for t in (local.LOCAL, gemini.GEMINI, vertex.VERTEX)}


def names() -> tuple[str, ...]:
    return tuple(_types())


def backend_type(name: str) -> BackendType:
    return _types()[name]


def poll_summary() -> str:
    return ", ".join(f"{t.poll.initial:g}s {t.name}" for t in _types().values())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a backend takes."""
    parser.add_argument("--backend", choices=names(),
                        help=f"where to tune (default: ${BACKEND_VARIABLE}, then the job files' "
                             "`backend`, then local)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="base URL of the service, instead of the backend's default "
                             "(default: $JOBSPEC_ENDPOINT); credentials go to it for a backend "
                             f"chosen by --backend or ${BACKEND_VARIABLE}, not by the job files")
    parser.add_argument("--owner", metavar="NAME",
                        help="the workspace that owns the models created, pruned and deleted "
                             f"(default: ${workspace.OWNER_VARIABLE}, else the repository's origin "
                             "remote, else its path)")
    vertex = parser.add_argument_group("vertex backend")
    vertex.add_argument("--project", metavar="ID",
                        help="Google Cloud project (default: the job files' backend.project, "
                             "then $GOOGLE_CLOUD_PROJECT)")
    vertex.add_argument("--location", metavar="REGION",
                        help="Vertex AI region (default: the job files' backend.location, then "
                             "$JOBSPEC_VERTEX_LOCATION, then us-central1)")
    vertex.add_argument("--staging-bucket", metavar="gs://BUCKET",
                        help="Cloud Storage bucket for training data (default: the job files' "
                             "backend.staging_bucket, then $JOBSPEC_STAGING_BUCKET)")


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


@dataclass(frozen=True)
class Rules:
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


def retry_policy() -> RetryPolicy:
    deadline = os.environ.get(RETRY_DEADLINE_VARIABLE)
    if not deadline:
        return RetryPolicy()
    try:
        return RetryPolicy(deadline_seconds=float(deadline))
    except ValueError:
        raise UsageError(f"{RETRY_DEADLINE_VARIABLE}={deadline}: expected seconds") from None


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
                          owner=workspace.owner(options.owner), retry=retry_policy(),
                          operator=operator_endpoint(options.endpoint, name if from_jobs else None),
                          declared=declared_endpoint(name, jobs), notify=notify)
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
