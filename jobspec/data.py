"""Training examples: where they come from, and reading them one at a time.

An example is a conversation (conversation.py): a data file's records are in one of three forms
(text ``{text_input, output}``, Vertex AI's contents, chat messages; datarecords.py), the job
file's ``format:`` or the file's first record saying which, and the job's system_instruction is
given to every example that has none, before anything counts, fingerprints or sends them.

Examples are streamed, never read whole, for the formats that allow it (JSONL and CSV), so
validating or fingerprinting a large file takes memory that does not grow with its size. JSON and
YAML files must be parsed whole, and have a lower size limit for that reason.

While streaming, each example is checked against the limits of the backend it goes to
(``DataLimits``, which each backend states), and the size of what will carry the examples (the
Gemini API's create request inlines every one; Vertex AI reads a JSONL file) is added up, so that
a job its backend would refuse is reported where the examples are read: by validate, plan and
apply alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .datareaders import READERS, DataFile, FieldPositions, Records
# DataLimits, Example and the size units are datarecords' (what one record is), named here too.
from .datarecords import GB, MB, MIB, TEXT, DataLimits, Example, Forms, read_example  # noqa: F401
from .errors import ConfigError, ConfigErrors, Location

MAX_STREAMED_BYTES = 2 * 1024**3  # .jsonl, .csv
MAX_WHOLE_FILE_BYTES = 64 * 1024**2  # .json, .yaml, .yml: parsed in one piece
MAX_ERRORS_PER_FILE = 50

FORMATS = (".jsonl", ".json", ".csv", ".yaml", ".yml")
DEFAULT_INPUT_FIELD = "text_input"
DEFAULT_OUTPUT_FIELD = "output"


@dataclass(frozen=True)
class DataSource:
    """Where a job's examples are: a file (with field names) or a list written in the job file."""

    display_path: str  # as the user should see it in messages
    path: Path | None = None
    input_field: str = DEFAULT_INPUT_FIELD
    output_field: str = DEFAULT_OUTPUT_FIELD
    inline: tuple[tuple[Location, object, FieldPositions], ...] | None = None  # (where, raw
    # record, where each of its fields is)
    # The form its records are in (datarecords: text, contents, messages), as the job file's
    # ``format:`` names it; None: the first record shows it.
    form: str | None = None
    # The job's system_instruction, for every example that has none of its own.
    system_instruction: str | None = None
    # What the job's backend accepts, and where the job names its examples (where examples that
    # are too many or too large are reported). Neither changes which examples these are.
    limits: DataLimits | None = field(default=None, compare=False)
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


def source_form(source: DataSource) -> str:
    """The form of ``source``'s records: ``format:``, else its first record's (text for a
    source with no record to show it)."""
    forms = Forms(source)
    if forms.form is None:
        for where, record, _, _ in _records(source):
            if isinstance(record, dict):
                return forms.of(where, record)
    return forms.form or TEXT


@dataclass
class Tally:
    """What reading one source's examples found (iter_examples fills it in as it reads)."""

    count: int = 0
    carried_bytes: int = 0  # in the carrier of the source's limits, its envelope left out
    varied: bool = False  # at least two different examples (which a validation split needs)
    _first: Example | None = field(default=None, repr=False)

    def add(self, example: Example, size: int) -> None:
        self.count += 1
        self.carried_bytes += size
        if self._first is None:
            self._first = example
        elif not self.varied and example != self._first:
            self.varied = True


def _records(source: DataSource) -> Records:
    """The source's raw records, each with where it is."""
    if source.inline is not None:
        return ((where, record, True, fields) for where, record, fields in source.inline)
    check_file(source)
    assert source.path is not None  # not inline
    return READERS[source.format](DataFile(source.path, source.display_path,
                                           source.input_field, source.output_field))


