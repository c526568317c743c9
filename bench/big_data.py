"""Peak memory of validate, plan and apply with a big data set on the local backend (tiny model),
against the same commands on a small one, side by side in one run.

Two data sets of the same kind of examples (about 1 KB each): ~200 MB and ~1 MB. For each, a
local service of its own (so that its high-water mark is that data set's), then, as a user
would run them, each as its own process:
- `jobspec validate`, `jobspec plan` (which counts the examples' tokens on the service: the big
  set by upload), `jobspec apply --no-wait` (the examples uploaded, the create naming them);
- the training must start: the operation is polled until it reports 5 completed steps;
- a second `jobspec apply --no-wait` sends no upload (nothing to create, nothing uploaded).
Each client's peak RSS is its ru_maxrss (os.wait4); the service's and its training worker's are
their VmHWM (/proc/PID/status) once training has started. The figures are printed with the
ratio big/small: the goal is flat memory, a ratio near 1, not one that grows with the data
(~200×).
Usage: python bench/big_data.py [--mb 200] [--baseline-mb 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._service import Service, children  # noqa: E402
from jobspec.wire import EXTENSIONS_HEADER, EXTENSIONS_ON  # noqa: E402

JOBSPEC = [sys.executable, "-m", "jobspec"]
STEPS = 5  # training has started: the memory of its steps is in the figures
WORDS = ("alpha beta gamma delta number seven river stone light quick north under given "
         "across letter window garden silver paper orange").split()


def write_data(path: Path, megabytes: float, seed: int = 0) -> tuple[int, int]:
    """About ``megabytes`` of distinct examples of ~1 KB; (examples, bytes) written."""
    rng = random.Random(seed)
    phrases = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(512)]
    target, size, count = int(megabytes * 1e6), 0, 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        while size < target:
            text = " ".join(rng.choice(phrases) for _ in range(11))
            line = json.dumps({"text_input": f"{count}: {text}",
                               "output": " ".join(rng.choice(phrases) for _ in range(2))}) + "\n"
            out.write(line)
            size += len(line.encode("utf-8"))
            count += 1
    return count, size


def write_repo(repo: Path, megabytes: float) -> tuple[int, int]:
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    written = write_data(repo / "jobs/data/big.jsonl", megabytes)
    (repo / "jobs/big.yaml").write_text(
        "version: 1\nname: big\nbase_model: models/tiny-smollm2\n"
        "hyperparameters: {batch_size: 16, epoch_count: 1, learning_rate: 0.001}\n"
        "training_data: data/big.jsonl\n", encoding="utf-8")
    return written


def run_measured(args: list[str], cwd: Path, env: dict[str, str]) -> dict[str, object]:
    """Run a command; its exit code, seconds, peak RSS (MB, ru_maxrss), and its output."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"code": process.returncode, "seconds": seconds,
                "peak_mb": usage.ru_maxrss / 1024, "out": out.read().decode(errors="replace"),
                "err": err.read().decode(errors="replace")}


def high_water_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmHWM for {pid}")


def wait_for_steps(url: str, steps: int, timeout: float = 1800) -> tuple[str, int, float]:
    """(operation, completed steps, seconds) once the run reports ``steps`` completed steps."""
    started = time.monotonic()
    headers = {EXTENSIONS_HEADER: EXTENSIONS_ON}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as http:
        while time.monotonic() - started < timeout:
            models = http.get("/v1beta/tunedModels").json().get("tunedModels", [])
            for model in models:
                operations = http.get(f"/v1beta/{model['name']}/operations").json()
                for operation in operations.get("operations", []):
                    done = operation.get("metadata", {}).get("completedSteps", 0)
                    if operation.get("error"):
                        raise SystemExit(f"training failed: {operation['error']}")
                    if done >= steps:
                        return operation["name"], done, time.monotonic() - started
            time.sleep(0.5)
    raise SystemExit(f"no training step after {timeout}s")


