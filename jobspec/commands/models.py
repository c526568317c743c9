"""`jobspec get`, `jobspec delete` and `jobspec auth`: looking at and removing tuned models."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import errors, ownership, spec
from ..backends import registry
from ..backends.base import RemoteModel
from ..errors import UsageError
from .common import backend_options, describe, open_backend


def _rows(models: list[RemoteModel], owner_id: str) -> list[dict]:
    rows = []
    for model in models:
        last = model.snapshots[-1] if model.snapshots else None
        standing = ownership.standing(model, owner_id)
        rows.append({
            "name": model.name, "state": model.state, "state_label": model.state_label,
            "base_model": model.base_model,
            "job": model.job, "fingerprint": model.fingerprint, "owner": model.owner,
            "owned": standing.owned, "ownership": standing.label,
            "step": last.step if last else None, "epoch": last.epoch if last else None,
            "loss": last.mean_loss if last else None, "created": model.create_time,
            "stats": model.stats.as_dict() if model.stats else None, "error": model.error,
            "device": model.device,  # what trained it: e.g. a Ray node, where the service says
        })
    return rows


def cmd_get(args: argparse.Namespace) -> int:
    backend = open_backend(args, [])
    try:
        models = backend.list_models()
    finally:
        backend.close()
    if args.names:
        wanted = set(args.names)
        models = [m for m in models if m.model_id in wanted or m.name in wanted
                  or m.job in wanted]
    rows = _rows(models, backend.owner.id)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return errors.EXIT_OK
    print(f"{describe(backend)}; owner {backend.owner}", file=sys.stderr)
    header = ("NAME", "STATE", "STEP", "LOSS", "BASE MODEL", "JOB", "OWNER", "TRAINED ON")
    table = [header] + [(r["name"], r["state_label"], "" if r["step"] is None else str(r["step"]),
                         "" if r["loss"] is None else f"{r['loss']:.4f}", r["base_model"],
                         r["job"] or "-", r["ownership"], r["device"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return errors.EXIT_OK


def _is_model_name(target: str) -> bool:
    """A tuned model's resource name (``tunedModels/ID``, ``projects/.../tuningJobs/ID``), as
    opposed to a job name (which has no slash) or a job file."""
    return "/" in target and not target.endswith((".yaml", ".yml"))


def cmd_delete(args: argparse.Namespace) -> int:
    job_names: set[str] = set()
    model_names: set[str] = set()
    job_files = []  # their backend settings (a Vertex project, say) apply to the deletion
    for target in args.targets:
        if os.path.isfile(target):
            # Its own `backend` section is checked, not the rules of where it would be sent.
            job_files.append(spec.load_job(target, rules=registry.FileRules()))
            job_names.add(job_files[-1].name)
        elif _is_model_name(target):
            model_names.add(target)
        else:
            job_names.add(target)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("delete removes models: add --yes, or run it in a terminal to confirm")
    backend = open_backend(args, job_files)
    try:
        owner_id = backend.owner.id
        doomed, kept = [], []
        listed = backend.list_models()
        # A model named by its name may be one the listing leaves out (a backend may list only
        # this workspace's): read it directly.
        missing = model_names - {m.name for m in listed}
        found = [m for m in (backend.get_model(name) for name in sorted(missing)) if m]
        for model in listed + found:
            named = model.name in model_names
            if not named and model.job not in job_names:
                continue
            decision = ownership.delete(model, owner_id, named, args.force)
            (doomed if decision.allowed else kept).append((model, named, decision.reason))
        for model, _, why in kept:
            print(f"left alone {model.name} ({model.state}): {why}", file=sys.stderr)
        # Other workspaces' models of a named job are left alone as a matter of course; a model
        # named by its id and refused means the command did not do what it was asked.
        refused_named = any(named for _, named, _ in kept)
        if not doomed:
            print("Nothing to delete.", file=sys.stderr)
            return errors.EXIT_FAILURE if refused_named else errors.EXIT_OK
        listing = "\n".join(f"  {m.name} ({m.state})" for m, _, _ in doomed)
        if not args.yes:
            reply = input(f"Delete these models?\n{listing}\nType 'yes' to confirm: ")
            if reply.strip() != "yes":
                print("Nothing deleted.", file=sys.stderr)
                return errors.EXIT_FAILURE
        for model, _, _ in doomed:
            print(backend.remove(model), file=sys.stderr)
    finally:
        backend.close()
    return errors.EXIT_FAILURE if refused_named else errors.EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    for line in registry.describe(args.backend, backend_options(args)):
        print(line)
    return errors.EXIT_OK
