"""Where the vertex backend's tuning jobs go: the Google Cloud project, the region, and the
Cloud Storage bucket the training data is staged in. Each comes from its flag, else the job
files (which must agree), else its environment variable; a project or region that could not be
one is refused before anything is sent, at the job file's line when a job file named it."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import ConfigError, Location, UsageError
from ..spec import Job
from . import openmodels
from .base import BackendOptions
from .gcs import StagingBucket

DEFAULT_LOCATION = "us-central1"
PROJECT_VARIABLE, LOCATION_VARIABLE = "GOOGLE_CLOUD_PROJECT", "JOBSPEC_VERTEX_LOCATION"
BUCKET_VARIABLE = "JOBSPEC_STAGING_BUCKET"

# A region goes into the service's host name, a project into its paths: nothing else may pass.
_LOCATION = re.compile(r"[a-z][a-z0-9-]{0,61}[a-z0-9]")
_PROJECT = re.compile(r"(?:[a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z0-9][a-z0-9-]{0,61}[a-z0-9]")
_WHAT = {"location": "a Google Cloud region such as us-central1",
         "project": "a Google Cloud project id"}

@dataclass(frozen=True)
class Settings:
    project: str
    location: str
    bucket: StagingBucket | None  # None only when no job is in scope (get, delete by name)

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.location}"


def _from_jobs(jobs: list[Job], key: str) -> tuple[str, Job] | None:
    """The one value the job files give for ``backend.<key>``; UsageError if they differ."""
    given = {}
    for job in jobs:
        value = getattr(job.backend, key, None) if job.backend is not None else None
        if value:
            given.setdefault(value, job)
    if len(given) > 1:
        listing = ", ".join(f"{job.path}: {value}" for value, job in given.items())
        raise UsageError(f"the jobs name different vertex backend.{key} values ({listing}); "
                         f"apply them separately or pass --{key.replace('_', '-')}")
    return next(iter(given.items()), None)


def _setting(options: BackendOptions, jobs: list[Job], key: str, variable: str,
             pattern: re.Pattern[str] | None = None) -> tuple[str, str] | None:
    """(value, where it came from) for one setting: the flag, the job files, the variable."""
    flag = f"--{key.replace('_', '-')}"
    found: tuple[str, str, Location | None] | None = None
    if getattr(options, key):
        found = (getattr(options, key), flag, None)
    elif (declared := _from_jobs(jobs, key)) is not None:
        value, job = declared
        found = (value, f"{job.path}: backend.{key}", job.at("backend", key))
    elif os.environ.get(variable):
        found = (os.environ[variable], variable, None)
    if found is None:
        return None
    value, source, where = found
    if pattern is not None and not pattern.fullmatch(value):
        if where is not None:
            raise ConfigError(where, f"{value!r} is not {_WHAT[key]}")
        raise UsageError(f"{source} {value!r}: expected {_WHAT[key]}")
    return value, source


def settings(options: BackendOptions, jobs: list[Job]) -> Settings:
    project = _setting(options, jobs, "project", PROJECT_VARIABLE, _PROJECT)
    if project is None:
        raise UsageError("the vertex backend needs a Google Cloud project: pass --project, set "
                         f"backend.project in the job file, or set {PROJECT_VARIABLE}")
    location = _setting(options, jobs, "location", LOCATION_VARIABLE, _LOCATION)
    bucket = _setting(options, jobs, "staging_bucket", BUCKET_VARIABLE)
    if bucket is None and jobs:
        raise UsageError("the vertex backend needs a Cloud Storage bucket for the training "
                         "data (in the same region as the tuning jobs): pass --staging-bucket "
                         "gs://BUCKET, set backend.staging_bucket in the job file, or set "
                         f"{BUCKET_VARIABLE}")
    region = location[0] if location else DEFAULT_LOCATION
    _check_open_model_region(jobs, region, location[1] if location else "the default region")
    return Settings(project[0], region, StagingBucket.parse(*bucket) if bucket else None)


def _check_open_model_region(jobs: list[Job], region: str, source: str) -> None:
    """Vertex AI tunes open models in some regions only (a job file's backend.location is
    refused at its line by check_job; this is the region from a flag or a variable)."""
    open_jobs = [job for job in jobs if openmodels.is_open_model(job.base_model)]
    if open_jobs and region not in openmodels.VERTEX_OPEN_MODEL_REGIONS:
        raise UsageError(f"{source} {region}: Vertex AI tunes open models ({open_jobs[0].path}: "
                         f"{open_jobs[0].base_model}) in "
                         f"{', '.join(openmodels.VERTEX_OPEN_MODEL_REGIONS)} only; pass "
                         "--location with one of them")


def location(options: BackendOptions, jobs: list[Job]) -> str:
    """The region the tuning jobs run in (and whose host their requests go to)."""
    found = _setting(options, jobs, "location", LOCATION_VARIABLE, _LOCATION)
    return found[0] if found else DEFAULT_LOCATION


def check_settings(job: Job) -> list[ConfigError]:
    """A job file's backend.project and backend.location that could not be one."""
    problems = []
    for key, pattern in (("project", _PROJECT), ("location", _LOCATION)):
        value = getattr(job.backend, key, None) if job.backend is not None else None
        if value and not pattern.fullmatch(value):
            problems.append(ConfigError(job.at("backend", key),
                                        f"{value!r} is not {_WHAT[key]}"))
    return problems
