"""Results reports: per job JSON and Markdown, a run's SUMMARY.md and summary.json, and JUnit
XML. Every planned job has its reports, whatever its state: a run where one job failed says so
in every file. Files are written atomically (beside, then renamed), so a crash never leaves half
a file. Reports hold no credentials: nothing from auth reaches this module, and an endpoint is
recorded without any user name, password or query it may carry."""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

from . import timestamps
from .backends.base import ACTIVE, RemoteModel, Snapshot
from .evaluate import EvalResult
from .identity import Identity
from .spec import Job

REPORT_VERSION = 1
NOT_CREATED, ERROR = "NOT_CREATED", "ERROR"

# How a report's eval section came to be.
ASKED, REUSED, KEPT, SKIPPED, NO_EVAL, NOT_RUN = (
    "asked", "reused", "kept", "skipped", "none", "not_run")


@dataclass(frozen=True)
class JobStatus:
    """Where one planned job stands at the end of a run."""

    job: Job
    identity: Identity
    state: str  # ACTIVE, CREATING, FAILED, ERROR (a request about it failed), NOT_CREATED
    model: RemoteModel | None = None  # as last read from the service, when it was
    reason: str | None = None  # why it is not ACTIVE, in words
    snapshots: tuple[Snapshot, ...] = ()  # progress seen after the model was read, if any
    model_name: str = ""  # the model's name on the backend (or what it will be)
    expected_steps: int | None = None  # the backend's step count, when known before training


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` at once or not at all. A lone surrogate (a model can answer
    one; UTF-8 cannot hold it) is written as its ``\\udXXX`` escape: in JSON, that is the same
    string; elsewhere, visible."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="backslashreplace") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def public_endpoint(url: str) -> str:
    """``url`` without user info, query or fragment: what a report may show."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def eval_section(evaluation: EvalResult) -> dict[str, Any]:
    """An eval as reports record it."""
    return {
        "generation_config": evaluation.generation_config,
        "min_pass_rate": evaluation.min_pass_rate,
        "pass_rate": evaluation.pass_rate,
        "base_pass_rate": evaluation.base_pass_rate,
        "gate": "passed" if evaluation.gate_passed else "failed",
        "errors": evaluation.errors,
        "prompts": [{
            "input": r.input, "expect": r.expect.as_dict(),
            "answer": r.tuned.text, "error": r.tuned.error,
            "verdict": "error" if r.tuned.error else "pass" if r.tuned.passed else "fail",
            **({"base_answer": r.base.text, "base_error": r.base.error,
                "base_verdict": ("error" if r.base.error else
                                 "pass" if r.base.passed else "fail")}
               if r.base is not None else {}),
        } for r in evaluation.results],
    }


def build(status: JobStatus, backend: str, endpoint: str, evaluation: dict[str, Any] | None,
          eval_status: str) -> dict[str, Any]:
    """The JSON report of one job (see schemas/report.schema.json)."""
    job, identity, model = status.job, status.identity, status.model
    snapshots = status.snapshots or (model.snapshots if model is not None else ())
    created = model.create_time if model else None
    started = model.start_time if model else None
    completed = model.complete_time if model else None
    return {
        "report_version": REPORT_VERSION,
        "job": job.name,
        "file": job.path,
        "fingerprint": identity.fingerprint,
        "tuned_model": status.model_name,
        "state": status.state,
        "service_state": model.service_state if model else None,
        "reason": None if status.state == ACTIVE else status.reason,
        "backend": backend,
        "endpoint": public_endpoint(endpoint),
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters.as_dict(),
        "example_count": identity.example_count,
        "total_steps": (model.total_steps if model and model.total_steps
                        else status.expected_steps),
        "data_stats": model.stats.as_dict() if model and model.stats else None,
        "timings": {
            "created": created, "started": started, "completed": completed,
            "duration_seconds": timestamps.seconds_between(started, completed),
        },
        "loss_curve": [{"step": s.step, "epoch": s.epoch, "mean_loss": s.mean_loss}
                       for s in snapshots],
        "validation_curve": [{"step": s.step, "epoch": s.epoch, "mean_loss": s.mean_loss}
                             for s in (model.validation if model else ())],
        "kept_epoch": model.kept_epoch if model else None,
        "stop_reason": model.stop_reason if model else None,
        "device": model.device if model else None,
        "eval_status": eval_status,
        "eval": evaluation,
    }


_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _visible(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _md(text: Any) -> str:
    value = _visible("" if text is None else str(text).replace("\n", " "))
    return value.replace("|", "\\|").replace("`", "'") or " "


