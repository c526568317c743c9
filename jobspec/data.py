"""Training examples: where they come from, and reading them one at a time.

Examples are streamed, never read whole, for the formats that allow it (JSONL and CSV), so
validating or fingerprinting a large file takes memory that does not grow with its size. JSON and
YAML files must be parsed whole, and have a lower size limit for that reason.

While streaming, the size of the create request that will carry the examples is added up (the
Gemini API's create request inlines every one), so that a job its backend would refuse is
reported where the examples are read: by validate, plan and apply alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from pathlib import Path

from .datareaders import READERS, FieldPositions, Records
from .errors import ConfigError, ConfigErrors, Location
from .utf8 import surrogate_problem

# The Gemini API's published limits for one tuning example (see shared/reference §10).
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000

MAX_STREAMED_BYTES = 2 * 1024**3  # .jsonl, .csv
MAX_WHOLE_FILE_BYTES = 64 * 1024**2  # .json, .yaml, .yml: parsed in one piece
MAX_ERRORS_PER_FILE = 50

FORMATS = (".jsonl", ".json", ".csv", ".yaml", ".yml")
DEFAULT_INPUT_FIELD = "text_input"
DEFAULT_OUTPUT_FIELD = "output"


_MIB, _MB = 2**20, 10**6


@dataclass(frozen=True)
class RequestLimit:
    """The largest create request a backend accepts, as whoever sets it states it."""

    backend: str
    max_bytes: int
    unit_bytes: int  # sizes are shown in the unit the limit is stated in
    unit: str
    stated_by: str

    def show(self, size: int) -> str:
        return f"{size / self.unit_bytes:.1f} {self.unit}"

    def stated(self) -> str:
        return f"{self.max_bytes / self.unit_bytes:g} {self.unit}"


CREATE_REQUEST_LIMITS = {
    # The local service refuses larger request bodies (jobspec/server/app.py MAX_BODY_BYTES).
    "local": RequestLimit("local", 32 * _MIB, _MIB, "MiB",
                          "the local service's limit on a request body"),
    # Google states no size for a tunedModels.create request; the one figure it publishes for
    # tuning data is a 4 MB dataset (shared/reference/gemini-tuning-api.md §10).
    "gemini": RequestLimit("gemini", 4 * _MB, _MB, "MB",
                           "the Gemini API's published limit for tuning data"),
    # vertex has no entry: it uploads the examples to Cloud Storage as a file, not in a request.
}

# Room for what a create request holds besides the examples: display name (<= 40 characters),
# description (<= 10,000), jobspec's marker, base model and hyperparameters.
CREATE_REQUEST_ENVELOPE_BYTES = 64 * 1024
# Each example travels as {"textInput":...,"output":...}, comma-separated (JSON, UTF-8, compact,
# non-ASCII unescaped: what httpx sends).
_EXAMPLE_JSON_BYTES = len('{"textInput":,"output":},')


@dataclass(frozen=True)
class Example:
    text_input: str
    output: str
    # The record's place in its data file (or job file, for inline examples), so that a problem
    # the backend finds in examples[i] can be shown against the line the user wrote.
    where: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class DataSource:
    """Where a job's examples are: a file (with field names) or a list written in the job file."""

    display_path: str  # as the user should see it in messages
    path: Path | None = None
    input_field: str = DEFAULT_INPUT_FIELD
    output_field: str = DEFAULT_OUTPUT_FIELD
    inline: tuple[tuple[Location, object, FieldPositions], ...] | None = None  # (where, raw
    # record, where each of its fields is)
    # What the job's backend accepts in one create request, and where the job names its examples
    # (where a request that is too large is reported). Neither changes which examples these are.
    request_limit: RequestLimit | None = field(default=None, compare=False)
    declared_at: Location | None = field(default=None, compare=False)

    @property
    def format(self) -> str:
        return "inline" if self.path is None else self.path.suffix.lower()


def _bytes(size: float) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB".replace(".0 ", " ")


def check_file(source: DataSource) -> None:
    """Fail early, with the limit or problem named, if the examples file cannot be read at all."""
    assert source.path is not None
    where = Location(source.display_path)
    if source.format not in FORMATS:
        raise ConfigError(where, f"unsupported training data format {source.path.suffix!r}; "
                          f"use one of {', '.join(FORMATS)}")
    try:
        size = source.path.stat().st_size
        with open(source.path, "rb"):
            pass
    except FileNotFoundError:
        raise ConfigError(where, "training data file not found") from None
    except IsADirectoryError:
        raise ConfigError(where, "training data path is a directory, not a file") from None
    except OSError as exc:
        raise ConfigError(where, f"cannot read training data file: {exc.strerror}") from None
    limit = MAX_STREAMED_BYTES if source.format in (".jsonl", ".csv") else MAX_WHOLE_FILE_BYTES
    if size > limit:
        raise ConfigError(where, f"training data file is {_bytes(size)}, over the limit of "
                          f"{_bytes(limit)} for {source.format} files")
    if size == 0:
        raise ConfigError(where, "training data file is empty")