def iter_examples(source: DataSource, tally: Tally | None = None) -> Iterator[Example]:
    """Yield each example in order; raise ConfigErrors listing every bad one at the end, and
    the examples' count or size where it is over the backend's limit. ``tally``, when given, is
    filled in with what was read."""
    tally = Tally() if tally is None else tally
    errors: list[ConfigError] = []
    limits = source.limits
    records = _records(source)
    forms = Forms(source)
    for where, record, may_need_escapes, fields in records:
        if isinstance(record, ConfigError):
            errors.append(record)
        else:
            try:
                form = forms.of(where, record)
                example, size = read_example(where, record, source, form, may_need_escapes,
                                             fields)
            except ConfigError as exc:
                errors.append(exc)
            else:
                tally.add(example, size)
                yield example
                continue
        if len(errors) >= MAX_ERRORS_PER_FILE:
            errors.append(ConfigError(Location(source.display_path),
                                      f"stopped after {MAX_ERRORS_PER_FILE} errors"))
            break
    if limits is not None:
        errors.extend(_over_limits(source, limits, tally.count,
                                   limits.envelope_bytes + tally.carried_bytes))
    if errors:
        raise ConfigErrors(errors)
    if tally.count == 0:
        raise ConfigError(Location(source.display_path), "no training examples; at least 1 is needed")


def _over_limits(source: DataSource, limits: DataLimits, count: int,
                 carried_bytes: int) -> list[ConfigError]:
    where = source.declared_at or Location(source.display_path)
    found = []
    if limits.max_examples is not None and count > limits.max_examples:
        found.append(ConfigError(where, f"{count:,} examples; the {limits.backend} backend "
                                 f"accepts at most {limits.max_examples:,} ({limits.stated_by})"))
    if limits.max_bytes is not None and carried_bytes > limits.max_bytes:
        found.append(ConfigError(
            where, f"the examples make {limits.a_carrier} of {limits.show(carried_bytes)}; the "
            f"{limits.backend} backend accepts at most {limits.stated()} ({limits.stated_by}); "
            "use fewer or shorter examples"))
    return found


def count_examples(source: DataSource) -> int:
    """Read every example (validating each) and return how many there are."""
    return tally_examples(source).count


def tally_examples(source: DataSource) -> Tally:
    """Read every example (validating each) and return what was found."""
    tally = Tally()
    for _ in iter_examples(source, tally):
        pass
    return tally


def split_problem(tally: Tally) -> str | None:
    """Why these examples cannot give a validation split, or None when they can (split.draw
    holds out at least one group of equal examples and trains on at least one)."""
    if tally.count < 2:
        return f"cannot split {tally.count} example: a validation split needs at least two"
    if not tally.varied:
        return (f"cannot split {tally.count} examples that are all the same: a validation split "
                "needs at least two different examples")
    return None


def together_problem(training: DataSource, trained: Tally, validated: Tally) -> str | None:
    """Why the training and validation examples cannot travel together, where one carrier takes
    both (each alone within the limit, together over it), or None."""
    limits = training.limits
    if limits is None or limits.max_bytes is None or not limits.shared_with_validation:
        return None
    total = limits.envelope_bytes + trained.carried_bytes + validated.carried_bytes
    if total <= limits.max_bytes:
        return None
    return (f"the training and validation examples together make {limits.a_carrier} of "
            f"{limits.show(total)}; the {limits.backend} backend accepts at most "
            f"{limits.stated()} ({limits.stated_by}); use fewer or shorter examples")


class ExampleCounts:
    """tally_examples for the jobs checked together (one validate or plan): a data file that
    many jobs share is read once for all of them, as long as it is the same file, unchanged,
    read with the same fields and limits. Only a file's success is kept: a file with problems is
    read again for each job, whose messages name that job's file and line."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[object, ...], Tally] = {}

    def count(self, source: DataSource) -> int:
        return self.tally(source).count

    def tally(self, source: DataSource) -> Tally:
        key = reading_key(source)
        if key is None:
            return tally_examples(source)
        if key not in self._tallies:
            self._tallies[key] = tally_examples(source)
        return self._tallies[key]


def reading_key(source: DataSource) -> tuple[object, ...] | None:
    """Equal for sources that read as the same examples with the same findings: the same file,
    unchanged, read with the same fields, form, system instruction and limits (where the file is
    named differently only its messages differ). None for examples written in the job file, or
    a file that cannot be looked at (reading it says what is wrong)."""
    if source.path is None:
        return None
    try:
        found = os.stat(source.path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, source.format,
            source.input_field, source.output_field, source.limits, source.form,
            source.system_instruction)


def is_within(path: Path, root: Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root``."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
    except ValueError:
        return False
    return True
