"""The Markdown of reports: one page per job (what tuning did, hyperparameters, the loss chart,
the eval table with base and tuned answers side by side) and SUMMARY.md, one row per job with
the same figures. Reads the JSON reports that report.py builds; writes nothing."""

from __future__ import annotations

import re
from typing import Any

from . import stats
from .charts import loss_chart
from .timestamps import duration_text

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# report.REUSED, KEPT, SKIPPED, NOT_RUN: how an eval section came about, in words.
EVAL_NOTES = {"reused": "reused from the last report: the same prompts of the same model",
              "kept": "kept from the last report", "skipped": "skipped (--skip-eval)",
              "not_run": "not run: the model is not ACTIVE"}


def _visible(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _md(text: Any) -> str:
    value = _visible("" if text is None else str(text).replace("\n", " "))
    return value.replace("|", "\\|").replace("`", "'") or " "


def _verdict_mark(verdict: str | None) -> str:
    return {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}.get(verdict or "", " ")


def _short_rate(passed: float, n: int, interval: dict[str, Any], samples: int) -> str:
    """``6/10 = 60% (31–83%)``."""
    shown = f"{passed:g}" if samples == 1 else f"{passed:.1f}"
    return (f"{shown}/{n} = {stats.percent(passed / n)} "
            f"({100 * interval['low']:.0f}–{100 * interval['high']:.0f}%)")


def paired_text(evaluation: dict[str, Any]) -> str:
    paired = evaluation["paired"]
    alpha = evaluation["significance"]
    excluded = f", {paired['excluded']} not paired (a request failed)" if paired["excluded"] else ""
    p = stats.p_text(paired["p_value"])
    if paired["improved"]:
        judged = f"a significant improvement at {alpha:g}"
    elif paired["base_only"] > paired["tuned_only"] and paired["p_value"] <= alpha:
        judged = f"the base model is significantly better at {alpha:g}"
    else:
        judged = f"no significant difference at {alpha:g}"
    return (f"{paired['tuned_only']} prompts pass only when tuned, {paired['base_only']} only on "
            f"the base model ({paired['both']} both, {paired['neither']} neither{excluded}); "
            f"exact McNemar p = {p}: {judged}")


def _loss_text(report: dict[str, Any]) -> str | None:
    curve = report["loss_curve"]
    if not curve:
        return None
    from .charts import epoch_means

    means = list(epoch_means(curve).values())
    text = (f"training loss {curve[0]['mean_loss']:.3g} → {curve[-1]['mean_loss']:.3g} over "
            f"{curve[-1]['step']} steps (epoch means {means[0]:.3g} → {means[-1]:.3g})")
    validation = report.get("validation_curve") or []
    if validation:
        text += (f"; validation loss {validation[0]['mean_loss']:.3g} → "
                 f"{validation[-1]['mean_loss']:.3g}")
    if report.get("kept_epoch"):
        text += f"; kept epoch {report['kept_epoch']}"
    if report.get("stop_reason"):
        text += f" ({_md(report['stop_reason'])})"
    return text


def what_tuning_did(report: dict[str, Any]) -> list[str]:
    lines = ["### What tuning did", ""]
    evaluation = report["eval"]
    if evaluation and evaluation.get("interval"):
        n, samples = evaluation["prompt_count"], evaluation["samples"]
        lines.append(f"- **Tuned model**: {stats.rate_text(evaluation['passed'], n, samples)} "
                     "of the eval prompts pass")
        if evaluation["base_passed"] is not None:
            lines.append(f"- **Base model**: "
                         f"{stats.rate_text(evaluation['base_passed'], n, samples)}")
        if evaluation["paired"]:
            lines.append(f"- **Paired by prompt**: {paired_text(evaluation)}")
    else:
        lines.append(f"- **Eval**: {EVAL_NOTES.get(report['eval_status'], 'none in this job')}")
    loss = _loss_text(report)
    if loss:
        lines.append(f"- **Loss**: {loss}")
    tokens = report.get("tokens")
    if tokens:
        how = "exact" if tokens["exact"] else "estimate"
        lines.append(f"- **Tokens trained**: {tokens['trained']:,} ({tokens['total']:,} tokens × "
                     f"{tokens['epochs']} epochs; {how}: {_md(tokens['method'])})")
    duration = report["timings"]["duration_seconds"]
    if duration is not None:
        device = f" on {report['device']}" if report.get("device") else ""
        lines.append(f"- **Time**: {duration_text(duration)} ({duration:.1f} s){device}")
    return lines


def _eval_table(evaluation: dict[str, Any]) -> list[str]:
    compare = evaluation["base_pass_rate"] is not None
    samples = evaluation.get("samples", 1)
    lines = []
    if compare:
        lines += ["| input | expected | base answer | | tuned answer | |",
                  "|---|---|---|---|---|---|"]
    else:
        lines += ["| input | expected | tuned answer | |", "|---|---|---|---|"]

    def mark(prompt: dict[str, Any], prefix: str = "") -> str:
        shown = _verdict_mark(prompt[f"{prefix}verdict"])
        if samples > 1 and f"{prefix}pass_fraction" in prompt:
            shown += f" {round(prompt[f'{prefix}pass_fraction'] * samples)}/{samples}"
        return shown

    for prompt in evaluation["prompts"]:
        expected = "; ".join(f"{k}: {' or '.join(v) if isinstance(v, list) else v}"
                             for k, v in prompt["expect"].items())
        tuned = prompt["answer"] if prompt["error"] is None else prompt["error"]
        row = [_md(prompt["input"]), _md(expected)]
        if compare:
            base = prompt["base_answer"] if prompt["base_error"] is None else prompt["base_error"]
            row += [_md(base), mark(prompt, "base_")]
        row += [_md(tuned), mark(prompt)]
        lines.append("| " + " | ".join(row) + " |")
    if samples > 1:
        lines += ["", f"<sub>Each prompt was asked {samples} times; the answer shown is the "
                      "first, and the count how many of its answers passed.</sub>"]
    return lines


def markdown(report: dict[str, Any]) -> str:
    evaluation = report["eval"]
    gate = ""
    if evaluation:
        gate = (f"; eval {evaluation['pass_rate']:.0%} (gate {evaluation['min_pass_rate']:.0%}"
                f"{' and a significant improvement' if evaluation.get('require_improvement') else ''}"
                f": **{evaluation['gate']}**)")
    duration = report["timings"]["duration_seconds"]
    lines = [f"## {report['job']}: `{report['tuned_model']}` is {report['state']}{gate}", ""]
    if report["reason"]:
        lines += [f"**{report['state']}**: {_md(report['reason'])}", ""]
    steps = "" if report["total_steps"] is None else f", {report['total_steps']} steps"
    lines += [f"Base model `{report['base_model']}` on {report['backend']}; "
              f"{report['example_count']} examples{steps}"
              + (f", trained in {duration:.1f}s." if duration is not None else "."), ""]
    lines += what_tuning_did(report) + [""]
    stats_given = report.get("data_stats")
    if stats_given:
        measured = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in stats_given.items())
        lines += [f"The backend measured the training data: {measured}.", ""]
    lines += ["| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["hyperparameters"].items()]
    lines += ["", "### Loss", ""] + loss_chart(report["loss_curve"],
                                               report.get("validation_curve"))
    if report["eval_status"] in EVAL_NOTES:
        lines += ["", "### Eval", "", f"_Eval {EVAL_NOTES[report['eval_status']]}._"]
    if evaluation:
        if report["eval_status"] not in EVAL_NOTES:
            lines += ["", "### Eval"]
        lines.append("")
        lines += _eval_table(evaluation)
    lines += ["", f"<sub>fingerprint `{report['fingerprint']}` · file `{report['file']}`</sub>"]
    return "\n".join(lines) + "\n"


def _summary_cells(job: dict[str, Any]) -> list[str]:
    """tuned, base, paired, tokens trained, time."""
    n, samples = job.get("prompt_count"), job.get("samples") or 1
    tuned = base = paired = "-"
    if job.get("interval") and n:
        tuned = _short_rate(job["passed"], n, job["interval"], samples)
    if job.get("base_interval") and n:
        base = _short_rate(job["base_passed"], n, job["base_interval"], samples)
    if job.get("paired"):
        p = job["paired"]
        paired = f"{p['tuned_only']} / {p['base_only']}, p = {stats.p_text(p['p_value'])}"
    tokens = "-" if job.get("tokens_trained") is None else f"{job['tokens_trained']:,}"
    seconds = job.get("duration_seconds")
    return [tuned, base, paired, tokens, "-" if seconds is None else duration_text(seconds)]


def summary_markdown(data: dict[str, Any]) -> str:
    total, good = data["jobs_total"], data["jobs_ok"]
    headline = (f"✅ all {total} jobs ACTIVE and passing" if data["ok"] else
                f"❌ {total - good} of {total} jobs need attention")
    lines = ["# jobspec results", "", headline, "",
             "| job | tuned model | state | tuned (95% CI) | base (95% CI) | paired: tuned only "
             "/ base only, p | tokens trained | time | gate | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for job in data["jobs"]:
        note = job["reason"] or EVAL_NOTES.get(job["eval_status"], "")
        lines.append(f"| [{job['job']}]({job['job']}.md) | `{job['tuned_model']}` | "
                     f"{job['state']} | " + " | ".join(_summary_cells(job)) +
                     f" | {job['gate'] or '-'} | {_md(note)} |")
    return "\n".join(lines) + "\n"
