"""`jobspec plan` at scale, and apply's request rate while jobs train (tiny model).

1,000 job files, against a local service already holding their 1,000 tuned models (written into
its state as a previous apply would have left them), then:
- plan's request count (goal: the list pages only, ceil(1000 / 1000) = 1) and wall time, against
  `jobspec validate` of the same files (loading and checking them alone), the median of
  --repeats runs of each — goal ratio <= 1.5;
- with the token counts on: 1,000 copies of the shipped job (distinct names, one data file),
  none of them trained yet, so plan counts every job's examples. Its requests (goal: the list
  pages, models.get of the base model for its countingDigest, and one count: one base model,
  one set of examples) and wall time against validate of the same files — goal ratio <= 1.5;
  then the same plan again, which finds every count in its cache (goal: no count request);
- apply of 10 new jobs: requests per second while they train (goal: bounded by the polling
  policy, no busy loop), with the same figure the policy allows printed beside it.
Usage: python bench/plan_scale.py [--jobs 1000] [--repeats 3] [--skip-apply]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._service import Service, tiny_model  # noqa: E402

JOBSPEC = [sys.executable, "-m", "jobspec"]
SHIPPED_JOB = ROOT / "jobs/number-generator.yaml"


def write_jobs(repo: Path, count: int, prefix: str, epochs: int = 1) -> None:
    (repo / "jobs/data").mkdir(parents=True, exist_ok=True)
    (repo / "jobs/data/ex.jsonl").write_text(
        "".join(json.dumps({"text_input": str(i), "output": str(i + 1)}) + "\n" for i in range(8)))
    for index in range(count):
        (repo / f"jobs/{prefix}{index:04d}.yaml").write_text(
            f"version: 1\nname: {prefix}{index:04d}\nbase_model: models/gemini-1.0-pro-001\n"
            f"hyperparameters: {{batch_size: 4, epoch_count: {epochs}}}\n"
            "training_data: data/ex.jsonl\n")


def write_shipped_copies(repo: Path, count: int) -> None:
    """``count`` copies of the shipped job, each under its own name, sharing its data file."""
    (repo / "jobs/data").mkdir(parents=True, exist_ok=True)
    data = "data/number-generator.jsonl"
    (repo / "jobs" / data).write_bytes((SHIPPED_JOB.parent / data).read_bytes())
    shipped = SHIPPED_JOB.read_text(encoding="utf-8")
    assert "\nname: number-generator\n" in shipped
    for index in range(count):
        (repo / f"jobs/copy-{index:04d}.yaml").write_text(
            shipped.replace("\nname: number-generator\n", f"\nname: copy-{index:04d}\n"),
            encoding="utf-8")


def seed_models(repo: Path, state: Path) -> None:
    """Record every job's model as ACTIVE, as a finished apply leaves the service's state."""
    sys.path.insert(0, str(repo))
    from jobspec import spec, workspace
    from jobspec.backends.tunedmodels import marker
    from jobspec.identity import identify
    from jobspec.server.store import Store

    store = Store(state / "state.db")
    owner_id = workspace.owner(root=repo).id  # as apply, run in the repository, derives it
    for path in sorted((repo / "jobs").glob("*.yaml")):
        job = spec.load_job(str(path))
        identity = identify(job)
        store.create(
            model_id=identity.tuned_model_id, display_name=job.name,
            description=marker(job.name, identity.fingerprint, owner_id), base_model=job.base_model,
            local_model="tiny", temperature=None, top_p=None, top_k=None,
            hyperparameters={"batchSize": 4, "epochCount": 1, "learningRateMultiplier": 1.0},
            effective_lr=0.001, examples=[("0", "1")], total_steps=2)
        claimed = store.claim_next(os.getpid())  # only the worker that holds a job finishes it
        store.finish(claimed.id, claimed.operation_id, os.getpid())


def run(command: list[str], cwd: Path, env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 2):
        raise SystemExit(done.stderr[-2000:])
    return time.perf_counter() - started, done.stderr


def plan_with_counts(service: Service, root: Path, env: dict, jobs: int, repeats: int) -> None:
    """validate, plan with an empty count cache, and plan again, ``repeats`` times in turn; the
    median of each."""
    repo = root / "copies"
    (repo / ".git").mkdir(parents=True)
    write_shipped_copies(repo, jobs)
    timings: dict[str, list[float]] = {"validate": [], "cold": [], "warm": []}
    requests: dict[str, list[tuple[int, int]]] = {"cold": [], "warm": []}
    for attempt in range(repeats):
        run_env = {**env, "XDG_STATE_HOME": str(root / f"xdg-{attempt}")}  # an empty cache
        timings["validate"].append(run(JOBSPEC + ["validate", "jobs/"], repo, run_env)[0])
        for kind in ("cold", "warm"):
            before = (service.requests_logged(), service.requests_logged(":countExampleTokens"))
            timings[kind].append(run(JOBSPEC + ["plan", "jobs/"], repo, run_env)[0])
            requests[kind].append((service.requests_logged() - before[0],
                                   service.requests_logged(":countExampleTokens") - before[1]))
    validate = statistics.median(timings["validate"])
    print(f"{jobs} copies of {SHIPPED_JOB.name} (one data file), none trained: plan counts "
          f"tokens (median of {repeats})")
    for kind, label in (("cold", "plan, empty count cache"), ("warm", "plan again, same files")):
        total, counts = max(requests[kind])
        seconds = statistics.median(timings[kind])
        print(f"{label}: {total} requests, {counts} of them countExampleTokens "
              f"(goal: {'1' if kind == 'cold' else '0'}), {seconds:.2f} s; validate alone "
              f"{validate:.2f} s; ratio {seconds / validate:.2f} (goal <= 1.5)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3,
                        help="times each command of each comparison runs (the median is shown)")
    parser.add_argument("--skip-apply", action="store_true",
                        help="leave out the apply of 10 training jobs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        repo, state = root / "repo", root / "state"
        (repo / ".git").mkdir(parents=True)
        write_jobs(repo, args.jobs, "job-")
        model = tiny_model(root / "tiny")
        seed_models(repo, state)
        service = Service(state, "--model", str(model), "--alias", "gemini-1.0-pro-001=tiny")
        # Its start-up (models loading, a worker starting) would otherwise be timed as the first
        # comparison's.
        print(f"service idle {service.wait_settled():.1f} s after it listened")
        # This run's own private state (where plan caches token counts), not the user's.
        env = {**os.environ, "JOBSPEC_LOCAL_URL": service.url,
               "XDG_STATE_HOME": str(root / "xdg")}
        try:
            # validate and plan in turn, ``repeats`` times: one run of each is at the mercy of
            # whatever else the machine is doing.
            validate_times, plan_times, plan_requests = [], [], 0
            for _ in range(args.repeats):
                validate_times.append(run(JOBSPEC + ["validate", "jobs/"], repo, env)[0])
                before = service.requests_logged()
                plan_times.append(run(JOBSPEC + ["plan", "jobs/", "--detailed-exitcode"], repo,
                                      env)[0])
                plan_requests = max(plan_requests, service.requests_logged() - before)
            validate_seconds = statistics.median(validate_times)
            plan_seconds = statistics.median(plan_times)
            print(f"{args.jobs} jobs, {args.jobs} models held by the service (median of "
                  f"{args.repeats})")
            print(f"plan: {plan_requests} requests (goal: {-(-args.jobs // 1000)} list page(s)), "
                  f"{plan_seconds:.2f} s; validate alone {validate_seconds:.2f} s; "
                  f"ratio {plan_seconds / validate_seconds:.2f} (goal <= 1.5)")

            plan_with_counts(service, root, env, args.jobs, args.repeats)
            if args.skip_apply:
                return
            fresh = root / "fresh"
            (fresh / ".git").mkdir(parents=True)
            write_jobs(fresh, 10, "train-", epochs=150)
            before = service.requests_logged()
            apply_seconds, output = run(JOBSPEC + ["apply", "jobs/", "--skip-eval", "--quiet"],
                                        fresh, env)
            apply_requests = service.requests_logged() - before
            # Policy: per job, polls start 0.5 s apart and grow 1.5x to 6 s.
            print(f"apply of 10 jobs (300 steps each): {apply_requests} requests in "
                  f"{apply_seconds:.1f} s = {apply_requests / apply_seconds:.1f} requests/s; "
                  f"the polling policy allows at most {10 / 0.5:.0f}/s at first, "
                  f"{10 / 6:.1f}/s once settled")
            print(output.strip().splitlines()[-1])
        finally:
            service.stop()


if __name__ == "__main__":
    main()
