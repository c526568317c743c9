"""How fast `jobspec validate` reads a large training file, against sha256sum of the same file.

Builds a JSONL file of examples (default ~500 MB) in a temporary repository, then times, side by
side in one run, `sha256sum FILE` and `jobspec validate JOB`, and prints both throughputs, their
ratio (goal: at least 0.25) and validate's peak memory at two file sizes (goal: it does not grow
with the file). Usage: python bench/validate_throughput.py [--size-mb 500]
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

JOBSPEC = [sys.executable, "-m", "jobspec"]


def build(path: Path, size_mb: int) -> int:
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "tuning", "model", "answer", "number", "next"]
    target = size_mb * 1024 * 1024
    written = count = 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            record = {"text_input": " ".join(rng.choice(words) for _ in range(rng.randint(20, 200))),
                      "output": " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))}
            line = json.dumps(record) + "\n"
            out.write(line)
            written += len(line)
            count += 1
    return count


def timed(command: list[str], cwd: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{command} failed")
    return elapsed, usage.ru_maxrss


def job_repo(root: Path, size_mb: int) -> tuple[Path, int]:
    (root / ".git").mkdir(parents=True)
    (root / "jobs/data").mkdir(parents=True)
    count = build(root / "jobs/data/big.jsonl", size_mb)
    (root / "jobs/big.yaml").write_text(
        "version: 1\nname: big\nbase_model: models/gemini-1.0-pro-001\n"
        "training_data: data/big.jsonl\n")
    return root / "jobs/data/big.jsonl", count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        small_path, _ = job_repo(Path(scratch) / "small", max(1, args.size_mb // 10))
        data, count = job_repo(Path(scratch) / "large", args.size_mb)
        size = data.stat().st_size
        print(f"file: {size / 2**20:.0f} MiB, {count:,} examples")
        sha_seconds, _ = timed(["sha256sum", str(data)], data.parent)
        # A file this large is a Vertex job (uploaded to Cloud Storage): the backends that inline
        # the examples in one request (local, gemini) refuse it.
        validate = JOBSPEC + ["validate", "--backend", "vertex", "jobs/big.yaml"]
        validate_seconds, validate_rss = timed(validate, data.parents[2])
        _, small_rss = timed(validate, small_path.parents[2])
    sha_rate = size / sha_seconds / 2**20
    validate_rate = size / validate_seconds / 2**20
    print(f"sha256sum:        {sha_seconds:7.2f} s  {sha_rate:8.1f} MiB/s")
    print(f"jobspec validate: {validate_seconds:7.2f} s  {validate_rate:8.1f} MiB/s")
    print(f"ratio (validate / sha256sum throughput): {validate_rate / sha_rate:.3f}  (goal >= 0.25)")
    print(f"validate peak RSS: {small_rss / 1024:.0f} MiB on a {size / 10 / 2**20:.0f} MiB file, "
          f"{validate_rss / 1024:.0f} MiB on {size / 2**20:.0f} MiB "
          f"(ratio {validate_rss / small_rss:.2f}; goal: about 1)")


if __name__ == "__main__":
    main()
