"""What the `jobspec serve --ray` scenarios share: a Ray cluster on this machine
(ray.cluster_utils.Cluster), the real service in front of it, and the real CLI applying a job.

A scenario runs in a loopback-only network namespace (tests/raynet.py) and prints one JSON
object on its last line of standard output, which its test asserts on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from jobspec.wire import EXTENSIONS_HEADER, EXTENSIONS_ON  # noqa: E402
from tests.service import LocalService  # noqa: E402

# The shipped job of README's main command (`jobspec apply jobs/`): the Gemini API tutorial's.
JOB = "number-generator"
STEP_LINE = re.compile(r": step \d+/\d+ epoch ")  # the service's log line of each step


def start_cluster(head_cpus: float, node_cpus: list[float], node_gpus: list[float] = ()) -> Any:
    """A head and one node per entry of ``node_cpus`` (with the GPUs of ``node_gpus``'s entry,
    where there is one: Ray's resource, which torch, finding no GPU, runs on the CPU), no
    dashboard; started and waited for."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": head_cpus, "include_dashboard": False})
    for index, cpus in enumerate(node_cpus):
        cluster.add_node(num_cpus=cpus,
                         num_gpus=node_gpus[index] if index < len(node_gpus) else 0)
    cluster.wait_for_nodes()
    return cluster


def scratch_repo(folder: Path, epochs: int | None = None) -> Path:
    """A git repository holding the shipped job (and its data), ``epochs`` changed if given."""
    folder.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    (folder / "jobs" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "jobs" / "data" / f"{JOB}.jsonl", folder / "jobs" / "data")
    text = (ROOT / "jobs" / f"{JOB}.yaml").read_text(encoding="utf-8")
    if epochs is not None:
        text = text.replace("epoch_count: 5", f"epoch_count: {epochs}")
    (folder / "jobs" / f"{JOB}.yaml").write_text(text, encoding="utf-8")
    return folder


def jobspec(repo: Path, url: str, *args: str,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """The real CLI (``python -m jobspec``) in ``repo`` against the service at ``url``."""
    env = {**os.environ, "JOBSPEC_LOCAL_URL": url, "XDG_STATE_HOME": str(repo / ".xdg")}
    env.pop("JOBSPEC_BACKEND", None)
    return subprocess.run([sys.executable, "-m", "jobspec", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def apply(repo: Path, url: str) -> dict[str, Any]:
    """`jobspec apply jobs/` to the end (training and eval); its exit code, the job's report,
    and what `jobspec get -o json` says of it."""
    started = time.monotonic()
    done = jobspec(repo, url, "apply", "jobs/", "--report-dir", "reports", "--timeout", "150s")
    seconds = time.monotonic() - started
    report_file = repo / "reports" / f"{JOB}.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else None
    got = jobspec(repo, url, "get", "-o", "json")
    table = jobspec(repo, url, "get")
    return {"code": done.returncode, "seconds": round(seconds, 1),
            "err_tail": done.stderr[-1500:] if done.returncode else "",
            "state": report and report["state"],
            "losses": [p["mean_loss"] for p in report["loss_curve"]] if report else [],
            "steps": [p["step"] for p in report["loss_curve"]] if report else [],
            "answers": [p["answer"] for p in report["eval"]["prompts"]]
            if report and report.get("eval") else None,
            "device": report and report["device"],
            "get": json.loads(got.stdout) if got.returncode == 0 else got.stderr[-500:],
            "get_table": table.stdout}


def service(state_dir: Path, model: Path, *args: str) -> LocalService:
    return LocalService(state_dir, "--model", str(model), *args).start(timeout=180)


def newest_model(url: str) -> dict[str, Any]:
    """The tuned model created last on the service, with its training snapshots and the
    service's extension fields ({} when there is none)."""
    headers = {EXTENSIONS_HEADER: EXTENSIONS_ON}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as http:
        models = http.get("/v1beta/tunedModels").json().get("tunedModels", [])
        return models[-1] if models else {}


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> float:
    """Seconds until ``predicate()`` held; RuntimeError naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise RuntimeError(f"{what}: not within {timeout:g}s")


def progress(message: str) -> None:
    """A line on standard error, for whoever reads a scenario that went wrong."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def actor_table(address: str) -> list[dict[str, Any]]:
    """Every actor the cluster has seen, dead or alive, as Ray's state API gives it."""
    import ray

    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        return list(ray._private.state.actors().values())
    finally:
        ray.shutdown()


def generation_actors(address: str) -> list[dict[str, Any]]:
    """Every generation actor of a service the cluster has seen (raygenerate.GenerationActor):
    its name, whether it lives, its node's id."""
    return [{"name": actor.get("Name"), "alive": actor.get("State") == "ALIVE",
             "node": actor.get("Address", {}).get("NodeID", "")}
            for actor in actor_table(address)
            if actor.get("ActorClassName", "").endswith("GenerationActor")]


def run_actors(address: str) -> list[dict[str, Any]]:
    """Every run actor of a service the cluster has seen (rayrun.RunActor: one a Ray Train run,
    named as its run), dead or alive, each with the Ray Train controllers it started (those the
    actor owns) and how many of them live."""
    actors = actor_table(address)

    def where(address: dict[str, Any]) -> tuple[str, int]:
        return address.get("IPAddress", ""), address.get("Port", 0)

    found = []
    for actor in actors:
        if not actor.get("ActorClassName", "").endswith("RunActor"):
            continue
        controllers = [c for c in actors if "TrainController" in c.get("ActorClassName", "")
                       and where(c["OwnerAddress"]) == where(actor["Address"])]
        found.append({"name": actor.get("Name"), "alive": actor.get("State") == "ALIVE",
                      "controllers": len(controllers),
                      "live_controllers": sum(c.get("State") == "ALIVE" for c in controllers)})
    return found


def run_of(log: str, model_name: str) -> str | None:
    """The Ray Train run the service's log says ``model_name`` (tunedModels/ID) trains on:
    the standby run it was handed to, or the run started for it."""
    found = re.findall(rf"train {re.escape(model_name)}: (?:handed to the standby Ray Train run "
                       r"|started Ray Train run )(\S+)", log)
    return found[-1] if found else None


def standby_ready(service: LocalService, after: int = 0) -> bool:
    """Whether the service said a standby run is ready, in its log past ``after`` characters."""
    return " ready: the next job starts on it" in service.log[after:]
