"""What jobspec does when it meets its own bug: an exception that no part of jobspec raised on
purpose (see errors.py) reached the command line.

The user gets one line that says so, and where the whole traceback was written, instead of a
traceback on the terminal; the file is in this user's private state directory (outside any
repository, mode 0600), with jobspec's version and the command, so that it can be attached to a
bug report. Tracebacks carry no local values, and the command line is recorded as given (no
credential travels on jobspec's command line: keys come from the environment).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__, workspace

DIRECTORY_NAME = "bug-reports"


def reports_dir() -> Path:
    return workspace.private_state_home() / DIRECTORY_NAME


def write(argv: Sequence[str], error: BaseException) -> Path | None:
    """Write the traceback of ``error`` beside the version and command; the file's path, or
    None when it could not be written (the caller then prints the traceback instead)."""
    directory = reports_dir()
    name = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.getpid()}.txt"
    text = (f"jobspec {__version__} on Python {sys.version.split()[0]} ({sys.platform})\n"
            f"command: jobspec {' '.join(argv)}\n\n"
            + "".join(traceback.format_exception(type(error), error, error.__traceback__)))
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                         0o600)
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as out:
            out.write(text)
    except OSError:
        return None
    return directory / name
