"""Evaluation and reports after apply, and the `jobspec eval` and `jobspec report` commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import errors, reconcile, report
from ..backends.base import ACTIVE, Backend, RemoteModel
from ..evaluate import evaluate
from ..identity import Identity
from ..spec import Job
from .common import load_jobs, open_backend

DEFAULT_REPORT_DIR = "reports"


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--report-dir", default=DEFAULT_REPORT_DIR, metavar="DIR",
                        help="where reports are written (default: reports/)")


def evaluate_and_report(done: list[tuple[Job, Identity, RemoteModel]], backend: Backend,
                        report_dir: Path, *, run_eval: bool = True,
                        reuse_eval: bool = False) -> bool:
    """Run evals (when asked) and write every report; True when every gate passed.

    With ``reuse_eval``, a job whose last report asked the same prompts of the same model keeps
    that result instead of asking again: greedy answers of an unchanged model do not change.
    """
    built = []
    all_passed = True
    for job, identity, model in done:
        previous = report.previous_eval(report_dir, job.name, model.name)
        reuse = reuse_eval and previous is not None and report.same_eval(previous, job)
        evaluation = evaluate(job, model.name, backend) if run_eval and not reuse else None
        data = report.build(job, identity, backend.name, backend.endpoint, model, evaluation)
        if not run_eval or reuse:
            data["eval"] = previous
        if reuse:
            print(f"{job.name}: eval unchanged since the last report ({previous['pass_rate']:.0%}"
                  f" passed; gate {previous['gate']}); `jobspec eval` asks again",
                  file=sys.stderr)
        if evaluation is not None:
            base = ("" if evaluation.base_pass_rate is None
                    else f", base model {evaluation.base_pass_rate:.0%}")
            verdict = "passed" if evaluation.gate_passed else "FAILED"
            print(f"{job.name}: eval {evaluation.pass_rate:.0%} passed{base}; gate "
                  f"{evaluation.min_pass_rate:.0%} {verdict}", file=sys.stderr)
            if evaluation.errors:
                print(f"{job.name}: {evaluation.errors} eval prompt(s) could not be asked "
                      "(errors, not wrong answers)", file=sys.stderr)
            if not evaluation.gate_passed:
                all_passed = False
                failed = ", ".join(repr(i) for i in evaluation.failed_inputs)
                print(f"{job.name}: failing prompts: {failed}", file=sys.stderr)
        elif data["eval"] and data["eval"]["gate"] != "passed":
            all_passed = False
        built.append(data)
    if built:
        written = report.write(report_dir, built)
        print(f"Reports: {len(written)} files in {report_dir}/ (SUMMARY.md, summary.json, "
              "junit.xml and one .json/.md per job)", file=sys.stderr)
    return all_passed


def _active_models(args: argparse.Namespace) -> tuple[list, Backend, list[str]]:
    jobs = load_jobs(args)
    identified = reconcile.identify_all(jobs)
    backend = open_backend(args, jobs)
    try:
        plan = reconcile.plan(identified, backend)
    except BaseException:
        backend.close()
        raise
    done, missing = [], []
    for job_plan in plan.jobs:
        if job_plan.current is not None and job_plan.current.state == ACTIVE:
            done.append((job_plan.job, job_plan.identity, job_plan.current))
        else:
            state = job_plan.current.state if job_plan.current else "not created"
            missing.append(f"{job_plan.job.name}: {job_plan.model_name} is {state}; "
                           "run `jobspec apply` first")
    return done, backend, missing


def _run(args: argparse.Namespace, run_eval: bool) -> int:
    done, backend, missing = _active_models(args)
    try:
        passed = evaluate_and_report(done, backend, Path(args.report_dir), run_eval=run_eval)
    finally:
        backend.close()
    for line in missing:
        print(line, file=sys.stderr)
    return errors.EXIT_OK if passed and not missing else errors.EXIT_FAILURE


def cmd_eval(args: argparse.Namespace) -> int:
    return _run(args, run_eval=True)


def cmd_report(args: argparse.Namespace) -> int:
    return _run(args, run_eval=False)
