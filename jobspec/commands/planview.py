"""Showing a plan: text like Terraform's, JSON, and Markdown for a pull-request comment."""

from __future__ import annotations

from typing import Any

from ..estimate import PRICE_VARIABLE, JobEstimate, Totals, cost_text, totals
from ..ownership import FOREIGN_ACTION, FOREIGN_NOTE, foreign_note
from ..reconcile import CREATE, FAILED_ACTION, IN_PROGRESS, RECREATE, UNCHANGED, JobPlan, Plan
from ..timestamps import duration_text

SYMBOLS = {CREATE: "+", UNCHANGED: "=", IN_PROGRESS: "~", FAILED_ACTION: "!", RECREATE: "±"}
GITHUB_COMMENT_LIMIT = 65_536


def summary(plan: Plan) -> str:
    superseded = len(plan.superseded)
    return (f"Plan: {plan.count(CREATE) + plan.count(RECREATE)} to create, "
            f"{plan.count(UNCHANGED)} unchanged, {plan.count(IN_PROGRESS)} in progress, "
            f"{plan.count(FAILED_ACTION)} failed, {superseded} superseded.")


def _detail(job_plan: JobPlan) -> str:
    if job_plan.action == IN_PROGRESS:
        if job_plan.progress_percent is None:
            state = job_plan.current.state_label if job_plan.current else "in progress"
            return f"{job_plan.model_name} ({state})"
        return f"{job_plan.model_name} ({job_plan.progress_percent:.0f}%)"
    if job_plan.action == FAILED_ACTION:
        return f"{job_plan.model_name} (tuning failed; apply --recreate-failed retries it)"
    if job_plan.action == RECREATE:
        return f"{job_plan.model_name} (failed; will be deleted and created again)"
    if job_plan.action == UNCHANGED:
        return f"{job_plan.model_name} (ACTIVE)"
    return job_plan.model_name


def _deployment(job_plan: JobPlan) -> str | None:
    """What the eval will deploy (``eval.deploy``: a tuned open model on Vertex AI), which is
    billed while it runs."""
    spec = job_plan.job.eval
    if spec is None or spec.deploy is None:
        return None
    d = spec.deploy
    return (f"eval deploys the tuned model to an endpoint on {d.machine_type} with "
            f"{d.accelerator_count} x {d.accelerator_type} (billed while deployed), asks the "
            "prompts, then undeploys it and deletes the endpoint")


def _size(e: JobEstimate) -> str:
    tokens = e.tokens
    assert tokens is not None
    how = "exact" if tokens.exact else "estimate"
    count = len(tokens.inputs)
    return (f"{count:,} example{'s' if count != 1 else ''}: {tokens.total:,} tokens "
            f"({tokens.input_tokens:,} "
            f"input + {tokens.output_tokens:,} output; {how}: {tokens.method})")


def _longest(e: JobEstimate) -> str:
    tokens = e.tokens
    assert tokens is not None
    index, size = tokens.longest
    limit = "" if tokens.limit is None else f" of the {tokens.limit:,} allowed"
    over = len(tokens.over_limit())
    flag = f" — {over} example{'s' if over != 1 else ''} OVER THE LIMIT" if over else ""
    return f"longest example {size:,} tokens{limit} ({e.place(index)}){flag}"


def _time(e: JobEstimate) -> str:
    if e.seconds is None or e.rate is None:
        return f"time unknown (this backend has not trained {e.job.base_model} before)"
    runs = f"{e.rate.runs} earlier run{'s' if e.rate.runs != 1 else ''}"
    return (f"time ≈ {duration_text(e.seconds)} (at the {e.rate.seconds_per_example:.3g} s per "
            f"example trained measured in {runs} of {e.job.base_model} here)")


def _cost(e: JobEstimate) -> str:
    if e.cost is None:
        return ""
    return f"; cost ≈ {cost_text(e.cost)} at {e.price:g} per million tokens trained"


def estimate_lines(e: JobEstimate) -> list[str]:
    """The figures of one changing job, for the text plan."""
    if e.tokens is None:
        return [f"tokens not counted: {e.error}"]
    steps = "" if e.steps is None else f" in {e.steps:,} steps"
    return [_size(e),
            f"{e.trained_tokens:,} tokens trained ({e.epochs} epoch{'s' if e.epochs != 1 else ''})"
            f"{steps}; {_longest(e)}",
            _time(e) + _cost(e)]


