"""`jobspec serve --ray`: the local service in front of a real Ray cluster on this machine
(ray.cluster_utils.Cluster: a head and worker nodes), the tiny model, the real CLI.

Each scenario script (tests/ray_scenarios/service_*.py) runs in a loopback-only network
namespace (tests/raynet.py) with one cluster and prints what the tests assert on:
- service_apply_restart.py: `jobspec apply jobs/` through a Ray service on a two-node cluster
  gives what the plain local service gives (state, step losses, eval answers, exit code), and
  `jobspec get` names the node; the eval is generated on the node that has a GPU, by a Ray actor
  that reads the adapter from --storage and gives the GPU back when idle (an actor lost leaves
  the request to the service); then the Ray service is killed with SIGKILL mid-training and
  restarted: it re-attaches to the run (one Ray Train run for the job, not two) and the job ends
  ACTIVE with one continuous snapshot series; the job asking for two workers
  (`resources: {workers: 2}`) trains data-parallel on both nodes with the one-process steps;
  last, standby runs (a run started while the service is idle, which the next job takes): the
  jobs above train on them, and one left by a killed service is ended by the next service, which
  releases its own when stopped.
- service_node_loss.py: the node that trains is removed mid-training; the run resumes from its
  checkpoint on the other node and ends ACTIVE with one continuous series, its losses those of a
  run never interrupted (the first scenario's long job); then a job cancelled mid-training
  ends FAILED and its run is gone from the cluster; generation, the cluster having no GPU, runs
  in the service.
An address where no cluster listens is refused within seconds (no cluster needed).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.raynet import run_python_in_namespace, skip_without_ray_namespace

SCENARIOS = Path(__file__).resolve().parent / "ray_scenarios"
# A run on one Ray worker trains bit for bit as the local worker, but the local worker uses
# every core's torch threads and a Ray worker one, so sums may round differently.
LOSS_TOLERANCE = 1e-5
DDP_TOLERANCE = 1e-4


def scenario(name: str, tiny_model: Path, work: Path, timeout: float) -> dict:
    skip_without_ray_namespace()
    started = time.monotonic()
    done = run_python_in_namespace(SCENARIOS / name, str(tiny_model), str(work), timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert "failure" not in outcome and "error" not in outcome, (
        f"{outcome.get('failure') or outcome.get('error')}\n{outcome.get('log', '')}\n"
        f"{ {k: v for k, v in outcome.items() if k not in ('log', 'losses', 'notes')} }")
    print(f"\n{name}: {time.monotonic() - started:.0f} s; {outcome['timings']}")
    return outcome


@pytest.fixture(scope="module")
def apply_restart(tiny_model, tmp_path_factory) -> dict:
    return scenario("service_apply_restart.py", tiny_model, tmp_path_factory.mktemp("ray-a"),
                    timeout=280)


@pytest.fixture(scope="module")
def node_loss(tiny_model, tmp_path_factory) -> dict:
    return scenario("service_node_loss.py", tiny_model, tmp_path_factory.mktemp("ray-b"),
                    timeout=280)


def close(first: list[float], second: list[float]) -> bool:
    return len(first) == len(second) and all(abs(a - b) <= LOSS_TOLERANCE
                                             for a, b in zip(first, second))


@pytest.mark.timeout(300)
def test_apply_through_ray_gives_what_the_local_service_gives(apply_restart):
    local, ray = apply_restart["local"], apply_restart["ray"]
    assert local["state"] == ray["state"] == "ACTIVE"
    # The tiny random model answers nothing right, so both fail the eval gate alike (exit 1).
    assert local["code"] == ray["code"]
    assert local["steps"] == ray["steps"] == list(range(1, len(local["steps"]) + 1))
    assert close(local["losses"], ray["losses"]), (local["losses"], ray["losses"])
    assert local["answers"] == ray["answers"] and len(ray["answers"]) == 10
    assert local["device"] == "cpu (fp32)"
    assert ray["device"].startswith("cpu (fp32), 1 worker") and "(node " in ray["device"]
    [row] = ray["get"]
    assert row["state"] == "ACTIVE" and row["device"] == ray["device"]
    header, line = ray["get_table"].splitlines()[:2]
    assert header.split()[-2:] == ["TRAINED", "ON"] and line.endswith(ray["device"])


@pytest.mark.timeout(300)
def test_eval_is_generated_on_the_gpu_node_which_is_given_back_when_idle(apply_restart):
    # The answers the first test found equal to the local service's were made there.
    found = apply_restart["generation"]
    notes = "\n".join(found["notes"])
    [actor] = found["actors_after_eval"]
    assert actor["alive"] and actor["node"] == found["gpu_node"]
    assert (f"generation runs on the Ray cluster: actor {actor['name']} on node "
            f"{found['gpu_node'][:8]} (127.0.0.1), cpu; tuned adapters are read from ") in notes
    assert "generation runs in this service" not in notes
    # The tuned model's adapter, put in the storage for the actor to read.
    model_id = found["model"].removeprefix("tunedModels/")
    [stored] = found["stored"]
    assert stored.startswith(f"adapters/{model_id}/") and stored.endswith("/COMPLETE")
    assert (f"generation actor {actor['name']} on node {found['gpu_node'][:8]} released after "
            "5s without a request: its GPU is free for training") in notes
    assert found["alive_after_idle"] == []
    # Asked again, a new actor answers; lost (killed here), the service answers in its place.
    lost = found["lost_actor"]
    assert lost["codes"] == [200, 200] and lost["same"]
    # A prompt too long for the model is refused by the actor as by the service.
    too_long = found["too_long"]
    assert too_long["code"] == 400 and too_long["error"]["status"] == "INVALID_ARGUMENT"
    assert too_long["error"]["message"].startswith("The input token count (")
    assert "models/tiny-smollm2 has a context of 512 tokens" in too_long["error"]["message"]
    assert notes.count("generation runs on the Ray cluster: actor ") == 2
    assert (f"generation actor {lost['name']} on node {found['gpu_node'][:8]} released "
            "(generation on the cluster failed (ActorDiedError: ") in notes, notes
    assert "); this request is answered in this service" in notes
    assert found["delete_code"] == 200 and found["stored_after_delete"] == []


@pytest.mark.timeout(300)
def test_a_restarted_service_reattaches_to_the_run_it_started(apply_restart):
    long = apply_restart["long"]
    assert apply_restart["created"]["code"] == 0, apply_restart["created"]["err"]
    assert apply_restart["steps_before_kill"] >= 8
    assert long["state"] == "ACTIVE"
    assert long["steps"] == list(range(1, 91))  # 12 epochs of 8 steps, the last short
    # The idle first service had a standby run started; the long job was handed to it.
    run = apply_restart["long_run"]
    assert run and run.startswith("jobspec-standby-"), apply_restart["first_notes"]
    notes = "\n".join(apply_restart["second_notes"])
    assert f"re-attached to its Ray run {run}, still training" in notes
    assert "started Ray Train run" not in notes and "queued again" not in notes
    # One run actor and one Ray Train run (its controller) for the job, across both services.
    [actor] = [r for r in apply_restart["runs"] if r["name"] == run]
    assert actor["controllers"] == 1


@pytest.mark.timeout(300)
def test_a_data_parallel_job_trains_on_both_nodes_with_one_process_steps(apply_restart):
    ddp, single = apply_restart["ddp"], apply_restart["ray"]
    assert ddp["code"] == 0, ddp["err_tail"]
    assert ddp["state"] == "ACTIVE"
    assert ddp["device"].startswith("cpu (fp32), 2 workers on 127.0.0.1"), ddp["device"]
    assert ddp["steps"] == single["steps"]
    # The idle service's standby run has one worker: released, for the job's own run.
    notes = "\n".join(apply_restart["ddp_notes"])
    assert "released: the job asks for other workers or resources" in notes, notes
    assert "started Ray Train run jobspec-number-generator-ddp-" in notes
    # Each worker trains half of every batch and DDP averages their gradients: the steps are
    # the single process's up to float rounding (tests/server/test_data_parallel.py measured
    # at most 9.5e-7 apart on this model; summed in another order here, across two nodes).
    assert all(abs(a - b) <= DDP_TOLERANCE for a, b in zip(ddp["losses"], single["losses"])), (
        max(abs(a - b) for a, b in zip(ddp["losses"], single["losses"])))


@pytest.mark.timeout(300)
def test_the_idle_service_starts_the_next_job_on_its_standby_run(apply_restart):
    ray_notes = "\n".join(apply_restart["first_notes"])
    assert "standby Ray Train run jobspec-standby-" in ray_notes
    assert " ready: the next job starts on it" in ray_notes
    # Both jobs of the first service (apply's, then the long one) went to standby runs.
    assert ray_notes.count(": handed to the standby Ray Train run jobspec-standby-") == 2, ray_notes
    assert "started Ray Train run" not in ray_notes


@pytest.mark.timeout(300)
def test_a_standby_run_left_by_a_killed_service_is_ended_by_the_next(apply_restart):
    standby = apply_restart["standby"]
    [left] = standby["left"]  # the killed service's standby, waiting for a job
    assert left.startswith("jobspec-standby-")
    notes = "\n".join(standby["third_notes"])
    assert f"ending the standby Ray Train run {left} a previous service left" in notes
    [own] = standby["alive"]  # the next service's own standby, and nothing else
    assert own != left and own.startswith("jobspec-standby-")
    assert standby["alive_after_stop"] == []  # released when that service stopped


@pytest.mark.timeout(300)
def test_a_node_lost_mid_training_resumes_on_the_other_node(node_loss, apply_restart):
    assert node_loss["victims"] == 1
    assert node_loss["state"] == "ACTIVE", node_loss["job_error"]
    assert node_loss["steps"] == list(range(1, 91))
    assert node_loss["device_after"] != node_loss["device_before"]
    notes = "\n".join(node_loss["notes"])
    assert "resuming from its checkpoint at step" in notes, notes
    assert ": handed to the standby Ray Train run jobspec-standby-" in notes, notes
    # The same losses as the same job never interrupted (the restart scenario's long job).
    assert close(node_loss["losses"], apply_restart["long"]["losses"])


@pytest.mark.timeout(300)
def test_a_cancel_ends_the_run_on_the_cluster(node_loss):
    assert node_loss["cancel_code"] == 200
    assert 3 <= node_loss["cancelled_steps"] < 300  # cancelled mid-training, not after it
    # Neither the run's actor nor its Ray Train run (controller and workers) lives on.
    assert node_loss["cancelled_run"], node_loss["notes"]
    [actor] = node_loss["cancelled_run_after"]
    assert actor["controllers"] == 1 and not actor["alive"] and actor["live_controllers"] == 0


@pytest.mark.timeout(300)
def test_generation_stays_in_the_service_where_the_cluster_has_no_gpu(node_loss):
    asked = node_loss["no_gpu_generation"]
    assert asked["code"] == 200
    assert asked["notes"] == ["jobspec serve: generation runs in this service: the Ray cluster "
                              "has no GPU"]


def test_an_address_where_no_cluster_listens_is_refused_at_once(tmp_path, tiny_model):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "jobspec.server", "--port", "0", "--state-dir",
                           str(tmp_path / "state"), "--model", str(tiny_model),
                           "--ray", f"127.0.0.1:{port}"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert time.monotonic() - started < 30
    assert f"jobspec serve: no Ray cluster at 127.0.0.1:{port}" in done.stderr
    assert "ray start --head" in done.stderr and "Traceback" not in done.stderr


def test_ray_flags_are_checked(tmp_path, cli):
    refused = cli("serve", "--state-dir", str(tmp_path), "--storage", str(tmp_path / "s"))
    assert refused.code == 64 and "--storage: only with --ray ADDRESS" in refused.err
    refused = cli("serve", "--state-dir", str(tmp_path), "--ray", "auto", "--ray-workers", "0")
    assert refused.code == 64 and "--ray-workers must be at least 1" in refused.err
    refused = cli("serve", "--state-dir", str(tmp_path), "--ray-generation", "service")
    assert refused.code == 64 and "--ray-generation: only with --ray ADDRESS" in refused.err
    refused = cli("serve", "--state-dir", str(tmp_path), "--ray", "auto",
                  "--ray-generation-idle", "0")
    assert refused.code == 64 and "--ray-generation-idle must be more than 0" in refused.err
