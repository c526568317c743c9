"""Evaluation and reports after apply, and the `jobspec eval` and `jobspec report` commands.

Every planned job reaches the reports, ACTIVE or not, so that they tell the truth about the whole
run. How each eval comes about is the command's choice (``EvalMode``); whether an earlier eval
may stand in for asking again is decided here, in ``reuse_refusal``.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from pathlib import Path

from .. import errors, estimate, reconcile, report, reportmd, stats, workspace
from ..backends.base import ACTIVE, CREATING, Backend
from ..evaluate import deterministic, evaluate, generation_config
from ..report import JobStatus
from .common import load_jobs, open_backend


class EvalMode(enum.Enum):
    ASK = "ask"  # `jobspec eval`: ask every prompt again
    REUSE = "reuse"  # `jobspec apply`: ask, unless an earlier eval is known to give the same
    SKIP = "skip"  # `apply --skip-eval`: no eval results at all, and no gate
    KEEP = "keep"  # `jobspec report`: keep the last eval of the same asks, ask nothing


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


def reuse_refusal(earlier_eval: dict) -> str | None:
    """Why an earlier eval that asked the same (report.matching_eval) must not stand in for
    asking again, or None when it may: asking again must give the same answers, so generation
    is deterministic, and no prompt's request failed (an error says nothing of the model)."""
    config = earlier_eval.get("generation_config") or {}
    if not deterministic(config):
        return f"generation is not deterministic (temperature {config.get('temperature')})"
    prompts = earlier_eval.get("prompts") or []
    failed = sum(p.get("error") is not None or p.get("base_error") is not None for p in prompts)
    if failed or earlier_eval.get("errors"):
        return f"{failed or earlier_eval.get('errors')} prompt(s) could not be asked last time"
    return None


def _gate_text(section: dict) -> str:
    improvement = (f" and a significant improvement over the base model (p ≤ "
                   f"{section['significance']:g})" if section.get("require_improvement") else "")
    return f"{section['min_pass_rate']:.0%}{improvement}"


def _print_verdict(name: str, section: dict) -> bool:
    """Say how an eval went, with its statistics; True when its gate passed."""
    base = ("" if section["base_pass_rate"] is None
            else f", base model {section['base_pass_rate']:.0%}")
    passed = section["gate"] == "passed"
    print(f"{name}: eval {section['pass_rate']:.0%} passed{base}; gate "
          f"{_gate_text(section)} {'passed' if passed else 'FAILED'}", file=sys.stderr)
    n, samples = section["prompt_count"], section["samples"]
    figures = f"tuned {stats.rate_text(section['passed'], n, samples)}"
    if section["base_passed"] is not None:
        figures += f", base {stats.rate_text(section['base_passed'], n, samples)}"
    if section["paired"]:
        figures += f"; {reportmd.paired_text(section)}"
    print(f"{name}: {figures}", file=sys.stderr)
    if section["errors"]:
        print(f"{name}: {section['errors']} eval prompt(s) could not be asked "
              "(errors, not wrong answers)", file=sys.stderr)
    if not passed:
        failed = ", ".join(repr(p["input"]) for p in section["prompts"] if p["verdict"] != "pass")
        if failed:
            print(f"{name}: failing prompts: {failed}", file=sys.stderr)
    return passed


def _tokens(status: JobStatus, backend: Backend, earlier: dict | None) -> dict | None:
    """What the job trains on, in tokens: as the last report of the same model on the same
    backend counted them, else counted (or estimated) now; None when they cannot be."""
    if (earlier and earlier.get("tokens") and earlier.get("backend") == backend.name
            and earlier.get("fingerprint") == status.identity.fingerprint):
        return earlier["tokens"]
    try:
        counted, _ = estimate.count(status.job, backend)
    except errors.JobSpecError:
        return None
    epochs = status.job.hyperparameters.epoch_count
    return {"examples": len(counted.inputs), "input": counted.input_tokens,
            "output": counted.output_tokens, "total": counted.total, "epochs": epochs,
            "trained": counted.total * epochs, "exact": counted.exact, "method": counted.method}