def measure(label: str, megabytes: float, model: Path, work: Path) -> dict[str, object]:
    repo, state = work / f"repo-{label}", work / f"state-{label}"
    count, size = write_repo(repo, megabytes)
    print(f"[{label}] {count:,} examples, {size / 1e6:.1f} MB: {repo / 'jobs/data/big.jsonl'}",
          flush=True)
    service = Service(state, "--model", str(model))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JOBSPEC_") and k != "GEMINI_API_KEY"}
    env.update(JOBSPEC_LOCAL_URL=service.url, XDG_STATE_HOME=str(work / f"xdg-{label}"),
               JOBSPEC_BACKEND="local")
    figures: dict[str, object] = {"examples": count, "bytes": size}
    try:
        for phase, args in (("validate", ["validate"]), ("plan", ["plan"]),
                            ("apply", ["apply", "--no-wait", "--skip-eval"])):
            result = run_measured([*JOBSPEC, *args], repo, env)
            if result["code"] != 0:
                raise SystemExit(f"[{label}] {phase} failed ({result['code']}):\n"
                                 f"{result['out']}\n{result['err']}")
            figures[phase] = result
            print(f"[{label}] {phase}: {result['seconds']:.1f}s, peak RSS "
                  f"{result['peak_mb']:.0f} MB", flush=True)
        uploads_sent = service.requests_logged_as("PUT", "/upload/")
        operation, steps, waited = wait_for_steps(service.url, STEPS)
        figures["service_mb"] = high_water_mb(service.process.pid)
        figures["worker_mb"] = max((high_water_mb(pid) for pid in children(service.process.pid)),
                                   default=0.0)
        print(f"[{label}] training started: {operation} reports {steps} step(s) "
              f"{waited:.0f}s after apply returned; service peak RSS "
              f"{figures['service_mb']:.0f} MB, training worker {figures['worker_mb']:.0f} MB",
              flush=True)
        again = run_measured([*JOBSPEC, "apply", "--no-wait", "--skip-eval"], repo, env)
        figures["uploads_first"] = uploads_sent
        figures["uploads_again"] = service.requests_logged_as("PUT", "/upload/") - uploads_sent
        print(f"[{label}] uploads sent: {uploads_sent} by the first apply (plan included), "
              f"{figures['uploads_again']} by a second apply (exit {again['code']})", flush=True)
        with httpx.Client(base_url=service.url, timeout=60) as http:
            http.post(f"/v1beta/{operation}:cancel")
    finally:
        service.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=200.0)
    parser.add_argument("--baseline-mb", type=float, default=1.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobspec-big-data-") as temp:
        work = Path(temp)
        # In a process of its own: this one stays small (torch not loaded), since a client it
        # starts begins as a copy of it, and ru_maxrss counts that copy.
        model = work / "tiny-smollm2"
        subprocess.run([sys.executable, "-c", "import sys; from bench._service import "
                        "tiny_model; tiny_model(__import__('pathlib').Path(sys.argv[1]))",
                        str(model)], cwd=ROOT, check=True, capture_output=True)
        small = measure("small", args.baseline_mb, model, work)
        big = measure("big", args.mb, model, work)
    scale = big["bytes"] / small["bytes"]  # type: ignore[operator]
    print(f"\nPeak RSS, MB: {small['bytes'] / 1e6:.1f} MB of data against "  # type: ignore
          f"{big['bytes'] / 1e6:.1f} MB ({scale:.0f}× the data)")  # type: ignore[operator]
    print(f"{'':28}{'small':>8}{'big':>8}{'ratio':>8}")
    rows = [(f"client: jobspec {phase}", small[phase]["peak_mb"], big[phase]["peak_mb"])
            for phase in ("validate", "plan", "apply")]  # type: ignore[index]
    rows += [("service (HTTP process)", small["service_mb"], big["service_mb"]),
             ("service's training worker", small["worker_mb"], big["worker_mb"])]
    for name, low, high in rows:
        print(f"{name:28}{low:8.0f}{high:8.0f}{high / low:8.2f}")  # type: ignore[operator]
    print(f"{'seconds':28}" + "".join(
        f"{phase}: {small[phase]['seconds']:.1f} / {big[phase]['seconds']:.1f}  "  # type: ignore
        for phase in ("validate", "plan", "apply")))
    print(f"uploads by a second apply: {small['uploads_again']} (small), "
          f"{big['uploads_again']} (big)")


if __name__ == "__main__":
    main()