def totals_line(total: Totals, price_given: bool) -> str:
    seconds = ("unknown" if total.seconds is None else f"≈ {duration_text(total.seconds)}")
    if total.seconds is None and total.timed_jobs:
        seconds += f" ({total.timed_jobs} of {total.jobs} jobs timed)"
    cost = (f"cost ≈ {cost_text(total.cost)}" if total.cost is not None else
            "cost unknown" if price_given else
            f"cost: give --price-per-million-tokens (or ${PRICE_VARIABLE})")
    return (f"Estimate for {total.jobs} job{'s' if total.jobs != 1 else ''} to create: "
            f"{total.trained_tokens:,} tokens trained ({'exact' if total.exact else 'estimate'}), "
            f"time {seconds}, {cost}.")


def text(plan: Plan, estimates: list[JobEstimate] | None = None) -> str:
    width = max((len(j.job.name) for j in plan.jobs), default=0)
    by_job = {e.job.name: e for e in estimates or []}
    lines = [f"Backend: {plan.backend} ({plan.endpoint}); owner {plan.owner}", ""]
    for job_plan in plan.jobs:
        lines.append(f"  {SYMBOLS[job_plan.action]} {job_plan.job.name:<{width}}  "
                     f"{job_plan.action} {_detail(job_plan)}")
        if job_plan.reasons:
            lines.append(f"      because: {'; '.join(job_plan.reasons)}")
        if job_plan.job.name in by_job:
            lines += [f"      {line}" for line in estimate_lines(by_job[job_plan.job.name])]
        deployment = _deployment(job_plan)
        if deployment:
            lines.append(f"      {deployment}")
        for model in job_plan.superseded:
            lines.append(f"  - {job_plan.job.name:<{width}}  superseded {model.name} "
                         "(apply --prune deletes it)")
        for model in job_plan.foreign:
            lines.append(f"  · {job_plan.job.name:<{width}}  {model.name} {foreign_note(model)}")
    lines.append("")
    if estimates:
        lines.append(totals_line(totals(estimates), estimates[0].price is not None))
    lines.append(summary(plan))  # last, as Terraform's plan ends
    return "\n".join(lines)


def estimate_json(e: JobEstimate) -> dict[str, Any]:
    tokens = e.tokens
    if tokens is None:
        return {"error": e.error}
    index, size = tokens.longest
    return {
        "examples": len(tokens.inputs), "input_tokens": tokens.input_tokens,
        "output_tokens": tokens.output_tokens, "tokens": tokens.total,
        "exact": tokens.exact, "method": tokens.method, "epochs": e.epochs,
        "tokens_trained": e.trained_tokens, "steps": e.steps,
        "longest_example": {"where": e.place(index), "tokens": size},
        "example_token_limit": tokens.limit,
        "over_limit": [e.place(i) for i in tokens.over_limit()],
        "seconds": None if e.seconds is None else round(e.seconds, 1),
        "seconds_per_example": None if e.rate is None else e.rate.seconds_per_example,
        "measured_runs": 0 if e.rate is None else e.rate.runs,
        "price_per_million_tokens": e.price,
        "cost": None if e.cost is None else round(e.cost, 6),
    }


def as_json(plan: Plan, estimates: list[JobEstimate] | None = None) -> dict[str, Any]:
    by_job = {e.job.name: estimate_json(e) for e in estimates or []}
    total = totals(estimates) if estimates else None
    return {
        "backend": plan.backend, "endpoint": plan.endpoint,
        "owner": {"name": plan.owner.name, "id": plan.owner.id, "source": plan.owner.source},
        "jobs": [{
            "name": j.job.name, "file": j.job.path, "action": j.action,
            "tuned_model": j.model_name, "fingerprint": j.identity.fingerprint,
            "state": j.current.state if j.current else None,
            "progress_percent": j.progress_percent,
            "reasons": list(j.reasons),
            "superseded": [m.name for m in j.superseded],
            "foreign": [{"name": m.name, "owner": m.owner} for m in j.foreign],
            "estimate": by_job.get(j.job.name),
            "eval_deployment": (j.job.eval.deploy.as_dict()
                                if j.job.eval is not None and j.job.eval.deploy is not None
                                else None),
        } for j in plan.jobs],
        "totals": None if total is None else {
            "jobs": total.jobs, "tokens_trained": total.trained_tokens, "exact": total.exact,
            "seconds": None if total.seconds is None else round(total.seconds, 1),
            "cost": None if total.cost is None else round(total.cost, 6)},
        "summary": {"create": plan.count(CREATE) + plan.count(RECREATE),
                    "unchanged": plan.count(UNCHANGED), "in_progress": plan.count(IN_PROGRESS),
                    "failed": plan.count(FAILED_ACTION), "superseded": len(plan.superseded)},
        "changes_pending": plan.has_changes,
    }


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def _estimate_row(e: JobEstimate) -> str:
    name = f"`{_cell(e.job.name)}`"
    tokens = e.tokens
    if tokens is None:
        return f"| {name} | {_cell(e.error or '')} | | | | | | |"
    _, size = tokens.longest
    over = "❌ " if tokens.over_limit() else ""
    limit = "" if tokens.limit is None else f" / {tokens.limit:,}"
    tilde = "" if tokens.exact else "~"
    time = "unknown" if e.seconds is None else f"≈ {duration_text(e.seconds)}"
    cost = "–" if e.cost is None else cost_text(e.cost)
    return (f"| {name} | {len(tokens.inputs):,} | {tilde}{tokens.total:,} "
            f"({tilde}{tokens.input_tokens:,} + {tilde}{tokens.output_tokens:,}) | "
            f"{tilde}{e.trained_tokens:,} | {'–' if e.steps is None else f'{e.steps:,}'} | "
            f"{over}{tilde}{size:,}{limit} | {time} | {cost} |")


