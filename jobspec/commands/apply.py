"""`jobspec plan` and `jobspec apply`."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from .. import errors, reconcile
from ..backends.base import ACTIVE, Backend
from ..errors import Interrupted, UsageError
from ..reconcile import ApplyOptions, PollPolicy
from . import planview
from .common import load_jobs, open_backend
from .progress import printer_for
from .results import add_report_arguments, evaluate_and_report


def _plan(args: argparse.Namespace) -> tuple[reconcile.Plan, Backend]:
    """The plan, and the open backend it was made against (the caller closes it)."""
    jobs = load_jobs(args)
    identified = reconcile.identify_all(jobs)
    backend = open_backend(args, jobs)
    try:
        return reconcile.plan(identified, backend,
                              recreate_failed=getattr(args, "recreate_failed", False)), backend
    except BaseException:
        backend.close()
        raise


def cmd_plan(args: argparse.Namespace) -> int:
    plan, backend = _plan(args)
    try:
        if args.format == "json":
            print(json.dumps(planview.as_json(plan), indent=2))
        elif args.format == "markdown":
            print(planview.markdown(plan), end="")
        else:
            print(planview.text(plan))
    finally:
        backend.close()
    if args.detailed_exitcode and plan.has_changes:
        return errors.EXIT_CHANGES_PENDING
    return errors.EXIT_OK


def _resume_command(args: argparse.Namespace) -> str:
    words = ["jobspec", "apply", *args.paths]
    for target in args.target:
        words += ["--target", target]
    if args.backend:
        words += ["--backend", args.backend]
    return shlex.join(words)


def cmd_apply(args: argparse.Namespace) -> int:
    if args.prune and not args.yes and not sys.stdin.isatty():
        raise UsageError("--prune deletes models: add --yes, or run it in a terminal to confirm")
    plan, backend = _plan(args)
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
                               poll=PollPolicy.for_backend(backend.name, args.timeout,
                                                           args.poll_interval),
                               prune=args.prune)
        display = printer_for(sys.stderr, args.quiet)
        applier = reconcile.Applier(backend, options, display)
        try:
            try:
                outcomes = applier.run(plan)
            finally:
                display.close()
            done = [(o.job_plan.job, o.job_plan.identity, o.model) for o in outcomes
                    if o.state == ACTIVE and o.model is not None]
            gates_passed = evaluate_and_report(done, backend, Path(args.report_dir),
                                               run_eval=not args.skip_eval, reuse_eval=True)
        except (KeyboardInterrupt, Interrupted):
            applier.stop.set()
            backend.interrupt()
            print(f"\nInterrupted: training goes on in the service. Resume with:\n  "
                  f"{_resume_command(args)}", file=sys.stderr)
            return errors.EXIT_INTERRUPTED
    finally:
        backend.close()
    active = sum(1 for o in outcomes if o.state == ACTIVE)
    not_done = [o for o in outcomes if o.state != ACTIVE]
    for outcome in not_done:
        reason = outcome.error or ("submitted; not waited for" if args.no_wait else "not ACTIVE")
        print(f"{outcome.job_plan.job.name}: {outcome.state}: {reason}", file=sys.stderr)
    complete = not not_done and gates_passed
    gate_note = "" if gates_passed else "; an eval gate failed"
    print(f"Apply {'complete' if complete else 'incomplete'}: {active}/{len(outcomes)} jobs "
          f"ACTIVE{gate_note} in {time.monotonic() - started:.1f}s "
          f"({backend.request_count()} requests).", file=sys.stderr)
    if args.no_wait:
        submitted = all(o.state in (ACTIVE, "CREATING") for o in outcomes)
        return errors.EXIT_OK if submitted and gates_passed else errors.EXIT_FAILURE
    return errors.EXIT_OK if complete else errors.EXIT_FAILURE


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    parser.add_argument("--detailed-exitcode", action="store_true",
                        help="exit 2 when changes are pending, 0 when none, 1 on error")
    parser.add_argument("--recreate-failed", action="store_true",
                        help="plan to delete and re-create FAILED models")


def add_apply_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallel", type=int, default=4, metavar="N",
                        help="create up to N models at once (default: 4)")
    parser.add_argument("--no-wait", action="store_true", help="submit, then return")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="stop waiting after this long (training goes on)")
    parser.add_argument("--recreate-failed", action="store_true",
                        help="delete FAILED models and create them again")
    parser.add_argument("--poll-interval", type=float, default=None, metavar="SECONDS",
                        help="first wait between polls, growing 1.5x up to 12x it (default: 5 "
                             "for Google, 0.5 for the local service)")
    parser.add_argument("--prune", action="store_true",
                        help="delete superseded models of the jobs in scope")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    parser.add_argument("--skip-eval", action="store_true",
                        help="do not run eval prompts (reports keep no eval results)")
    add_report_arguments(parser)
