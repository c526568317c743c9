"""Commands about job files alone: validate, show, schema. Nothing here talks to a service."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from .. import data, errors, spec
from ..backends import registry
from ..conversation import Conversation, to_messages
from ..datarecords import TEXT
from ..errors import ConfigError, ConfigErrors
from ..evaluate import warnings as eval_warnings
from ..identity import identify
from ..schema import schema_text
from .common import job_paths


def print_config_errors(exc: ConfigError, output_format: str) -> None:
    problems = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    if output_format == "json":
        print(json.dumps([p.as_dict() for p in problems], indent=2, ensure_ascii=False))
    else:
        for problem in problems:
            print(ConfigError.__str__(problem), file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        jobs = spec.load_jobs(job_paths(args), allow_outside_paths=args.allow_outside_paths,
                              check_examples=True, rules=registry.Rules(args.backend))
    except ConfigError as exc:
        print_config_errors(exc, args.format)
        count = len(exc.errors) if isinstance(exc, ConfigErrors) else 1
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return errors.EXIT_FAILURE
    if args.format == "json":
        print("[]")
    else:
        for job in jobs:
            print(f"{job.path}: ok ({job.name})")
    for job in jobs:  # valid, but unable to do what it says: said, not failed
        for field_path, message in eval_warnings(job):
            where = job.at(*field_path)
            print(f"{where}: {where.field}: warning: {message}", file=sys.stderr)
    return errors.EXIT_OK


def resolved_job(job: spec.Job, chosen_backend: str | None = None) -> dict[str, Any]:
    """The job as jobspec will apply it: defaults filled in, with its identity."""
    identity = identify(job)
    training = _data_source(job.training_data)
    training["example_count"] = identity.example_count
    if job.validation_split is not None:  # equal examples stay on one side (split.draw)
        training["held_out"] = identity.held_out
    resolved: dict[str, Any] = {
        "name": job.name,
        "file": job.path,
        "display_name": job.display_name,
        "description": job.description,
        "base_model": job.base_model,
        "system_instruction": job.system_instruction,
        "tuning_mode": job.tuning_mode,  # shown when the job file gives it
        "hyperparameters": job.hyperparameters.as_dict(),
        "training_data": training,
        "validation_data": (_data_source(job.validation_data)
                            if job.validation_data is not None else None),
        "validation_split": job.validation_split,
        "early_stopping": job.early_stopping,
        "resources": ({k: v for k, v in vars(job.resources).items() if v is not None}
                      if job.resources is not None else None),
        "backend": registry.in_effect(job.backend.type if job.backend else None, chosen_backend),
        "fingerprint": identity.fingerprint,
        "tuned_model_id": identity.tuned_model_id,
    }
    if job.eval is not None:
        resolved["eval"] = {
            "prompts": [_prompt(p) for p in job.eval.prompts],
            "min_pass_rate": job.eval.min_pass_rate,
            "compare_base": job.eval.compare_base,
            "require_improvement": job.eval.require_improvement,
            "significance": job.eval.significance,
            "samples": job.eval.samples,
            "generation_config": job.eval.generation_config,
        }
    return {k: v for k, v in resolved.items() if v is not None}


def _data_source(source: data.DataSource) -> dict[str, Any]:
    form = data.source_form(source)  # text, contents or messages
    if source.path is None:
        return {"inline": True, "form": form}
    shown: dict[str, Any] = {"path": source.display_path, "format": source.format.lstrip("."),
                             "form": form}
    if form == TEXT:
        shown.update(input_field=source.input_field, output_field=source.output_field)
    return shown


def _prompt(prompt: spec.EvalPrompt) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    if prompt.system is not None:
        shown["system"] = prompt.system
    if prompt.history:
        shown["history"] = to_messages(Conversation(prompt.history))["messages"]
    return {**shown, "input": prompt.input, "expect": prompt.expect.as_dict()}


def cmd_show(args: argparse.Namespace) -> int:
    try:
        job = spec.load_job(args.file, allow_outside_paths=args.allow_outside_paths,
                            rules=registry.Rules(args.backend))
        resolved = resolved_job(job, args.backend)
    except ConfigError as exc:
        print_config_errors(exc, "text")
        return errors.EXIT_FAILURE
    if args.format == "json":
        print(json.dumps(resolved, indent=2, ensure_ascii=False))
    else:
        print(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), end="")
    return errors.EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return errors.EXIT_OK