_MISSING = object()


def _example(where: Location, record: object, source: DataSource, may_need_escapes: bool,
             fields: FieldPositions | None) -> tuple[Example, int]:
    """The example in ``record``, and the bytes it adds to a create request."""
    if not isinstance(record, dict):
        raise ConfigError(where, f"expected an object with {source.input_field!r} and "
                          f"{source.output_field!r}, got {type(record).__name__}")
    values = []
    size = _EXAMPLE_JSON_BYTES
    for name, limit in ((source.input_field, MAX_INPUT_CHARS),
                        (source.output_field, MAX_OUTPUT_CHARS)):
        value = record.get(name, _MISSING)
        if value is _MISSING:
            problem = "missing"
        elif not isinstance(value, str):
            problem = f"must be a string, got {_json_type(value)}"
        elif not value or value.isspace():
            problem = "must not be empty"
        elif len(value) > limit:
            problem = f"is {len(value):,} characters, over the limit of {limit:,}"
        else:
            try:
                size += _json_string_bytes(value, may_need_escapes)
                problem = None
            except UnicodeEncodeError:  # a lone surrogate, from a "\ud83d" escape in JSON
                problem = surrogate_problem(value) or "cannot be sent as UTF-8"
        if problem is not None:
            line, column = fields[name] if fields and name in fields else (where.line,
                                                                           where.column)
            raise ConfigError(Location(where.path, line, column, _join(where.field, name)),
                              problem)
        values.append(value)
    return Example(values[0], values[1], where), size


# What JSON escapes in a string (ensure_ascii=False): the quote, the backslash, control characters.
_ESCAPED_BYTES = b'"\\' + bytes(range(0x20))


def _json_string_bytes(value: str, may_need_escapes: bool) -> int:
    """Bytes of ``value`` as a JSON string in UTF-8; UnicodeEncodeError if it has none."""
    if value.isascii():
        size = len(value)
        if may_need_escapes:
            raw = value.encode("ascii")
            if len(raw.translate(None, _ESCAPED_BYTES)) != size:
                return len(encode_basestring(value))
        return size + 2
    raw = value.encode("utf-8")
    if may_need_escapes and len(raw.translate(None, _ESCAPED_BYTES)) != len(raw):
        return len(encode_basestring(value).encode("utf-8"))
    return len(raw) + 2


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def iter_examples(source: DataSource) -> Iterator[Example]:
    """Yield each example in order; raise ConfigErrors listing every bad one at the end, and
    the create request's size if the backend's limit is known and it is over it."""
    errors: list[ConfigError] = []
    count = 0
    request_bytes = CREATE_REQUEST_ENVELOPE_BYTES
    if source.inline is not None:
        records: Records = ((where, record, True, fields)
                            for where, record, fields in source.inline)
    else:
        check_file(source)
        records = READERS[source.format](source)
    for where, record, may_need_escapes, fields in records:
        if isinstance(record, ConfigError):
            errors.append(record)
        else:
            try:
                example, size = _example(where, record, source, may_need_escapes, fields)
            except ConfigError as exc:
                errors.append(exc)
            else:
                count += 1
                request_bytes += size
                yield example
                continue
        if len(errors) >= MAX_ERRORS_PER_FILE:
            errors.append(ConfigError(Location(source.display_path),
                                      f"stopped after {MAX_ERRORS_PER_FILE} errors"))
            break
    limit = source.request_limit
    if limit is not None and request_bytes > limit.max_bytes:
        errors.append(ConfigError(
            source.declared_at or Location(source.display_path),
            f"the examples make a create request of {limit.show(request_bytes)}; the "
            f"{limit.backend} backend accepts at most {limit.stated()} "
            f"({limit.stated_by}); use fewer or shorter examples"))
    if errors:
        raise ConfigErrors(errors)
    if count == 0:
        raise ConfigError(Location(source.display_path), "no training examples; at least 1 is needed")


def count_examples(source: DataSource) -> int:
    """Read every example (validating each) and return how many there are."""
    return sum(1 for _ in iter_examples(source))


def is_within(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True


