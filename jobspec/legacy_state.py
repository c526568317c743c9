"""The local service's state that an earlier jobspec kept in the work tree (``.jobspec/local/``):
moved once to the private state directory (workspace.py), when it is this user's own, and
otherwise left where it is, unused, and said so.

Its trained models are the user's, so it is not simply abandoned; but a branch can commit
``.jobspec/`` (a database with a job queued in it, symbolic links where the service writes), so
it is moved only when nothing in it can have come from git or lead outside it: nothing under
``.jobspec/`` tracked, no symbolic link at or under it, every entry owned by this user. Nothing
is read from it before it has passed, and it is never merged into state that exists already.
An earlier service still running on it (holding its ``serve.lock``) is not moved from under:
the user is told to stop it first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import workspace
from .errors import BackendError

LOCK_NAME = "serve.lock"  # what the service holds while it runs (server/main.py)


def _shown(path: Path) -> str:
    return os.path.relpath(path) + os.sep


def _why_not_ours(root: Path, legacy: Path) -> str | None:
    """Why ``legacy`` may not be used, or None when it is this user's own."""
    top = root / workspace.LEGACY_STATE_SUBDIR.parts[0]
    tracked = workspace.tracked_files(top, root)
    if tracked:
        return (f"git tracks {tracked[0]}{' and more' if len(tracked) > 1 else ''}, so a branch "
                "can plant it")
    for path in (top, legacy):
        if path.is_symlink():
            return f"{os.path.relpath(path)} is a symbolic link"
    if not legacy.is_dir():
        return f"{os.path.relpath(legacy)} is not a folder"
    for folder, names, files in os.walk(legacy, followlinks=False):
        for name in [*names, *files, "."]:
            entry = os.lstat(os.path.join(folder, name))
            where = os.path.relpath(os.path.join(folder, name))
            if stat.S_ISLNK(entry.st_mode):
                return f"it holds a symbolic link, {where}"
            if entry.st_uid != os.getuid():
                return f"{where} belongs to another user"
    return None


@contextmanager
def _no_service_on(legacy: Path, target: Path) -> Iterator[None]:
    """Hold the old state's serve lock, as its service would: none runs on it meanwhile."""
    descriptor = os.open(legacy / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackendError(
                f"a local tuning service from an earlier jobspec still runs on {_shown(legacy)}, "
                f"whose state jobspec now keeps in {target} (outside the work tree) and moves "
                "there once that service has stopped: stop it, or wait until it exits (after "
                "30 minutes idle), and run this again") from None
        yield
    finally:
        os.close(descriptor)


def _move(legacy: Path, target: Path) -> None:
    workspace.private_dir(target.parent)
    try:
        os.rename(legacy, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Another file system: copy beside the target, publish it whole, then remove the old.
        partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
        shutil.copytree(legacy, partial, symlinks=True)
        os.rename(partial, target)
        shutil.rmtree(legacy)
    os.chmod(target, workspace.PRIVATE_MODE)


def adopt(root: Path | None = None) -> str | None:
    """Move ``.jobspec/local/`` of the repository at ``root`` to its private state directory,
    if it is there and may be. What became of it, for the user (moved, or ignored and why);
    None when there is nothing to tell."""
    root = (root or workspace.find_root()).resolve()
    legacy = root / workspace.LEGACY_STATE_SUBDIR
    target = workspace.state_dir(root)
    try:
        return _adopt(root, legacy, target)
    except FileNotFoundError:  # gone while we looked: another jobspec moved it
        return None


def _adopt(root: Path, legacy: Path, target: Path) -> str | None:
    if not legacy.exists() and not legacy.is_symlink():
        return None
    why = _why_not_ours(root, legacy)
    if why is not None:
        return (f"Ignored {_shown(legacy)}: {why}. The local service keeps its state in "
                f"{target} (outside the work tree) and never reads that folder.")
    if target.exists():
        return (f"Left {_shown(legacy)} alone: it holds an earlier jobspec's local state, and "
                f"the local service's state is in {target} already. Move what you need from it "
                "by hand, or delete it.")
    with _no_service_on(legacy, target):
        if target.exists():  # another jobspec moved it meanwhile
            return None
        _move(legacy, target)
    return (f"Moved the local service's state (its tuned models) from {_shown(legacy)} to "
            f"{target}: jobspec keeps it outside the work tree now, where no branch can plant "
            "it.")
