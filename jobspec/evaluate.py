"""Running a job's eval prompts against its tuned model (and, if asked, its base model) and
judging each answer against its expectation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .backends.base import Backend, RemoteModel
from .errors import JobSpecError
from .spec import EvalSpec, Expectation, Job

# Greedy and short: an eval answer is a word or a line. The job file's names (snake_case); each
# backend puts them on its wire.
DEFAULT_GENERATION = {"temperature": 0.0, "max_output_tokens": 32}


@dataclass(frozen=True)
class Answer:
    text: str | None = None
    error: str | None = None  # the request failed even after retries
    passed: bool = False


@dataclass(frozen=True)
class PromptResult:
    input: str
    expect: Expectation
    tuned: Answer
    base: Answer | None = None


@dataclass(frozen=True)
class EvalResult:
    results: tuple[PromptResult, ...]
    min_pass_rate: float
    compare_base: bool
    generation_config: dict[str, Any]

    @property
    def pass_rate(self) -> float:
        return sum(r.tuned.passed for r in self.results) / len(self.results)

    @property
    def base_pass_rate(self) -> float | None:
        if not self.compare_base:
            return None
        return sum(bool(r.base and r.base.passed) for r in self.results) / len(self.results)

    @property
    def errors(self) -> int:
        return sum(r.tuned.error is not None for r in self.results)

    @property
    def gate_passed(self) -> bool:
        return self.pass_rate >= self.min_pass_rate

    @property
    def failed_inputs(self) -> list[str]:
        return [r.input for r in self.results if not r.tuned.passed]


def _fold(text: str, case_sensitive: bool) -> str:
    return text if case_sensitive else text.casefold()


def check(expect: Expectation, answer: str) -> bool:
    """Whether ``answer`` meets ``expect`` (equals and one_of compare the trimmed answer)."""
    sensitive = expect.case_sensitive
    trimmed = _fold(answer.strip(), sensitive)
    if expect.kind == "equals":
        return trimmed == _fold(str(expect.value).strip(), sensitive)
    if expect.kind == "one_of":
        return trimmed in {_fold(v.strip(), sensitive) for v in expect.value}
    if expect.kind == "contains":
        return _fold(str(expect.value), sensitive) in _fold(answer, sensitive)
    if expect.kind == "not_contains":
        return _fold(str(expect.value), sensitive) not in _fold(answer, sensitive)
    if expect.kind == "regex":
        flags = 0 if sensitive else re.IGNORECASE
        return re.search(str(expect.value), answer.strip(), flags) is not None
    raise ValueError(f"unknown expectation {expect.kind}")


def generation_config(spec: EvalSpec) -> dict[str, Any]:
    return {**DEFAULT_GENERATION, **spec.generation_config}


def deterministic(config: dict[str, Any]) -> bool:
    """Whether asking again with ``config`` gives the same answers: greedy decoding,
    temperature 0 or unset."""
    return not config.get("temperature")


def _ask(backend: Backend, model: str, prompt: str, expect: Expectation,
         config: dict[str, Any]) -> Answer:
    try:
        text = backend.generate(model, prompt, config)
    except JobSpecError as exc:
        return Answer(error=str(exc))
    return Answer(text=text, passed=check(expect, text))


def evaluate(job: Job, tuned: RemoteModel, backend: Backend) -> EvalResult | None:
    """Ask every eval prompt of the tuned model (and, with compare_base, of its base model);
    None when the job has no eval section."""
    if job.eval is None:
        return None
    config = generation_config(job.eval)
    results = []
    for prompt in job.eval.prompts:
        answer = _ask(backend, tuned.generation_target, prompt.input, prompt.expect, config)
        base = (_ask(backend, backend.base_target(job), prompt.input, prompt.expect, config)
                if job.eval.compare_base else None)
        results.append(PromptResult(prompt.input, prompt.expect, answer, base))
    return EvalResult(tuple(results), job.eval.min_pass_rate, job.eval.compare_base, config)
