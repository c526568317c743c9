"""The ``jobspec`` command line: parsing arguments, printing, exit codes. No business rules here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import yaml

from . import __version__, errors, spec
from .errors import ConfigError, ConfigErrors, JobSpecError, UsageError
from .identity import identify
from .schema import schema_text


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; jobspec keeps 2 for "changes pending" and uses 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(errors.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _print_config_errors(exc: ConfigError, output_format: str) -> None:
    problems = exc.errors if isinstance(exc, ConfigErrors) else [exc]
    if output_format == "json":
        print(json.dumps([p.as_dict() for p in problems], indent=2, ensure_ascii=False))
    else:
        for problem in problems:
            print(ConfigError.__str__(problem), file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    paths = spec.expand_paths(args.paths or ["jobs/"])
    if not paths:
        raise UsageError(f"no job files (*.yaml, *.yml) in {' '.join(args.paths or ['jobs/'])}")
    try:
        jobs = spec.load_jobs(paths, allow_outside_paths=args.allow_outside_paths,
                              check_examples=True)
    except ConfigError as exc:
        _print_config_errors(exc, args.format)
        count = len(exc.errors) if isinstance(exc, ConfigErrors) else 1
        print(f"{count} problem{'s' if count != 1 else ''} found", file=sys.stderr)
        return errors.EXIT_FAILURE
    if args.format == "json":
        print("[]")
    else:
        for job in jobs:
            print(f"{job.path}: ok ({job.name})")
    return errors.EXIT_OK


def resolved_job(job: spec.Job) -> dict[str, Any]:
    """The job as jobspec will apply it: defaults filled in, with its identity."""
    identity = identify(job)
    source = job.training_data
    training: dict[str, Any]
    if source.path is None:
        training = {"inline": True}
    else:
        training = {"path": source.display_path, "format": source.format.lstrip("."),
                    "input_field": source.input_field, "output_field": source.output_field}
    training["example_count"] = identity.example_count
    resolved: dict[str, Any] = {
        "name": job.name,
        "file": job.path,
        "display_name": job.display_name,
        "description": job.description,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters.as_dict(),
        "training_data": training,
        "backend": (job.backend.type if job.backend else "local"),
        "fingerprint": identity.fingerprint,
        "tuned_model_id": identity.tuned_model_id,
    }
    if job.eval is not None:
        resolved["eval"] = {
            "prompts": [{"input": p.input, "expect": p.expect.as_dict()} for p in job.eval.prompts],
            "min_pass_rate": job.eval.min_pass_rate,
            "compare_base": job.eval.compare_base,
            "generation_config": job.eval.generation_config,
        }
    return {k: v for k, v in resolved.items() if v is not None}


def cmd_show(args: argparse.Namespace) -> int:
    try:
        job = spec.load_job(args.file, allow_outside_paths=args.allow_outside_paths)
        resolved = resolved_job(job)
    except ConfigError as exc:
        _print_config_errors(exc, "text")
        return errors.EXIT_FAILURE
    if args.format == "json":
        print(json.dumps(resolved, indent=2, ensure_ascii=False))
    else:
        print(yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True), end="")
    return errors.EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.main import serve  # noqa: PLC0415

    return serve(args)


def cmd_schema(args: argparse.Namespace) -> int:
    print(schema_text(), end="")
    return errors.EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobspec", description="Declarative, GitOps-style LLM tuning jobs.")
    parser.add_argument("--version", action="version", version=f"jobspec {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    validate = commands.add_parser("validate", help="check job files and their training data")
    validate.add_argument("paths", nargs="*", metavar="PATH",
                          help="job files, directories or globs (default: jobs/)")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--allow-outside-paths", action="store_true",
                          help="allow training data outside the repository")
    validate.set_defaults(handler=cmd_validate)

    show = commands.add_parser("show", help="print a job as it will be applied, with its identity")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    show.add_argument("--allow-outside-paths", action="store_true")
    show.set_defaults(handler=cmd_show)

    serve = commands.add_parser("serve", help="run the local tuning service (Gemini API "
                                "tuning surface, real LoRA training)")
    from .server.main import add_arguments  # noqa: PLC0415 - the server has no heavy imports here

    add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)

    schema = commands.add_parser("schema", help="print the job-file JSON Schema")
    schema.set_defaults(handler=cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"jobspec: error: {exc}", file=sys.stderr)
        return errors.EXIT_USAGE
    except ConfigError as exc:
        _print_config_errors(exc, "text")
        return errors.EXIT_FAILURE
    except JobSpecError as exc:
        print(f"jobspec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("jobspec: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED


__all__ = ["main", "build_parser"]
