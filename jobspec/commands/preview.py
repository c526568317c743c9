"""``jobspec data preview``: one of a job's examples as its backend will receive it, so that a
reviewer sees what a conversation trains (backends/preview.py makes the preview)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import data, errors, spec
from ..backends import registry
from ..backends.preview import ExamplePreview
from ..errors import UsageError
from .common import add_backend_arguments, open_backend

# Around the pieces the loss covers, in the rendered chat template.
TRAINED_START, TRAINED_END = "⟦", "⟧"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="JOB", help="a job file")
    parser.add_argument("--example", type=int, default=1, metavar="N",
                        help="which example, counted from 1 in the data file's order (default 1)")
    parser.add_argument("--validation", action="store_true",
                        help="an example of the job's validation_data, not its training data")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("--allow-outside-paths", action="store_true",
                        help="allow training data outside the repository")
    add_backend_arguments(parser)


def cmd_preview(args: argparse.Namespace) -> int:
    job = spec.load_job(args.file, allow_outside_paths=args.allow_outside_paths,
                        rules=registry.Rules(args.backend))
    source = job.validation_data if args.validation else job.training_data
    if source is None:
        raise UsageError(f"--validation: {job.path} has no validation_data (a validation_split "
                         "is drawn from the training data: preview those)")
    if args.example < 1:
        raise UsageError(f"--example {args.example}: examples are counted from 1")
    chosen, count = None, 0
    for count, example in enumerate(data.iter_examples(source), 1):
        if count == args.example:
            chosen = example
    if chosen is None:
        raise UsageError(f"--example {args.example}: {source.display_path} has {count} "
                         f"example{'s' if count != 1 else ''}")
    name = registry.choose(args.backend, [job])
    make_preview = registry.backend_type(name).preview
    assert make_preview is not None, f"the {name} backend has no preview"
    shown = make_preview(job, chosen, lambda: open_backend(args, [job]))
    where = str(chosen.where) if chosen.where is not None else source.display_path
    if args.format == "json":
        print(json.dumps(_as_json(shown, name, where, args.example, count), indent=2,
                         ensure_ascii=False))
    else:
        sys.stdout.write(_as_text(shown, name, where, args.example, count))
    return errors.EXIT_OK


def _as_json(shown: ExamplePreview, backend: str, where: str, number: int,
             count: int) -> dict[str, Any]:
    return {"backend": backend, "example": number, "examples": count, "where": where,
            "received": shown.received, "body": shown.body,
            "segments": [{"text": s.text, "trained": s.trained, "tokens": s.tokens}
                         for s in shown.segments],
            "tokens": shown.tokens, "trained_tokens": shown.trained_tokens,
            "exact": shown.exact, "method": shown.method}


def _as_text(shown: ExamplePreview, backend: str, where: str, number: int,
             count: int) -> str:
    lines = [f"{where}: example {number} of {count}, as the {backend} backend receives it: "
             f"{shown.received}", ""]
    if shown.segments:
        lines.append("".join(f"{TRAINED_START}{s.text}{TRAINED_END}" if s.trained else s.text
                             for s in shown.segments).rstrip("\n"))
    else:
        lines.append(json.dumps(shown.body, ensure_ascii=False, separators=(",", ":")))
    lines.append("")
    about = "" if shown.exact else "about "
    trained = ""
    if shown.trained_tokens is not None:
        covered = (f", marked {TRAINED_START} {TRAINED_END}" if shown.segments else "")
        trained = f", {about}{shown.trained_tokens} trained (the loss covers them{covered})"
    lines.append(f"{about}{shown.tokens} tokens{trained}; {shown.method}")
    return "\n".join(lines) + "\n"
