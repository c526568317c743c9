"""Showing a plan: text like Terraform's, JSON, and Markdown for a pull-request comment."""

from __future__ import annotations

from typing import Any

from ..backends.base import RemoteModel
from ..reconcile import CREATE, FAILED_ACTION, IN_PROGRESS, RECREATE, UNCHANGED, JobPlan, Plan

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


def _foreign(model: RemoteModel) -> str:
    who = "no recorded owner" if model.owner is None else f"owner {model.owner}"
    return f"belongs to another workspace ({who}): left alone"


def text(plan: Plan) -> str:
    width = max((len(j.job.name) for j in plan.jobs), default=0)
    lines = [f"Backend: {plan.backend} ({plan.endpoint}); owner {plan.owner}", ""]
    for job_plan in plan.jobs:
        lines.append(f"  {SYMBOLS[job_plan.action]} {job_plan.job.name:<{width}}  "
                     f"{job_plan.action} {_detail(job_plan)}")
        if job_plan.reasons:
            lines.append(f"      because: {'; '.join(job_plan.reasons)}")
        for model in job_plan.superseded:
            lines.append(f"  - {job_plan.job.name:<{width}}  superseded {model.name} "
                         "(apply --prune deletes it)")
        for model in job_plan.foreign:
            lines.append(f"  · {job_plan.job.name:<{width}}  {model.name} {_foreign(model)}")
    lines += ["", summary(plan)]
    return "\n".join(lines)


def as_json(plan: Plan) -> dict[str, Any]:
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
        } for j in plan.jobs],
        "summary": {"create": plan.count(CREATE) + plan.count(RECREATE),
                    "unchanged": plan.count(UNCHANGED), "in_progress": plan.count(IN_PROGRESS),
                    "failed": plan.count(FAILED_ACTION), "superseded": len(plan.superseded)},
        "changes_pending": plan.has_changes,
    }


def _cell(value: str) -> str:
    return value.replace("|", "\\|").replace("\n", " ")


def markdown(plan: Plan, limit: int = GITHUB_COMMENT_LIMIT) -> str:
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
            rows.append(f"| · | `{_cell(job_plan.job.name)}` | other workspace | `{model.name}` | "
                        "left alone |")
    footer = ["", f"<sub>endpoint {plan.endpoint}</sub>"]
    out = list(head)
    budget = limit - len("\n".join(head + footer)) - 200
    for index, row in enumerate(rows):
        if budget - len(row) - 1 < 0:
            out.append(f"| … | {len(rows) - index} more rows not shown | | | |")
            break
        out.append(row)
        budget -= len(row) + 1
    return "\n".join(out + footer) + "\n"