def _loss_chart(curve: list[dict[str, Any]]) -> list[str]:
    if not curve:
        return ["_No loss snapshots recorded._"]
    # Mermaid draws every point; past a few hundred, keep an even sample (and the last).
    stride = max(1, math.ceil(len(curve) / 200))
    points = curve[::stride]
    if points[-1] is not curve[-1]:
        points.append(curve[-1])
    top = max(p["mean_loss"] for p in points)
    steps = ", ".join(str(p["step"]) for p in points)
    losses = ", ".join(format(p["mean_loss"], ".4g") for p in points)
    return ["```mermaid", "xychart-beta", '    title "Training loss"',
            f'    x-axis "step" [{steps}]',
            f'    y-axis "mean loss" 0 --> {top * 1.05 if top > 0 else 1:.4g}',
            f"    line [{losses}]", "```"]


def _verdict_mark(verdict: str | None) -> str:
    return {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}.get(verdict or "", " ")


_EVAL_NOTES = {REUSED: "reused from the last report: the same prompts of the same model",
               KEPT: "kept from the last report", SKIPPED: "skipped (--skip-eval)",
               NOT_RUN: "not run: the model is not ACTIVE"}


def markdown(report: dict[str, Any]) -> str:
    evaluation = report["eval"]
    gate = ""
    if evaluation:
        gate = (f"; eval {evaluation['pass_rate']:.0%} (gate {evaluation['min_pass_rate']:.0%}: "
                f"**{evaluation['gate']}**)")
    duration = report["timings"]["duration_seconds"]
    lines = [f"## {report['job']}: `{report['tuned_model']}` is {report['state']}{gate}", ""]
    if report["reason"]:
        lines += [f"**{report['state']}**: {_md(report['reason'])}", ""]
    steps = "" if report["total_steps"] is None else f", {report['total_steps']} steps"
    lines += [f"Base model `{report['base_model']}` on {report['backend']}; "
              f"{report['example_count']} examples{steps}"
              + (f", trained in {duration:.1f}s." if duration is not None else "."), ""]
    stats = report.get("data_stats")
    if stats:
        measured = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in stats.items())
        lines += [f"The backend measured the training data: {measured}.", ""]
    lines += ["| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["hyperparameters"].items()]
    lines += ["", "### Loss", ""] + _loss_chart(report["loss_curve"])
    if report["eval_status"] in _EVAL_NOTES:
        lines += ["", "### Eval", "", f"_Eval {_EVAL_NOTES[report['eval_status']]}._"]
    if evaluation:
        compare = evaluation["base_pass_rate"] is not None
        if report["eval_status"] not in _EVAL_NOTES:
            lines += ["", "### Eval"]
        lines.append("")
        if compare:
            lines += [f"Tuned {evaluation['pass_rate']:.0%} vs base "
                      f"{evaluation['base_pass_rate']:.0%}.", ""]
            lines += ["| input | expected | base answer | | tuned answer | |",
                      "|---|---|---|---|---|---|"]
        else:
            lines += ["| input | expected | tuned answer | |", "|---|---|---|---|"]
        for prompt in evaluation["prompts"]:
            expected = "; ".join(f"{k}: {' or '.join(v) if isinstance(v, list) else v}"
                                 for k, v in prompt["expect"].items())
            tuned = prompt["answer"] if prompt["error"] is None else prompt["error"]
            row = [_md(prompt["input"]), _md(expected)]
            if compare:
                base = prompt["base_answer"] if prompt["base_error"] is None else prompt["base_error"]
                row += [_md(base), _verdict_mark(prompt["base_verdict"])]
            row += [_md(tuned), _verdict_mark(prompt["verdict"])]
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"<sub>fingerprint `{report['fingerprint']}` · file `{report['file']}`</sub>"]
    return "\n".join(lines) + "\n"


