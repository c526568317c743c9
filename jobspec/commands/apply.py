"""`jobspec plan` and `jobspec apply`."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator

from .. import errors, estimate, reconcile, results
from ..backends import registry
from ..backends.base import ACTIVE, CREATING, Backend
from ..errors import Interrupted, UsageError
from ..reconcile import ApplyOptions
from ..retrying import PollPolicy
from ..results import EvalMode
from . import planview, replay
from .common import plan_jobs
from .progress import printer_for
from .results import add_report_arguments, evaluate_and_report, report_directory

DEFAULT_TIMEOUT_SECONDS = 24 * 3600.0
DEFAULT_PARALLEL = 4
MAX_PARALLEL = 64
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """argparse type: a positive, finite number of seconds, or one with a unit (90s, 30m, 24h,
    2d)."""
    found = re.fullmatch(r"\s*((?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([smhd]?)\s*", text)
    seconds = float(found[1]) * _UNITS[found[2]] if found else math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a positive duration in seconds, "
                                         "or with a unit: 90s, 30m, 24h, 2d")
    return seconds


def parallelism(text: str) -> int:
    """argparse type: how many creates at once, 1..MAX_PARALLEL."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_PARALLEL:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number from 1 to "
                                         f"{MAX_PARALLEL}")
    return value


def cmd_plan(args: argparse.Namespace) -> int:
    unit_price = estimate.price(args.price_per_million_tokens)
    plan, backend = plan_jobs(args)
    try:
        estimates = estimate.for_plan(plan, backend, unit_price)
        if args.format == "json":
            print(json.dumps(planview.as_json(plan, estimates), indent=2))
        elif args.format == "markdown":
            print(planview.markdown(plan, estimates=estimates), end="")
        else:
            print(planview.text(plan, estimates))
    finally:
        backend.close()
    problems = [problem for e in estimates for problem in e.problems]
    for problem in problems:  # examples the backend would refuse: apply would fail on them
        print(problem, file=sys.stderr)
    if problems:
        return errors.EXIT_FAILURE
    if args.detailed_exitcode and plan.has_changes:
        return errors.EXIT_CHANGES_PENDING
    return errors.EXIT_OK


def _seconds(value: float) -> str:
    return f"{value:g}"


def resume_command(parser: argparse.ArgumentParser, args: argparse.Namespace,
                   plan: reconcile.Plan) -> str:
    """The apply command that carries on where this one stopped, shell-quoted: every option
    given (replay.words, from apply's parser) but two that no longer matter: --recreate-failed
    once the plan has no failed model to recreate, --yes without --prune, the one thing it
    confirms."""
    leave_out = set()
    if not any(j.action == reconcile.RECREATE for j in plan.jobs):
        leave_out.add("recreate_failed")
    if not args.prune:
        leave_out.add("yes")
    return shlex.join(replay.words(parser, args, leave_out=leave_out))


