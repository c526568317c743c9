"""The `local` backend: jobspec's local tuning service, which speaks the Gemini API's wire
protocol (so the backend is the Gemini backend, pointed at it), and finding or starting it.

``JOBSPEC_LOCAL_URL`` names a running service (the operator's choice, trusted as given).
Without it, jobspec uses the service it started before for this workspace's state directory, or
starts one: a separate background process on a free loopback port, as a user would with
`jobspec serve`. It stays up for later commands (training continues if apply is interrupted) and
exits by itself after a while with nothing to do.

The service's whole state (database, adapters, log, lock) lives in this user's private state
directory, outside the work tree (workspace.state_dir), so nothing a branch commits is opened,
trained or written through; an earlier jobspec's ``.jobspec/local/`` is moved there once, when
it is the user's own (legacy_state.py). Which service jobspec started is recorded beside it
(``$XDG_STATE_HOME/jobspec/services/``, mode 0600) with a per-service secret that jobspec handed
the service when it started it; before the first request, the service must prove it holds that
secret (an HMAC of a fresh challenge), so a process that merely took over the port after the
service exited is not mistaken for it. Two first-time applies take a lock, so they start one
service, not two.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import auth, data, legacy_state, wire, workspace
from ..client import ApiClient
from ..errors import BackendError
from ..wire import IDENTITY_PATH, IDENTITY_SECRET_VARIABLE, identity_proof
from ..spec import Job
from . import preview
from .base import Backend, BackendType, OpenRequest, PollDefaults
from .endpoints import Endpoint, check_destination, is_loopback_host
from .gemini import GeminiBackend, refuse_adapter_size, refuse_deployment, refuse_full_tuning

URL_VARIABLE = "JOBSPEC_LOCAL_URL"
KEY_VARIABLE = "JOBSPEC_LOCAL_API_KEY"
POLL = PollDefaults(initial=0.5, maximum=6.0)  # the local service trains in seconds to minutes
IDLE_EXIT_SECONDS = 1800
START_TIMEOUT_SECONDS = 180
PUBLIC_RECORD = "service.json"


@dataclass(frozen=True)
class LocalService:
    url: str
    started: bool  # True when this call started it
    pid: int | None = None


@dataclass(frozen=True)
class _Record:
    url: str
    pid: int
    secret: str
    state_dir: str


def private_records_dir() -> Path:
    """This user's own record of the services jobspec started (outside any repository)."""
    return workspace.private_state_home() / "services"


def _record_key(state_dir: Path) -> str:
    return hashlib.sha256(str(state_dir).encode("utf-8")).hexdigest()[:24]


def _is_loopback_http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and is_loopback_host(parts.hostname)


def verified(url: str, secret: str, timeout: float = 2.0) -> bool:
    """Whether the service at ``url`` (loopback only) proves it holds ``secret``."""
    if not _is_loopback_http(url):
        return False
    import httpx  # noqa: PLC0415 - only when a request is made (see jobspec/client.py)

    challenge = secrets.token_hex(16)
    try:
        answer = httpx.get(f"{url}{IDENTITY_PATH}", params={"challenge": challenge},
                           timeout=timeout)
        given = answer.json().get("proof", "") if answer.status_code == 200 else ""
    except (httpx.HTTPError, ValueError, AttributeError):
        return False
    return isinstance(given, str) and hmac.compare_digest(given, identity_proof(secret, challenge))


