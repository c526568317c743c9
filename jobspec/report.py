"""Results reports: per job JSON and Markdown, a run's SUMMARY.md and summary.json, and JUnit
XML, rendered from the values of results.py (and read back into them: ``earlier``). Every planned
job has its reports, whatever its state: a run where one job failed says so in every file. Files
are written atomically (beside, then renamed), so a crash never leaves half a file. Reports hold
no credentials: nothing from auth reaches this module, and a result's endpoint has none."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from . import stats
from .backends.base import ACTIVE
from .conversation import Turn
from .evaloutcome import Answers, EvalOutcome, Interval, PairedOutcome, PromptOutcome, Sample
from .reportmd import asked_in, markdown, shared_system, summary_markdown
from .results import JobResult, LossPoint, Timings, Tokens

REPORT_VERSION = 1
PAIRED_TEST = "exact McNemar (two-sided binomial test on the prompts only one model passes)"


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


def _interval(interval: Interval | None) -> dict[str, Any] | None:
    if interval is None:
        return None
    return {"confidence": stats.CONFIDENCE, "method": "wilson", "low": interval.low,
            "high": interval.high}


def _paired(paired: PairedOutcome | None) -> dict[str, Any] | None:
    if paired is None:
        return None
    return {"tuned_only": paired.tuned_only, "base_only": paired.base_only, "both": paired.both,
            "neither": paired.neither, "excluded": paired.excluded, "p_value": paired.p_value,
            "test": PAIRED_TEST, "improved": paired.improved}


def _answers(answers: Answers, prefix: str = "") -> dict[str, Any]:
    """One side of a prompt's result: its (first) answer and verdict; with samples, each
    answer and the pass fraction."""
    values: dict[str, Any] = {f"{prefix}answer": answers.answer, f"{prefix}error": answers.error,
                              f"{prefix}verdict": answers.verdict}
    if answers.samples is not None:
        values[f"{prefix}pass_fraction"] = answers.pass_fraction
        values[f"{prefix}samples"] = [{"answer": s.answer, "error": s.error, "verdict": s.verdict}
                                      for s in answers.samples]
    return values


def _asked_in(prompt: PromptOutcome) -> dict[str, Any]:
    """The conversation a prompt was asked in, where it had one: its system instruction and
    the turns before its input (absent otherwise, as reports always wrote such prompts)."""
    values: dict[str, Any] = {}
    if prompt.system is not None:
        values["system"] = prompt.system
    if prompt.history:
        values["history"] = [{"role": t.role, "text": t.text} for t in prompt.history]
    return values


def _gate(evaluation: EvalOutcome) -> str:
    return "passed" if evaluation.gate_passed else "failed"


def eval_json(evaluation: EvalOutcome) -> dict[str, Any]:
    """An eval as reports record it, with its statistics."""
    return {
        "generation_config": dict(evaluation.generation_config),
        "min_pass_rate": evaluation.min_pass_rate,
        "require_improvement": evaluation.require_improvement,
        "significance": evaluation.significance,
        "samples": evaluation.samples,
        "prompt_count": evaluation.prompt_count,
        "passed": evaluation.passed,
        "pass_rate": evaluation.pass_rate,
        "interval": _interval(evaluation.interval),
        "base_passed": evaluation.base_passed,
        "base_pass_rate": evaluation.base_pass_rate,
        "base_interval": _interval(evaluation.base_interval),
        "paired": _paired(evaluation.paired),
        "gate": _gate(evaluation),
        "errors": evaluation.errors,
        "prompts": [{"input": p.input, **_asked_in(p), "expect": dict(p.expect),
                     **_answers(p.tuned),
                     **(_answers(p.base, "base_") if p.base is not None else {})}
                    for p in evaluation.prompts],
    }


def _curve(points: tuple[LossPoint, ...]) -> list[dict[str, Any]]:
    return [{"step": p.step, "epoch": p.epoch, "mean_loss": p.mean_loss} for p in points]


def as_json(result: JobResult) -> dict[str, Any]:
    """The JSON report of one job (see schemas/report.schema.json)."""
    tokens, timings = result.tokens, result.timings
    return {
        "report_version": REPORT_VERSION,
        "job": result.job,
        "file": result.file,
        "fingerprint": result.fingerprint,
        "tuned_model": result.tuned_model,
        "state": result.state,
        "service_state": result.service_state,
        "reason": result.reason,
        "backend": result.backend,
        "endpoint": result.endpoint,
        "base_model": result.base_model,
        "hyperparameters": dict(result.hyperparameters),
        "example_count": result.example_count,
        "total_steps": result.total_steps,
        "data_stats": None if result.data_stats is None else dict(result.data_stats),
        "tokens": None if tokens is None else {
            "examples": tokens.examples, "input": tokens.input, "output": tokens.output,
            "total": tokens.total, "epochs": tokens.epochs, "trained": tokens.trained,
            "exact": tokens.exact, "method": tokens.method},
        "timings": {
            "created": timings.created, "started": timings.started,
            "completed": timings.completed, "duration_seconds": timings.duration_seconds,
        },
        "loss_curve": _curve(result.loss_curve),
        "validation_curve": _curve(result.validation_curve),
        "kept_epoch": result.kept_epoch,
        "stop_reason": result.stop_reason,
        "device": result.device,
        "eval_status": result.eval_status,
        # Only where there is one, so that every report written before it reads the same.
        **({} if result.eval_note is None else {"eval_note": result.eval_note}),
        "eval": None if result.evaluation is None else eval_json(result.evaluation),
    }


def summary(results: Sequence[JobResult]) -> dict[str, Any]:
    """The whole run: every planned job, its state, why it is not ACTIVE, and its eval."""
    jobs = []
    for r in results:
        e = r.evaluation
        jobs.append({
            "job": r.job, "tuned_model": r.tuned_model, "state": r.state, "reason": r.reason,
            "eval_status": r.eval_status,
            **({} if r.eval_note is None else {"eval_note": r.eval_note}),
            "prompt_count": e.prompt_count if e else None,
            "samples": e.samples if e else None, "passed": e.passed if e else None,
            "pass_rate": e.pass_rate if e else None,
            "interval": _interval(e.interval) if e else None,
            "base_passed": e.base_passed if e else None,
            "base_pass_rate": e.base_pass_rate if e else None,
            "base_interval": _interval(e.base_interval) if e else None,
            "paired": _paired(e.paired) if e else None,
            "tokens_trained": r.tokens.trained if r.tokens else None,
            "duration_seconds": r.timings.duration_seconds,
            "gate": _gate(e) if e else None, "ok": r.ok})
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


def junit(results: Sequence[JobResult]) -> str:
    """One suite per job: a case for its model's state (failing unless ACTIVE), then one per
    eval prompt, named by its input (and, for one asked in a conversation, where: its system
    instruction unless every prompt had it, and how many turns came before)."""
    suites = ElementTree.Element("testsuites", name="jobspec")
    for result in results:
        prompts = result.evaluation.prompts if result.evaluation else ()
        shared = shared_system(result.evaluation) if result.evaluation else None
        active = result.state == ACTIVE
        missing = result.eval_missing  # an eval meant to run, not run: an error of its own
        suite = _element(suites, "testsuite", name=result.job,
                         tests=str(len(prompts) + 1 + missing),
                         failures=str(sum(p.tuned.verdict == "fail" for p in prompts)
                                      + (not active)),
                         errors=str(sum(p.tuned.verdict == "error" for p in prompts) + missing))
        case = _element(suite, "testcase", classname=result.job,
                        name=f"{result.tuned_model} is ACTIVE")
        if not active:
            _element(case, "failure", result.reason or "",
                     message=f"{result.state}: {result.reason or 'not ACTIVE'}")
        if missing:
            case = _element(suite, "testcase", classname=result.job, name="eval")
            _element(case, "error", result.eval_note or "", message=result.eval_status)
        for prompt in prompts:
            where = asked_in(prompt, shared)
            case = _element(suite, "testcase", classname=result.job,
                            name=f"{prompt.input} ({where})" if where else prompt.input)
            expected = json.dumps(dict(prompt.expect), ensure_ascii=False)
            if prompt.tuned.verdict == "fail":
                _element(case, "failure", f"answer: {prompt.tuned.answer!r}",
                         message=f"expected {expected}")
            elif prompt.tuned.verdict == "error":
                _element(case, "error", prompt.tuned.error, message="request failed")
    ElementTree.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(
        suites, encoding="unicode") + "\n"


def _json_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write(directory: Path, results: Sequence[JobResult]) -> list[Path]:
    written = []
    for result in results:
        for suffix, text in ((".json", _json_text(as_json(result))), (".md", markdown(result))):
            path = directory / f"{result.job}{suffix}"
            write_atomic(path, text)
            written.append(path)
    for name, text in (("summary.json", _json_text(summary(results))),
                       ("SUMMARY.md", summary_markdown(results)), ("junit.xml", junit(results))):
        write_atomic(directory / name, text)
        written.append(directory / name)
    return written


def _read_interval(data: dict[str, Any] | None) -> Interval | None:
    return None if data is None else Interval(data["low"], data["high"])


def _read_answers(prompt: dict[str, Any], prefix: str = "") -> Answers:
    samples = prompt.get(f"{prefix}samples")
    return Answers(prompt[f"{prefix}answer"], prompt[f"{prefix}error"], prompt[f"{prefix}verdict"],
                   prompt.get(f"{prefix}pass_fraction"),
                   None if samples is None else tuple(Sample(s["answer"], s["error"], s["verdict"])
                                                      for s in samples))


def _read_eval(data: Any) -> EvalOutcome | None:
    """An eval as an earlier report recorded it; None when it recorded none, or not all that
    this jobspec records (an older jobspec wrote no statistics)."""
    if not isinstance(data, dict):
        return None
    try:
        paired = data["paired"]
        return EvalOutcome(
            generation_config=data["generation_config"], min_pass_rate=data["min_pass_rate"],
            require_improvement=data["require_improvement"], significance=data["significance"],
            samples=data["samples"], prompt_count=data["prompt_count"], passed=data["passed"],
            pass_rate=data["pass_rate"], interval=_read_interval(data["interval"]),
            base_passed=data["base_passed"], base_pass_rate=data["base_pass_rate"],
            base_interval=_read_interval(data["base_interval"]),
            paired=None if paired is None else PairedOutcome(
                paired["tuned_only"], paired["base_only"], paired["both"], paired["neither"],
                paired["excluded"], paired["p_value"], paired["improved"]),
            gate_passed={"passed": True, "failed": False}[data["gate"]], errors=data["errors"],
            prompts=tuple(PromptOutcome(p["input"], p["expect"], _read_answers(p),
                                        _read_answers(p, "base_") if "base_verdict" in p
                                        else None, p.get("system"),
                                        tuple(Turn(t["role"], t["text"])
                                              for t in p.get("history", ())))
                          for p in data["prompts"]))
    except (KeyError, TypeError, AttributeError):
        return None


def _read_curve(points: list[dict[str, Any]]) -> tuple[LossPoint, ...]:
    return tuple(LossPoint(p["step"], p["epoch"], p["mean_loss"]) for p in points)


def from_json(data: dict[str, Any]) -> JobResult:
    """The result a JSON report records (``as_json``'s inverse). Raises KeyError, TypeError or
    AttributeError when it is not one; an eval it cannot read is None."""
    tokens, timings = data["tokens"], data["timings"]
    return JobResult(
        job=data["job"], file=data["file"], fingerprint=data["fingerprint"],
        tuned_model=data["tuned_model"], state=data["state"],
        service_state=data["service_state"], reason=data["reason"], backend=data["backend"],
        endpoint=data["endpoint"], base_model=data["base_model"],
        hyperparameters=data["hyperparameters"], example_count=data["example_count"],
        total_steps=data["total_steps"], data_stats=data["data_stats"],
        tokens=None if tokens is None else Tokens(**tokens),
        timings=Timings(timings["created"], timings["started"], timings["completed"],
                        timings["duration_seconds"]),
        loss_curve=_read_curve(data["loss_curve"]),
        validation_curve=_read_curve(data["validation_curve"]),
        kept_epoch=data["kept_epoch"], stop_reason=data["stop_reason"], device=data["device"],
        eval_status=data["eval_status"], evaluation=_read_eval(data["eval"]),
        eval_note=data.get("eval_note"))


def earlier(directory: Path, job: str) -> JobResult | None:
    """The result an earlier run reported for ``job``, if there is a readable report."""
    try:
        old = json.loads((directory / f"{job}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(old, dict) or old.get("report_version") != REPORT_VERSION:
        return None
    try:
        return from_json(old)
    except (KeyError, TypeError, AttributeError):
        return None
