"""The workspace: the repository jobspec runs in, where its local state and reports live by
default, and who owns the models it creates.

Everything is anchored at the repository root (the enclosing git work tree of the current
directory), never at the current directory itself: running jobspec from ``jobs/`` or from a CI
step's working directory reaches the same local service, state and reports.

The local service's state (its database, tuned adapters, log, lock and discovery record) lives
outside the work tree, in this user's private state directory
(``$XDG_STATE_HOME/jobspec/workspaces/<root name>-<digest of the root's path>/``, mode 0700):
anything in the work tree can come from a branch, and a pull request that committed
``.jobspec/local/`` (a database with a job queued in it, symbolic links where the service writes
its log) would otherwise be trusted by the first ``jobspec plan`` on it. legacy_state.py moves
the state an earlier jobspec kept in ``.jobspec/local/`` out of the work tree, once, when that is
safe.

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
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

OWNER_VARIABLE = "JOBSPEC_OWNER"
OWNER_ID_LENGTH = 16
LEGACY_STATE_SUBDIR = Path(".jobspec") / "local"  # where jobspec kept it before; never used
PRIVATE_MODE = 0o700
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


def private_state_home() -> Path:
    """This user's own state directory for jobspec, outside any repository."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "jobspec"


def state_dir(root: Path | None = None) -> Path:
    """Where the local service of the repository at ``root`` keeps its state (not created)."""
    root = (root or find_root()).resolve()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", root.name).strip(".-")[:40] or "root"
    digest = hashlib.sha256(str(root).encode("utf-8")).hexdigest()[:16]
    return private_state_home() / "workspaces" / f"{name}-{digest}"


def private_dir(path: Path) -> Path:
    """``path`` as a directory only this user can enter: created with its missing parents mode
    0700, and refused (OSError) if it is a symbolic link or another user's."""
    missing = [p for p in (path, *path.parents) if not p.exists() and not p.is_symlink()]
    for directory in reversed(missing):
        directory.mkdir(mode=PRIVATE_MODE, exist_ok=True)
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.getuid():
        raise NotADirectoryError(f"{path} is not a directory of this user's (a symbolic link, "
                                 "a file, or another user's)")
    if stat.S_IMODE(found.st_mode) & 0o077:
        os.chmod(path, PRIVATE_MODE)
    return path


def tracked_files(path: Path, root: Path | None = None) -> list[str]:
    """The files under ``path`` that git tracks in the repository at ``root`` (none when there
    is no repository or no git): content a branch can plant there."""
    root = root or find_root(path)
    try:
        found = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", str(path)],
                               capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if found.returncode != 0:
        return []
    return [name for name in found.stdout.decode("utf-8", "replace").split("\0") if name]


def report_dir(root: Path | None = None) -> Path:
    return (root or find_root()) / REPORT_SUBDIR


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
