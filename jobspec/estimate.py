"""What a plan will cost before anyone spends it: each changing job's examples in tokens, the
tokens trained (tokens x epochs, what a cloud backend bills), steps, the longest example against
the backend's limit, a training time from the rate this backend measured for the same base
model, and a cost at the price the operator gives (jobspec holds no price list).

Tokens are counted by the backend where it can (the local service: exactly, with the base
model's tokenizer, as its trainer encodes them); elsewhere they are estimated from characters,
and every figure says which. Each distinct set of examples of a base model is counted once, the
sets in one batched request, and the counts are kept (countcache.py) so that an unchanged plan
asks for none again.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import countcache, timestamps
from .backends.base import Backend, RemoteModel, TokenCount
from .countcache import CountCache
from .data import Example
from .errors import ConfigError, JobSpecError, PermanentBackendError, UsageError
from .identity import Identity
from .spec import Job
from .trained import TrainedExamples, trained_examples

if TYPE_CHECKING:
    from .reconcile import Plan

PRICE_VARIABLE = "JOBSPEC_PRICE_PER_MILLION_TOKENS"
RUNS_MEASURED = 5  # the latest earlier runs of the base model that a rate is taken from
# The most characters of example text one command keeps in memory (a few MB, whatever the number
# of jobs), so that each later walk of a small data set (the backend's count, finding the
# longest) reads memory, not the file again; beyond it, examples are read again when walked.
HELD_CHARACTERS = 4 * 1024 * 1024


Counted = tuple[TokenCount, TrainedExamples]  # a job's examples in tokens, and they


@dataclass
class _Content:
    """One base model's set of examples, however many jobs train on it."""

    base_model: str
    examples: TrainedExamples
    digest: str
    key: str | None = None  # where its count is kept, when the backend says what it depends on
    tokens: TokenCount | None = None
    error: JobSpecError | None = None


class _TrainedExamples:
    """Jobs' trained examples, read once per data source and split: a thousand jobs of one data
    file read it once. What they hold in memory, together, is at most HELD_CHARACTERS."""

    def __init__(self) -> None:
        self._read: dict[tuple[object, float | None], TrainedExamples] = {}
        self._may_hold = HELD_CHARACTERS

    def of(self, job: Job, identity: Identity) -> TrainedExamples:
        source = (job.training_data, getattr(job, "validation_split", None))
        try:
            found = self._read.get(source)
        except TypeError:  # examples written in the job file: read for this job alone
            return self._read_now(job, identity)
        if found is None:
            found = self._read[source] = self._read_now(job, identity)
        return found

    def _read_now(self, job: Job, identity: Identity) -> TrainedExamples:
        examples = trained_examples(job, identity, hold=self._may_hold)
        self._may_hold -= examples.held_characters
        return examples


def count_jobs(jobs: Sequence[tuple[Job, Identity]], backend: Backend,
               cache: CountCache | None = None) -> list[Counted | JobSpecError]:
    """Each job's trained examples in tokens (the backend's count, else an estimate from
    characters) and the examples in the order counted, or why they could not be counted.
    Each job comes with its identity, whose validation split (as identify drew it) says which
    examples it trains on.

    Jobs of one base model and the same examples are counted once; what the cache does not hold
    is asked in one batched request per base model (the backend splits it where it must); what
    the backend counted exactly under a digest it reports is kept for the next command."""
    cache = cache if cache is not None else CountCache()
    reader = _TrainedExamples()
    contents: dict[tuple[str, str], _Content] = {}
    # Each job keeps its own examples: equal ones from another file are counted once, but
    # are at that file's lines.
    of_job: list[tuple[_Content, TrainedExamples] | JobSpecError] = []
    for job, identity in jobs:
        try:
            examples = reader.of(job, identity)
        except JobSpecError as exc:
            of_job.append(exc)
            continue
        content = contents.setdefault((job.base_model, examples.digest),
                                      _Content(job.base_model, examples, examples.digest))
        of_job.append((content, examples))
    by_model: dict[str, list[_Content]] = defaultdict(list)
    for content in contents.values():
        by_model[content.base_model].append(content)
    for base_model, group in by_model.items():
        _count_group(base_model, group, backend, cache)
    results: list[Counted | JobSpecError] = []
    for item in of_job:
        if isinstance(item, JobSpecError):
            results.append(item)
        else:
            content, examples = item
            if content.error is not None:
                results.append(content.error)
            else:
                assert content.tokens is not None
                results.append((content.tokens, examples))
    return results


