"""`jobspec plan` at scale, and apply's request rate while jobs train (tiny model).

1,000 job files, against a local service already holding their 1,000 tuned models (written into
its state as a previous apply would have left them), then:
- plan's request count (goal: the list pages only, ceil(1000 / 1000) = 1) and wall time, against
  `jobspec validate` of the same files (loading and checking them alone) — goal ratio <= 1.5;
- apply of 10 new jobs: requests per second while they train (goal: bounded by the polling
  policy, no busy loop), with the same figure the policy allows printed beside it.
Usage: python bench/plan_scale.py [--jobs 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._service import Service, tiny_model  # noqa: E402

JOBSPEC = [sys.executable, "-m", "jobspec"]


def write_jobs(repo: Path, count: int, prefix: str, epochs: int = 1) -> None:
    (repo / "jobs/data").mkdir(parents=True, exist_ok=True)
    (repo / "jobs/data/ex.jsonl").write_text(
        "".join(json.dumps({"text_input": str(i), "output": str(i + 1)}) + "\n" for i in range(8)))
    for index in range(count):
        (repo / f"jobs/{prefix}{index:04d}.yaml").write_text(
            f"version: 1\nname: {prefix}{index:04d}\nbase_model: models/gemini-1.0-pro-001\n"
            f"hyperparameters: {{batch_size: 4, epoch_count: {epochs}}}\n"
            "training_data: data/ex.jsonl\n")


def seed_models(repo: Path, state: Path) -> None:
    """Record every job's model as ACTIVE, as a finished apply leaves the service's state."""
    sys.path.insert(0, str(repo))
    from jobspec import spec, workspace
    from jobspec.backends.gemini import marker
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


def main() -> None:

    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        repo, state = root / "repo", root / "state"
        (repo / ".git").mkdir(parents=True)
        write_jobs(repo, args.jobs, "job-")
        model = tiny_model(root / "tiny")
        seed_models(repo, state)
        service = Service(state, "--model", str(model), "--alias", "gemini-1.0-pro-001=tiny")
        env = {**os.environ, "JOBSPEC_LOCAL_URL": service.url}
        try:
            validate_seconds, _ = run(JOBSPEC + ["validate", "jobs/"], repo, env)
            before = service.requests_logged()
            plan_seconds, _ = run(JOBSPEC + ["plan", "jobs/", "--detailed-exitcode"], repo, env)
            plan_requests = service.requests_logged() - before
            print(f"{args.jobs} jobs, {args.jobs} models held by the service")
            print(f"plan: {plan_requests} requests (goal: {-(-args.jobs // 1000)} list page(s)), "
                  f"{plan_seconds:.2f} s; validate alone {validate_seconds:.2f} s; "
                  f"ratio {plan_seconds / validate_seconds:.2f} (goal <= 1.5)")

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
