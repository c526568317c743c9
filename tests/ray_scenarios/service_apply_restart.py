"""Scenario: `jobspec apply` against `jobspec serve --ray` on a two-node cluster gives what it
gives against the plain local service, its eval generated on the node with a GPU (a Ray actor
reading the adapter from --storage, which gives the GPU back when idle); then the Ray service is
killed (SIGKILL) while a job trains (on the standby run the idle service had started for it),
and the restarted service re-attaches to the run instead of starting a second one; then the
same job asking for two data-parallel workers (`resources: {workers: 2}`) trains on both nodes
at once (torch DDP over gloo) with the single process's steps (the one-worker standby released
for it); last, a service killed while its standby run waits: the next service ends that run and
starts its own, and releases it when stopped.

Usage: service_apply_restart.py TINY_MODEL WORK_DIR. Prints one JSON object.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from service_common import (JOB, STEP_LINE, apply, emit, generation_actors, jobspec, newest_model,
                            progress, run_actors, run_of, scratch_repo, service, standby_ready,
                            start_cluster, wait_for)

GENERATION_IDLE = 5  # seconds: the generation actor's --ray-generation-idle


def main() -> None:
    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"timings": timings}
    began = time.monotonic()
    services = []
    cluster = None
    try:
        progress("plain local service")
        local = service(work / "local-state", model)
        services.append(local)
        out["local"] = apply(scratch_repo(work / "repo-local"), local.url)
        local.stop()
        timings["local"] = round(time.monotonic() - began, 1)

        mark = time.monotonic()
        # The node has a GPU (for Ray: torch finds none and runs on the CPU): generation goes
        # there; training takes none (--ray-gpus-per-worker 0), as torch here cannot use one.
        cluster = start_cluster(head_cpus=1, node_cpus=[1], node_gpus=[1])
        timings["cluster_start"] = round(time.monotonic() - mark, 1)
        state, storage = work / "ray-state", work / "ray-storage"
        ray_args = ("--ray", cluster.address, "--storage", str(storage),
                    "--checkpoint-interval", "0.5", "--ray-gpus-per-worker", "0",
                    "--ray-generation-idle", str(GENERATION_IDLE))
        progress("Ray service")
        mark = time.monotonic()
        first = service(state, model, *ray_args)
        services.append(first)
        timings["ray_service_start"] = round(time.monotonic() - mark, 1)
        repo = scratch_repo(work / "repo-ray")
        mark = time.monotonic()
        out["ray"] = apply(repo, first.url)
        timings["ray_apply"] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()
        out["generation"] = generation(first, cluster, state, storage)
        timings["generation_idle"] = round(time.monotonic() - mark, 1)

        # Idle again: the service starts a standby run for the next job; the long job takes it.
        wait_for(lambda: standby_ready(first), 90, "the standby run after apply")
        progress("a longer job, killed mid-training")
        job = repo / "jobs" / "number-generator.yaml"
        job.write_text(job.read_text().replace("epoch_count: 5", "epoch_count: 12"))
        mark = time.monotonic()
        created = jobspec(repo, first.url, "apply", "jobs/", "--no-wait", "--skip-eval")
        out["created"] = {"code": created.returncode, "err": created.stderr[-1500:]}

        def steps_done() -> int:
            return len(newest_model(first.url).get("tuningTask", {}).get("snapshots", []))

        wait_for(lambda: steps_done() >= 8, 120, "the long job's first steps on Ray")
        out["steps_before_kill"] = steps_done()
        long_name = newest_model(first.url)["name"]
        first.kill(signal.SIGKILL)
        out["first_notes"] = notes(first.log)
        out["long_run"] = run_of(first.log, long_name)
        progress("restarted Ray service")
        second = service(state, model, *ray_args)
        services.append(second)
        timings["restart"] = round(time.monotonic() - mark, 1)
        wait_for(lambda: newest_model(second.url).get("state") in ("ACTIVE", "FAILED"), 180,
                 "the long job after the restart")
        timings["restart_to_done"] = round(time.monotonic() - mark, 1)
        long_job = newest_model(second.url)
        out["long"] = {"state": long_job.get("state"),
                       "steps": [s["step"] for s in long_job["tuningTask"].get("snapshots", [])],
                       "device": long_job["tuningTask"].get("device"),
                       "losses": [s["meanLoss"] for s in long_job["tuningTask"]["snapshots"]]}
        out["runs"] = run_actors(cluster.address)
        out["second_notes"] = notes(second.log)  # of the restart, before the next job

        progress("a data-parallel job: resources.workers 2, a worker on each node")
        mark = time.monotonic()
        # Idle, the service starts a standby run (one worker); the two-worker job releases it.
        wait_for(lambda: standby_ready(second), 90, "the standby run after the long job")
        said = len(second.log)
        out["ddp"] = data_parallel(scratch_repo(work / "repo-ddp"), second.url)
        out["ddp_notes"] = notes(second.log[said:])
        timings["ddp"] = round(time.monotonic() - mark, 1)

        progress("a service killed while its standby run waits; the next one ends that run")
        mark = time.monotonic()
        wait_for(lambda: standby_ready(second, said), 90, "the standby run after the DDP job")
        left = [r["name"] for r in run_actors(cluster.address) if r["alive"]]
        second.kill(signal.SIGKILL)
        third = service(state, model, *ray_args)
        services.append(third)
        wait_for(lambda: standby_ready(third), 90, "the third service's standby run")
        out["standby"] = {"left": left, "third_notes": notes(third.log),
                          "alive": [r["name"] for r in run_actors(cluster.address)
                                    if r["alive"]]}
        third.stop()
        # Stopped, a service releases its standby run: nothing of it lives on (every Ray
        # Train controller is a run actor's).
        wait_for(lambda: not any(r["live_controllers"] for r in run_actors(cluster.address)),
                 30, "the released standby run's end", interval=1)
        out["standby"]["alive_after_stop"] = [r["name"] for r in run_actors(cluster.address)
                                              if r["alive"]]
        timings["standby"] = round(time.monotonic() - mark, 1)
    except Exception as exc:  # noqa: BLE001 - said in the JSON, with the services' logs
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["logs"] = [s.log[-4000:] for s in services]
    finally:
        for running in services:
            running.stop()
        if cluster is not None:
            cluster.shutdown()
    timings["total"] = round(time.monotonic() - began, 1)
    emit(out)


def data_parallel(repo: Path, url: str) -> dict[str, Any]:
    """The shipped job, renamed (a job of its own) and asking for two workers, applied to the
    end without its eval: its exit code and its report's steps, losses and device."""
    job = repo / "jobs" / f"{JOB}.yaml"
    job.write_text(job.read_text().replace(f"name: {JOB}\n", f"name: {JOB}-ddp\n")
                   + "resources:\n  workers: 2\n")
    done = jobspec(repo, url, "apply", "jobs/", "--skip-eval", "--report-dir", "reports",
                   "--timeout", "150s")
    report_file = repo / "reports" / f"{JOB}-ddp.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    return {"code": done.returncode, "err_tail": done.stderr[-1500:] if done.returncode else "",
            "state": report.get("state"), "device": report.get("device"),
            "steps": [p["step"] for p in report.get("loss_curve", [])],
            "losses": [p["mean_loss"] for p in report.get("loss_curve", [])]}


