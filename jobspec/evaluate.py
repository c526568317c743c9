"""Running a job's eval prompts against its tuned model (and, if asked, its base model) and
judging each answer against its expectation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import stats
from .backends.base import Backend, RemoteModel
from .conversation import Conversation, Turn
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


def pass_fraction(answers: tuple[Answer, ...]) -> float:
    """The fraction of a prompt's answers that pass (an error counts as not passing)."""
    return sum(a.passed for a in answers) / len(answers)


def verdict(answers: tuple[Answer, ...]) -> str:
    """error when no answer came; else pass when at least half the answers pass (with one
    answer: when it passes)."""
    if all(a.error is not None for a in answers):
        return "error"
    return "pass" if pass_fraction(answers) >= 0.5 else "fail"


@dataclass(frozen=True)
class PromptResult:
    input: str
    expect: Expectation
    tuned: tuple[Answer, ...]  # one per sample
    base: tuple[Answer, ...] | None = None
    system: str | None = None  # the system instruction it was asked with (the prompt's or job's)
    history: tuple[Turn, ...] = ()  # the turns before its input

    @property
    def paired_fractions(self) -> tuple[float | None, float | None]:
        """(tuned, base) pass fractions for the paired test; None where a request failed, which
        says nothing of the model."""
        def of(answers: tuple[Answer, ...] | None) -> float | None:
            if not answers or any(a.error is not None for a in answers):
                return None
            return pass_fraction(answers)
        return of(self.tuned), of(self.base)


@dataclass(frozen=True)
class EvalResult:
    """Every prompt's answers, and what the eval asked for; evaloutcome.eval_outcome judges them."""

    results: tuple[PromptResult, ...]
    min_pass_rate: float
    compare_base: bool
    generation_config: dict[str, Any]
    samples: int = 1
    require_improvement: bool = False
    significance: float = stats.DEFAULT_SIGNIFICANCE


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


def _ask(backend: Backend, model: str, prompt: Conversation, expect: Expectation,
         config: dict[str, Any]) -> Answer:
    try:
        text = backend.generate(model, prompt, config)
    except JobSpecError as exc:
        return Answer(error=str(exc))
    return Answer(text=text, passed=check(expect, text))


def evaluate(job: Job, tuned: RemoteModel, backend: Backend) -> EvalResult | None:
    """Ask every eval prompt of the tuned model (and, with compare_base, of its base model),
    ``samples`` times each, with its system instruction and history; None when the job has no
    eval section."""
    if job.eval is None:
        return None
    spec = job.eval
    config = generation_config(spec)
    results = []
    for prompt in spec.prompts:
        asked = prompt.conversation(job.system_instruction)
        answers = tuple(_ask(backend, tuned.generation_target, asked, prompt.expect, config)
                        for _ in range(spec.samples))
        base = (tuple(_ask(backend, backend.base_target(job), asked, prompt.expect, config)
                      for _ in range(spec.samples))
                if spec.compare_base else None)
        results.append(PromptResult(prompt.input, prompt.expect, answers, base, asked.system,
                                    prompt.history))
    return EvalResult(tuple(results), spec.min_pass_rate, spec.compare_base, config,
                      spec.samples, spec.require_improvement, spec.significance)


def warnings(job: Job) -> list[tuple[tuple[str, ...], str]]:
    """(field path, message) for an eval that is valid but cannot do what it says: a
    require_improvement gate that too few prompts can never pass, samples of greedy answers."""
    spec = job.eval
    found: list[tuple[tuple[str, ...], str]] = []
    if spec is None:
        return found
    n = len(spec.prompts)
    if spec.require_improvement and stats.smallest_p_value(n) > spec.significance:
        needed = stats.prompts_needed(spec.significance)
        found.append((("eval", "require_improvement"),
                      f"this gate can never pass: with {n} prompt{'s' if n != 1 else ''} the "
                      f"smallest possible p-value is 2 x 0.5^{n} = "
                      f"{stats.p_text(stats.smallest_p_value(n))}, above the significance "
                      f"{spec.significance:g}; at least {needed} prompts are needed"))
    if spec.samples > 1 and deterministic(generation_config(spec)):
        found.append((("eval", "samples"),
                      f"{spec.samples} samples of greedy answers (temperature 0) are the same "
                      "answer asked again; set generation_config.temperature above 0"))
    return found
