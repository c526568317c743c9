"""The workspace: the repository jobspec runs in, where its local state and reports live by
default, and who owns the models it creates.

Everything is anchored at the repository root (the enclosing git work tree of the current
directory), never at the current directory itself: running jobspec from ``jobs/`` or from a CI
step's working directory reaches the same local service, state and reports.

The owner is what scopes prune and delete to this repository's models. By default it is derived
from the repository's ``origin`` remote (so every clone and checkout of one repository shares
ownership), or from the root's path when there is no remote; ``--owner`` or ``JOBSPEC_OWNER``
overrides it. Backends record a short digest of it (``owner_id``), which fits every backend's
naming rules and says nothing about the repository to whoever lists the models.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

OWNER_VARIABLE = "JOBSPEC_OWNER"
OWNER_ID_LENGTH = 16
STATE_SUBDIR = Path(".jobspec") / "local"
REPORT_SUBDIR = Path("reports")
JOBS_SUBDIR = Path("jobs")


def find_root(start: Path | None = None) -> Path:
    """The enclosing git work tree of ``start`` (default: the current directory), or ``start``
    itself when there is none."""
    start = (start or Path.cwd()).resolve()
    for candidate in (start, *start.parents):
        if (candidate / ".git").exists():
            return candidate
    return start


def default_job_paths() -> list[str]:
    """jobs/ at the repository root, as the current directory names it (``jobs/`` at the root,
    ``./`` from inside it), so that messages keep the paths short."""
    return [os.path.relpath(find_root() / JOBS_SUBDIR) + os.sep]


def state_dir(root: Path | None = None) -> Path:
    return (root or find_root()) / STATE_SUBDIR


def report_dir(root: Path | None = None) -> Path:
    return (root or find_root()) / REPORT_SUBDIR


def private_state_dir() -> Path:
    """This user's own state, outside every repository (so nothing a branch carries is read as
    jobspec's): ``$XDG_STATE_HOME/jobspec``, by default ``~/.local/state/jobspec``."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jobspec"


def _origin_url(root: Path) -> str | None:
    try:
        found = subprocess.run(["git", "-C", str(root), "config", "--get", "remote.origin.url"],
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    url = found.stdout.strip()
    return url or None


def normalise_remote(url: str) -> str:
    """``https://user:token@github.com/Org/Repo.git`` and ``git@github.com:Org/Repo`` both
    become ``github.com/org/repo``: one repository, whichever way it was cloned, and never a
    credential that a URL may carry."""
    url = url.strip()
    scp_like = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)", url)
    if scp_like and "://" not in url:
        host, path = scp_like[1], scp_like[2]
    else:
        parts = urlsplit(url)
        host, path = (parts.hostname or ""), parts.path
    path = path.strip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    return f"{host}/{path}".strip("/").lower() if host else path.lower()


@dataclass(frozen=True)
class Owner:
    """Who owns the models this workspace creates: a readable name and the digest recorded."""

    name: str
    source: str  # how it was derived, for messages: --owner, JOBSPEC_OWNER, remote, path

    @property
    def id(self) -> str:
        return hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:OWNER_ID_LENGTH]

    def __str__(self) -> str:
        return f"{self.name} ({self.source}; id {self.id})"


def owner(explicit: str | None = None, root: Path | None = None) -> Owner:
    if explicit:
        return Owner(explicit, "--owner")
    if os.environ.get(OWNER_VARIABLE):
        return Owner(os.environ[OWNER_VARIABLE], OWNER_VARIABLE)
    root = (root or find_root()).resolve()
    remote = _origin_url(root)
    if remote:
        return Owner(normalise_remote(remote), "origin remote")
    return Owner(str(root), "repository path")
