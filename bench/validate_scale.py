"""`jobspec validate` of 1,000 job files, against the library floor, side by side in one run.

Builds a temporary repository holding the shipped job files' data (jobs/data/) and, by default,
1,000 copies of the shipped jobs (jobs/*.yaml, comments and eval prompts included; each copy
renamed, the copies sharing the two data files), then times, each as a fresh process:
- `jobspec validate jobs/` as a user runs it;
- the floor: one process that loads each file with PyYAML's C loader (``yaml.CSafeLoader``),
  validates it with a jsonschema validator of schemas/jobspec.schema.json built once, and reads
  and hashes (SHA-256) its data file; nothing else (no positions, no messages, no data checks).
Each is run --repeat times, alternating, and the best time of each is kept (a shared machine's
noise only ever adds time). Prints both, wall and CPU time (the CPU time is the steadier figure
on a busy machine), and their ratios, of the best times and the median of each run's ratio to the
floor run beside it (goal: <= 1.5).
Usage: python bench/validate_scale.py [--jobs 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOBSPEC = [sys.executable, "-m", "jobspec"]

# The floor, run as its own process like the CLI, so that both pay an interpreter's start and
# their imports. argv: the schema file, then the job files.
FLOOR = """
import hashlib, json, sys
from pathlib import Path
import jsonschema, yaml

schema = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
validator = jsonschema.validators.validator_for(schema)(schema)
for name in sys.argv[2:]:
    path = Path(name)
    job = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    problems = list(validator.iter_errors(job))
    assert not problems, (name, problems)
    data = job["training_data"]
    data = data if isinstance(data, str) else data["path"]
    hashlib.sha256((path.parent / data).read_bytes()).hexdigest()
"""


def build_repo(repo: Path, count: int) -> list[str]:
    """The shipped jobs, copied ``count`` times in turn under distinct names; their paths."""
    (repo / ".git").mkdir(parents=True)
    shutil.copytree(ROOT / "jobs/data", repo / "jobs/data")
    shipped = sorted((ROOT / "jobs").glob("*.yaml"))
    texts = [path.read_text(encoding="utf-8") for path in shipped]
    paths = []
    for index in range(count):
        name = f"job-{index:04d}"
        text = re.sub(r"(?m)^name: .*$", f"name: {name}", texts[index % len(texts)], count=1)
        (repo / f"jobs/{name}.yaml").write_text(text, encoding="utf-8")
        paths.append(f"jobs/{name}.yaml")
    return paths


def timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{stderr[-2000:]}")
    return elapsed, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repo = Path(scratch) / "repo"
        paths = build_repo(repo, args.jobs)
        floor = [sys.executable, "-c", FLOOR, str(ROOT / "schemas/jobspec.schema.json"), *paths]
        validate = JOBSPEC + ["validate", "jobs/"]
        validate_runs, floor_runs = [], []
        for _ in range(args.repeat):
            validate_runs.append(timed(validate, repo))
            floor_runs.append(timed(floor, repo))
    print(f"{args.jobs} job files (copies of the shipped jobs), best of {args.repeat}, "
          "wall and CPU (user + system) seconds:")
    for label, runs in (("jobspec validate", validate_runs),
                        ("floor (C loader, jsonschema built once, hash of the data)", floor_runs)):
        print(f"{label}: {min(w for w, _ in runs):6.2f} s wall, {min(c for _, c in runs):6.2f} s "
              f"CPU  (wall: {', '.join(f'{w:.2f}' for w, _ in runs)})")
    for kind, index in (("wall", 0), ("CPU", 1)):
        ratio = min(r[index] for r in validate_runs) / min(r[index] for r in floor_runs)
        # Each validate run beside the floor run that followed it, which met the same load.
        paired = statistics.median(v[index] / f[index] for v, f in zip(validate_runs, floor_runs))
        print(f"ratio (validate / floor), {kind}: {ratio:.2f} of the best times, {paired:.2f} "
              "median of the pairs  (goal <= 1.5)")

if __name__ == "__main__":
    main()
