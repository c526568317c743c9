"""Reading each training-data format into (where, raw record) pairs, with the data file's own
line (and column, where the format has one) for every record and every problem.

Each record comes with the line and column of its fields where the format has them (YAML), and
with whether its strings may hold characters that JSON escapes (a quote, a
backslash, a control character): in JSON they can only come from an escape, so a record whose
text has no backslash needs none, and its request size is its UTF-8 length (a check that costs
next to nothing, where re-encoding every string would slow validation by a third).

A problem with the file rather than with one record (not UTF-8, not a list, nested past what the
parser can read) is yielded as a ConfigError in place of a record; ``data.iter_examples`` turns
records into examples and collects the errors.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar
from json.decoder import WHITESPACE, scanstring
from pathlib import Path

from .errors import ConfigError, Location
from .yamlload import FieldPath, Positions


@dataclass(frozen=True)
class YamlPositions:
    """Where a record's fields are (line, column) in YAML (a data file, or examples written in
    the job file): the record is at ``prefix`` of ``positions``."""

    positions: Positions
    prefix: FieldPath
    # Where a text example's fields are has always been shown for YAML.
    locates_text_fields: ClassVar[bool] = True

    def of(self, path: FieldPath) -> tuple[int, int] | None:
        """Where ``path`` (within the record) is, or the nearest enclosing field that is."""
        return self.positions.of_value(self.prefix + path)


@dataclass(frozen=True)
class JsonPositions:
    """Where a record's fields are (line, column) in JSON text, found only when asked (to show
    a problem), by scanning the record again: ``text[start]`` begins it, on line ``line``,
    which begins at ``line_start``."""

    text: str
    start: int
    line: int
    line_start: int
    # A text example's problems are shown at its record, as they always were in JSON files;
    # a conversation's at the field inside it.
    locates_text_fields: ClassVar[bool] = False

    def of(self, path: FieldPath) -> tuple[int, int] | None:
        """Where ``path`` (within the record) is, or the nearest enclosing field that is."""
        index = self.start
        for part in path:
            found = _json_member(self.text, index, part)
            if found is None:
                break
            index = found
        newline = self.text.rfind("\n", self.start, index)
        if newline == -1:
            return self.line, index - self.line_start + 1
        return self.line + self.text.count("\n", self.start, index), index - newline


def _json_member(text: str, index: int, part: str | int) -> int | None:
    """Where member ``part`` (an object's key, the last if repeated as JSON keeps the last; an
    array's index) of the value at ``index`` begins; None when it has none."""
    found = None
    opening = text[index:index + 1]
    at = WHITESPACE.match(text, index + 1).end()
    if opening == "{" and isinstance(part, str):
        while text[at:at + 1] == '"':
            key, end = scanstring(text, at + 1)
            at = WHITESPACE.match(text, WHITESPACE.match(text, end).end() + 1).end()  # past :
            if key == part:
                found = at
            at = WHITESPACE.match(text, _DECODER.raw_decode(text, at)[1]).end()
            if text[at:at + 1] != ",":
                break
            at = WHITESPACE.match(text, at + 1).end()
    elif opening == "[" and isinstance(part, int):
        for _ in range(part):
            if text[at:at + 1] in ("]", ""):
                return None
            at = WHITESPACE.match(text, _DECODER.raw_decode(text, at)[1]).end()
            if text[at:at + 1] != ",":
                return None
            at = WHITESPACE.match(text, at + 1).end()
        found = at if text[at:at + 1] not in ("]", "") else None
    return found


class _LinePositions:
    """JsonPositions of one JSONL line, the line decoded only when asked."""

    locates_text_fields = False

    def __init__(self, raw: bytes, number: int) -> None:
        self.raw, self.number = raw, number

    def of(self, path: FieldPath) -> tuple[int, int] | None:
        text = self.raw.decode("utf-8")
        start = WHITESPACE.match(text, 0).end()
        return JsonPositions(text, start, self.number, 0).of(path)


FieldPositions = YamlPositions | JsonPositions | _LinePositions
# (where, the record or a ConfigError, may its strings need escapes, where its fields are)
Records = Iterator[tuple[Location, object, bool, FieldPositions | None]]

TOO_DEEP = "nested too deeply to read; an example is one object of text fields"
_DECODER = json.JSONDecoder()


Failure = tuple[Location, ConfigError, bool, None]


@dataclass(frozen=True)
class DataFile:
    """A training-data file to read (data.DataSource names it for a job): where it is, how
    messages show it, and the two fields an example has."""

    path: Path
    display_path: str
    input_field: str
    output_field: str


def _failed(error: ConfigError) -> Failure:
    return error.location, error, False, None


def _error(where: Location, message: str) -> Failure:
    return where, ConfigError(where, message), False, None


def _not_utf8(display: str, number: int, raw: bytes, exc: UnicodeDecodeError) -> ConfigError:
    column = len(raw[:exc.start].decode("utf-8", "replace")) + 1
    return ConfigError(Location(display, number, column),
                       f"not valid UTF-8: {exc.reason} (byte 0x{raw[exc.start]:02x})")


def _utf8_error(source: DataFile) -> ConfigError:
    """Where the file first stops being UTF-8 (read again, line by line: only on this error)."""
    with open(source.path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _not_utf8(source.display_path, number, raw, exc)
    return ConfigError(Location(source.display_path), "not valid UTF-8")


def _jsonl_records(source: DataFile) -> Records:
    display = source.display_path
    with open(source.path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                column = exc.pos + 1 if exc.lineno == 1 else len(raw.rstrip(b"\r\n")) + 1
                yield _error(Location(display, number, column), f"invalid JSON: {exc.msg}")
                continue
            except UnicodeDecodeError as exc:
                yield _failed(_not_utf8(display, number, raw, exc))
                continue
            except RecursionError:
                yield _error(Location(display, number), TOO_DEEP)
                continue
            except ValueError as exc:  # e.g. a number past Python's 4,300-digit limit
                yield _error(Location(display, number), f"invalid JSON: {exc}")
                continue
            yield (Location(display, number), record, b"\\" in raw,
                   _LinePositions(raw, number))


def _csv_records(source: DataFile) -> Records:
    display = source.display_path
    with open(source.path, newline="", encoding="utf-8-sig", errors="strict") as handle:
        reader = csv.DictReader(handle)
        try:
            header = reader.fieldnames or []
            for name in (source.input_field, source.output_field):
                if name not in header:
                    yield _error(Location(display, 1), f"CSV header has no column {name!r} "
                                 f"(columns: {', '.join(header) or 'none'})")
                    return
            start = reader.line_num + 1
            for row in reader:
                if None in row:
                    yield _error(Location(display, start), "row has more fields than the header")
                else:
                    yield Location(display, start), row, True, None
                start = reader.line_num + 1
        except UnicodeDecodeError:
            yield _failed(_utf8_error(source))
        except csv.Error as exc:
            yield _error(Location(display, reader.line_num or 1), f"invalid CSV: {exc}")


def _json_records(source: DataFile) -> Records:
    """The elements of the file's top-level array, one at a time, each with its line and column
    (the file is read whole, but each example is decoded on its own)."""
    display = source.display_path
    raw = source.path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # RFC 8259: JSON exchanged between systems is UTF-8
    except UnicodeDecodeError:
        yield _failed(_utf8_error(source))
        return
    line, line_start, scanned = 1, 0, 0

    def at(index: int, name: str = "") -> Location:
        nonlocal line, line_start, scanned
        newlines = text.count("\n", scanned, index)
        if newlines:
            line += newlines
            line_start = text.rfind("\n", scanned, index) + 1
        scanned = index
        return Location(display, line, index - line_start + 1, name)

    def fail(index: int, message: str) -> Failure:
        return _error(at(index), message)

    index = WHITESPACE.match(text, 0).end()
    if text[index:index + 1] != "[":
        yield fail(index, "expected a JSON array of examples")
        return
    index = WHITESPACE.match(text, index + 1).end()
    element = 0
    while text[index:index + 1] != "]" or element:
        try:
            record, end = _DECODER.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            yield fail(exc.pos, f"invalid JSON: {exc.msg}")
            return
        except RecursionError:
            yield fail(index, TOO_DEEP)
            return
        except ValueError as exc:  # e.g. a number past Python's 4,300-digit limit
            yield fail(index, f"invalid JSON: {exc}")
            return
        where = at(index, f"[{element}]")
        assert where.line is not None and where.column is not None
        yield (where, record, text.find("\\", index, end) != -1,
               JsonPositions(text, index, where.line, index - where.column + 1))
        element += 1
        index = WHITESPACE.match(text, end).end()
        delimiter = text[index:index + 1]
        if delimiter == "]":
            break
        if delimiter != ",":
            yield fail(index, "invalid JSON: Expecting ',' delimiter")
            return
        index = WHITESPACE.match(text, index + 1).end()
    index = WHITESPACE.match(text, index + 1).end()
    if index < len(text):
        yield fail(index, "invalid JSON: Extra data")


def _yaml_records(source: DataFile) -> Records:
    from .yamlload import load_yaml  # noqa: PLC0415 - only YAML data needs it

    display = source.display_path
    try:
        text = source.path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        yield _failed(_utf8_error(source))
        return
    try:
        loaded = load_yaml(text, display, data_file=True)
    except ConfigError as exc:
        yield _failed(exc)
        return
    except RecursionError:  # a stack already deep when the file was read
        yield _error(Location(display), TOO_DEEP)
        return
    if not isinstance(loaded.data, list):
        yield _error(Location(display, 1, 1), "expected a YAML list of examples")
        return
    for index, record in enumerate(loaded.data):
        line, column = loaded.positions.values[(index,)]
        yield (Location(display, line, column), record, True,
               YamlPositions(loaded.positions, (index,)))


READERS: dict[str, Callable[[DataFile], Records]] = {
    ".jsonl": _jsonl_records, ".csv": _csv_records, ".json": _json_records,
    ".yaml": _yaml_records, ".yml": _yaml_records}
