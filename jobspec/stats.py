"""The statistics of an eval, in a few lines each (no scipy for the CLI): the Wilson score
interval of a pass rate, and the exact McNemar test of paired base-vs-tuned verdicts (a
two-sided binomial test on the discordant pairs, which with sampled answers is the sign test on
per-prompt pass fractions). tests/test_stats.py checks both against published values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONFIDENCE = 0.95
Z_95 = 1.959963984540054  # the standard normal's 97.5th percentile
DEFAULT_SIGNIFICANCE = 0.05


def wilson(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval (Wilson 1927; Newcombe 1998, method 3) of ``successes`` in
    ``n`` trials. ``successes`` may be fractional: the sum of per-prompt pass fractions, each in
    [0, 1], whose variance is at most p(1-p), so the interval over ``n`` prompts stays honest."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # At p = 0 or 1 the bound is exactly 0 or 1; rounding must not move it.
    low = 0.0 if p == 0 else max(0.0, centre - half)
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return low, high


def binomial_two_sided(k: int, n: int) -> float:
    """The exact two-sided p-value of ``k`` successes in ``n`` fair coin flips: twice the
    smaller tail, at most 1 (for p = 0.5 the distribution is symmetric, so this is the same as
    summing every outcome no likelier than ``k``)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def smallest_p_value(n: int) -> float:
    """The smallest p-value the paired test can give with ``n`` prompts: every pair discordant
    and all one way, 2 x 0.5^n."""
    return min(1.0, 2 * 0.5**n)


def prompts_needed(significance: float) -> int:
    """The fewest prompts with which the paired test can reach ``significance``."""
    n = 1
    while smallest_p_value(n) > significance:
        n += 1
    return n


@dataclass(frozen=True)
class Paired:
    """Base and tuned verdicts paired by prompt. With one answer per prompt, ``tuned_only`` are
    the prompts only the tuned model passes (it did better), ``base_only`` those only the base
    passes; with samples, the prompts where its pass fraction is higher. Pairs where either
    side could not be asked (an error) are ``excluded``."""

    tuned_only: int
    base_only: int
    both: int
    neither: int
    excluded: int = 0

    @property
    def discordant(self) -> int:
        return self.tuned_only + self.base_only

    @property
    def p_value(self) -> float:
        return binomial_two_sided(self.tuned_only, self.discordant)

    def improved(self, significance: float) -> bool:
        """Whether the tuned model passes significantly more prompts than the base."""
        return self.tuned_only > self.base_only and self.p_value <= significance


def pair(tuned: list[float | None], base: list[float | None]) -> Paired:
    """Pair per-prompt pass fractions (1.0 or 0.0 with one answer each; None: not asked)."""
    counts = {"tuned_only": 0, "base_only": 0, "both": 0, "neither": 0, "excluded": 0}
    for t, b in zip(tuned, base, strict=True):
        if t is None or b is None:
            counts["excluded"] += 1
        elif t > b:
            counts["tuned_only"] += 1
        elif b > t:
            counts["base_only"] += 1
        elif t > 0:
            counts["both"] += 1
        else:
            counts["neither"] += 1
    return Paired(**counts)


def percent(value: float) -> str:
    return f"{100 * value:.0f}%"


def interval_text(low: float, high: float) -> str:
    """``95% CI 31–83%``."""
    return f"{CONFIDENCE:.0%} CI {100 * low:.0f}–{100 * high:.0f}%"


def rate_text(passed: float, n: int, samples: int = 1) -> str:
    """``6/10 = 60% (95% CI 31–83%)``; with samples, the pass fractions' sum and what the
    interval is over: ``6.4/10 = 64% (95% CI 34–86%, over 10 prompts of 5 samples each)``."""
    low, high = wilson(passed, n)
    shown = f"{passed:g}" if samples == 1 else f"{passed:.1f}"
    over = "" if samples == 1 else f", over {n} prompts of {samples} samples each"
    return f"{shown}/{n} = {percent(passed / n if n else 0)} ({interval_text(low, high)}{over})"


def p_text(p: float) -> str:
    """A p-value for people: three significant figures, never a bare 0."""
    return "1" if p >= 0.9995 else f"{p:.3g}" if p >= 0.001 else f"{p:.2e}"
