"""Scenario: the node that trains a job is removed from the cluster mid-training; Ray Train
restarts the worker group on the other node from the run's last checkpoint, and the job ends
ACTIVE with one continuous snapshot series. The job trains on the standby run the service
started while idle (raystandby.py), as does the job cancelled mid-training after it, whose run
then ends on the cluster. Last, generation: the cluster has no GPU, so the service answers.

The head has no CPUs for training (the service's run actor and Ray Train's controller take
none), so training lands on one of the two worker nodes, which can be removed.

Usage: service_node_loss.py TINY_MODEL WORK_DIR. Prints one JSON object.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
from service_common import (STEP_LINE, emit, jobspec, newest_model, progress, run_actors, run_of,
                            scratch_repo, service, start_cluster, wait_for)

EPOCHS = 12  # as the long job of service_apply_restart.py, whose losses the test compares


def main() -> None:
    model, work = Path(sys.argv[1]), Path(sys.argv[2])
    timings: dict[str, float] = {}
    out: dict[str, Any] = {"timings": timings}
    began = time.monotonic()
    running = cluster = None
    try:
        cluster = start_cluster(head_cpus=0, node_cpus=[1, 1])
        timings["cluster_start"] = round(time.monotonic() - began, 1)
        running = service(work / "state", model, "--ray", cluster.address,
                          "--storage", str(work / "storage"), "--checkpoint-interval", "0.2")
        repo = scratch_repo(work / "repo", epochs=EPOCHS)
        mark = time.monotonic()
        created = jobspec(repo, running.url, "apply", "jobs/", "--no-wait", "--skip-eval")
        out["created_code"] = created.returncode

        def task() -> dict[str, Any]:
            return newest_model(running.url).get("tuningTask", {})

        # Past the first epoch's end: a checkpoint is there to resume from.
        wait_for(lambda: len(task().get("snapshots", [])) >= 20, 120, "steps past epoch 2")
        trained_on = task()["device"]
        out["device_before"] = trained_on
        victim = [node for node in cluster.worker_nodes
                  if f"(node {node.node_id[:8]})" in trained_on]
        out["victims"] = len(victim)
        out["steps_at_removal"] = len(task()["snapshots"])
        progress(f"removing the training node at step {out['steps_at_removal']}")
        cluster.remove_node(victim[0], allow_graceful=False)
        timings["to_removal"] = round(time.monotonic() - mark, 1)
        wait_for(lambda: newest_model(running.url).get("state") in ("ACTIVE", "FAILED"), 150,
                 "the job after its node was removed")
        timings["removal_to_done"] = round(time.monotonic() - mark - timings["to_removal"], 1)
        final = newest_model(running.url)
        out["state"] = final.get("state")
        out["job_error"] = final.get("error")
        out["device_after"] = final["tuningTask"].get("device")
        out["steps"] = [s["step"] for s in final["tuningTask"].get("snapshots", [])]
        out["losses"] = [s["meanLoss"] for s in final["tuningTask"].get("snapshots", [])]
        out["notes"] = [line for line in running.log.splitlines() if not STEP_LINE.search(line)
                        and not line.startswith("jobspec serve: GET ")]

        progress("a job cancelled mid-training")
        job = repo / "jobs" / "number-generator.yaml"
        job.write_text(job.read_text().replace(f"epoch_count: {EPOCHS}", "epoch_count: 40"))
        mark = time.monotonic()
        jobspec(repo, running.url, "apply", "jobs/", "--no-wait", "--skip-eval")
        wait_for(lambda: len(task().get("snapshots", [])) >= 3, 120, "the cancelled job's steps")
        cancelled = newest_model(running.url)["name"]
        with httpx.Client(base_url=running.url, timeout=30) as http:
            [operation] = http.get(f"/v1beta/{cancelled}/operations").json()["operations"]
            out["cancel_code"] = http.post(f"/v1beta/{operation['name']}:cancel").status_code
        wait_for(lambda: newest_model(running.url).get("state") == "FAILED", 60,
                 "the cancelled job")
        out["cancelled_steps"] = len(task().get("snapshots", []))
        run = run_of(running.log, cancelled)
        out["cancelled_run"] = run

        def cancelled_run() -> list[dict[str, Any]]:
            return [r for r in run_actors(cluster.address) if r["name"] == run]

        wait_for(lambda: not any(r["alive"] or r["live_controllers"] for r in cancelled_run()),
                 60, "the cancelled run's end on the cluster", interval=1)
        out["cancelled_run_after"] = cancelled_run()
        timings["cancel"] = round(time.monotonic() - mark, 1)

        progress("generation where the cluster has no GPU")
        with httpx.Client(base_url=running.url, timeout=120) as http:
            asked = http.post("/v1beta/models/gemini-1.5-flash-001-tuning:generateContent",
                              json={"contents": [{"parts": [{"text": "seven"}]}]})
        out["no_gpu_generation"] = {"code": asked.status_code, "notes": [
            line for line in running.log.splitlines() if "generation" in line]}
    except Exception as exc:  # noqa: BLE001 - said in the JSON, with the service's log
        out["failure"] = f"{type(exc).__name__}: {exc}"
        out["log"] = running.log[-5000:] if running else ""
    finally:
        if running is not None:
            running.stop()
        if cluster is not None:
            cluster.shutdown()
    timings["total"] = round(time.monotonic() - began, 1)
    emit(out)


if __name__ == "__main__":
    main()
