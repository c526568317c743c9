"""The service's side of proving to jobspec that this is the service it started.

jobspec starts the embedded service with a random secret in its environment and keeps the
secret in the user's private state, outside the repository. Before trusting a service it sends a
fresh challenge to ``GET /jobspec/identity``; the service answers with an HMAC of it (the
handshake both sides speak is in jobspec/wire.py). A process that took over the port, or an
address a committed file names, cannot answer. The secret never leaves the process: it is
removed from the environment at start, so training workers (and anything else started later)
do not inherit it, and it is never logged.
"""

from __future__ import annotations

import os
import re

from ..wire import IDENTITY_SECRET_VARIABLE

_CHALLENGE = re.compile(r"[0-9a-f]{16,128}")


def take_secret() -> str | None:
    """The identity secret jobspec gave this process, removed from its environment."""
    return os.environ.pop(IDENTITY_SECRET_VARIABLE, None) or None


def valid_challenge(challenge: str | None) -> bool:
    return challenge is not None and _CHALLENGE.fullmatch(challenge) is not None
