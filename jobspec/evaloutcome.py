"""An eval's outcome as a frozen value: each prompt's answers and verdicts, the pass rates with
their Wilson intervals, base and tuned paired by prompt with the exact McNemar test (stats.py),
and whether the gate passed, decided here once (``eval_outcome``) for every report to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import stats
from .conversation import Turn
from .evaluate import Answer, EvalResult, pass_fraction, verdict


@dataclass(frozen=True)
class Interval:
    """A pass rate's Wilson score interval at ``stats.CONFIDENCE``, as a fraction of prompts."""

    low: float
    high: float

    @classmethod
    def of(cls, passed: float, n: int) -> Interval:
        low, high = stats.wilson(passed, n)
        return cls(round(low, 6), round(high, 6))


@dataclass(frozen=True)
class PairedOutcome:
    """Base and tuned verdicts paired by prompt (``stats.Paired``), with the exact McNemar
    p-value and whether it shows a significant improvement at the eval's significance."""

    tuned_only: int
    base_only: int
    both: int
    neither: int
    excluded: int
    p_value: float
    improved: bool

    @classmethod
    def of(cls, paired: stats.Paired, significance: float) -> PairedOutcome:
        return cls(paired.tuned_only, paired.base_only, paired.both, paired.neither,
                   paired.excluded, paired.p_value, paired.improved(significance))

    def base_better(self, significance: float) -> bool:
        """Whether the base model passes significantly more prompts than the tuned one."""
        return self.base_only > self.tuned_only and self.p_value <= significance


@dataclass(frozen=True)
class Sample:
    """One of several answers to a prompt."""

    answer: str | None
    error: str | None
    verdict: str  # pass, fail or error


@dataclass(frozen=True)
class Answers:
    """One side (tuned or base) of a prompt: the answer shown (the first that came), the first
    error, the verdict; when asked more than once, each sample and the fraction that passed."""

    answer: str | None
    error: str | None
    verdict: str  # pass, fail or error
    pass_fraction: float | None = None  # None when asked once
    samples: tuple[Sample, ...] | None = None  # None when asked once

    @classmethod
    def of(cls, answers: tuple[Answer, ...]) -> Answers:
        first_error = next((a.error for a in answers if a.error is not None), None)
        shown = next((a for a in answers if a.error is None), answers[0])
        if len(answers) == 1:
            return cls(shown.text, first_error, verdict(answers))
        return cls(shown.text, first_error, verdict(answers), pass_fraction(answers),
                   tuple(Sample(a.text, a.error,
                                "error" if a.error else "pass" if a.passed else "fail")
                         for a in answers))


@dataclass(frozen=True)
class PromptOutcome:
    input: str
    expect: Mapping[str, Any]  # the expectation as the job file writes it (Expectation.as_dict)
    tuned: Answers
    base: Answers | None = None  # with compare_base
    system: str | None = None  # the system instruction it was asked with
    history: tuple[Turn, ...] = ()  # the turns before its input

    @property
    def asked(self) -> tuple[str, Mapping[str, Any], str | None, tuple[Turn, ...]]:
        """What makes it the same question: the input and expectation, and the conversation
        it is asked in (a changed system instruction or history is another question)."""
        return self.input, dict(self.expect), self.system, self.history

    @property
    def unasked(self) -> bool:
        """Whether a request for it failed, on either side."""
        return self.tuned.error is not None or (self.base is not None
                                                and self.base.error is not None)


@dataclass(frozen=True)
class EvalOutcome:
    """A job's eval as asked (or as an earlier report recorded it), with its statistics.
    ``passed`` counts prompts passed (with samples, the sum of their pass fractions), rounded
    to 6 places; the rates are of the unrounded counts."""

    generation_config: Mapping[str, Any]
    min_pass_rate: float
    require_improvement: bool
    significance: float
    samples: int
    prompt_count: int
    passed: float
    pass_rate: float
    interval: Interval | None
    base_passed: float | None  # None without compare_base
    base_pass_rate: float | None
    base_interval: Interval | None
    paired: PairedOutcome | None
    gate_passed: bool
    errors: int  # prompts whose tuned request failed (errors, not wrong answers)
    prompts: tuple[PromptOutcome, ...]

    @property
    def failed_inputs(self) -> list[str]:
        return [p.input for p in self.prompts if p.tuned.verdict != "pass"]


def eval_outcome(evaluation: EvalResult) -> EvalOutcome:
    """The statistics and the gate of an eval just asked. The gate passes when the pass rate
    reaches min_pass_rate and, with require_improvement, the paired test shows the tuned model
    significantly better than the base at the eval's significance."""
    results = evaluation.results
    n = len(results)
    passed = sum(pass_fraction(r.tuned) for r in results)
    base_passed = (sum(pass_fraction(r.base) for r in results if r.base)
                   if evaluation.compare_base else None)
    paired = None
    if evaluation.compare_base:
        fractions = [r.paired_fractions for r in results]
        paired = PairedOutcome.of(stats.pair([t for t, _ in fractions],
                                             [b for _, b in fractions]), evaluation.significance)
    pass_rate = passed / n
    gate_passed = pass_rate >= evaluation.min_pass_rate and (
        not evaluation.require_improvement or (paired is not None and paired.improved))
    return EvalOutcome(
        generation_config=evaluation.generation_config,
        min_pass_rate=evaluation.min_pass_rate,
        require_improvement=evaluation.require_improvement,
        significance=evaluation.significance, samples=evaluation.samples, prompt_count=n,
        passed=round(passed, 6), pass_rate=pass_rate, interval=Interval.of(passed, n),
        base_passed=None if base_passed is None else round(base_passed, 6),
        base_pass_rate=None if base_passed is None else base_passed / n,
        base_interval=None if base_passed is None else Interval.of(base_passed, n),
        paired=paired, gate_passed=gate_passed,
        errors=sum(any(a.error is not None for a in r.tuned) for r in results),
        prompts=tuple(PromptOutcome(r.input, r.expect.as_dict(), Answers.of(r.tuned),
                                    None if r.base is None else Answers.of(r.base),
                                    r.system, r.history)
                      for r in results))
