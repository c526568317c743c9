"""`jobspec eval` and `jobspec report`, and the reports every apply writes: each job's result
built by results.py (where the rules are), written by report.py, and said on stderr here.

Every planned job reaches the reports, ACTIVE or not, so that they tell the truth about the whole
run. How each eval comes about is the command's choice (``results.EvalMode``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from .. import errors, estimate, report, results, stats, workspace
from ..backends.base import ACTIVE, Backend
from ..evaloutcome import EvalOutcome, eval_outcome
from ..evaluate import evaluate
from ..reportmd import paired_text
from ..results import EvalMode, JobStatus
from ..retrying import PollPolicy
from .common import plan_jobs


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-dir", default=None, metavar="DIR",
                        help="where reports are written (default: reports/ at the repository "
                             "root, wherever jobspec runs from; a relative DIR is relative to "
                             "the current directory)")


def report_directory(args: argparse.Namespace) -> Path:
    return Path(args.report_dir) if args.report_dir else workspace.report_dir()


def _shown(directory: Path) -> str:
    """``directory`` as the user can type it: relative when it is below the current one."""
    absolute = directory.resolve()
    try:
        return str(absolute.relative_to(Path.cwd().resolve())) or "."
    except ValueError:
        return str(absolute)


def _gate_text(evaluation: EvalOutcome) -> str:
    improvement = (f" and a significant improvement over the base model (p ≤ "
                   f"{evaluation.significance:g})" if evaluation.require_improvement else "")
    return f"{evaluation.min_pass_rate:.0%}{improvement}"


def _print_verdict(name: str, evaluation: EvalOutcome) -> None:
    """Say how an eval just asked went, with its statistics."""
    base = ("" if evaluation.base_pass_rate is None
            else f", base model {evaluation.base_pass_rate:.0%}")
    passed = evaluation.gate_passed
    print(f"{name}: eval {evaluation.pass_rate:.0%} passed{base}; gate "
          f"{_gate_text(evaluation)} {'passed' if passed else 'FAILED'}", file=sys.stderr)
    n, samples = evaluation.prompt_count, evaluation.samples
    figures = f"tuned {stats.rate_text(evaluation.passed, n, samples)}"
    if evaluation.base_passed is not None:
        figures += f", base {stats.rate_text(evaluation.base_passed, n, samples)}"
    if evaluation.paired:
        figures += f"; {paired_text(evaluation)}"
    print(f"{name}: {figures}", file=sys.stderr)
    if evaluation.errors:
        print(f"{name}: {evaluation.errors} eval prompt(s) could not be asked "
              "(errors, not wrong answers)", file=sys.stderr)
    if not passed:
        failed = ", ".join(repr(text) for text in evaluation.failed_inputs)
        if failed:
            print(f"{name}: failing prompts: {failed}", file=sys.stderr)


def _print_reused(name: str, evaluation: EvalOutcome) -> None:
    gate = "passed" if evaluation.gate_passed else "failed"
    figures = stats.rate_text(evaluation.passed, evaluation.prompt_count, evaluation.samples)
    print(f"{name}: eval unchanged since the last report ({evaluation.pass_rate:.0%}"
          f" passed; gate {gate}); `jobspec eval` asks again", file=sys.stderr)
    print(f"{name}: tuned {figures}", file=sys.stderr)


def _result(status: JobStatus, backend: Backend, directory: Path, mode: EvalMode,
            poll: PollPolicy) -> results.JobResult:
    """One job's result: its eval as ``mode`` and its earlier report allow, said as it goes;
    an eval the backend cannot serve is not run, and the report says why."""
    name = status.job.name
    earlier = report.earlier(directory, name)
    decision = results.decide_eval(status, mode, earlier, backend.name, backend.endpoint)
    unserved = backend.why_not_served(status.job) if decision.asks else None
    if unserved:
        print(f"{name}: eval not run: {unserved}", file=sys.stderr)
        decision = results.EvalDecision(results.NOT_DEPLOYED)
    evaluation = decision.earlier
    if decision.how == results.REUSED and evaluation is not None:
        _print_reused(name, evaluation)
    if decision.refusal:
        print(f"{name}: asking the eval prompts again: {decision.refusal}", file=sys.stderr)
    how, note = decision.how, None
    if decision.asks and status.model is not None:
        asked = _ask(status, backend, poll)
        if isinstance(asked, str):
            print(f"{name}: eval not run: {asked}", file=sys.stderr)
            how, note = results.DEPLOY_FAILED, asked
        else:
            evaluation = asked
            _print_verdict(name, evaluation)
    tokens = results.earlier_tokens(earlier, status, backend.name) or _count(status, backend)
    return results.job_result(status, backend.name, backend.endpoint, evaluation, how,
                              tokens, eval_note=note)


def _ask(status: JobStatus, backend: Backend, poll: PollPolicy) -> EvalOutcome | str:
    """The job's eval, asked of its model where the backend serves it; or, when the model
    could not be served (a deployment for the eval failed, and was removed), why, in words:
    one job's failed deployment must not keep the run's other jobs from their evals and
    reports. A failure while asking or removing is not caught here."""
    assert status.model is not None  # decide_eval asks only of an ACTIVE model
    name = status.job.name
    with contextlib.ExitStack() as stack:
        try:
            target = stack.enter_context(backend.serving(
                status.job, status.model, poll,
                lambda step: print(f"{name}: {step}", file=sys.stderr)))
        except errors.JobSpecError as exc:
            return str(exc)
        asked = evaluate(status.job, dataclasses.replace(status.model, target=target), backend)
    assert asked is not None  # the job has an eval section
    return eval_outcome(asked)


def _count(status: JobStatus, backend: Backend) -> results.Tokens | None:
    """The job's tokens counted (or estimated) now; None when they cannot be."""
    try:
        counted, _ = estimate.count(status.job, status.identity, backend)
    except errors.JobSpecError:
        return None
    return results.counted_tokens(counted, status.job.hyperparameters.epoch_count)


def evaluate_and_report(statuses: list[JobStatus], backend: Backend, directory: Path,
                        mode: EvalMode, poll: PollPolicy | None = None) -> str:
    """Run evals as ``mode`` says and write every planned job's reports; what went wrong with
    the evals ("" when every gate that was judged passed and every eval meant to run ran; a
    job that is not ACTIVE is the caller's to count). ``poll``: how a deployment for an eval
    is waited for (default: the backend's polling)."""
    poll = poll or PollPolicy.for_backend(backend.poll)
    built = [_result(status, backend, directory, mode, poll) for status in statuses]
    if built:
        written = report.write(directory, built)
        print(f"Reports: {len(written)} files in {_shown(directory)}{os.sep} (SUMMARY.md, "
              "summary.json, junit.xml and one .json/.md per job)", file=sys.stderr)
    return results.eval_trouble(built)


def _run(args: argparse.Namespace, mode: EvalMode) -> int:
    plan, backend = plan_jobs(args)
    try:
        statuses = [results.status_now(job_plan) for job_plan in plan.jobs]
        trouble = evaluate_and_report(statuses, backend, report_directory(args), mode)
    finally:
        backend.close()
    missing = [s for s in statuses if s.state != ACTIVE]
    for status in missing:
        print(f"{status.job.name}: {status.model_name}: {status.state}: "
              f"{status.reason}", file=sys.stderr)
    return errors.EXIT_OK if not trouble and not missing else errors.EXIT_FAILURE


def cmd_eval(args: argparse.Namespace) -> int:
    return _run(args, EvalMode.ASK)


def cmd_report(args: argparse.Namespace) -> int:
    return _run(args, EvalMode.KEEP)
