"""The command line that gives a command its parsed options again, derived from its parser.

A command that tells the user how to carry on (apply, interrupted, prints how to resume) repeats
every option the user gave, an option added later included, without a list of options to keep up
to date beside the parser.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from typing import Any


def words(parser: argparse.ArgumentParser, args: argparse.Namespace, *,
          leave_out: Collection[str] = ()) -> list[str]:
    """``parser``'s command (its prog), then the words that parse to ``args`` again: the
    positionals, each option whose value is not its default, then each flag given, each group
    in the order the parser declares them. ``leave_out``: dests not to repeat."""
    positionals: list[str] = []
    options: list[str] = []
    flags: list[str] = []
    for action in parser._actions:  # noqa: SLF001 - argparse exposes its actions no other way
        if argparse.SUPPRESS in (action.dest, action.default) or action.dest in leave_out:
            continue  # --help, --version
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None or value == []:
            continue  # not given (or given as its default)
        if not action.option_strings:
            positionals += [_word(v) for v in _listed(value)]
            continue
        option = next((o for o in action.option_strings if o.startswith("--")),
                      action.option_strings[0])
        if action.nargs == 0:  # store_true, store_false, store_const: the flag gives the value
            if action.const is None or value != action.const:
                raise TypeError(f"{option}: cannot repeat a value this flag does not give "
                                f"({value!r})")
            flags.append(option)
        elif action.nargs is None and isinstance(value, list):  # append: once per value
            for item in value:
                options += [option, _word(item)]
        else:
            options += [option, *(_word(v) for v in _listed(value))]
    return [*parser.prog.split(), *positionals, *options, *flags]


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _word(value: Any) -> str:
    """A parsed value as the user can type it back: a number in its shortest exact form."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)
