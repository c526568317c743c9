"""What several commands share: loading the jobs in scope and opening their backend."""

from __future__ import annotations

import argparse
import os
import sys

from .. import auth, spec
from ..backends.base import Backend
from ..backends.gemini import GOOGLE_ENDPOINT, GeminiBackend
from ..client import ApiClient, RetryPolicy
from ..errors import UsageError
from ..localservice import find_or_start

BACKENDS = ("local", "gemini", "vertex")
BACKEND_VARIABLE = "JOBSPEC_BACKEND"
RETRY_DEADLINE_VARIABLE = "JOBSPEC_RETRY_DEADLINE"


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=BACKENDS,
                        help=f"where to tune (default: ${BACKEND_VARIABLE}, then the job files' "
                             "`backend`, then local)")
    parser.add_argument("--endpoint", help="base URL of the service, instead of the backend's "
                                           "default")


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="job files, directories or globs (default: jobs/)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="only these jobs (repeatable)")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="allow training data outside the repository")


def load_jobs(args: argparse.Namespace) -> list[spec.Job]:
    """The jobs in scope: every file valid (else ConfigErrors), filtered by --target."""
    paths = spec.expand_paths(args.paths or ["jobs/"])
    if not paths:
        raise UsageError(f"no job files (*.yaml, *.yml) in {' '.join(args.paths or ['jobs/'])}")
    jobs = spec.load_jobs(paths, allow_outside_paths=args.allow_outside_paths)
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


def open_backend(args: argparse.Namespace, jobs: list[spec.Job]) -> Backend:
    name = choose_backend(args, jobs)
    declared_endpoints = {j.backend.endpoint for j in jobs if j.backend and j.backend.endpoint}
    endpoint = getattr(args, "endpoint", None) or (declared_endpoints.pop()
                                                   if len(declared_endpoints) == 1 else None)
    if name == "vertex":
        raise UsageError("the vertex backend is not available in this version of jobspec; "
                         "use --backend local or --backend gemini")
    if name == "local" and endpoint is None:
        service = find_or_start()
        endpoint = service.url
        if service.started:
            print(f"Started the local tuning service at {endpoint} (pid {service.pid}; state and "
                  "log in .jobspec/local/); it stays up for later commands and exits after "
                  "30 minutes idle.", file=sys.stderr)
    credentials = auth.resolve(name)
    return GeminiBackend(name, ApiClient(endpoint or GOOGLE_ENDPOINT, credentials,
                                         retry=retry_policy()))


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