def _passing(report: dict[str, Any]) -> bool:
    return report["state"] == ACTIVE and (report["eval"] is None
                                          or report["eval"]["gate"] == "passed")


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole run: every planned job, its state, why it is not ACTIVE, and its eval."""
    jobs = [{"job": r["job"], "tuned_model": r["tuned_model"], "state": r["state"],
             "reason": r["reason"], "eval_status": r["eval_status"],
             "pass_rate": r["eval"]["pass_rate"] if r["eval"] else None,
             "gate": r["eval"]["gate"] if r["eval"] else None, "ok": _passing(r)}
            for r in reports]
    return {"report_version": REPORT_VERSION, "ok": all(j["ok"] for j in jobs),
            "jobs_total": len(jobs), "jobs_ok": sum(j["ok"] for j in jobs), "jobs": jobs}


def summary_markdown(data: dict[str, Any]) -> str:
    total, good = data["jobs_total"], data["jobs_ok"]
    headline = (f"✅ all {total} jobs ACTIVE and passing" if data["ok"] else
                f"❌ {total - good} of {total} jobs need attention")
    lines = ["# jobspec results", "", headline, "",
             "| job | tuned model | state | eval | gate | note |", "|---|---|---|---|---|---|"]
    for job in data["jobs"]:
        rate = "-" if job["pass_rate"] is None else f"{job['pass_rate']:.0%}"
        note = job["reason"] or _EVAL_NOTES.get(job["eval_status"], "")
        lines.append(f"| [{job['job']}]({job['job']}.md) | `{job['tuned_model']}` | "
                     f"{job['state']} | {rate} | {job['gate'] or '-'} | {_md(note)} |")
    return "\n".join(lines) + "\n"


# XML 1.0 allows only TAB, LF, CR and these ranges: anything else (most C0 controls, lone
# surrogates, U+FFFE, U+FFFF) makes junit.xml unreadable, so it is written as a visible escape.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: Any) -> str:
    return _NOT_XML.sub(lambda m: f"\\u{ord(m[0]):04x}" if ord(m[0]) > 0xFF
                        else f"\\x{ord(m[0]):02x}", "" if text is None else str(text))


def _element(parent: ElementTree.Element, tag: str, text: str | None = None,
             **attributes: str) -> ElementTree.Element:
    element = ElementTree.SubElement(parent, tag, {k: xml_safe(v) for k, v in attributes.items()})
    if text is not None:
        element.text = xml_safe(text)
    return element


def junit(reports: list[dict[str, Any]]) -> str:
    """One suite per job: a case for its model's state (failing unless ACTIVE), then one per
    eval prompt."""
    suites = ElementTree.Element("testsuites", name="jobspec")
    for report in reports:
        prompts = report["eval"]["prompts"] if report["eval"] else []
        active = report["state"] == ACTIVE
        suite = _element(suites, "testsuite", name=report["job"], tests=str(len(prompts) + 1),
                         failures=str(sum(p["verdict"] == "fail" for p in prompts) + (not active)),
                         errors=str(sum(p["verdict"] == "error" for p in prompts)))
        case = _element(suite, "testcase", classname=report["job"],
                        name=f"{report['tuned_model']} is ACTIVE")
        if not active:
            _element(case, "failure", report["reason"] or "",
                     message=f"{report['state']}: {report['reason'] or 'not ACTIVE'}")
        for prompt in prompts:
            case = _element(suite, "testcase", classname=report["job"], name=prompt["input"])
            expected = json.dumps(prompt["expect"], ensure_ascii=False)
            if prompt["verdict"] == "fail":
                _element(case, "failure", f"answer: {prompt['answer']!r}",
                         message=f"expected {expected}")
            elif prompt["verdict"] == "error":
                _element(case, "error", prompt["error"], message="request failed")
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        suites, encoding="unicode") + "\n"


def write(directory: Path, reports: list[dict[str, Any]]) -> list[Path]:
    written = []
    for report in reports:
        for suffix, text in ((".json", json.dumps(report, indent=2, ensure_ascii=False) + "\n"),
                             (".md", markdown(report))):
            path = directory / f"{report['job']}{suffix}"
            write_atomic(path, text)
            written.append(path)
    data = summary(reports)
    for name, text in (("summary.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n"),
                       ("SUMMARY.md", summary_markdown(data)), ("junit.xml", junit(reports))):
        write_atomic(directory / name, text)
        written.append(directory / name)
    return written


def earlier(directory: Path, job: str) -> dict[str, Any] | None:
    """The report an earlier run wrote for ``job``, if there is a readable one."""
    try:
        old = json.loads((directory / f"{job}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old if isinstance(old, dict) and old.get("report_version") == REPORT_VERSION else None


def matching_eval(previous: dict[str, Any] | None, status: JobStatus, backend: str,
                  endpoint: str, generation_config: dict[str, Any]) -> dict[str, Any] | None:
    """The eval of an earlier report when it asked exactly what the job asks now (prompts,
    expectations, gate, compare_base, generation config) of the same model (name and
    fingerprint) on the same backend and endpoint; else None."""
    job = status.job
    if previous is None or job.eval is None or not isinstance(previous.get("eval"), dict):
        return None
    same_model = (previous.get("tuned_model") == status.model_name
                  and previous.get("fingerprint") == status.identity.fingerprint
                  and previous.get("backend") == backend
                  and previous.get("endpoint") == public_endpoint(endpoint))
    old = previous["eval"]
    asked = [(p.get("input"), p.get("expect")) for p in old.get("prompts", [])]
    wanted = [(p.input, p.expect.as_dict()) for p in job.eval.prompts]
    same_asks = (asked == wanted and old.get("min_pass_rate") == job.eval.min_pass_rate
                 and (old.get("base_pass_rate") is not None) == job.eval.compare_base
                 and old.get("generation_config") == generation_config)
    return old if same_model and same_asks else None
