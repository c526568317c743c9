"""The eval statistics against published values.

Wilson score intervals: Newcombe, "Two-sided confidence intervals for the single proportion:
comparison of seven methods", Statistics in Medicine 17 (1998) 857-872, Table I, method 3 (score
interval without continuity correction), to four decimals. Exact McNemar: Fagerland, Lydersen and
Laake, "The McNemar test for binary matched-pairs data", BMC Medical Research Methodology 13:91
(2013), the airway hyper-responsiveness example (Bentur et al. 2009): 1 and 7 discordant pairs,
exact conditional p = 0.070.
"""

from __future__ import annotations

import pytest

from jobspec import stats

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("successes, n, low, high", [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0000),
])
def test_wilson_interval_matches_newcombe_table_1(successes, n, low, high):
    got = stats.wilson(successes, n)
    assert (round(got[0], 4), round(got[1], 4)) == (low, high)


def test_the_issues_example_reads_as_written():
    assert stats.rate_text(6, 10) == "6/10 = 60% (95% CI 31–83%)"
    assert stats.rate_text(0, 10) == "0/10 = 0% (95% CI 0–28%)"


def test_sampled_rates_say_what_the_interval_is_over():
    assert stats.rate_text(6.4, 10, samples=5) == \
        "6.4/10 = 64% (95% CI 35–86%, over 10 prompts of 5 samples each)"


def test_exact_mcnemar_matches_fagerland_2013():
    paired = stats.Paired(tuned_only=7, base_only=1, both=0, neither=0)
    assert round(paired.p_value, 3) == 0.070
    assert paired.p_value == pytest.approx(18 / 256)
    assert not paired.improved(0.05) and paired.improved(0.1)


def test_p_value_is_symmetric_and_one_without_discordant_pairs():
    assert stats.binomial_two_sided(2, 9) == stats.binomial_two_sided(7, 9)
    assert stats.binomial_two_sided(0, 0) == 1.0
    assert stats.binomial_two_sided(5, 10) == 1.0  # never above 1


def test_smallest_possible_p_value_and_prompts_needed():
    assert stats.smallest_p_value(5) == 0.0625  # 5 prompts can never reach 0.05
    assert stats.smallest_p_value(6) == 0.03125
    assert stats.prompts_needed(0.05) == 6
    assert stats.prompts_needed(0.01) == 8  # 2 x 0.5^8 = 0.0078


def test_pairing_counts_each_kind_and_excludes_errors():
    tuned = [1.0, 1.0, 0.0, 0.0, None, 0.6]
    base = [1.0, 0.0, 1.0, 0.0, 1.0, 0.2]
    paired = stats.pair(tuned, base)
    assert paired == stats.Paired(tuned_only=2, base_only=1, both=1, neither=1, excluded=1)
    # The tuned model never doing worse is not yet significant on 3 prompts.
    assert not stats.pair([1.0] * 5, [0.0] * 5).improved(0.05)
    assert stats.pair([1.0] * 6, [0.0] * 6).improved(0.05)
