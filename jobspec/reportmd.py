"""The Markdown of reports: one page per job (what tuning did, hyperparameters, the loss chart,
the eval table with base and tuned answers side by side) and SUMMARY.md, one row per job with
the same figures. Renders the values of results.py; decides nothing, writes nothing."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from . import stats
from .charts import epoch_means, loss_chart
from .evaloutcome import Answers, EvalOutcome, Interval, PromptOutcome
from .results import DEPLOY_FAILED, KEPT, NOT_DEPLOYED, NOT_RUN, REUSED, SKIPPED, JobResult
from .timestamps import duration_text

_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# How an eval came about, in words, where it was not asked now.
EVAL_NOTES = {REUSED: "reused from the last report: the same prompts of the same model",
              KEPT: "kept from the last report", SKIPPED: "skipped (--skip-eval)",
              NOT_RUN: "not run: the model is not ACTIVE",
              NOT_DEPLOYED: "not run: Vertex AI serves a tuned open model only once it is "
                            "deployed, and the job has no eval.deploy (add eval.deploy: "
                            "{machine_type, accelerator_type, accelerator_count} to deploy it "
                            "for the eval and remove it after)",
              DEPLOY_FAILED: "not run: deploying the tuned model for it failed (the "
                             "deployment was removed)"}


def eval_note(result: JobResult) -> str:
    """How the eval came about, in words, where it was not asked now ("" where it was):
    its status's note, then the result's own words, if any."""
    note = EVAL_NOTES.get(result.eval_status, "")
    return f"{note}: {result.eval_note}" if note and result.eval_note else note


def _visible(text: str) -> str:
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m[0]):02x}", text)


def _md(text: Any) -> str:
    value = _visible("" if text is None else str(text).replace("\n", " "))
    return value.replace("|", "\\|").replace("`", "'") or " "


def _verdict_mark(verdict: str | None) -> str:
    return {"pass": "✅ pass", "fail": "❌ fail", "error": "⚠️ error"}.get(verdict or "", " ")


def _short_rate(passed: float, n: int, interval: Interval, samples: int) -> str:
    """``6/10 = 60% (31–83%)``."""
    shown = f"{passed:g}" if samples == 1 else f"{passed:.1f}"
    return (f"{shown}/{n} = {stats.percent(passed / n)} "
            f"({100 * interval.low:.0f}–{100 * interval.high:.0f}%)")


def paired_text(evaluation: EvalOutcome) -> str:
    paired = evaluation.paired
    assert paired is not None  # asked only of an eval that compared with the base model
    alpha = evaluation.significance
    excluded = f", {paired.excluded} not paired (a request failed)" if paired.excluded else ""
    p = stats.p_text(paired.p_value)
    if paired.improved:
        judged = f"a significant improvement at {alpha:g}"
    elif paired.base_better(alpha):
        judged = f"the base model is significantly better at {alpha:g}"
    else:
        judged = f"no significant difference at {alpha:g}"
    return (f"{paired.tuned_only} prompts pass only when tuned, {paired.base_only} only on "
            f"the base model ({paired.both} both, {paired.neither} neither{excluded}); "
            f"exact McNemar p = {p}: {judged}")


def _loss_text(result: JobResult) -> str | None:
    curve = result.loss_curve
    if not curve:
        return None
    means = list(epoch_means(curve).values())
    text = (f"training loss {curve[0].mean_loss:.3g} → {curve[-1].mean_loss:.3g} over "
            f"{curve[-1].step} steps (epoch means {means[0]:.3g} → {means[-1]:.3g})")
    validation = result.validation_curve
    if validation:
        text += (f"; validation loss {validation[0].mean_loss:.3g} → "
                 f"{validation[-1].mean_loss:.3g}")
    if result.kept_epoch:
        text += f"; kept epoch {result.kept_epoch}"
    if result.stop_reason:
        text += f" ({_md(result.stop_reason)})"
    return text


def what_tuning_did(result: JobResult) -> list[str]:
    lines = ["### What tuning did", ""]
    evaluation = result.evaluation
    if evaluation and evaluation.interval:
        n, samples = evaluation.prompt_count, evaluation.samples
        lines.append(f"- **Tuned model**: {stats.rate_text(evaluation.passed, n, samples)} "
                     "of the eval prompts pass")
        if evaluation.base_passed is not None:
            lines.append(f"- **Base model**: "
                         f"{stats.rate_text(evaluation.base_passed, n, samples)}")
        if evaluation.paired:
            lines.append(f"- **Paired by prompt**: {paired_text(evaluation)}")
    else:
        note = eval_note(result)
        lines.append(f"- **Eval**: {_md(note) if note else 'none in this job'}")
    loss = _loss_text(result)
    if loss:
        lines.append(f"- **Loss**: {loss}")
    tokens = result.tokens
    if tokens:
        how = "exact" if tokens.exact else "estimate"
        lines.append(f"- **Tokens trained**: {tokens.trained:,} ({tokens.total:,} tokens × "
                     f"{tokens.epochs} epochs; {how}: {_md(tokens.method)})")
    duration = result.timings.duration_seconds
    if duration is not None:
        device = f" on {result.device}" if result.device else ""
        lines.append(f"- **Time**: {duration_text(duration)} ({duration:.1f} s){device}")
    return lines


def _mark(answers: Answers, samples: int) -> str:
    shown = _verdict_mark(answers.verdict)
    if samples > 1 and answers.pass_fraction is not None:
        shown += f" {round(answers.pass_fraction * samples)}/{samples}"
    return shown


def one_line(text: str, width: int = 60) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1].rstrip() + "…"


def shared_system(evaluation: EvalOutcome) -> str | None:
    """The system instruction every prompt was asked with, when they all had the same one."""
    systems = {prompt.system for prompt in evaluation.prompts}
    return systems.pop() if len(systems) == 1 else None


def asked_in(prompt: PromptOutcome, shared: str | None = None) -> str:
    """Where a prompt was asked, compactly, as plain text ("" for a prompt asked alone): its
    system instruction on one line (unless it is ``shared``, said once for all) and how many
    turns came before it."""
    said = []
    if prompt.system is not None and prompt.system != shared:
        said.append(f"system: “{one_line(prompt.system)}”")
    if prompt.history:
        n = len(prompt.history)
        said.append(f"after {n} turn{'s' if n != 1 else ''}")
    return "; ".join(said)


def _asked_in(prompt: PromptOutcome, shared: str | None) -> str:
    said = asked_in(prompt, shared)
    return f" <sub>({_md(said)})</sub>" if said else ""


def _eval_table(evaluation: EvalOutcome) -> list[str]:
    compare = evaluation.base_pass_rate is not None
    samples = evaluation.samples
    shared = shared_system(evaluation)
    lines = []
    if shared is not None:
        lines += [f"_Every prompt was asked with the system instruction "
                  f"“{_md(one_line(shared))}”._", ""]
    if compare:
        lines += ["| input | expected | base answer | | tuned answer | |",
                  "|---|---|---|---|---|---|"]
    else:
        lines += ["| input | expected | tuned answer | |", "|---|---|---|---|"]
    for prompt in evaluation.prompts:
        expected = "; ".join(f"{k}: {' or '.join(v) if isinstance(v, list) else v}"
                             for k, v in prompt.expect.items())
        tuned = prompt.tuned.answer if prompt.tuned.error is None else prompt.tuned.error
        row = [_md(prompt.input) + _asked_in(prompt, shared), _md(expected)]
        if compare:
            base = prompt.base
            assert base is not None  # every prompt of an eval that compared has a base side
            row += [_md(base.answer if base.error is None else base.error), _mark(base, samples)]
        row += [_md(tuned), _mark(prompt.tuned, samples)]
        lines.append("| " + " | ".join(row) + " |")
    if samples > 1:
        lines += ["", f"<sub>Each prompt was asked {samples} times; the answer shown is the "
                      "first, and the count how many of its answers passed.</sub>"]
    return lines


def markdown(result: JobResult) -> str:
    evaluation = result.evaluation
    gate = ""
    if evaluation:
        gate = (f"; eval {evaluation.pass_rate:.0%} (gate {evaluation.min_pass_rate:.0%}"
                f"{' and a significant improvement' if evaluation.require_improvement else ''}"
                f": **{'passed' if evaluation.gate_passed else 'failed'}**)")
    duration = result.timings.duration_seconds
    lines = [f"## {result.job}: `{result.tuned_model}` is {result.state}{gate}", ""]
    if result.reason:
        lines += [f"**{result.state}**: {_md(result.reason)}", ""]
    steps = "" if result.total_steps is None else f", {result.total_steps} steps"
    lines += [f"Base model `{result.base_model}` on {result.backend}; "
              f"{result.example_count} examples{steps}"
              + (f", trained in {duration:.1f}s." if duration is not None else "."), ""]
    lines += what_tuning_did(result) + [""]
    if result.data_stats:
        measured = ", ".join(f"{v:,} {k.replace('_', ' ')}" for k, v in result.data_stats.items())
        lines += [f"The backend measured the training data: {measured}.", ""]
    lines += ["| hyperparameter | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.hyperparameters.items()]
    lines += ["", "### Loss", ""] + loss_chart(result.loss_curve, result.validation_curve)
    if result.eval_status in EVAL_NOTES:
        lines += ["", "### Eval", "", f"_Eval {_md(eval_note(result))}._"]
    if evaluation:
        if result.eval_status not in EVAL_NOTES:
            lines += ["", "### Eval"]
        lines.append("")
        lines += _eval_table(evaluation)
    lines += ["", f"<sub>fingerprint `{result.fingerprint}` · file `{result.file}`</sub>"]
    return "\n".join(lines) + "\n"


def _summary_cells(result: JobResult) -> list[str]:
    """tuned, base, paired, tokens trained, time."""
    tuned = base = paired = "-"
    evaluation = result.evaluation
    if evaluation:
        n, samples = evaluation.prompt_count, evaluation.samples or 1
        if evaluation.interval and n:
            tuned = _short_rate(evaluation.passed, n, evaluation.interval, samples)
        if evaluation.base_interval and n and evaluation.base_passed is not None:
            base = _short_rate(evaluation.base_passed, n, evaluation.base_interval, samples)
        if evaluation.paired:
            p = evaluation.paired
            paired = f"{p.tuned_only} / {p.base_only}, p = {stats.p_text(p.p_value)}"
    tokens = "-" if result.tokens is None else f"{result.tokens.trained:,}"
    seconds = result.timings.duration_seconds
    return [tuned, base, paired, tokens, "-" if seconds is None else duration_text(seconds)]


def summary_markdown(results: Sequence[JobResult]) -> str:
    total, good = len(results), sum(r.ok for r in results)
    headline = (f"✅ all {total} jobs ACTIVE and passing" if good == total else
                f"❌ {total - good} of {total} jobs need attention")
    lines = ["# jobspec results", "", headline, "",
             "| job | tuned model | state | tuned (95% CI) | base (95% CI) | paired: tuned only "
             "/ base only, p | tokens trained | time | gate | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        note = result.reason or eval_note(result)
        gate = ("-" if result.evaluation is None
                else "passed" if result.evaluation.gate_passed else "failed")
        lines.append(f"| [{result.job}]({result.job}.md) | `{result.tuned_model}` | "
                     f"{result.state} | " + " | ".join(_summary_cells(result)) +
                     f" | {gate} | {_md(note)} |")
    return "\n".join(lines) + "\n"
