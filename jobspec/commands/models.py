"""`jobspec get`, `jobspec delete` and `jobspec auth`: looking at and removing tuned models."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .. import auth, errors, spec
from ..backends.base import RemoteModel
from ..backends.gemini import GOOGLE_ENDPOINT
from ..localservice import URL_VARIABLE
from ..errors import UsageError
from .common import choose_backend, describe, open_backend


def _rows(models: list[RemoteModel]) -> list[dict]:
    rows = []
    for model in models:
        managed = model.managed
        last = model.snapshots[-1] if model.snapshots else None
        rows.append({
            "name": model.name, "state": model.state, "base_model": model.base_model,
            "job": managed[0] if managed else None,
            "step": last.step if last else None, "epoch": last.epoch if last else None,
            "loss": last.mean_loss if last else None, "created": model.create_time,
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
                  or (m.managed and m.managed[0] in wanted)]
    rows = _rows(models)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return errors.EXIT_OK
    print(describe(backend), file=sys.stderr)
    header = ("NAME", "STATE", "STEP", "LOSS", "BASE MODEL", "JOB")
    table = [header] + [(r["name"], r["state"], "" if r["step"] is None else str(r["step"]),
                         "" if r["loss"] is None else f"{r['loss']:.4f}", r["base_model"],
                         r["job"] or "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return errors.EXIT_OK


def cmd_delete(args: argparse.Namespace) -> int:
    job_names: set[str] = set()
    model_ids: set[str] = set()
    for target in args.targets:
        if os.path.isfile(target):
            job_names.add(spec.load_job(target).name)
        elif target.startswith("tunedModels/"):
            model_ids.add(target.removeprefix("tunedModels/"))
        else:
            job_names.add(target)
    if not args.yes and not sys.stdin.isatty():
        raise UsageError("delete removes models: add --yes, or run it in a terminal to confirm")
    backend = open_backend(args, [])
    try:
        doomed = [m for m in backend.list_models() if m.model_id in model_ids
                  or (m.managed and m.managed[0] in job_names)]
        if not doomed:
            print("Nothing to delete.", file=sys.stderr)
            return errors.EXIT_OK
        listing = "\n".join(f"  {m.name} ({m.state})" for m in doomed)
        if not args.yes:
            reply = input(f"Delete these models?\n{listing}\nType 'yes' to confirm: ")
            if reply.strip() != "yes":
                print("Nothing deleted.", file=sys.stderr)
                return errors.EXIT_FAILURE
        for model in doomed:
            backend.delete(model.model_id)
            print(f"deleted {model.name}", file=sys.stderr)
    finally:
        backend.close()
    return errors.EXIT_OK


def cmd_auth(args: argparse.Namespace) -> int:
    name = choose_backend(args, [])
    credentials = auth.resolve(name)
    endpoint = args.endpoint or (GOOGLE_ENDPOINT if name == "gemini" else
                                 os.environ.get(URL_VARIABLE, "the embedded local service"))
    print(f"backend: {name}")
    print(f"endpoint: {endpoint}")
    print(f"credentials: {credentials.method}")
    if credentials.quota_project:
        print(f"quota project: {credentials.quota_project}")
    return errors.EXIT_OK
