"""`jobspec validate` of 1,000 job files, against the library floor, side by side in one run.

Builds a temporary repository holding the shipped job files' data (jobs/data/) and, by default,
1,000 copies of the shipped jobs (jobs/*.yaml, comments and eval prompts included; each copy
renamed, the copies sharing the two data files), then times, each as a fresh process:
- `jobspec validate jobs/` as a user runs it;
- the floor: one process that loads each file with PyYAML's C loader (``yaml.CSafeLoader``),
  validates it with a jsonschema validator of schemas/jobspec.schema.json built once, and reads
  and hashes (SHA-256) its data file; nothing else (no positions, no messages, no data checks).
Each is run --repeat times, alternating, and the best time of each is kept (a shared machine's
noise only ever adds time). Prints both and the ratio (goal: <= 1.5).
Usage: python bench/validate_scale.py [--jobs 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import shutil
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


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-2000:]}")
    return elapsed


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
        validate_times, floor_times = [], []
        for _ in range(args.repeat):
            validate_times.append(timed(validate, repo))
            floor_times.append(timed(floor, repo))
    best_validate, best_floor = min(validate_times), min(floor_times)
    print(f"{args.jobs} job files (copies of the shipped jobs), best of {args.repeat}:")
    print(f"jobspec validate: {best_validate:6.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in validate_times)})")
    print(f"floor (C loader, compiled schema, hash of the data): {best_floor:6.2f} s  "
          f"({', '.join(f'{t:.2f}' for t in floor_times)})")
    print(f"ratio (validate / floor): {best_validate / best_floor:.2f}  (goal <= 1.5)")


if __name__ == "__main__":
    main()