def _count_group(base_model: str, group: list[_Content], backend: Backend,
                 cache: CountCache) -> None:
    """Set the tokens (or the error) of every set of examples of ``base_model``."""
    try:
        digest = backend.counting_digest(base_model)
        if digest is not None:
            for content in group:
                content.key = countcache.key(backend.name, base_model, digest, content.digest)
                content.tokens = cache.get(content.key, len(content.examples))
        asked = [content for content in group if content.tokens is None]
        counted = _asked(backend, base_model, [c.examples for c in asked]) if asked else []
    except JobSpecError as exc:
        for content in group:
            if content.tokens is None:
                content.error = exc
        return
    for content, tokens in zip(asked, counted):
        if tokens is None or len(tokens.inputs) != len(content.examples):
            tokens = TokenCount.estimated(content.examples)
        elif tokens.exact and content.key is not None:
            cache.put(content.key, tokens)
        content.tokens = tokens


def _asked(backend: Backend, base_model: str,
           example_sets: list[TrainedExamples]) -> list[TokenCount | None]:
    """The backend's counts of ``example_sets``; None for each it cannot count."""
    try:
        counted = backend.count_tokens(base_model, example_sets)
    except PermanentBackendError as exc:
        if exc.http_status not in (404, 501):  # a service from before the method: estimate
            raise
        counted = None
    if counted is None or len(counted) != len(example_sets):
        return [None] * len(example_sets)
    return list(counted)


def count(job: Job, identity: Identity, backend: Backend) -> Counted:
    """The examples the job trains on, in tokens (as ``count_jobs``); raises why it cannot."""
    (counted,) = count_jobs([(job, identity)], backend)
    if isinstance(counted, JobSpecError):
        raise counted
    return counted


PRICE_EXPECTED = "expected a price (a number, 0 or more)"


