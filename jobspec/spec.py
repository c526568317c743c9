"""Job files: loading them with positions, validating them, and the ``Job`` value (finding and
reading them, and where the data files they name lie, are jobfiles.py's).

Validation reports every problem it can find in one pass, each as
``path:line:column: field: message``, and never executes anything the file says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import data
from .datareaders import YamlPositions
from .datarecords import TEXT
# The eval section is evalspec.py's; its values are named here too, where callers find a job's parts.
from .evalspec import MATCHERS, EvalPrompt, EvalSpec, Expectation, read_eval  # noqa: F401
from .errors import ConfigError, ConfigErrors, Location
from .jobfiles import Places, read_job_text
from .schema import job_schema, schema_errors
from .yamlload import FieldPath, Positions, format_path, load_yaml

FORMAT_VERSION = 1
DEFAULT_TUNING_MODE = "lora"  # the schema's tuning_mode values: lora, full


@dataclass(frozen=True)
class Hyperparameters:
    batch_size: int
    epoch_count: int
    learning_rate: float | None = None
    learning_rate_multiplier: float | None = None
    adapter_size: int | None = None  # LoRA adapter size, where taken; unset: the service chooses
    # Which of them the job file wrote (the rest are defaults), for backends that accept only some.
    given: frozenset[str] = field(default=frozenset(), compare=False)

    def as_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"batch_size": self.batch_size, "epoch_count": self.epoch_count}
        if self.learning_rate is not None:
            values["learning_rate"] = self.learning_rate
        else:
            values["learning_rate_multiplier"] = self.learning_rate_multiplier
        if self.adapter_size is not None:  # absent, not None: fingerprints made before it stay
            values["adapter_size"] = self.adapter_size
        return values


class BackendRules(Protocol):
    """What the backends ask of a job beyond the schema (backends.registry.Rules gives them):
    which type takes each of the ``backend`` section's settings, and what the backend the job
    goes to asks: limits on its examples, and rules on its fields."""

    def types_taking(self, setting: str) -> tuple[str, ...]:
        """The backend types that take ``backend.<setting>``, when only some do (empty: all)."""
    def limits(self, declared_type: str | None) -> data.DataLimits | None: ...
    def check(self, job: "Job") -> list[ConfigError]: ...


@dataclass(frozen=True)
class BackendSpec:
    type: str
    project: str | None = None
    location: str | None = None
    staging_bucket: str | None = None
    endpoint: str | None = None
    # Where the job file names the endpoint, for the refusal to send it credentials.
    endpoint_at: Location | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Resources:
    """What one training run may use on the local service (``resources:``); None: the
    service's default. Not part of the job's identity: more workers train the same steps."""

    workers: int | None = None
    gpus_per_worker: float | None = None


@dataclass(frozen=True)
class Job:
    path: str  # as given on the command line
    name: str
    base_model: str
    hyperparameters: Hyperparameters
    training_data: data.DataSource
    display_name: str | None = None
    description: str | None = None
    # For every example and eval prompt that has none of its own (conversation.py).
    system_instruction: str | None = None
    eval: EvalSpec | None = None
    backend: BackendSpec | None = None
    # Examples held out to measure validation loss on: given (validation_data), or drawn from
    # the training examples (validation_split, a fraction; split.py). At most one.
    validation_data: data.DataSource | None = None
    validation_split: float | None = None
    early_stopping: int | None = None  # patience in epochs, on validation loss
    # `lora` or `full` as the job file gives it; None: not given (lora, the default), so that
    # fingerprints made before it existed stay the same (tuning_mode_or_default).
    tuning_mode: str | None = None
    resources: Resources | None = None
    name_at: Location | None = field(default=None, compare=False)  # where `name:` is, for messages
    positions: Positions | None = field(default=None, compare=False, repr=False)

    @property
    def tuning_mode_or_default(self) -> str:
        return self.tuning_mode or DEFAULT_TUNING_MODE

    def at(self, *field_path: str | int) -> Location:
        """Where in the job file ``field_path`` is (or would be), for messages."""
        found = self.positions.of_value(tuple(field_path)) if self.positions else None
        line, column = found or (None, None)
        return Location(self.path, line, column, format_path(tuple(field_path)))

    def key_at(self, *field_path: str | int) -> Location:
        """Where the key of ``field_path`` is: for a refusal of a whole section, its first line."""
        found = self.positions.of_key(tuple(field_path)) if self.positions else None
        if found is None:
            return self.at(*field_path)
        return Location(self.path, found[0], found[1], format_path(tuple(field_path)))


def _defaults() -> dict[str, Any]:
    props = job_schema()["properties"]["hyperparameters"]["properties"]
    return {name: spec["default"] for name, spec in props.items() if "default" in spec}


class _JobBuilder:
    """Cross-field rules the schema cannot express, then the ``Job`` value."""

    def __init__(self, path: str, raw: dict[str, Any], positions: Positions,
                 allow_outside_paths: bool, rules: BackendRules | None,
                 places: Places | None = None) -> None:
        self.path = path
        self.places = places or Places()
        self.raw = raw
        self.positions = positions
        self.allow_outside_paths = allow_outside_paths
        self.rules = rules
        declared = raw.get("backend")
        declared_type = declared.get("type") if isinstance(declared, dict) else declared
        self.limits = rules.limits(declared_type if isinstance(declared_type, str) else None) \
            if rules else None
        self.errors: list[ConfigError] = []
        self.schema_fields: set[str] = set()  # where the schema found problems (build)

    def error(self, field_path: FieldPath, message: str, *, at_key: bool = False) -> None:
        pos = self.positions.of_key(field_path) if at_key else self.positions.of_value(field_path)
        line, column = pos or (None, None)
        self.errors.append(ConfigError(Location(self.path, line, column, format_path(field_path)),
                                       message))

    def hyperparameters(self) -> Hyperparameters:
        given = self.raw.get("hyperparameters") or {}
        if "learning_rate" in given and "learning_rate_multiplier" in given:
            self.error(("hyperparameters", "learning_rate_multiplier"),
                       "give learning_rate or learning_rate_multiplier, not both", at_key=True)
        values = {**_defaults(), **given}
        if "learning_rate" in given:
            values.pop("learning_rate_multiplier", None)
        # JSON Schema counts 2.0 as an integer; normalise so that 2 and 2.0 fingerprint alike.
        rate, multiplier = values.get("learning_rate"), values.get("learning_rate_multiplier")
        adapter = values.get("adapter_size")
        return Hyperparameters(
            batch_size=int(values["batch_size"]), epoch_count=int(values["epoch_count"]),
            learning_rate=None if rate is None else float(rate),
            learning_rate_multiplier=None if multiplier is None else float(multiplier),
            adapter_size=None if adapter is None else int(adapter), given=frozenset(given))

    def training_data(self, key: str = "training_data") -> data.DataSource:
        spec = self.raw[key]
        declared_at = self._location((key,))
        system = self.raw.get("system_instruction")
        if isinstance(spec, list):
            entries = [(self._location((key, i)), record,
                        YamlPositions(self.positions, (key, i)))
                       for i, record in enumerate(spec)]
            return data.DataSource(display_path=self.path, inline=tuple(entries),
                                   system_instruction=system, limits=self.limits,
                                   declared_at=declared_at)
        if isinstance(spec, str):
            spec = {"path": spec}
            field_path: FieldPath = (key,)
        else:
            field_path = (key, "path")
        job_dir = Path(self.path).parent
        relative = Path(spec["path"])
        resolved = relative if relative.is_absolute() else job_dir / relative
        source = data.DataSource(
            display_path=os.path.normpath(str(resolved)), path=resolved,
            input_field=spec.get("input_field", data.DEFAULT_INPUT_FIELD),
            output_field=spec.get("output_field", data.DEFAULT_OUTPUT_FIELD),
            form=spec.get("format"), system_instruction=system,
            limits=self.limits, declared_at=declared_at)
        self._check_form(key, spec, source)
        root = self.places.root(job_dir)
        if not self.allow_outside_paths and not self.places.is_within(resolved, root):
            self.error(field_path, f"{spec['path']!r} resolves outside the repository ({root}); "
                       "pass --allow-outside-paths to allow it")
            return source
        try:
            self.places.check_file(source)
        except ConfigError as exc:
            self.error(field_path, f"{spec['path']}: {exc.message}")
        return source

    def _check_form(self, key: str, spec: dict[str, Any], source: data.DataSource) -> None:
        """A declared format the file cannot have, or field names it does not use."""
        if source.form is None or source.form == TEXT:
            return
        if source.format == ".csv":
            self.error((key, "format"), f"a CSV file holds text examples only (one column "
                       f"each for input and output), not {source.form}; write the "
                       f"conversations as .jsonl, .json or .yaml")
        for name in ("input_field", "output_field"):
            if name in spec:
                self.error((key, name), f"{name} names a field of the text form; the "
                           f"{source.form} form has none: remove it", at_key=True)

    def system_instruction(self) -> str | None:
        """The job's system instruction, within what its backend takes of one."""
        system = self.raw.get("system_instruction")
        limit = self.limits.max_input_chars if self.limits else None
        if system is not None and limit is not None and len(system) > limit:
            self.error(("system_instruction",), f"is {len(system):,} characters, over the "
                       f"limit of {limit:,}")
        return system

    def validation_data(self) -> data.DataSource | None:
        if self.raw.get("validation_data") is None:
            return None
        if "validation_split" in self.raw:
            self.error(("validation_split",), "give validation_data or validation_split, not "
                       "both", at_key=True)
        return self.training_data("validation_data")

    def validation_split(self) -> float | None:
        split = self.raw.get("validation_split")
        return None if split is None else float(split)

    def early_stopping(self) -> int | None:
        spec = self.raw.get("early_stopping")
        if spec is None:
            return None
        if "validation_data" not in self.raw and "validation_split" not in self.raw:
            self.error(("early_stopping",), "early stopping watches the validation loss: give "
                       "validation_data or validation_split too", at_key=True)
        return int(spec["patience"] if isinstance(spec, dict) else spec)

    def resources(self) -> Resources | None:
        spec = self.raw.get("resources")
        if spec is None:
            return None
        gpus = spec.get("gpus_per_worker")
        return Resources(workers=spec.get("workers"),
                         gpus_per_worker=None if gpus is None else float(gpus))

    def _location(self, field_path: FieldPath) -> Location:
        line, column = self.positions.of_value(field_path) or (None, None)
        return Location(self.path, line, column, format_path(field_path))

    def eval(self) -> EvalSpec | None:
        return read_eval(self.raw.get("eval"), self.error, self.schema_fields)

    def backend(self) -> BackendSpec | None:
        spec = self.raw.get("backend")
        if spec is None:
            return None
        if isinstance(spec, str):
            return BackendSpec(type=spec)
        for setting in spec:
            types = self.rules.types_taking(setting) if self.rules else ()
            if types and spec["type"] not in types:
                self.error(("backend", setting), f"applies only to the {' or '.join(types)} "
                           f"backend, not {spec['type']}", at_key=True)
        endpoint_at = self._location(("backend", "endpoint")) if "endpoint" in spec else None
        return BackendSpec(**spec, endpoint_at=endpoint_at)

    def build(self, schema_problems: list[ConfigError]) -> Job:
        """The Job, or ConfigErrors with the schema's problems and every cross-field one."""
        self.schema_fields = {problem.location.field or "" for problem in schema_problems}
        sections = {}
        for section in ("hyperparameters", "training_data", "eval", "backend", "validation_data",
                        "validation_split", "early_stopping", "system_instruction", "resources"):
            try:
                sections[section] = getattr(self, section)()
            except (KeyError, TypeError, AttributeError, ValueError):
                pass  # a malformed section: the schema has already said what is wrong with it
        problems = schema_problems + self.errors
        job = None
        if not problems:
            job = Job(path=self.path, name=self.raw["name"], base_model=self.raw["base_model"],
                      display_name=self.raw.get("display_name"),
                      description=self.raw.get("description"),
                      tuning_mode=self.raw.get("tuning_mode"),
                      name_at=self._location(("name",)), positions=self.positions, **sections)
            problems = self.rules.check(job) if self.rules else []
        if problems:
            problems.sort(key=lambda e: (e.location.line or 0, e.location.column or 0))
            raise ConfigErrors(problems)
        assert job is not None
        return job


