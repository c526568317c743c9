"""Results reports: per job JSON and Markdown, a run's SUMMARY.md and summary.json, and JUnit
XML. Every planned job has its reports, whatever its state: a run where one job failed says so
in every file. Files are written atomically (beside, then renamed), so a crash never leaves half
a file. Reports hold no credentials: nothing from auth reaches this module, and an endpoint is
recorded without any user name, password or query it may carry."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

from . import stats, timestamps
from .backends.base import ACTIVE, RemoteModel, Snapshot
from .evaluate import Answer, EvalResult, pass_fraction, verdict
from .identity import Identity
from .reportmd import markdown, summary_markdown
from .spec import Job

REPORT_VERSION = 1
NOT_CREATED, ERROR = "NOT_CREATED", "ERROR"
PAIRED_TEST = "exact McNemar (two-sided binomial test on the prompts only one model passes)"

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
    hyperparameters: dict[str, Any] | None = None  # what the backend applies (default: the job's)


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


def _interval(passed: float | None, n: int) -> dict[str, Any] | None:
    if passed is None:
        return None
    low, high = stats.wilson(passed, n)
    return {"confidence": stats.CONFIDENCE, "method": "wilson", "low": round(low, 6),
            "high": round(high, 6)}


def _answers(answers: tuple[Answer, ...], prefix: str = "") -> dict[str, Any]:
    """One side of a prompt's result: its (first) answer and verdict; with samples, each
    answer and the pass fraction."""
    first_error = next((a.error for a in answers if a.error is not None), None)
    shown = next((a for a in answers if a.error is None), answers[0])
    values: dict[str, Any] = {f"{prefix}answer": shown.text, f"{prefix}error": first_error,
                              f"{prefix}verdict": verdict(answers)}
    if len(answers) > 1:
        values[f"{prefix}pass_fraction"] = pass_fraction(answers)
        values[f"{prefix}samples"] = [
            {"answer": a.text, "error": a.error,
             "verdict": "error" if a.error else "pass" if a.passed else "fail"} for a in answers]
    return values


def eval_section(evaluation: EvalResult) -> dict[str, Any]:
    """An eval as reports record it, with its statistics: each pass rate's Wilson interval,
    and (with compare_base) the base and tuned verdicts paired by prompt, with the exact McNemar
    p-value."""
    n = len(evaluation.results)
    paired = evaluation.paired
    return {
        "generation_config": evaluation.generation_config,
        "min_pass_rate": evaluation.min_pass_rate,
        "require_improvement": evaluation.require_improvement,
        "significance": evaluation.significance,
        "samples": evaluation.samples,
        "prompt_count": n,
        "passed": round(evaluation.passed, 6),
        "pass_rate": evaluation.pass_rate,
        "interval": _interval(evaluation.passed, n),
        "base_passed": (None if evaluation.base_passed is None
                        else round(evaluation.base_passed, 6)),
        "base_pass_rate": evaluation.base_pass_rate,
        "base_interval": _interval(evaluation.base_passed, n),
        "paired": None if paired is None else {
            "tuned_only": paired.tuned_only, "base_only": paired.base_only,
            "both": paired.both, "neither": paired.neither, "excluded": paired.excluded,
            "p_value": paired.p_value, "test": PAIRED_TEST,
            "improved": paired.improved(evaluation.significance)},
        "gate": "passed" if evaluation.gate_passed else "failed",
        "errors": evaluation.errors,
        "prompts": [{"input": r.input, "expect": r.expect.as_dict(), **_answers(r.tuned),
                     **(_answers(r.base, "base_") if r.base is not None else {})}
                    for r in evaluation.results],
    }


def build(status: JobStatus, backend: str, endpoint: str, evaluation: dict[str, Any] | None,
          eval_status: str, tokens: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "hyperparameters": (status.hyperparameters if status.hyperparameters is not None
                            else job.hyperparameters.as_dict()),
        "example_count": identity.example_count,
        "total_steps": (model.total_steps if model and model.total_steps
                        else status.expected_steps),
        "data_stats": model.stats.as_dict() if model and model.stats else None,
        "tokens": tokens,
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


def _passing(report: dict[str, Any]) -> bool:
    return report["state"] == ACTIVE and (report["eval"] is None
                                          or report["eval"]["gate"] == "passed")


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The whole run: every planned job, its state, why it is not ACTIVE, and its eval."""
    def of_eval(r: dict[str, Any], key: str) -> Any:
        return r["eval"].get(key) if r["eval"] else None

    jobs = [{"job": r["job"], "tuned_model": r["tuned_model"], "state": r["state"],
             "reason": r["reason"], "eval_status": r["eval_status"],
             "prompt_count": of_eval(r, "prompt_count"), "samples": of_eval(r, "samples"),
             "passed": of_eval(r, "passed"), "pass_rate": of_eval(r, "pass_rate"),
             "interval": of_eval(r, "interval"), "base_passed": of_eval(r, "base_passed"),
             "base_pass_rate": of_eval(r, "base_pass_rate"),
             "base_interval": of_eval(r, "base_interval"), "paired": of_eval(r, "paired"),
             "tokens_trained": (r.get("tokens") or {}).get("trained"),
             "duration_seconds": r["timings"]["duration_seconds"],
             "gate": of_eval(r, "gate"), "ok": _passing(r)}
            for r in reports]
    return {"report_version": REPORT_VERSION, "ok": all(j["ok"] for j in jobs),
            "jobs_total": len(jobs), "jobs_ok": sum(j["ok"] for j in jobs), "jobs": jobs}


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
    expectations, gate, compare_base, generation config, samples) of the same model (name and
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
                 and old.get("generation_config") == generation_config
                 # an eval an older jobspec wrote has none of these, nor its statistics
                 and old.get("samples") == job.eval.samples
                 and old.get("require_improvement") == job.eval.require_improvement
                 and old.get("significance") == job.eval.significance)
    return old if same_model and same_asks else None