def parse_price(text: str) -> float | None:
    """A price per million tokens as written (a finite number, 0 or more); None if it is none."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def price(given: float | None) -> float | None:
    """--price-per-million-tokens, else $JOBSPEC_PRICE_PER_MILLION_TOKENS, else None."""
    if given is not None:
        return given
    text = os.environ.get(PRICE_VARIABLE, "").strip()
    if not text:
        return None
    value = parse_price(text)
    if value is None:
        raise UsageError(f"{PRICE_VARIABLE}={text}: {PRICE_EXPECTED}")
    return value


@dataclass(frozen=True)
class Rate:
    """How fast this backend trained the base model before: seconds per example trained
    (a step's time over its batch size) and the time before the first step."""

    seconds_per_example: float
    startup_seconds: float
    runs: int

    def seconds(self, examples_trained: int) -> float:
        return self.startup_seconds + examples_trained * self.seconds_per_example


def _run_rate(model: RemoteModel) -> tuple[float, float] | None:
    """(seconds per example, startup seconds) of one earlier run, from its snapshots' times."""
    timed = [(s.step, timestamps.parse(s.compute_time)) for s in model.snapshots]
    timed = [(step, moment) for step, moment in timed if moment is not None]
    batch = model.hyperparameters.get("batch_size")
    if len(timed) < 2 or not isinstance(batch, (int, float)) or batch <= 0:
        return None
    (first_step, first), (last_step, last) = timed[0], timed[-1]
    if last_step <= first_step:
        return None
    per_step = (last - first).total_seconds() / (last_step - first_step)
    started = timestamps.parse(model.start_time)
    startup = 0.0
    if started is not None:
        startup = max(0.0, (first - started).total_seconds() - first_step * per_step)
    return per_step / batch, startup


def measured_rate(models: list[RemoteModel], base_model: str) -> Rate | None:
    """The median rate of the latest earlier runs of ``base_model``; None before one ran."""
    runs = sorted((m for m in models if m.base_model == base_model),
                  key=lambda m: m.complete_time or m.start_time or "", reverse=True)
    rates = [r for r in (_run_rate(m) for m in runs) if r is not None][:RUNS_MEASURED]
    if not rates:
        return None
    return Rate(statistics.median(r[0] for r in rates), statistics.median(r[1] for r in rates),
                len(rates))


@dataclass(frozen=True)
class JobEstimate:
    job: Job
    tokens: TokenCount | None
    epochs: int
    steps: int | None
    rate: Rate | None = None
    price: float | None = None
    error: str | None = None  # why the tokens could not be counted
    problems: tuple[ConfigError, ...] = field(default=())  # examples over the limit
    # Where the counted examples that a plan names are (the longest, those over the limit),
    # for people, by index.
    places: dict[int, str] = field(default_factory=dict)

    def place(self, index: int) -> str:
        return self.places.get(index, f"example {index + 1}")

    @property
    def trained_tokens(self) -> int | None:
        return None if self.tokens is None else self.tokens.total * self.epochs

    @property
    def examples_trained(self) -> int | None:
        return None if self.tokens is None else len(self.tokens.inputs) * self.epochs

    @property
    def seconds(self) -> float | None:
        trained = self.examples_trained
        return None if self.rate is None or trained is None else self.rate.seconds(trained)

    @property
    def cost(self) -> float | None:
        trained = self.trained_tokens
        return None if self.price is None or trained is None else trained / 1e6 * self.price


def _problems(job: Job, tokens: TokenCount,
              found: dict[int, Example]) -> tuple[ConfigError, ...]:
    """Each example longer than the backend takes, at its line of the data file."""
    problems = []
    for index in tokens.over_limit():
        example = found.get(index)
        where = example.where if example is not None and example.where is not None \
            else job.at("training_data")
        size = tokens.inputs[index] + tokens.outputs[index]
        problems.append(ConfigError(where, f"this example is {size:,} tokens (input and "
                                    f"output, {tokens.method}), over the limit of "
                                    f"{tokens.limit:,} tokens for one example"))
    return tuple(problems)


def named_indices(tokens: TokenCount) -> set[int]:
    """The examples a plan names: the longest, and those over the limit."""
    return ({tokens.longest[0]} if tokens.inputs else set()) | set(tokens.over_limit())


def estimate_job(job: Job, steps: int | None, counted: Counted | JobSpecError,
                 rate: Rate | None, unit_price: float | None,
                 found: dict[int, Example] | None = None) -> JobEstimate:
    """``found``: the examples a plan names (``named_indices``), when already found for the
    same examples (else they are read here)."""
    epochs = job.hyperparameters.epoch_count
    if isinstance(counted, JobSpecError):
        return JobEstimate(job, None, epochs, steps, rate, unit_price, error=str(counted))
    tokens, examples = counted
    if found is None:
        found = examples.at(named_indices(tokens))
    problems = _problems(job, tokens, found) if tokens.exact else ()
    return JobEstimate(job, tokens, epochs, steps, rate, unit_price, problems=problems,
                       places=example_places(found))


def example_places(found: dict[int, Example]) -> dict[int, str]:
    return {n: str(e.where) if e.where is not None else f"example {n + 1}"
            for n, e in found.items()}


@dataclass(frozen=True)
class Totals:
    jobs: int
    trained_tokens: int
    seconds: float | None  # None unless every job's time is known
    timed_jobs: int
    cost: float | None
    exact: bool  # every job's tokens counted, none estimated


def totals(estimates: list[JobEstimate]) -> Totals:
    counted = [e for e in estimates if e.trained_tokens is not None]
    timed = [e.seconds for e in estimates if e.seconds is not None]
    costs = [e.cost for e in estimates if e.cost is not None]
    return Totals(
        jobs=len(estimates), trained_tokens=sum(e.trained_tokens or 0 for e in counted),
        seconds=sum(timed) if timed and len(timed) == len(estimates) else None,
        timed_jobs=len(timed),
        cost=sum(costs) if costs and len(costs) == len(estimates) else None,
        exact=all(e.tokens is not None and e.tokens.exact for e in estimates))


def cost_text(cost: float) -> str:
    """In the price's own unit: ``1,234``, ``12.50``, ``0.012``, ``0``."""
    if cost >= 100:
        return f"{cost:,.0f}"
    if cost >= 1:
        return f"{cost:,.2f}"
    return f"{cost:.2g}" if cost > 0 else "0"


def for_plan(plan: "Plan", backend: Backend, unit_price: float | None) -> list[JobEstimate]:
    """An estimate for every job the plan creates, from the plan's listing of the backend's
    models, each distinct set of examples counted once."""
    changing = [j for j in plan.jobs if j.changes]
    if not changing:
        return []
    counted = count_jobs([(j.job, j.identity) for j in changing], backend)
    rates = {base: measured_rate(list(plan.models), base)
             for base in {j.job.base_model for j in changing}}
    # The named examples of each set, found in one pass for every job that trains on it.
    named: dict[int, tuple[TrainedExamples, set[int]]] = {}
    for result in counted:
        if not isinstance(result, JobSpecError):
            tokens, examples = result
            named.setdefault(id(examples), (examples, set()))[1].update(named_indices(tokens))
    found = {key: examples.at(indices) for key, (examples, indices) in named.items()}
    estimates = []
    for job_plan, result in zip(changing, counted):
        shared = None if isinstance(result, JobSpecError) else found[id(result[1])]
        estimates.append(estimate_job(job_plan.job, job_plan.expected_steps, result,
                                      rates[job_plan.job.base_model], unit_price, shared))
    return estimates
