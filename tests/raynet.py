"""Running a real Ray cluster in a test without any of its traffic leaving 127.0.0.1.

Ray listens on every interface and advertises the machine's own address, so a cluster started
plainly would talk over this machine's non-loopback address. A test therefore runs its Ray part
(the cluster, and the service and CLI that use it) as a scenario script in a network namespace
of its own whose only interface is loopback (``unshare --net``, then ``ip link set lo up``), and
asserts on what the script prints. Where no such namespace can be made (not root, no unshare),
the test is skipped with that reason; where Ray is not installed (it is the optional extra
``jobspec[ray]``), likewise.

Inside the namespace the only address is 127.0.0.1, so Ray advertises that; the namespace ends
with the script, taking any process the script left behind off every network.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest

# Ray's own switches for a quiet, self-contained cluster: no usage report (it would try to reach
# the internet); no token authentication, whose token Ray would otherwise write into (and then
# expect in) the real home directory, ~/.ray/auth_token, outside the test.
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DEDUP_LOGS": "0",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
}
_ENTER = 'ip link set lo up && exec "$@"'


@functools.cache
def namespace_refused() -> str | None:
    """Why a loopback-only network namespace cannot be made here (None: it can)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare and ip (util-linux, iproute2) are needed for a loopback-only namespace"
    try:
        done = subprocess.run(["unshare", "--net", "sh", "-c", _ENTER, "sh", "true"],
                              capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare --net failed: {exc}"
    if done.returncode != 0:
        return f"unshare --net failed (not root?): {done.stderr.strip()[:200]}"
    return None


def skip_without_ray_namespace() -> None:
    """Skip the calling test unless Ray is installed and a namespace can be made."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install 'jobspec[ray]')")
    refused = namespace_refused()
    if refused:
        pytest.skip(refused)


def ray_temp_dir() -> str:
    """A short folder for Ray's session files: its Unix sockets live there, and a socket's path
    must stay under 108 bytes (pytest's tmp_path is too deep)."""
    return tempfile.mkdtemp(prefix="rt", dir="/tmp")


def run_in_namespace(argv: Sequence[str], *, timeout: float, cwd: str | Path | None = None,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in a new network namespace with only loopback up; its output as text.
    Ray's session folder (``RAY_TMPDIR``) is a fresh short one, removed afterwards."""
    temp = ray_temp_dir()
    full_env = {**os.environ, **RAY_ENV, "RAY_TMPDIR": temp, **(env or {})}
    try:
        return subprocess.run(["unshare", "--net", "sh", "-c", _ENTER, "sh", *argv],
                              capture_output=True, text=True, timeout=timeout, cwd=cwd,
                              env=full_env, stdin=subprocess.DEVNULL, check=False)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def run_python_in_namespace(script: str | Path, *args: str, timeout: float,
                            cwd: str | Path | None = None,
                            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``run_in_namespace`` for a Python script, with this interpreter."""
    return run_in_namespace([sys.executable, str(script), *args], timeout=timeout, cwd=cwd,
                            env=env)