def _read_record(path: Path) -> _Record | None:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
        return _Record(str(values["url"]), int(values["pid"]), str(values["secret"]),
                       str(values["state_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_private(path: Path, values: dict[str, object]) -> None:
    """Atomically, mode 0600; a link at ``path`` is replaced, never written through."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(values, out)
    os.replace(partial, path)


@contextmanager
def _exclusive(lock_path: Path, timeout: float) -> Iterator[None]:
    """One jobspec at a time finds or starts the service of a state directory."""
    with open(lock_path, "w") as lock:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BackendError(f"another jobspec has been starting the local service "
                                       f"for over {timeout:.0f}s (lock {lock_path})") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def find_or_start(state_dir: Path) -> LocalService:
    """The local service for ``state_dir``: the operator's, the one started before, or a new one."""
    if os.environ.get(URL_VARIABLE):
        return LocalService(os.environ[URL_VARIABLE].rstrip("/"), started=False)
    state_dir = state_dir.resolve()
    records = workspace.private_dir(private_records_dir())
    key = _record_key(state_dir)
    with _exclusive(records / f"{key}.lock", START_TIMEOUT_SECONDS):
        record = _read_record(records / f"{key}.json")
        if record is not None and verified(record.url, record.secret):
            return LocalService(record.url, started=False, pid=record.pid)
        return _start(state_dir, records / f"{key}.json")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _open_log(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)


def _start(state_dir: Path, private_record: Path) -> LocalService:
    workspace.private_dir(state_dir)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    secret = secrets.token_hex(32)
    log_path = state_dir / "service.log"
    with os.fdopen(_open_log(log_path), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "jobspec.server", "--host", "127.0.0.1", "--port", str(port),
             "--state-dir", str(state_dir), "--idle-exit", str(IDLE_EXIT_SECONDS)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            env={**os.environ, IDENTITY_SECRET_VARIABLE: secret})
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BackendError(f"the local tuning service exited at start ({process.returncode}); "
                               f"its log ({log_path}) ends with:\n{tail}")
        if verified(url, secret):
            _write_private(private_record,
                           _Record(url, process.pid, secret, str(state_dir)).__dict__)
            # For people to read, beside the log; jobspec itself reads the private record.
            _write_private(state_dir / PUBLIC_RECORD, {"url": url, "pid": process.pid})
            return LocalService(url, started=True, pid=process.pid)
        time.sleep(0.2)
    process.terminate()
    raise BackendError(f"the local tuning service did not answer within "
                       f"{START_TIMEOUT_SECONDS}s; see {log_path}")


def local_credentials() -> auth.Credentials:
    """None unless the service was started with --api-key (then JOBSPEC_LOCAL_API_KEY)."""
    return auth.api_key((KEY_VARIABLE,)) or auth.no_credentials("none (local service on loopback)")


def _embedded(request: OpenRequest) -> Endpoint:
    state_dir = workspace.state_dir()
    try:
        if not os.environ.get(URL_VARIABLE):
            moved = legacy_state.adopt()
            if moved:
                request.notify(moved)
        service = find_or_start(state_dir)
    except OSError as exc:  # the private state directory: a link, another user's, disk full
        raise BackendError(f"cannot start the local tuning service: {exc}") from None
    if service.started:
        request.notify(f"Started the local tuning service at {service.url} (pid {service.pid}; "
                       f"state and log in {state_dir}{os.sep}); it stays up for later commands "
                       "and exits after 30 minutes idle.")
    source = URL_VARIABLE if os.environ.get(URL_VARIABLE) else "the local service"
    return Endpoint(service.url, source, trusted=True)


def _open(request: OpenRequest) -> GeminiBackend:
    credentials = local_credentials()
    endpoint = request.chosen_endpoint or _embedded(request)
    check_destination(endpoint, credentials, "local")
    # jobspec reads the service's additions (validation loss, kept epoch, device, ...), which it
    # sends only to a caller that asks.
    client = ApiClient(endpoint.url, credentials, retry=request.retry,
                       headers={wire.EXTENSIONS_HEADER: wire.EXTENSIONS_ON})
    return GeminiBackend("local", client, request.owner, poll=POLL, counts_examples=True,
                         uploads_examples=True)


def _preview(job: Job, example: data.Example,
             opened: Callable[[], Backend]) -> preview.ExamplePreview:
    """Asked of the service: only it knows how its base model's chat template renders."""
    with opened() as backend:
        assert isinstance(backend, GeminiBackend)  # as _open makes it
        return preview.rendered(backend.client, backend.base_target(job), example)


LOCAL = BackendType(
    name="local", summary="jobspec's local tuning service (LoRA on this machine), the default",
    # The examples go to the service as uploads (uploads.py), training and validation each
    # one; together they may have what one upload may.
    limits=data.DataLimits(
        "local", max_input_chars=wire.MAX_INPUT_CHARS, max_output_chars=wire.MAX_OUTPUT_CHARS,
        max_bytes=wire.UPLOAD_MAX_BYTES, carrier="upload",
        per_example_bytes=wire.UPLOAD_LINE_BYTES, unit_bytes=2**30, unit="GiB",
        stated_by="the local service's limit on an upload of examples",
        shared_with_validation=True),
    open=_open, poll=POLL, credentials=local_credentials,
    default_endpoint=lambda options, jobs: os.environ.get(URL_VARIABLE,
                                                          "the embedded local service"),
    check_job=lambda job: refuse_adapter_size(
        job, "the local service trains a LoRA of rank 8 and takes no adapter size (Vertex AI "
             "does); remove it, or tune on vertex")
    + refuse_full_tuning(job, "the local service trains a LoRA adapter, not every weight; "
                              "remove tuning_mode: full, or tune on vertex (full fine-tuning "
                              "of some open models)")
    + refuse_deployment(job, "the local service serves what it tunes; eval.deploy is for an "
                             "open model tuned on vertex: remove it"),
    preview=_preview)