def load_job(path: str, *, allow_outside_paths: bool = False,
             rules: BackendRules | None = None, places: Places | None = None) -> Job:
    """Load and check one job file (not its examples); raise ConfigErrors listing every problem.

    With ``rules`` (those of the backend the job goes to) the job is checked against them too,
    and reading its examples later checks them against the backend's limits. ``places``: what
    the jobs loaded with this one have already found out about directories (load_jobs).
    """
    try:
        loaded = load_yaml(read_job_text(path), path)
    except RecursionError:  # load_yaml caps nesting; this is a stack already deep when called
        raise ConfigError(Location(path), "nested too deeply to read") from None
    if not isinstance(loaded.data, dict):
        raise ConfigError(Location(path, 1, 1), "a job file must be a YAML mapping "
                          f"(name, base_model, ...), not {type(loaded.data).__name__}")
    problems = schema_errors(loaded.data, path, loaded.positions)
    builder = _JobBuilder(path, loaded.data, loaded.positions, allow_outside_paths, rules,
                          places)
    return builder.build(problems)


def _flatten(exc: ConfigError) -> list[ConfigError]:
    return list(exc.errors) if isinstance(exc, ConfigErrors) else [exc]


def load_jobs(paths: Iterable[str], *, allow_outside_paths: bool = False,
              check_examples: bool = False, rules: BackendRules | None = None) -> list[Job]:
    """Load every job file; report all problems in all files at once, including duplicate names.

    With ``check_examples`` every training and validation example is read and checked too,
    against the limits in ``rules`` (check_job_examples).
    """
    jobs: list[Job] = []
    errors: list[ConfigError] = []
    places, counts = Places(), data.ExampleCounts()
    for path in paths:
        try:
            job = load_job(path, allow_outside_paths=allow_outside_paths, rules=rules,
                           places=places)
        except ConfigError as exc:
            errors.extend(_flatten(exc))
            continue
        if check_examples:
            found = check_job_examples(job, counts)
            if found:
                errors.extend(found)
                continue
        jobs.append(job)
    errors.extend(_duplicate_names(jobs))
    if errors:
        raise ConfigErrors(errors)
    return jobs