@contextlib.contextmanager
def _interrupts_cut_waits(stop: threading.Event, backend: Backend) -> Iterator[None]:
    """Ctrl-C stops every wait at once, in every thread: the poll waits (``stop``) and the
    client's retry waits, which a worker thread may be in while the main thread is told."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_interrupt(signum: int, frame: object) -> None:
        stop.set()
        backend.interrupt()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _still_training(args: argparse.Namespace) -> str:
    """Why a model still training at the end of apply was not waited for to the end."""
    if args.no_wait:
        return "submitted; not waited for (--no-wait)"
    return (f"still training when --timeout {_seconds(args.timeout)}s ran out; training goes on: "
            "apply again to keep waiting")


def cmd_apply(args: argparse.Namespace) -> int:
    if args.prune and not args.yes and not sys.stdin.isatty():
        raise UsageError("--prune deletes models: add --yes, or run it in a terminal to confirm")
    plan, backend = plan_jobs(args)
    started = time.monotonic()
    try:
        print(planview.text(plan), file=sys.stderr)
        if args.prune and plan.superseded and not args.yes:
            listing = "\n".join(f"  {m.name}" for m in plan.superseded)
            reply = input(f"Delete these superseded models?\n{listing}\nType 'yes' to confirm: ")
            if reply.strip() != "yes":
                print("Not pruning.", file=sys.stderr)
                args.prune = False
        options = ApplyOptions(parallel=args.parallel, wait=not args.no_wait,
                               poll=PollPolicy.for_backend(backend.poll, args.timeout,
                                                           args.poll_interval),
                               prune=args.prune)
        display = printer_for(sys.stderr, args.quiet)
        applier = reconcile.Applier(backend, options, display)
        try:
            with _interrupts_cut_waits(applier.stop, backend):
                try:
                    outcomes = applier.run(plan)
                finally:
                    display.close()
                still_training = _still_training(args)
                statuses = [results.status_after_apply(o, still_training) for o in outcomes]
                eval_trouble = evaluate_and_report(
                    statuses, backend, report_directory(args),
                    EvalMode.SKIP if args.skip_eval else EvalMode.REUSE, options.poll)
        except (KeyboardInterrupt, Interrupted):
            applier.stop.set()
            backend.interrupt()
            print(f"\nInterrupted: training goes on in the service. Resume with:\n  "
                  f"{resume_command(args.parser, args, plan)}", file=sys.stderr)
            return errors.EXIT_INTERRUPTED
    finally:
        backend.close()
    not_done = [s for s in statuses if s.state != ACTIVE]
    for status in not_done:
        print(f"{status.job.name}: {status.state}: {status.reason}", file=sys.stderr)
    complete = not not_done and not eval_trouble
    eval_note = f"; {eval_trouble}" if eval_trouble else ""
    print(f"Apply {'complete' if complete else 'incomplete'}: {len(statuses) - len(not_done)}/"
          f"{len(statuses)} jobs ACTIVE{eval_note} in {time.monotonic() - started:.1f}s "
          f"({backend.request_count()} requests).", file=sys.stderr)
    if args.no_wait:
        submitted = all(s.state in (ACTIVE, CREATING) for s in statuses)
        return errors.EXIT_OK if submitted and not eval_trouble else errors.EXIT_FAILURE
    return errors.EXIT_OK if complete else errors.EXIT_FAILURE


def price_argument(text: str) -> float:
    """argparse type: a price, a finite number of 0 or more (estimate.parse_price)."""
    value = estimate.parse_price(text)
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r}: {estimate.PRICE_EXPECTED}")
    return value


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    parser.add_argument("--price-per-million-tokens", type=price_argument, default=None,
                        metavar="PRICE",
                        help="estimate each job's cost at PRICE per million tokens trained "
                             f"(default: ${estimate.PRICE_VARIABLE}; jobspec holds no price "
                             "list)")
    parser.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 2 when changes are pending, 0 when none, 1 on error")
    parser.add_argument("--recreate-failed", action="store_true",
                        help="plan to delete and re-create FAILED models")


def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
    """apply's own options, in the order the resume command repeats them (replay.words:
    options with a value, then flags): where it writes, how long it waits, then what it does."""
    add_report_arguments(parser)
    parser.add_argument("--timeout", type=duration, default=DEFAULT_TIMEOUT_SECONDS,
                        metavar="DURATION",
                        help="stop waiting for training after this long, in seconds or with a "
                             "unit (90s, 30m, 24h); training goes on in the service, and apply "
                             "exits 1 (default: 24h)")
    parser.add_argument("--poll-interval", type=duration, default=None, metavar="SECONDS",
                        help="first wait between polls, growing 1.5x up to 12x it; positive "
                             f"(default: the backend's: {registry.poll_summary()})")
    parser.add_argument("--parallel", type=parallelism, default=DEFAULT_PARALLEL, metavar="N",
                        help=f"create up to N models at once, 1..{MAX_PARALLEL} "
                             f"(default: {DEFAULT_PARALLEL})")
    parser.add_argument("--skip-eval", action="store_true",
                        help="do not run eval prompts: reports hold no eval results and no "
                             "gate is judged")
    parser.add_argument("--no-wait", action="store_true", help="submit, then return")
    parser.add_argument("--recreate-failed", action="store_true",
                        help="train FAILED models again (deleting the failed one where the "
                             "backend needs its name back)")
    parser.add_argument("--prune", action="store_true",
                        help="delete superseded models of the jobs in scope")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