def _eval_of(status: JobStatus, backend: Backend, directory: Path,
             mode: EvalMode) -> tuple[dict | None, str, bool]:
    """(eval section, how it came about, whether its gate passed) for one job."""
    job = status.job
    if mode is EvalMode.SKIP:
        return None, report.SKIPPED, True
    if job.eval is None:
        return None, report.NO_EVAL, True
    if status.state != ACTIVE or status.model is None:
        return None, report.NOT_RUN, True
    earlier = None
    if mode in (EvalMode.REUSE, EvalMode.KEEP):
        earlier = report.matching_eval(report.earlier(directory, job.name), status, backend.name,
                                       backend.endpoint, generation_config(job.eval))
    if mode is EvalMode.KEEP:
        if earlier is None:
            return None, report.NOT_RUN, True
        return earlier, report.KEPT, earlier["gate"] == "passed"
    if mode is EvalMode.REUSE and earlier is not None:
        refusal = reuse_refusal(earlier)
        if refusal is None:
            figures = stats.rate_text(earlier["passed"], earlier["prompt_count"],
                                      earlier["samples"])
            print(f"{job.name}: eval unchanged since the last report ({earlier['pass_rate']:.0%}"
                  f" passed; gate {earlier['gate']}); `jobspec eval` asks again", file=sys.stderr)
            print(f"{job.name}: tuned {figures}", file=sys.stderr)
            return earlier, report.REUSED, earlier["gate"] == "passed"
        print(f"{job.name}: asking the eval prompts again: {refusal}", file=sys.stderr)
    evaluation = evaluate(job, status.model, backend)
    assert evaluation is not None  # the job has an eval section
    section = report.eval_section(evaluation)
    return section, report.ASKED, _print_verdict(job.name, section)


def evaluate_and_report(statuses: list[JobStatus], backend: Backend, directory: Path,
                        mode: EvalMode) -> bool:
    """Run evals as ``mode`` says and write every planned job's reports; True when every gate
    that was judged passed (a job that is not ACTIVE is the caller's to count)."""
    built, all_passed = [], True
    for status in statuses:
        section, how, passed = _eval_of(status, backend, directory, mode)
        all_passed = all_passed and passed
        tokens = _tokens(status, backend, report.earlier(directory, status.job.name))
        built.append(report.build(status, backend.name, backend.endpoint, section, how, tokens))
    if built:
        written = report.write(directory, built)
        print(f"Reports: {len(written)} files in {_shown(directory)}{os.sep} (SUMMARY.md, "
              "summary.json, junit.xml and one .json/.md per job)", file=sys.stderr)
    return all_passed


def _statuses_from_plan(plan: reconcile.Plan) -> list[JobStatus]:
    """Each job's state as the service holds it now (eval and report train nothing)."""
    statuses = []
    for job_plan in plan.jobs:
        current = job_plan.current
        named = {"model_name": job_plan.model_name, "expected_steps": job_plan.expected_steps,
                 "hyperparameters": job_plan.hyperparameters}
        if current is None:
            statuses.append(JobStatus(job_plan.job, job_plan.identity, report.NOT_CREATED,
                                      reason="not created yet; run `jobspec apply` first",
                                      **named))
        elif current.state == ACTIVE:
            statuses.append(JobStatus(job_plan.job, job_plan.identity, ACTIVE, current, **named))
        else:
            why = ("still training; run `jobspec apply` to wait for it" if current.state == CREATING
                   else "its tuning failed; `jobspec apply --recreate-failed` trains it again")
            statuses.append(JobStatus(job_plan.job, job_plan.identity, current.state, current,
                                      reason=why, **named))
    return statuses


def _run(args: argparse.Namespace, mode: EvalMode) -> int:
    jobs = load_jobs(args)
    identified = reconcile.identify_all(jobs)
    backend = open_backend(args, jobs)
    try:
        statuses = _statuses_from_plan(reconcile.plan(identified, backend))
        passed = evaluate_and_report(statuses, backend, report_directory(args), mode)
    finally:
        backend.close()
    missing = [s for s in statuses if s.state != ACTIVE]
    for status in missing:
        print(f"{status.job.name}: {status.model_name}: {status.state}: "
              f"{status.reason}", file=sys.stderr)
    return errors.EXIT_OK if passed and not missing else errors.EXIT_FAILURE


def cmd_eval(args: argparse.Namespace) -> int:
    return _run(args, EvalMode.ASK)


def cmd_report(args: argparse.Namespace) -> int:
    return _run(args, EvalMode.KEEP)