def check_job_examples(job: Job, counts: data.ExampleCounts | None = None) -> list[ConfigError]:
    """Every problem plan and apply would find in the job's examples: each training and
    validation example, each file's limits, the two together where one request carries both,
    and whether its validation split can be drawn."""
    counts = counts or data.ExampleCounts()
    found: list[ConfigError] = []
    tallies = []
    for source in (job.training_data, job.validation_data):
        if source is None:
            continue
        try:
            tallies.append(counts.tally(source))
        except ConfigError as exc:
            found.extend(_flatten(exc))
    return found or examples_problems(job, *tallies)


def examples_problems(job: Job, trained: data.Tally,
                      validated: data.Tally | None = None) -> list[ConfigError]:
    """What the job's examples, each valid and within its file's limits, still cannot do: give
    the validation split it asks for, or travel together in one request."""
    found = []
    if job.validation_split is not None:
        problem = data.split_problem(trained)
        if problem:
            found.append(ConfigError(job.at("validation_split"), problem))
    if job.validation_data is not None and validated is not None:
        problem = data.together_problem(job.training_data, trained, validated)
        if problem:
            found.append(ConfigError(job.validation_data.declared_at
                                     or job.at("validation_data"), problem))
    return found


def _duplicate_names(jobs: list[Job]) -> list[ConfigError]:
    first: dict[str, Job] = {}
    found = []
    for job in jobs:
        if job.name in first:
            found.append(ConfigError(job.name_at or Location(job.path, field="name"),
                                     f"{job.name!r} is also the name of {first[job.name].path}; "
                                     "job names must be unique"))
        else:
            first[job.name] = job
    return found
