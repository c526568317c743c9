"""The Ray actor that holds one job's Ray Train run, on the service's node (raydispatch.py).

``RunActor`` is detached and named (``raytrain.run_name``), so it outlives the service that
started it: a restarted service finds it by name and re-attaches instead of training twice. It
runs ``build_trainer(job, callbacks=[ReportForwarder(itself)]).fit()`` in a thread of its own;
Ray Train calls ``ReportForwarder.after_report`` on its controller after every
``ray.train.report`` of the workers, and the forwarder hands the metric dict (the report dicts of
raytrain.py: "start", "step", "done") to this actor, where the service polls them.

Only the job's description reaches Ray (``raytrain.RayTrainJob``): no API key, no token.
"""

from __future__ import annotations

import threading
from typing import Any

from ray.train import UserCallback

# How much of a failed fit()'s error the operation keeps (Ray's carry the workers' tracebacks).
ERROR_CHARS = 2000


class ReportForwarder(UserCallback):
    """Hands every report of the run to its ``RunActor``, in order (each hand-over is awaited,
    so that a report the service polls is never followed by an earlier one)."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        import ray  # noqa: PLC0415

        if metrics:  # every rank reports the same dict (raytrain.py); rank 0's is enough
            ray.get(self.actor.add.remote(dict(metrics[0])))


class RunActor:
    """One job's run: its reports so far, and how fit() ended (None while it runs)."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.reports: list[dict[str, Any]] = []
        self.ended: dict[str, Any] | None = None  # {"error": None | "Type: message"}
        self.lock = threading.Lock()
        threading.Thread(target=self._fit, daemon=True, name="fit").start()

    def _fit(self) -> None:
        import ray  # noqa: PLC0415

        from .raytrain import build_trainer  # noqa: PLC0415

        error = None
        try:
            forwarder = ReportForwarder(ray.get_runtime_context().current_actor)
            build_trainer(self.job, callbacks=[forwarder]).fit()
        except BaseException as exc:  # noqa: BLE001 - the service reports it on the operation
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        with self.lock:
            self.ended = {"error": error}

    def add(self, metrics: dict[str, Any]) -> None:
        with self.lock:
            self.reports.append(metrics)

    def poll(self, since: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """The reports after the first ``since``, and how fit() ended (None: still running).
        Every report reached this actor before fit() returned, so an ended run's list is
        whole."""
        with self.lock:
            return self.reports[since:], self.ended


def remote_run_actor() -> Any:
    """``RunActor`` as a Ray actor class: threaded, so that polls are answered while fit()
    runs and the forwarder adds reports."""
    import ray  # noqa: PLC0415

    return ray.remote(max_concurrency=4)(RunActor)
