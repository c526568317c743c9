"""The ``jobspec`` command line: parsing arguments and exit codes. The commands live in
``jobspec.commands``; business rules live below them."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__, bugreport, errors
from .commands import apply, files, models, results
from .commands.common import add_backend_arguments, add_job_arguments
from .errors import ConfigError, Interrupted, JobSpecError, UsageError
from .backends.registry import BACKEND_VARIABLE, names


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad usage; jobspec keeps 2 for "changes pending" and uses 64."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(errors.EXIT_USAGE, f"{self.prog}: error: {message}\n")


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.main import serve  # noqa: PLC0415 - torch and friends load only for serve

    return serve(args)


def _jobs_command(commands: Any, name: str, summary: str,
                  add_own_arguments: Callable[[argparse.ArgumentParser], None],
                  handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    """A command over the job files in scope and their backend: their options, then its own."""
    command = commands.add_parser(name, help=summary)
    add_job_arguments(command)
    add_backend_arguments(command)
    add_own_arguments(command)
    command.set_defaults(handler=handler)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="jobspec", description="Declarative, GitOps-style LLM tuning jobs.")
    parser.add_argument("--version", action="version", version=f"jobspec {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    validate = commands.add_parser("validate", help="check job files and their training data")
    validate.add_argument("paths", nargs="*", metavar="PATH",
                          help="job files, directories or globs (default: jobs/ at the "
                               "repository root)")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    validate.add_argument("--allow-outside-paths", action="store_true",
                          help="allow training data outside the repository")
    validate.add_argument("--backend", choices=names(),
                          help="check the jobs against this backend's rules and limits "
                               f"(default: ${BACKEND_VARIABLE}, then each job's `backend`, "
                               "then local)")
    validate.set_defaults(handler=files.cmd_validate)

    show = commands.add_parser("show", help="print a job as it will be applied, with its identity")
    show.add_argument("file", metavar="FILE")
    show.add_argument("--format", choices=("yaml", "json"), default="yaml")
    show.add_argument("--allow-outside-paths", action="store_true")
    show.add_argument("--backend", choices=names(),
                      help="check the job against this backend's rules and limits "
                           f"(default: ${BACKEND_VARIABLE}, then the job's `backend`, then local)")
    show.set_defaults(handler=files.cmd_show)

    _jobs_command(commands, "plan", "show what apply would change, changing nothing",
                  apply.add_plan_arguments, apply.cmd_plan)
    do = _jobs_command(commands, "apply", "create the tuned models the job files declare",
                       apply.add_apply_arguments, apply.cmd_apply)
    do.set_defaults(parser=do)  # the resume command is derived from it
    _jobs_command(commands, "eval", "re-run eval prompts of ACTIVE models, no training",
                  results.add_report_arguments, results.cmd_eval)
    _jobs_command(commands, "report", "rebuild reports from the service's state",
                  results.add_report_arguments, results.cmd_report)

    get = commands.add_parser("get", help="list tuned models with state and progress")
    get.add_argument("names", nargs="*", metavar="NAME", help="job names or model ids")
    get.add_argument("-o", "--output", choices=("table", "json"), default="table")
    add_backend_arguments(get)
    get.set_defaults(handler=models.cmd_get)

    delete = commands.add_parser("delete", help="delete a job's tuned models")
    delete.add_argument("targets", nargs="+", metavar="NAME|FILE",
                        help="a job name, a job file, or a model's name (tunedModels/ID, "
                             "projects/.../tuningJobs/ID)")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--force", action="store_true",
                        help="also delete models named by their name that this workspace "
                             "does not own (another owner, none recorded, or not jobspec's)")
    add_backend_arguments(delete)
    delete.set_defaults(handler=models.cmd_delete)

    auth = commands.add_parser("auth", help="show which credentials would be used (never the secret)")
    add_backend_arguments(auth)
    auth.set_defaults(handler=models.cmd_auth)

    serve = commands.add_parser("serve", help="run the local tuning service (Gemini API "
                                "tuning surface, real LoRA training)")
    from .server.main import add_arguments  # noqa: PLC0415 - argument definitions only

    add_arguments(serve)
    serve.set_defaults(handler=cmd_serve)

    schema = commands.add_parser("schema", help="print the job-file JSON Schema")
    schema.set_defaults(handler=files.cmd_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(words)
    try:
        return args.handler(args)
    except UsageError as exc:
        print(f"jobspec: error: {exc}", file=sys.stderr)
        return errors.EXIT_USAGE
    except ConfigError as exc:
        files.print_config_errors(exc, "text")
        return errors.EXIT_FAILURE
    except JobSpecError as exc:
        kind = type(exc).__name__.replace("Error", " error").replace("Transient", "").replace(
            "Permanent", "").strip().lower()
        print(f"jobspec: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Interrupted):
        print("jobspec: interrupted", file=sys.stderr)
        return errors.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - anything else is jobspec's bug, reported as one
        return _report_bug(words, exc)


def _report_bug(words: list[str], error: Exception) -> int:
    written = bugreport.write(words, error)
    where = (f"the traceback is in {written}" if written is not None
             else "the traceback follows")
    print(f"jobspec: internal error (a bug in jobspec {__version__}, not in your files): "
          f"{type(error).__name__}: {error}; {where}; please report it", file=sys.stderr)
    if written is None:
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    return errors.EXIT_BUG
