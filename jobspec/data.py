"""Training examples: where they come from, and reading them one at a time.

Examples are streamed, never read whole, for the formats that allow it (JSONL and CSV), so
validating or fingerprinting a large file takes memory that does not grow with its size. JSON and
YAML files must be parsed whole, and have a lower size limit for that reason.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, ConfigErrors, Location

# The Gemini API's published limits for one tuning example (see shared/reference §10).
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000

MAX_STREAMED_BYTES = 2 * 1024**3  # .jsonl, .csv
MAX_WHOLE_FILE_BYTES = 64 * 1024**2  # .json, .yaml, .yml: parsed in one piece
MAX_ERRORS_PER_FILE = 50

FORMATS = (".jsonl", ".json", ".csv", ".yaml", ".yml")
DEFAULT_INPUT_FIELD = "text_input"
DEFAULT_OUTPUT_FIELD = "output"


@dataclass(frozen=True)
class Example:
    text_input: str
    output: str


@dataclass(frozen=True)
class DataSource:
    """Where a job's examples are: a file (with field names) or a list written in the job file."""

    display_path: str  # as the user should see it in messages
    path: Path | None = None
    input_field: str = DEFAULT_INPUT_FIELD
    output_field: str = DEFAULT_OUTPUT_FIELD
    inline: tuple[tuple[Location, object], ...] | None = None  # (where, raw record)

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


def _example(where: Location, record: object, source: DataSource) -> Example:
    if not isinstance(record, dict):
        raise ConfigError(where, f"expected an object with {source.input_field!r} and "
                          f"{source.output_field!r}, got {type(record).__name__}")
    values = []
    for name, limit in ((source.input_field, MAX_INPUT_CHARS),
                        (source.output_field, MAX_OUTPUT_CHARS)):
        field_where = Location(where.path, where.line, where.column, _join(where.field, name))
        if name not in record:
            raise ConfigError(field_where, "missing")
        value = record[name]
        if not isinstance(value, str):
            raise ConfigError(field_where, f"must be a string, got {_json_type(value)}")
        if not value.strip():
            raise ConfigError(field_where, "must not be empty")
        if len(value) > limit:
            raise ConfigError(field_where, f"is {len(value):,} characters, over the limit of "
                              f"{limit:,}")
        values.append(value)
    return Example(*values)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _json_type(value: object) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _records(source: DataSource) -> Iterator[tuple[Location, object]]:
    """Yield (where, raw record) for each record of the file, with the data file's own line."""
    assert source.path is not None
    display = source.display_path
    fmt = source.format
    if fmt == ".jsonl":
        with open(source.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    column = exc.pos + 1 if exc.lineno == 1 else len(raw.rstrip(b"\r\n")) + 1
                    yield Location(display, number, column), ConfigError(
                        Location(display, number, column), f"invalid JSON: {exc.msg}")
                    continue
                except UnicodeDecodeError:
                    yield Location(display, number), ConfigError(
                        Location(display, number), "not valid UTF-8")
                    continue
                yield Location(display, number), record
    elif fmt == ".csv":
        with open(source.path, newline="", encoding="utf-8-sig", errors="strict") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            for name in (source.input_field, source.output_field):
                if name not in header:
                    yield Location(display, 1), ConfigError(
                        Location(display, 1), f"CSV header has no column {name!r} "
                        f"(columns: {', '.join(header) or 'none'})")
                    return
            start = reader.line_num + 1
            for row in reader:
                if None in row:
                    yield Location(display, start), ConfigError(
                        Location(display, start), "row has more fields than the header")
                else:
                    yield Location(display, start), row
                start = reader.line_num + 1
    elif fmt == ".json":
        try:
            records = json.loads(source.path.read_bytes())
        except json.JSONDecodeError as exc:
            yield Location(display), ConfigError(
                Location(display, exc.lineno, exc.colno), f"invalid JSON: {exc.msg}")
            return
        except UnicodeDecodeError:
            yield Location(display), ConfigError(Location(display), "not valid UTF-8")
            return
        if not isinstance(records, list):
            yield Location(display), ConfigError(Location(display, 1, 1),
                                                 "expected a JSON array of examples")
            return
        for index, record in enumerate(records):
            yield Location(display, field=f"[{index}]"), record
    else:  # .yaml / .yml
        from .yamlload import load_yaml  # noqa: PLC0415 - only YAML data needs it

        try:
            text = source.path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            yield Location(display), ConfigError(Location(display), "not valid UTF-8")
            return
        try:
            loaded = load_yaml(text, display)
        except ConfigError as exc:
            yield exc.location, exc
            return
        if not isinstance(loaded.data, list):
            yield Location(display, 1, 1), ConfigError(Location(display, 1, 1),
                                                       "expected a YAML list of examples")
            return
        for index, record in enumerate(loaded.data):
            line, column = loaded.positions.values[(index,)]
            yield Location(display, line, column), record


def iter_examples(source: DataSource) -> Iterator[Example]:
    """Yield each example in order; raise ConfigErrors listing every bad one at the end."""
    errors: list[ConfigError] = []
    count = 0
    if source.inline is not None:
        pairs: Iterator[tuple[Location, object]] = iter(source.inline)
    else:
        check_file(source)
        pairs = _records(source)
    try:
        for where, record in pairs:
            if isinstance(record, ConfigError):
                errors.append(record)
            else:
                try:
                    example = _example(where, record, source)
                except ConfigError as exc:
                    errors.append(exc)
                else:
                    count += 1
                    yield example
                    continue
            if len(errors) >= MAX_ERRORS_PER_FILE:
                errors.append(ConfigError(Location(source.display_path),
                                          f"stopped after {MAX_ERRORS_PER_FILE} errors"))
                break
    except UnicodeDecodeError as exc:
        errors.append(ConfigError(Location(source.display_path), f"not valid UTF-8: {exc.reason}"))
    except csv.Error as exc:
        errors.append(ConfigError(Location(source.display_path), f"invalid CSV: {exc}"))
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


