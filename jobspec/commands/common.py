"""What several commands share: loading the jobs in scope and opening their backend."""

from __future__ import annotations

import argparse
import sys

from .. import spec, workspace
from ..backends import registry
from ..backends.base import Backend
from ..errors import UsageError

add_backend_arguments = registry.add_arguments


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
                                 registry.BackendOptions.from_args(args), jobs, notify)


def describe(backend: Backend) -> str:
    return f"Backend: {backend.name} ({backend.endpoint})"
