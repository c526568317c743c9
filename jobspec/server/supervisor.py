"""Keeping the training worker processes alive, and noticing when they cannot be.

A worker that dies while training (killed, out of memory) is started again at once; its job goes
back to the queue and fails after a few interrupted attempts (``Store.release_orphans``). A
worker that dies *while starting* (before it signals ready: a broken install, a missing library)
would die again the same way, so it is started again after a growing pause, and once that has
happened ``START_FAILURE_LIMIT`` times in a row the queued jobs fail with the reason instead of
waiting forever. Respawning goes on (slowly) so that a fixed cause heals without a restart.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .worker import WorkerConfig

SUPERVISE_SECONDS = 1.0
START_FAILURE_LIMIT = 3
MAX_RESPAWN_DELAY_SECONDS = 60.0


def exit_description(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"was killed by signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def log_location() -> str:
    """Where this process's log goes, for messages that send a user there: the file its stderr
    is redirected to (jobspec writes .jobspec/local/service.log), when that can be told."""
    try:
        target = os.readlink("/proc/self/fd/2")  # Linux
    except OSError:
        return "the service's log (its standard error)"
    return f"the service's log ({target})" if os.path.isfile(target) else \
        "the service's log (its standard error)"


class _Slot:
    """One worker process and what the supervisor knows of it."""

    def __init__(self) -> None:
        self.process: Any = None
        self.ready: Any = None  # a multiprocessing Event the worker sets once started
        self.respawn_at = 0.0   # when to start the next one, while process is None


class Workers:
    """Keeps N training worker processes alive; requeues the jobs of any that die."""

    def __init__(self, count: int, config: WorkerConfig, store: Any,
                 idle: Callable[[], bool] = lambda: False,
                 on_idle: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.store = store
        self.idle = idle
        self.on_idle = on_idle
        self.context = multiprocessing.get_context("spawn")
        self.slots = [_Slot() for _ in range(count)]
        self.start_failures = 0  # workers in a row that died before they were ready
        self.last_start_failure = ""
        self.stopping = threading.Event()

    def _spawn(self, slot: _Slot) -> None:
        from .worker import worker_main  # noqa: PLC0415

        slot.ready = self.context.Event()
        slot.process = self.context.Process(target=worker_main, args=(self.config, slot.ready),
                                            daemon=True, name="jobspec-trainer")
        slot.process.start()

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)
        threading.Thread(target=self._supervise, daemon=True, name="supervisor").start()

    def live_pids(self) -> set[int]:
        return {s.process.pid for s in self.slots if s.process is not None and s.process.is_alive()}

    def _supervise(self) -> None:
        while not self.stopping.wait(SUPERVISE_SECONDS):
            for slot in self.slots:
                self._tend(slot, time.monotonic())
            self.store.release_orphans(self.live_pids())
            if self.start_failures >= START_FAILURE_LIMIT:
                self._fail_queued_jobs()
            if self.idle():
                self.on_idle()

    def _tend(self, slot: _Slot, now: float) -> None:
        if self.stopping.is_set():
            return
        if slot.process is None:
            if now >= slot.respawn_at:
                self._spawn(slot)
            return
        if slot.process.is_alive():
            if slot.ready.is_set():
                self.start_failures = 0
            return
        process, was_ready = slot.process, slot.ready.is_set()
        how = exit_description(process.exitcode)
        if was_ready:  # died training: its job is requeued by release_orphans
            log(f"training worker {process.pid} {how}; starting another")
            self._spawn(slot)
            return
        self.start_failures += 1
        self.last_start_failure = how
        delay = min(2.0 ** (self.start_failures - 1), MAX_RESPAWN_DELAY_SECONDS)
        log(f"training worker {process.pid} {how} while starting ({self.start_failures} in a "
            f"row); starting another in {delay:g}s")
        slot.process, slot.ready, slot.respawn_at = None, None, now + delay

    def _fail_queued_jobs(self) -> None:
        message = (f"No training worker could start: the worker {self.last_start_failure} while "
                   f"starting, {self.start_failures} times in a row. See {log_location()} for "
                   f"its error; once that is fixed, create the job again.")
        failed = self.store.fail_queued(message)
        if failed:
            log(f"failed {len(failed)} queued job(s), as no training worker can start: "
                f"{', '.join(failed)}")

    def stop(self) -> None:
        self.stopping.set()
        processes = [s.process for s in self.slots if s.process is not None]
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(timeout=10)
        # A job cut short by a clean shutdown is queued again, without counting as a failure.
        self.store.release_orphans(set(), charge_attempt=False)


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)
