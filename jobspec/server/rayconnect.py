"""Joining the Ray cluster `jobspec serve --ray ADDRESS` names, within a bounded time and with a
clear error where none answers, in a namespace of the service's own state directory."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path
from typing import Any

CONNECT_SECONDS = 30.0


class RayUnreachable(Exception):
    """No Ray cluster answers at the address given (--ray)."""


def namespace_for(state_dir: Path) -> str:
    """The Ray namespace of the service of ``state_dir``: its run names are looked up there, so
    two services (two state directories) on one cluster never take each other's runs."""
    return "jobspec-" + hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:16]


def _host_port(address: str) -> tuple[str, int] | None:
    """Host and port of ``ray://host:port`` or ``host:port``; None for "auto"."""
    if address == "auto":
        return None
    rest = address.removeprefix("ray://")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnreachable(f"--ray {address}: not an address; give auto, ray://HOST:PORT or "
                             "a head's HOST:PORT (its GCS port, 6379 by default)")
    return host.strip("[]"), int(port)


def connect(address: str, namespace: str, timeout: float = CONNECT_SECONDS) -> str:
    """Join the cluster at ``address`` as a driver in ``namespace``; this node's id. Raises
    RayUnreachable, saying why, within about ``timeout`` seconds: ray.init alone would keep
    retrying an address where nothing listens for minutes."""
    target = _host_port(address)
    if target is not None:
        try:
            socket.create_connection(target, timeout=min(timeout, 5.0)).close()
        except OSError as exc:
            raise RayUnreachable(f"no Ray cluster at {address} ({exc.strerror or exc}); start "
                                 "its head with `ray start --head` or pass its address to "
                                 "--ray") from None
    import ray  # noqa: PLC0415

    outcome: dict[str, Any] = {}

    def init() -> None:
        try:
            # The driver sends Ray nothing of this process's environment (no runtime_env):
            # the API key and tokens stay here.
            ray.init(address=address, namespace=namespace, log_to_driver=False,
                     logging_level="WARNING", configure_logging=False)
            outcome["node"] = ray.get_runtime_context().get_node_id()
        except Exception as exc:  # noqa: BLE001 - said to the user as one line
            outcome["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}" \
                if str(exc).strip() else type(exc).__name__

    joining = threading.Thread(target=init, daemon=True, name="ray-init")
    joining.start()
    joining.join(timeout)
    if joining.is_alive():
        raise RayUnreachable(f"the Ray cluster at {address} did not answer within "
                             f"{timeout:g}s")
    if "error" in outcome:
        raise RayUnreachable(f"cannot join the Ray cluster at {address}: {outcome['error']}")
    return outcome["node"]