def generation(running: Any, cluster: Any, state: Path, storage: Path) -> dict[str, Any]:
    """Where the eval of the apply just done was generated; the adapter in the storage; the
    actor's end once idle; a request that starts another actor (and a prompt too long for the
    model, refused there), which is then killed: the next request is answered by the service;
    the stored adapter's end when its model is deleted."""
    import ray

    from jobspec.server.rayconnect import namespace_for

    [gpu_node] = [node.node_id for node in cluster.worker_nodes]
    tuned = newest_model(running.url)["name"]
    found = {"gpu_node": gpu_node, "model": tuned,
             "actors_after_eval": generation_actors(cluster.address),
             "stored": sorted(str(path.relative_to(storage))
                              for path in (storage / "adapters").rglob("COMPLETE"))}
    released = f" released after {GENERATION_IDLE}s without a request"
    found["idle_wait"] = wait_for(lambda: released in running.log, 30,
                                  "the idle generation actor's release")
    found["alive_after_idle"] = [actor["name"] for actor in generation_actors(cluster.address)
                                 if actor["alive"]]
    ask = {"contents": [{"parts": [{"text": "seven"}]}], "generationConfig": {"maxOutputTokens": 8}}
    with httpx.Client(base_url=running.url, timeout=120) as http:
        on_actor = http.post(f"/v1beta/{tuned}:generateContent", json=ask)
        too_long = http.post(f"/v1beta/{tuned}:generateContent",
                             json={"contents": [{"parts": [{"text": "seven " * 600}]}]})
        found["too_long"] = {"code": too_long.status_code,
                             "error": too_long.json().get("error", {})}
        [again] = [actor["name"] for actor in generation_actors(cluster.address) if actor["alive"]]
        ray.init(address=cluster.address, namespace=namespace_for(state), log_to_driver=False,
                 logging_level="ERROR")
        try:
            ray.kill(ray.get_actor(again))
        finally:
            ray.shutdown()
        here = http.post(f"/v1beta/{tuned}:generateContent", json=ask)
        found["lost_actor"] = {"name": again, "codes": [on_actor.status_code, here.status_code],
                               "same": on_actor.json().get("candidates")
                               == here.json().get("candidates")}
        found["delete_code"] = http.delete(f"/v1beta/{tuned}").status_code
    found["notes"] = [line for line in notes(running.log) if "generation" in line]
    found["stored_after_delete"] = sorted(str(path.relative_to(storage))
                                          for path in (storage / "adapters").rglob("*"))
    return found


def notes(log: str) -> list[str]:
    """What a Ray service said of its runs, without the step and request lines."""
    return [line for line in log.splitlines()
            if not STEP_LINE.search(line) and not line.startswith("jobspec serve: GET ")]


if __name__ == "__main__":
    main()
