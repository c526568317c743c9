"""The trainer's recipe: the learning-rate schedule it applies, and settings the benchmarks
change one at a time (``--set NAME=VALUE``)."""

import math

import pytest

from jobspec.server.recipe import LEGACY_RECIPE, RECIPE, Recipe, parameter_groups, schedule


def test_the_service_warms_up_over_a_tenth_of_the_steps_then_decays_to_zero():
    factor = schedule(RECIPE, 40)  # the shipped recipe: 10% linear warm-up, then cosine
    rates = [factor(done) for done in range(40)]
    assert rates[:4] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])
    assert rates[4] == pytest.approx(1.0)
    assert rates[22] == pytest.approx(0.5 * (1 + math.cos(math.pi * 18 / 36)))
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))  # never rises after the warm-up
    assert rates[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 35 / 36)))
    assert [schedule(LEGACY_RECIPE, 40)(done) for done in range(40)] == [1.0] * 40


def test_linear_decay_and_unknown_schedules():
    linear = schedule(Recipe(schedule="linear"), 10)
    assert [linear(done) for done in range(10)] == pytest.approx(
        [1 - d / 10 for d in range(10)])
    with pytest.raises(ValueError, match="unknown schedule 'steep'"):
        schedule(Recipe(schedule="steep"), 10)(0)


def test_settings_are_read_as_their_types_and_unknown_names_are_refused():
    changed = RECIPE.with_settings(["rank=16", "alpha=8.5", "rslora=true",
                                    "system_prompt=none", "targets=q_proj,v_proj"])
    assert (changed.rank, changed.alpha, changed.rslora) == (16, 8.5, True)
    assert changed.system_prompt is None and changed.targets == "q_proj,v_proj"
    assert changed.schedule == RECIPE.schedule  # the rest is the recipe's
    with pytest.raises(ValueError, match="a Recipe has no field 'rnak'"):
        RECIPE.with_settings(["rnak=16"])


def test_lora_plus_gives_the_b_matrices_their_own_rate():
    import torch

    params = {"layer.lora_A.default.weight": torch.zeros(8, 4),
              "layer.lora_B.default.weight": torch.zeros(4, 8),
              "layer.lora_magnitude_vector.default.weight": torch.zeros(4)}
    plain = parameter_groups(params, RECIPE, 1e-3)
    assert [(len(g["params"]), g["lr"], g["weight_decay"]) for g in plain] == \
        [(2, 1e-3, RECIPE.weight_decay), (1, 1e-3, 0.0)]
    plus = parameter_groups(params, RECIPE.with_settings(["loraplus=16"]), 1e-3)
    assert [(len(g["params"]), g["lr"]) for g in plus] == [(1, 1e-3), (1, 0.016), (1, 1e-3)]
