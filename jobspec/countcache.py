"""Token counts kept between commands, so that a plan of unchanged jobs asks the service for no
count it has given before.

A count is kept under a key made of everything it depends on: the backend, the base model, what
the service says its counts of that base model depend on (``Backend.counting_digest``: the
tokenizer, the trainer's layout, the limit on one example) and the examples themselves
(``identity.examples_digest``). So a count is never served for another tokenizer, base model or
service, and an edited example makes another key. A backend that reports no digest has its
counts asked for every time.

The counts live in this user's private state directory (``$XDG_STATE_HOME/jobspec/token-counts/``,
mode 0700), never in the repository, where a pull request could plant files. A file that cannot
be read, is a link, or is not what jobspec writes (another key, anything but a whole number per
example) is ignored, and replaced by the next count.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

from . import workspace
from .backends.base import TokenCount

SCHEME = 1  # the files' layout; another is ignored
SUBDIR = "token-counts"
# A file jobspec writes holds two whole numbers per example and a line of text: one much larger
# is not one of them, and is not read.
_MAX_BYTES_PER_EXAMPLE, _MAX_OTHER_BYTES = 48, 4096
_MAX_METHOD_CHARS = 1000


def key(backend: str, base_model: str, counting_digest: str, examples_digest: str) -> str:
    parts = [SCHEME, backend, base_model, counting_digest, examples_digest]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def _whole(value: Any) -> bool:
    return type(value) is int and value >= 0


class CountCache:
    """Counts on disk, one file per key."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or workspace.private_state_home() / SUBDIR

    def _path(self, count_key: str) -> Path:
        return self.directory / f"{count_key}.json"

    def get(self, count_key: str, examples: int) -> TokenCount | None:
        """The count kept under ``count_key`` for ``examples`` examples; None when there is
        none that can be trusted."""
        try:  # not through a link, and not waiting on a pipe
            descriptor = os.open(self._path(count_key),
                                 os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            with os.fdopen(descriptor, "rb") as kept:
                found = os.fstat(kept.fileno())
                if not stat.S_ISREG(found.st_mode) or found.st_size > (
                        _MAX_OTHER_BYTES + _MAX_BYTES_PER_EXAMPLE * examples):
                    return None
                values = json.loads(kept.read())
        except (OSError, ValueError, RecursionError):
            return None
        return _count_from(values, count_key, examples)

    def put(self, count_key: str, tokens: TokenCount) -> None:
        """Keep ``tokens`` under ``count_key``; a count that cannot be written is not kept (the
        next command asks again)."""
        values = {"scheme": SCHEME, "key": count_key, "inputs": list(tokens.inputs),
                  "outputs": list(tokens.outputs), "limit": tokens.limit,
                  "method": tokens.method}
        partial = self.directory / f".{count_key}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                json.dump(values, out, separators=(",", ":"))
            os.replace(partial, self._path(count_key))
        except OSError:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)


def _count_from(values: Any, count_key: str, examples: int) -> TokenCount | None:
    """The exact count in ``values`` as ``put`` wrote it for ``count_key``, else None."""
    if not isinstance(values, dict) or values.get("scheme") != SCHEME \
            or values.get("key") != count_key:
        return None
    inputs, outputs = values.get("inputs"), values.get("outputs")
    limit, method = values.get("limit"), values.get("method")
    if not (isinstance(inputs, list) and isinstance(outputs, list)
            and len(inputs) == len(outputs) == examples
            and all(map(_whole, inputs)) and all(map(_whole, outputs))):
        return None
    if not (limit is None or (_whole(limit) and limit > 0)):
        return None
    if not (isinstance(method, str) and 0 < len(method) <= _MAX_METHOD_CHARS):
        return None
    return TokenCount(tuple(inputs), tuple(outputs), exact=True, method=method, limit=limit)
