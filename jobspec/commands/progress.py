"""Showing apply's progress: a live block of one line per job on a terminal, plain lines
elsewhere (CI logs). Both write to stderr; NO_COLOR and --quiet are respected."""

from __future__ import annotations

import os
import sys
import threading
from typing import TextIO

from ..backends.base import Progress
from ..reconcile import Event

_COLORS = {"active": "\x1b[32m", "failed": "\x1b[31m", "error": "\x1b[31m", "timeout": "\x1b[33m"}
_RESET = "\x1b[0m"


def progress_line(progress: Progress) -> str:
    """``34.2% step 13/38 epoch 2 loss 10.6916``; where the backend counts no steps, its state
    and what it measured of the data (``JOB_STATE_RUNNING; 15 examples, 240 billable
    tokens``)."""
    parts = []
    if progress.percent is not None:
        parts.append(f"{progress.percent:5.1f}%")
    if progress.total_steps:
        parts.append(f"step {progress.completed_steps}/{progress.total_steps}")
    if progress.snapshots:
        last = progress.snapshots[-1]
        parts.append(f"epoch {last.epoch} loss {last.mean_loss:.4f}")
    if progress.state_label:
        parts.append(progress.state_label)
    line = " ".join(parts) or "in progress"
    if progress.stats and progress.stats.as_dict():
        line += "; " + ", ".join(f"{v:,} {k.replace('_', ' ')}"
                                 for k, v in progress.stats.as_dict().items())
    return line


class PlainPrinter:
    """One line per change: created, each new step seen, ACTIVE or failed."""

    def __init__(self, stream: TextIO, quiet: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        if event.kind == "progress":
            if self.quiet or event.progress is None:
                return
            message = progress_line(event.progress)
        else:
            message = event.message
        with self.lock:
            print(f"{event.job}: {message}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class LiveDisplay(PlainPrinter):
    """Events scroll above a block that shows each training job's latest progress in place."""

    def __init__(self, stream: TextIO, quiet: bool = False, color: bool = True) -> None:
        super().__init__(stream, quiet)
        self.color = color
        self.status: dict[str, str] = {}
        self.drawn = 0

    def _erase(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        for job, text in self.status.items():
            self.stream.write(f"  {job}: {text}\n")
        self.drawn = len(self.status)
        self.stream.flush()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self._erase()
            if event.kind == "progress" and event.progress is not None:
                self.status[event.job] = progress_line(event.progress)
            else:
                if event.kind in ("active", "failed", "error", "timeout"):
                    self.status.pop(event.job, None)
                line = f"{event.job}: {event.message}"
                if self.color and event.kind in _COLORS:
                    line = f"{_COLORS[event.kind]}{line}{_RESET}"
                print(line, file=self.stream)
            if not self.quiet:
                self._draw()

    def close(self) -> None:
        with self.lock:
            self._erase()
            self.stream.flush()


def printer_for(stream: TextIO = sys.stderr, quiet: bool = False) -> PlainPrinter:
    if stream.isatty() and os.environ.get("TERM") != "dumb":
        return LiveDisplay(stream, quiet, color="NO_COLOR" not in os.environ)
    return PlainPrinter(stream, quiet)
