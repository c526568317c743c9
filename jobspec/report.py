"""Results reports: per job JSON and Markdown, a run's SUMMARY.md and summary.json, and JUnit
XML. Files are written atomically (beside, then renamed), so a crash never leaves half a file.
Reports hold no credentials: nothing from auth reaches this module."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from .backends.base import RemoteModel
from .evaluate import EvalResult
from .identity import Identity, total_steps
from .spec import Job

REPORT_VERSION = 1


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    parse = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 3)


def _expectation(result: Any) -> dict[str, Any]:
    return result.expect.as_dict()


def build(job: Job, identity: Identity, backend: str, endpoint: str, model: RemoteModel,
          evaluation: EvalResult | None) -> dict[str, Any]:
    """The JSON report of one job (see schemas/report.schema.json)."""
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "job": job.name,
        "file": job.path,
        "fingerprint": identity.fingerprint,
        "tuned_model": model.name,
        "state": model.state,
        "backend": backend,
        "endpoint": endpoint,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters.as_dict(),
        "example_count": identity.example_count,
        "total_steps": total_steps(job, identity.example_count),
        "timings": {
            "created": model.create_time, "started": model.start_time,
            "completed": model.complete_time,
            "duration_seconds": _seconds_between(model.start_time, model.complete_time),
        },
        "loss_curve": [{"step": s.step, "epoch": s.epoch, "mean_loss": s.mean_loss}
                       for s in model.snapshots],
        "eval": None,
    }
    if evaluation is not None:
        report["eval"] = {
            "generation_config": evaluation.generation_config,
            "min_pass_rate": evaluation.min_pass_rate,
            "pass_rate": evaluation.pass_rate,
            "base_pass_rate": evaluation.base_pass_rate,
            "gate": "passed" if evaluation.gate_passed else "failed",
            "errors": evaluation.errors,
            "prompts": [{
                "input": r.input, "expect": _expectation(r),
                "answer": r.tuned.text, "error": r.tuned.error,
                "verdict": "error" if r.tuned.error else "pass" if r.tuned.passed else "fail",
                **({"base_answer": r.base.text, "base_error": r.base.error,
                    "base_verdict": ("error" if r.base.error else
                                     "pass" if r.base.passed else "fail")}
                   if r.base is not None else {}),
            } for r in evaluation.results],
        }
    return report


def _md(text: Any) -> str:
    value = "" if text is None else str(text)
    return value.replace("|", "\\|").replace("\n", " ").replace("`", "'") or " "


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


def markdown(report: dict[str, Any]) -> str:
    evaluation = report["eval"]
    gate = ""
    if evaluation:
        gate = (f"; eval {evaluation['pass_rate']:.0%} (gate {evaluation['min_pass_rate']:.0%}: "
                f"**{evaluation['gate']}**)")
    duration = report["timings"]["duration_seconds"]
    lines = [f"## {report['job']}: `{report['tuned_model']}` is {report['state']}{gate}", "",
             f"Base model `{report['base_model']}` on {report['backend']}; "
             f"{report['example_count']} examples, {report['total_steps']} steps"
             + (f", trained in {duration:.1f}s." if duration is not None else "."), "",
             "| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["hyperparameters"].items()]
    lines += ["", "### Loss", ""] + _loss_chart(report["loss_curve"])
    if evaluation:
        compare = evaluation["base_pass_rate"] is not None
        lines += ["", "### Eval", ""]
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


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    jobs = [{"job": r["job"], "tuned_model": r["tuned_model"], "state": r["state"],
             "pass_rate": r["eval"]["pass_rate"] if r["eval"] else None,
             "gate": r["eval"]["gate"] if r["eval"] else None} for r in reports]
    ok = all(j["state"] == "ACTIVE" and j["gate"] in (None, "passed") for j in jobs)
    return {"report_version": REPORT_VERSION, "ok": ok, "jobs": jobs}


def summary_markdown(data: dict[str, Any]) -> str:
    lines = ["# jobspec results", "",
             f"{'✅ all jobs ACTIVE and passing' if data['ok'] else '❌ some jobs need attention'}",
             "", "| job | tuned model | state | eval | gate |", "|---|---|---|---|---|"]
    for job in data["jobs"]:
        rate = "-" if job["pass_rate"] is None else f"{job['pass_rate']:.0%}"
        lines.append(f"| [{job['job']}]({job['job']}.md) | `{job['tuned_model']}` | "
                     f"{job['state']} | {rate} | {job['gate'] or '-'} |")
    return "\n".join(lines) + "\n"


def junit(reports: list[dict[str, Any]]) -> str:
    suites = ElementTree.Element("testsuites", name="jobspec")
    for report in reports:
        prompts = report["eval"]["prompts"] if report["eval"] else []
        suite = ElementTree.SubElement(
            suites, "testsuite", name=report["job"], tests=str(len(prompts)),
            failures=str(sum(p["verdict"] == "fail" for p in prompts)),
            errors=str(sum(p["verdict"] == "error" for p in prompts)))
        for prompt in prompts:
            case = ElementTree.SubElement(suite, "testcase", classname=report["job"],
                                          name=prompt["input"])
            expected = json.dumps(prompt["expect"], ensure_ascii=False)
            if prompt["verdict"] == "fail":
                ElementTree.SubElement(case, "failure", message=f"expected {expected}").text = \
                    f"answer: {prompt['answer']!r}"
            elif prompt["verdict"] == "error":
                ElementTree.SubElement(case, "error", message="request failed").text = prompt["error"]
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


def same_eval(previous: dict[str, Any], job: Job) -> bool:
    """Whether an earlier report's eval asked exactly what ``job`` asks now, of the same model."""
    if job.eval is None:
        return False
    from .evaluate import generation_config  # noqa: PLC0415

    asked = [(p["input"], p["expect"]) for p in previous.get("prompts", [])]
    wanted = [(p.input, p.expect.as_dict()) for p in job.eval.prompts]
    return (asked == wanted and previous.get("min_pass_rate") == job.eval.min_pass_rate
            and (previous.get("base_pass_rate") is not None) == job.eval.compare_base
            and previous.get("generation_config") == generation_config(job.eval))


def previous_eval(directory: Path, job: str, tuned_model: str) -> dict[str, Any] | None:
    """The eval section of an earlier report of the same model, so `jobspec report` keeps it."""
    try:
        old = json.loads((directory / f"{job}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return old.get("eval") if old.get("tuned_model") == tuned_model else None
