"""A job trained as a Ray Train run (server/raytrain.py) on a real local Ray instance, inside a
loopback-only network namespace (tests/raynet.py). Trained data-parallel on 2 and 3 workers
(torch DDP), its loss curve, validation losses and adapter match one worker's on the same global
batches; a worker process killed mid-run is restarted by Ray Train and resumes from its last
checkpoint to the same adapter, bit for bit, as a run never interrupted; a new fit() of a
data-parallel run goes on from its latest checkpoint on both ranks, to the same adapter; one Ray
worker trains bit for bit as the local service's worker does (trainer.train without Ray).

One scenario script (tests/ray_scenarios/ddp_curve.py) runs five fits in one Ray instance and
prints every report each rank made; the tests assert on that. Measured on this 2-core machine
(shared with other work, load 3 to 6): 80 to 120 s in all; Ray's start 2 to 4 s, a fit 11 to
25 s, the interrupted one (its restart included) 22 to 30 s, the training without Ray 5 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobspec.server.data_parallel import Shard, passes_per_rank
from tests.raynet import run_python_in_namespace, skip_without_ray_namespace

SCENARIO = Path(__file__).resolve().parents[1] / "ray_scenarios" / "ddp_curve.py"
STEPS = 15  # 29 examples, 2 epochs, batch 4: ceil(58 / 4); epoch 1 ends at step 8
EPOCH_ENDS = {8: 1, 15: 2}
CHECKPOINT_TO_KILL_AT = 4  # the scenario's
# Data-parallel against one process, same global batches: the sums over a batch's target tokens
# are added in another order (per rank, then all-reduced), so losses agree to float32 rounding.
# Measured here: step losses (about 10.5) differ by at most 1.2e-6, validation losses by 5.5e-7,
# adapter weights (up to about 0.3) by 3.2e-7 on 2 workers and 1.7e-6 on 3 after 15 steps (AdamW
# divides by the root of the squared gradients, which lifts differences in its smallest ones).
# The tolerances are a few times those.
LOSS_TOLERANCE = 5e-6
WEIGHT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def scenario(tiny_model, tmp_path_factory) -> dict:
    skip_without_ray_namespace()
    work = tmp_path_factory.mktemp("ddp")
    done = run_python_in_namespace(SCENARIO, str(tiny_model), str(work), timeout=480)
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    for name, run in outcome["runs"].items():
        assert run["error"] is None, (name, run["error"])
    print(f"\nRay start {outcome['init_seconds']} s, fits "
          + ", ".join(f"{name} {run['seconds']} s" for name, run in outcome["runs"].items())
          + f", scenario {outcome['total_seconds']} s")
    return outcome


def events(run: dict, kind: str) -> list[dict]:
    """Rank 0's reports of one kind, after checking that every rank reported the same; "step":
    each step of the "steps" reports (which hold the steps since the last), in order."""
    found = []
    for report in run["reports"]:
        first, *others = report["metrics"]
        assert all(other == first for other in others), report["metrics"]
        if first["event"] == kind:
            found.append(first)
        elif kind == "step" and first["event"] == "steps":
            found.extend({"event": "step", **step} for step in first["steps"])
    return found


def last_step(report: dict) -> int | None:
    """The step a report was made at (its last step), None for a report of no steps."""
    steps = report["metrics"][0].get("steps")
    return steps[-1]["step"] if steps else None


def by_step(run: dict) -> dict[int, dict]:
    """The last report of each step (a restarted run reports again the steps after its
    checkpoint; they must be the same)."""
    steps: dict[int, dict] = {}
    for step in events(run, "step"):
        if step["step"] in steps:
            assert {k: v for k, v in step.items() if k != "time"} == \
                {k: v for k, v in steps[step["step"]].items() if k != "time"}
        steps[step["step"]] = step
    return steps


@pytest.mark.timeout(600)
def test_data_parallel_matches_one_process_on_the_same_global_batches(scenario):
    single = scenario["runs"]["single"]
    reference = by_step(single)
    assert sorted(reference) == list(range(1, STEPS + 1))
    assert any(step["micro_batches"] > 1 for step in reference.values())  # batches were split
    for name, workers in (("ddp", 2), ("ddp3", 3)):
        run = scenario["runs"][name]
        steps = by_step(run)
        assert sorted(steps) == list(range(1, STEPS + 1))
        differences = [abs(steps[s]["loss"] - reference[s]["loss"]) for s in reference]
        validation = [abs(steps[s]["validation_loss"] - reference[s]["validation_loss"])
                      for s in EPOCH_ENDS]
        print(f"{name}: step losses differ by at most {max(differences):.2e}, validation "
              f"losses by {max(validation):.2e}, adapter weights by "
              f"{scenario['adapter_max_difference'][name]:.2e}")
        assert max(differences) <= LOSS_TOLERANCE, differences
        assert max(validation) <= LOSS_TOLERANCE, validation
        assert scenario["adapter_max_difference"][name] <= WEIGHT_TOLERANCE
        for step, ended in EPOCH_ENDS.items():
            assert steps[step]["completed_epoch"] == reference[step]["completed_epoch"] == ended
        assert [s["epoch"] for s in steps.values()] == [s["epoch"] for s in reference.values()]
        # Each rank trains its share of a batch: no more passes than one process takes.
        assert all(steps[s]["micro_batches"] <= reference[s]["micro_batches"] for s in steps)
        [start] = events(run, "start")
        assert start["trained_on"] == f"cpu (fp32), {workers} workers on 127.0.0.1"
        assert (start["workers"], start["from_step"], start["node_ip"]) == (workers, 0,
                                                                           "127.0.0.1")
        assert start["resumed"] == "no checkpoint; training from the start"
        # The same early-stopping bookkeeping on every rank: the same epoch kept.
        assert events(run, "done") == events(single, "done")
        # A checkpoint rides on the report of the step that ended epoch 1, and on no other.
        assert [last_step(r) for r in run["reports"] if r["checkpoint"]] == [8]
    [start] = events(single, "start")
    assert start["trained_on"] == "cpu (fp32), 1 worker on 127.0.0.1"
    # One Ray worker trains exactly as the local service's worker does: every loss, bit for bit.
    local = scenario["local"]
    assert {int(step): losses for step, losses in local["losses"].items()} == {
        step: [r["loss"], r["validation_loss"]] for step, r in reference.items()}
    assert local["adapter_sha256"] == single["adapter_sha256"]
    assert local["kept_epoch"] == 1
    # patience 1: the validation loss rose in epoch 2, so epoch 1's weights are kept.
    assert reference[15]["validation_loss"] > reference[8]["validation_loss"]
    assert events(single, "done") == [{"event": "done", "steps": STEPS, "kept_epoch": 1,
                                       "stop_reason": None, "adapter": "adapter"}]
    assert single["adapter_files"] == ["README.md", "adapter_config.json",
                                       "adapter_model.safetensors", "jobspec_layout.json"]


@pytest.mark.timeout(600)
def test_a_killed_worker_resumes_from_its_last_checkpoint_to_the_same_adapter(scenario):
    single, interrupted = scenario["runs"]["single"], scenario["runs"]["interrupted"]
    first, second = events(interrupted, "start")
    assert first["from_step"] == 0
    resumed_at = second["from_step"]
    assert CHECKPOINT_TO_KILL_AT <= resumed_at < STEPS
    assert second["resumed"] == f"resuming from its checkpoint at step {resumed_at}"
    # Every step is reported after the restart from the one after the checkpoint on.
    reports = [r["metrics"][0] for r in interrupted["reports"]]
    after = reports[reports.index(second) + 1:]
    assert [step["step"] for r in after if r["event"] == "steps"
            for step in r["steps"]] == list(range(resumed_at + 1, STEPS + 1))
    # The same arithmetic as the run never interrupted: every loss, bit for bit.
    steps, reference = by_step(interrupted), by_step(single)
    assert sorted(steps) == list(range(1, STEPS + 1))
    for step in reference:
        assert steps[step]["loss"] == reference[step]["loss"], step
        assert steps[step]["validation_loss"] == reference[step]["validation_loss"], step
    assert events(interrupted, "done") == events(single, "done")
    assert interrupted["adapter_sha256"] == single["adapter_sha256"]
    # checkpoint_seconds 0: a checkpoint rides on every step's report but the last one's.
    # Each step is then reported at once, with its checkpoint.
    assert all(r["checkpoint"] == (last_step(r) < STEPS) and len(r["metrics"][0]["steps"]) == 1
               for r in interrupted["reports"] if r["metrics"][0]["event"] == "steps")


@pytest.mark.timeout(600)
def test_a_new_fit_of_the_same_run_goes_on_from_its_latest_checkpoint(scenario):
    # The data-parallel run's job again: both ranks resume from the checkpoint rank 0 made.
    ddp, again = scenario["runs"]["ddp"], scenario["runs"]["again"]
    [start] = events(again, "start")
    assert (start["from_step"], start["resumed"]) == (8, "resuming from its checkpoint at step 8")
    steps, reference = by_step(again), by_step(ddp)
    assert sorted(steps) == list(range(9, STEPS + 1))
    assert all(steps[s]["loss"] == reference[s]["loss"] for s in steps)
    assert events(again, "done") == events(ddp, "done")
    assert again["adapter_sha256"] == ddp["adapter_sha256"]


def test_every_rank_plans_every_ranks_passes_over_its_share_of_the_batch():
    lengths = [73, 70, 92, 80, 40]
    plan = passes_per_rank(lengths, 2, 160)
    # Rank 0 has rows 0, 2, 4 (73, 92, 40 tokens): 3 × 92 padded is over 160, so longest first,
    # 92 alone (2 × 92 > 160), then 73 and 40; rank 1's rows 1 and 3 fit one pass (2 × 80).
    # Rank 1 then runs one zero-weighted pass besides, as many passes as rank 0.
    assert plan == [[[2], [0, 4]], [[1, 3]]]
    assert passes_per_rank([50], 3, 160) == [[[0]], [], []]  # ranks 1 and 2 have no row
    for world in (1, 2, 3, 4):
        plan = passes_per_rank(lengths, world, 160)
        rows = sorted(i for groups in plan for group in groups for i in group)
        assert rows == list(range(len(lengths)))  # each row on exactly one rank, once
        for rank, groups in enumerate(plan):
            assert all(i % world == rank for group in groups for i in group)
            assert all(len(group) * max(lengths[i] for i in group) <= 160 or len(group) == 1
                       for group in groups)


def test_a_shard_is_a_rank_within_its_world():
    assert Shard(1, 3).rows(8) == [1, 4, 7]
    for rank, world in ((2, 2), (-1, 2), (0, 0)):
        with pytest.raises(ValueError, match="rank 0 to world - 1"):
            Shard(rank, world)
