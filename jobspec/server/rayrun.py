"""The Ray actor that holds one job's Ray Train run, on the service's node (raydispatch.py).

``RunActor`` is detached and named (``raytrain.run_name``), so it outlives the service that
started it: a restarted service finds it by name and re-attaches instead of training twice. It
runs ``build_trainer(job, callbacks=[ReportForwarder(itself)]).fit()`` in a thread of its own;
Ray Train calls ``ReportForwarder.after_report`` on its controller after every
``ray.train.report`` of the workers, and the forwarder hands the metric dict (the report dicts of
raytrain.py: "start", "steps", "done") to this actor, where the service polls them.

A standby run's actor (raystandby.py) starts its run before the job is known; its workers wait
for the job the service hands it (``assign``).

Only the job's description reaches Ray (``raytrain.RayTrainJob``): no API key, no token.
"""

from __future__ import annotations

import threading
from typing import Any

from ray.train import UserCallback

# How much of a failed fit()'s error the operation keeps (Ray's carry the workers' tracebacks).
ERROR_CHARS = 2000
# Calls the actor answers at once: the service's polls, the forwarder's reports, and each
# worker of a standby run waiting for its job (up to this many less two).
MAX_CONCURRENCY = 16


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
    """One job's run: its reports so far, and how fit() ended (None while it runs).

    A standby run's actor (``job`` None, ``standby`` given) starts the run before its job is
    known; ``assign`` hands it the job its workers wait for (``wait_job``), ``release`` ends it
    without one."""

    def __init__(self, job: Any, standby: Any = None) -> None:
        self.job = job
        self.released = False
        self.waited = False  # a worker asked for its job: the standby is ready
        self.reports: list[dict[str, Any]] = []
        self.ended: dict[str, Any] | None = None  # {"error": None | "Type: message"}
        self.lock = threading.Lock()
        self.answered = threading.Condition(self.lock)
        threading.Thread(target=self._fit, args=(job if job is not None else standby,),
                         daemon=True, name="fit").start()

    def _fit(self, job: Any) -> None:
        import ray  # noqa: PLC0415

        from .raytrain import build_trainer  # noqa: PLC0415

        error = None
        try:
            forwarder = ReportForwarder(ray.get_runtime_context().current_actor)
            build_trainer(job, callbacks=[forwarder]).fit()
        except BaseException as exc:  # noqa: BLE001 - the service reports it on the operation
            error = f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
        with self.lock:
            self.ended = {"error": error}

    def assign(self, job: Any) -> bool:
        """Hand a standby run its job; True also when it has that job already (a restarted
        service hands it again), False when it has another or was released."""
        with self.answered:
            if self.job is None and not self.released:
                self.job = job
                self.answered.notify_all()
            return (self.job is not None and (self.job.model_id, self.job.operation_id)
                    == (job.model_id, job.operation_id))

    def release(self) -> bool:
        """End a standby run that has no job yet (its workers return); False when it has one."""
        with self.answered:
            if self.job is None:
                self.released = True
                self.answered.notify_all()
            return self.released

    def wait_job(self, timeout: float) -> tuple[str, Any]:
        """For a worker: ("job", job), ("released", None), or ("wait", None) after ``timeout``
        seconds without either."""
        with self.answered:
            self.waited = True
            self.answered.wait_for(lambda: self.job is not None or self.released, timeout)
            if self.job is not None:
                return "job", self.job
            return ("released", None) if self.released else ("wait", None)

    def standby_state(self) -> str:
        """"ended", "assigned", "released", "ready" (a worker waits for its job) or "starting"."""
        with self.lock:
            if self.ended is not None:
                return "ended"
            if self.job is not None:
                return "assigned"
            if self.released:
                return "released"
            return "ready" if self.waited else "starting"

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

    return ray.remote(max_concurrency=MAX_CONCURRENCY)(RunActor)
