"""What several commands share: loading the jobs in scope and opening their backend."""

from __future__ import annotations

import argparse
import os
import sys

from .. import auth, spec, workspace
from ..backends.base import Backend
from ..backends.gemini import GOOGLE_ENDPOINT, GeminiBackend
from ..client import ApiClient, RetryPolicy
from ..endpoints import Endpoint, check_destination, operator_endpoint
from ..errors import UsageError
from ..localservice import find_or_start

BACKENDS = spec.BACKEND_TYPES
BACKEND_VARIABLE = spec.BACKEND_VARIABLE
RETRY_DEADLINE_VARIABLE = "JOBSPEC_RETRY_DEADLINE"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS,
                        help=f"where to tune (default: ${BACKEND_VARIABLE}, then the job files' "
                             "`backend`, then local)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="base URL of the service, instead of the backend's default "
                             "(default: $JOBSPEC_ENDPOINT); credentials go to it")
    parser.add_argument("--owner", metavar="NAME",
                        help="the workspace that owns the models created, pruned and deleted "
                             f"(default: ${workspace.OWNER_VARIABLE}, else the repository's origin "
                             "remote, else its path)")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="job files, directories or globs (default: jobs/ at the repository "
                             "root)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="only these jobs (repeatable)")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="allow training data outside the repository")


def load_jobs(args: argparse.Namespace) -> list[spec.Job]:
    """The jobs in scope: every file valid (else ConfigErrors), filtered by --target."""
    given = args.paths or workspace.default_job_paths()
    paths = spec.expand_paths(given)
    if not paths:
        raise UsageError(f"no job files (*.yaml, *.yml) in {' '.join(given)}")
    jobs = spec.load_jobs(paths, allow_outside_paths=args.allow_outside_paths,
                          backend=getattr(args, "backend", None))
    if args.target:
        unknown = sorted(set(args.target) - {j.name for j in jobs})
        if unknown:
            raise UsageError(f"--target {', '.join(unknown)}: no such job in "
                             f"{', '.join(paths)} (jobs: {', '.join(j.name for j in jobs)})")
        jobs = [j for j in jobs if j.name in args.target]
    return jobs


def choose_backend(args: argparse.Namespace, jobs: list[spec.Job]) -> str:
    if getattr(args, "backend", None):
        return args.backend
    if os.environ.get(BACKEND_VARIABLE):
        chosen = os.environ[BACKEND_VARIABLE]
        if chosen not in BACKENDS:
            raise UsageError(f"{BACKEND_VARIABLE}={chosen}: expected one of {', '.join(BACKENDS)}")
        return chosen
    declared = {j.backend.type for j in jobs if j.backend is not None}
    if len(declared) > 1:
        listing = ", ".join(f"{j.name}: {j.backend.type if j.backend else 'local'}" for j in jobs)
        raise UsageError(f"the jobs name different backends ({listing}); apply them separately "
                         "or pass --backend")
    return declared.pop() if declared else "local"


def declared_endpoint(name: str, jobs: list[spec.Job]) -> Endpoint | None:
    """The endpoint the job files give for backend ``name`` (repository content, untrusted).

    An endpoint belongs to its backend type: a `local` job's endpoint is never used for the
    gemini backend (and so never given Google credentials), whatever chose the backend.
    """
    declared: dict[str, spec.Job] = {}
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
    return Endpoint(url, f"{job.path}: backend.endpoint", trusted=False,
                    named_at=job.backend.endpoint_at)


def resolve_endpoint(name: str, args: argparse.Namespace, jobs: list[spec.Job]) -> Endpoint | None:
    """Where backend ``name`` sends requests: the operator's choice, else the job files', else
    None (the backend's own default)."""
    declared = declared_endpoint(name, jobs)
    chosen = operator_endpoint(getattr(args, "endpoint", None))
    if chosen is not None:
        return chosen
    if declared is not None:
        return declared.allowed_by_operator()
    return None


def open_backend(args: argparse.Namespace, jobs: list[spec.Job]) -> Backend:
    name = choose_backend(args, jobs)
    if name == "vertex":
        raise UsageError("the vertex backend is not available in this version of jobspec; "
                         "use --backend local or --backend gemini")
    endpoint = resolve_endpoint(name, args, jobs)
    credentials = auth.resolve(name)
    if name == "local" and endpoint is None:
        endpoint = _local_service()
    elif endpoint is None:
        endpoint = Endpoint(GOOGLE_ENDPOINT, "the gemini backend's default", trusted=True)
    check_destination(endpoint, credentials)
    owner = workspace.owner(getattr(args, "owner", None))
    return GeminiBackend(name, ApiClient(endpoint.url, credentials, retry=retry_policy()), owner)


def _local_service() -> Endpoint:
    state_dir = workspace.state_dir()
    service = find_or_start(state_dir)
    where = os.path.relpath(state_dir)
    if service.ignored_record:
        print(f"Ignored {os.path.join(where, 'service.json')}: it names {service.ignored_record}, "
              "which is not a service this user's jobspec started.", file=sys.stderr)
    if service.started:
        print(f"Started the local tuning service at {service.url} (pid {service.pid}; state and "
              f"log in {where}{os.sep}); it stays up for later commands and exits after "
              "30 minutes idle.", file=sys.stderr)
    source = "JOBSPEC_LOCAL_URL" if os.environ.get("JOBSPEC_LOCAL_URL") else "the local service"
    return Endpoint(service.url, source, trusted=True)


def retry_policy() -> RetryPolicy:
    deadline = os.environ.get(RETRY_DEADLINE_VARIABLE)
    if not deadline:
        return RetryPolicy()
    try:
        return RetryPolicy(deadline_seconds=float(deadline))
    except ValueError:
        raise UsageError(f"{RETRY_DEADLINE_VARIABLE}={deadline}: expected seconds") from None


def describe(backend: Backend) -> str:
    return f"Backend: {backend.name} ({backend.endpoint})"