def _estimate_table(estimates: list[JobEstimate]) -> tuple[list[str], list[str], list[str]]:
    """(head, rows, foot) of the estimates table."""
    total = totals(estimates)
    head = ["", "#### Estimates", "",
            "| job | examples | tokens (input + output) | tokens trained | steps | longest / "
            "limit | time | cost |", "|---|---|---|---|---|---|---|---|"]
    rows = [_estimate_row(e) for e in estimates]
    time = "unknown" if total.seconds is None else f"≈ {duration_text(total.seconds)}"
    cost = "–" if total.cost is None else f"**{cost_text(total.cost)}**"
    methods = sorted({e.tokens.method for e in estimates if e.tokens is not None})
    price = estimates[0].price
    priced = (f"Cost at {price:g} per million tokens trained." if price is not None else
              f"No price given (`--price-per-million-tokens` or `${PRICE_VARIABLE}`).")
    foot = [f"| **total** | | | **{'' if total.exact else '~'}{total.trained_tokens:,}** | | | "
            f"**{time}** | {cost} |", "",
            f"<sub>Tokens trained: tokens × epochs; ~ marks an estimate. Tokens "
            f"{'; '.join(_cell(m) for m in methods)}. Time: from the rate this backend measured "
            f"for the same base model. {priced}</sub>"]
    return head, rows, foot


def markdown(plan: Plan, limit: int = GITHUB_COMMENT_LIMIT,
             estimates: list[JobEstimate] | None = None) -> str:
    """A pull-request comment; past GitHub's size limit, unchanged rows go first, then the
    rest is summarised, never cut mid-line."""
    head = [f"### jobspec plan — `{plan.backend}`", "", f"**{summary(plan)}**", "",
            "| | job | action | tuned model | why |", "|---|---|---|---|---|"]
    rows = []
    ordered = sorted(plan.jobs, key=lambda j: j.action == UNCHANGED)
    for job_plan in ordered:
        rows.append(f"| {SYMBOLS[job_plan.action]} | `{_cell(job_plan.job.name)}` | "
                    f"{job_plan.action} | `{job_plan.model_name}` | "
                    f"{_cell('; '.join(job_plan.reasons))} |")
        for model in job_plan.superseded:
            rows.append(f"| - | `{_cell(job_plan.job.name)}` | superseded | `{model.name}` | "
                        "deleted by `apply --prune` |")
        for model in job_plan.foreign:
            rows.append(f"| · | `{_cell(job_plan.job.name)}` | {FOREIGN_ACTION} | "
                        f"`{model.name}` | {FOREIGN_NOTE} |")
    footer = ["", f"<sub>endpoint {plan.endpoint}</sub>"]
    tables = [([], rows, [], "| … | {} more rows not shown | | | |")]
    if estimates:
        e_head, e_rows, e_foot = _estimate_table(estimates)
        tables.append((e_head, e_rows, e_foot, "| … {} more jobs not shown | | | | | | | |"))
    fixed = head + footer + [line for t in tables for line in t[0] + t[2]]
    budget = limit - len("\n".join(fixed)) - 200 * len(tables)
    out = list(head)
    for t_head, t_rows, t_foot, more in tables:
        out += t_head
        for index, row in enumerate(t_rows):
            if budget - len(row) - 1 < 0:
                out.append(more.format(len(t_rows) - index))
                break
            out.append(row)
            budget -= len(row) + 1
        out += t_foot
    return "\n".join(out + footer) + "\n"
