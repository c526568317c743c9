"""What several commands share: their job and backend options, loading the jobs in scope,
opening their backend and planning them against it."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from .. import jobfiles, reconcile, spec, workspace
from ..backends import registry
from ..backends.base import Backend, BackendOptions
from ..backends.endpoints import BACKEND_VARIABLE
from ..errors import UsageError


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that talks to a backend takes (``backend_options`` reads
    them: each dest is a field of BackendOptions)."""
    parser.add_argument("--backend", choices=registry.names(),
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


def backend_options(args: argparse.Namespace) -> BackendOptions:
    """What the operator chose for the backend on the command line."""
    return BackendOptions(**{f.name: getattr(args, f.name, None)
                             for f in dataclasses.fields(BackendOptions)})


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="job files, directories or globs (default: jobs/ at the repository "
                             "root)")
    parser.add_argument("--target", action="append", default=[], metavar="NAME",
                        help="only these jobs (repeatable)")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="allow training data outside the repository")


def job_paths(args: argparse.Namespace) -> list[str]:
    """The job files the command's paths name (else the workspace's): a UsageError if none."""
    given = args.paths or workspace.default_job_paths()
    paths = jobfiles.expand_paths(given)
    if not paths:
        raise UsageError(f"no job files (*.yaml, *.yml) in {' '.join(given)}")
    return paths


def load_jobs(args: argparse.Namespace) -> list[spec.Job]:
    """The jobs in scope: every file valid (else ConfigErrors), filtered by --target."""
    paths = job_paths(args)
    jobs = spec.load_jobs(paths, allow_outside_paths=args.allow_outside_paths,
                          rules=registry.Rules(getattr(args, "backend", None)))
    if args.target:
        unknown = sorted(set(args.target) - {j.name for j in jobs})
        if unknown:
            raise UsageError(f"--target {', '.join(unknown)}: no such job in "
                             f"{', '.join(paths)} (jobs: {', '.join(j.name for j in jobs)})")
        jobs = [j for j in jobs if j.name in args.target]
    return jobs


def notify(message: str) -> None:
    print(message, file=sys.stderr)


def open_backend(args: argparse.Namespace, jobs: list[spec.Job]) -> Backend:
    return registry.open_backend(getattr(args, "backend", None),
                                 backend_options(args), jobs, notify)


def plan_jobs(args: argparse.Namespace) -> tuple[reconcile.Plan, Backend]:
    """The jobs in scope, each identified, compared with what their backend holds: the plan,
    and the open backend it was made against (the caller closes it)."""
    jobs = load_jobs(args)
    identified = reconcile.identify_all(jobs)
    backend = open_backend(args, jobs)
    try:
        return reconcile.plan(identified, backend,
                              recreate_failed=getattr(args, "recreate_failed", False)), backend
    except BaseException:
        backend.close()
        raise


def describe(backend: Backend) -> str:
    return f"Backend: {backend.name} ({backend.endpoint})"
