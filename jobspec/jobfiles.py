"""Job files on disk and the data files they name: finding the job files a command is given
(``expand_paths``), reading one (``read_job_text``: size, encoding and access checked, each a
ConfigError at the file), and where a data file lies (``Places``: inside the repository or not,
readable or not, each worked out once for the jobs loaded together). spec.py builds the ``Job``.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from . import data
from .errors import ConfigError, Location, UsageError
from .workspace import find_root

MAX_JOB_FILE_BYTES = 1024 * 1024
JOB_SUFFIXES = (".yaml", ".yml")


def expand_paths(arguments: Iterable[str]) -> list[str]:
    """Files, directories (their *.yaml/*.yml, not recursive) and globs, in a stable order."""
    found: list[str] = []
    for argument in arguments:
        if any(ch in argument for ch in "*?["):
            matches = sorted(glob.glob(argument, recursive=True))
            if not matches:
                raise UsageError(f"{argument}: no files match this pattern")
            found.extend(m for m in matches if not os.path.isdir(m))
        elif os.path.isdir(argument):
            entries = sorted(e for e in os.listdir(argument) if e.endswith(JOB_SUFFIXES))
            found.extend(os.path.join(argument, e) for e in entries)
        else:
            found.append(argument)
    unique = list(dict.fromkeys(os.path.normpath(p) for p in found))
    return unique


def read_job_text(path: str) -> str:
    where = Location(path)
    try:
        with open(path, "rb") as handle:  # one open and one fstat: validate reads thousands
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_JOB_FILE_BYTES:
                raise ConfigError(where, f"job file is {size:,} bytes, over the limit of "
                                  f"{MAX_JOB_FILE_BYTES:,} bytes")
            raw = handle.read()
    except IsADirectoryError:
        raise ConfigError(where, "is a directory, not a job file") from None
    except FileNotFoundError:
        raise ConfigError(where, "no such job file") from None
    except PermissionError:
        raise ConfigError(where, "cannot read job file: permission denied") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"not valid UTF-8 (byte {exc.start})") from None


class Places:
    """Repository roots, whether a data file lies inside one and whether it can be read, each
    worked out once for the jobs loaded together (a thousand job files in one directory share a
    root and, often, a data file)."""

    def __init__(self) -> None:
        self._roots: dict[Path, Path] = {}
        self._within: dict[tuple[Path, Path], bool] = {}
        self._readable: set[tuple[Path, str]] = set()

    def root(self, directory: Path) -> Path:
        if directory not in self._roots:
            self._roots[directory] = find_root(directory)
        return self._roots[directory]

    def is_within(self, path: Path, root: Path) -> bool:
        if (path, root) not in self._within:
            self._within[path, root] = data.is_within(path, root)
        return self._within[path, root]

    def check_file(self, source: data.DataSource) -> None:
        """data.check_file, once for each file it passes."""
        assert source.path is not None
        if (source.path, source.format) not in self._readable:
            data.check_file(source)
            self._readable.add((source.path, source.format))
