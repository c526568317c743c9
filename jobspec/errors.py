"""The exceptions jobspec raises, and the exit code each one means.

    JobSpecError                  base of everything jobspec raises on purpose
    ├── UsageError                the command line is wrong                  (exit 64)
    ├── ConfigError               a job or data file is wrong: path, line, column, field
    │   └── ConfigErrors          several ConfigErrors found in one pass
    ├── AuthError                 no usable credentials, or they were refused
    └── BackendError              the tuning service answered with an error: status + message
        ├── TransientBackendError retrying may help (429, 5xx, transport); may carry retry_after
        └── PermanentBackendError retrying will not help (other 4xx)

    Interrupted                   not an error: the user pressed Ctrl-C     (exit 130)

Anything else that reaches the top is a bug in jobspec: the command line says so in one line,
writes the traceback to a file (bugreport.py) and exits with EXIT_BUG.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CHANGES_PENDING = 2
EXIT_USAGE = 64
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: an internal error
EXIT_INTERRUPTED = 130


class JobSpecError(Exception):
    """Base class of every error jobspec raises on purpose."""

    exit_code = EXIT_FAILURE


class UsageError(JobSpecError):
    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Location:
    """Where in which file a problem is: 1-based line and column, and the field path."""

    path: str
    line: int | None = None
    column: int | None = None
    field: str = ""

    def __str__(self) -> str:
        parts = [self.path]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


class ConfigError(JobSpecError):
    """A job file or training-data file is wrong."""

    def __init__(self, location: Location, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        field = f" {self.location.field}:" if self.location.field else ""
        return f"{self.location}:{field} {self.message}"

    def as_dict(self) -> dict:
        return {
            "path": self.location.path,
            "line": self.location.line,
            "column": self.location.column,
            "field": self.location.field,
            "message": self.message,
        }


class ConfigErrors(ConfigError):
    """Every problem found in one pass over one or more files, in file order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        assert errors, "ConfigErrors needs at least one error"
        self.errors = errors
        super().__init__(errors[0].location, errors[0].message)

    def __str__(self) -> str:
        return "\n".join(ConfigError.__str__(e) for e in self.errors)


class AuthError(JobSpecError):
    """No usable credentials were found, or the service refused them."""


class BackendError(JobSpecError):
    """The tuning service answered with an error."""

    def __init__(self, message: str, *, http_status: int | None = None, status: str = "") -> None:
        self.http_status = http_status
        self.status = status
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        head = " ".join(str(p) for p in (self.http_status, self.status) if p)
        return f"{head}: {self.message}" if head else self.message


class TransientBackendError(BackendError):
    """A failure that may go away on retry (rate limit, overload, dropped connection)."""

    def __init__(self, message: str, *, http_status: int | None = None, status: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message, http_status=http_status, status=status)
        self.retry_after = retry_after


class PermanentBackendError(BackendError):
    """A failure that retrying cannot fix (bad request, not found, permission denied)."""


class Interrupted(Exception):
    """The user asked jobspec to stop (Ctrl-C) while it waited: to poll, or to retry a request.
    Deliberately not a JobSpecError, so that no error handler mistakes it for a failure."""
