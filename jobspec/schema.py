"""The published job-file JSON Schema, and turning its violations into located messages.

A job is first checked by the schema compiled to Python (fastjsonschema, some twenty times faster
than jsonschema's validator): a job it passes has no violation to report. A job it refuses is
checked again by jsonschema, the reference, whose errors the messages are made from
(tests/test_schema_check.py keeps the two deciding alike). jsonschema is imported only then.
"""

from __future__ import annotations

import ast
import difflib
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastjsonschema

from .errors import ConfigError, Location
from .yamlload import FieldPath, Positions, format_path

SCHEMA_FILE = "jobspec.schema.json"


def _schema_path() -> Path:
    packaged = Path(__file__).parent / "_schemas" / SCHEMA_FILE  # inside a built wheel
    if packaged.exists():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas" / SCHEMA_FILE  # source checkout


@functools.cache
def job_schema() -> dict[str, Any]:
    return json.loads(_schema_path().read_text(encoding="utf-8"))


def schema_text() -> str:
    return _schema_path().read_text(encoding="utf-8")


if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError


@functools.cache
def _compiled() -> Callable[[Any], Any]:
    # Defaults are left out of the job (the loader fills them in), formats are not asserted
    # (jsonschema does not assert them either).
    return fastjsonschema.compile(job_schema(), use_default=False, use_formats=False)


def passes(data: Any) -> bool:
    """Whether ``data`` is a valid job by the compiled schema (False: ask jsonschema)."""
    try:
        _compiled()(data)
    except Exception:  # noqa: BLE001 - refused, or the generated code failed: jsonschema decides
        return False
    return True


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    import jsonschema  # noqa: PLC0415 - only for a job the compiled schema refuses

    schema = job_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {"object": "a mapping", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _message(error: ValidationError) -> str:
    kind = error.validator
    if kind == "pattern" and "x-pattern-message" in error.schema:
        return f"{_describe(error.instance)} {error.schema['x-pattern-message']}"
    if kind in ("type", "anyOf", "oneOf"):  # the last two: no form took a value of this type
        wanted = [e.validator_value for e in error.context] if error.context else \
            [error.validator_value]
        names = list(dict.fromkeys(n for w in wanted for n in ([w] if isinstance(w, str) else w)))
        readable = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return f"{_describe(error.instance)} is not {readable}"
    if kind == "const":
        return f"{_describe(error.instance)} is not supported; the only allowed value is {error.validator_value!r}"
    if kind == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value)
        return f"{_describe(error.instance)} is not one of the allowed values: {allowed}"
    if kind == "maxLength":
        return f"{_describe(error.instance)} is {len(error.instance)} characters, over the limit of {error.validator_value}"
    return error.message


def _unknown_fields(error: ValidationError, path: FieldPath, file: str,
                    positions: Positions) -> list[ConfigError]:
    allowed = sorted(error.schema.get("properties", {}))
    extras = [key for key in error.instance if key not in allowed]
    found = []
    for key in extras:
        message = f"unknown field {key!r}"
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.5)
        message += f" (did you mean {close[0]!r}?)" if close else f"; allowed fields: {', '.join(allowed)}"
        line, column = positions.of_key(path + (key,)) or (None, None)
        found.append(ConfigError(Location(file, line, column, format_path(path + (key,))), message))
    return found


def _closest_branch(error: ValidationError) -> ValidationError:
    """The error of the anyOf/oneOf branch that came closest. A branch of another type says
    least (``{patience: 0}`` is "not an integer" only to the integer form): the user wrote the
    form they meant, so its own error, "patience: 0 is less than the minimum of 1", is the one."""
    from jsonschema.exceptions import best_match  # noqa: PLC0415 - see _validator

    same_form = [e for e in error.context if not (e.validator == "type" and not e.relative_path)]
    if not same_form:
        return error  # no form takes a value of this type: the message names every form's type
    return best_match(same_form)


def schema_errors(data: Any, file: str, positions: Positions) -> list[ConfigError]:
    """Every schema violation in ``data``, each located at its YAML node, in file order."""
    if passes(data):
        return []
    found: list[ConfigError] = []
    for error in _validator().iter_errors(data):
        if error.context:  # anyOf/oneOf: the branch that came closest says the most
            error = _closest_branch(error)
        path: FieldPath = tuple(error.absolute_path)
        if error.validator == "additionalProperties":
            found.extend(_unknown_fields(error, path, file, positions))
            continue
        message = _message(error)
        if error.validator == "required":
            missing = ast.literal_eval(error.message.split(" is a required property")[0])
            path, message = path + (missing,), "is required"
        line, column = positions.of_value(path) or (None, None)
        found.append(ConfigError(Location(file, line, column, format_path(path)), message))
    found.sort(key=lambda e: (e.location.line or 0, e.location.column or 0))
    return found
