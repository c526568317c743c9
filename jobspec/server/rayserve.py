"""`jobspec serve`'s Ray flags: their arguments, their checks, and what the service builds from
them (joining the cluster, the dispatcher of its runs, where generation runs). Nothing here
imports Ray until a flag asks for it: the plain service parses these flags too."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .trainer import DEFAULT_MAX_BATCH_TOKENS

# A GPU the generation actor holds is one training cannot have: given back after this idle.
DEFAULT_GENERATION_IDLE_SECONDS = 60.0


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    ray = parser.add_argument_group(
        "training on a Ray cluster (needs the extra jobspec[ray])")
    ray.add_argument("--ray", default=None, metavar="ADDRESS",
                     help="train every job as a Ray Train run on the Ray cluster at ADDRESS: "
                          "auto (the cluster this machine belongs to, see `ray start`), "
                          "ray://HOST:PORT (Ray Client) or a head's HOST:PORT; the service "
                          "itself, its API and its store stay here (default: train on this "
                          "machine, in worker processes)")
    ray.add_argument("--storage", default=None, metavar="PATH_OR_URI",
                     help="with --ray: where the jobs' examples, checkpoints and adapters live "
                          "for every node to see. A folder is fine for a cluster on one "
                          "machine; several machines need a folder they all share (a network "
                          "mount) or s3://BUCKET/PATH, gs://BUCKET/PATH (default: ray-storage "
                          "in the state directory)")
    ray.add_argument("--ray-workers", type=int, default=1, metavar="N",
                     help="with --ray: data-parallel workers of a job whose file does not say "
                          "(resources.workers) (default: 1)")
    ray.add_argument("--ray-cpus-per-worker", type=float, default=1.0, metavar="N",
                     help="with --ray: CPUs each training worker takes on its node, and its "
                          "torch threads (default: 1)")
    ray.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="N",
                     help="with --ray: GPUs each training worker takes, where the job's file "
                          "does not say (resources.gpus_per_worker) (default: 1 where the "
                          "cluster has GPUs, else 0)")
    ray.add_argument("--ray-standby", action=argparse.BooleanOptionalAction, default=True,
                     help="with --ray: while no job trains, keep a run started for the next one "
                          "(its worker loaded with the default base model), so that a job starts "
                          "training in about a second instead of the ten or so a new Ray Train "
                          "run takes; it holds one worker's CPUs (and GPUs) while it waits "
                          "(default: on)")
    ray.add_argument("--ray-generation", choices=("auto", "service"), default=None,
                     help="with --ray: where generateContent (and so jobspec's eval) runs: auto "
                          "= on a GPU node of the cluster, in a Ray actor that reads tuned "
                          "adapters from --storage, when the cluster has a GPU free, else in "
                          "this service; service = always in this service (default: auto)")
    ray.add_argument("--ray-generation-idle", type=float, default=None, metavar="SECONDS",
                     help="with --ray: the generation actor gives its GPU back after this long "
                          "without a request, for training to use (default: "
                          f"{DEFAULT_GENERATION_IDLE_SECONDS:g})")



def flags_refused(args: argparse.Namespace) -> str | None:
    """Why the Ray flags cannot be used as given (None: they can)."""
    if args.ray is None:
        given = [flag for flag, value in (("--storage", args.storage),
                                          ("--ray-gpus-per-worker", args.ray_gpus_per_worker),
                                          ("--ray-generation", args.ray_generation),
                                          ("--ray-generation-idle", args.ray_generation_idle))
                 if value is not None]
        return f"{', '.join(given)}: only with --ray ADDRESS" if given else None
    if not args.ray.strip():
        return "--ray needs an address: auto, ray://HOST:PORT or a head's HOST:PORT"
    if args.ray_workers < 1:
        return "--ray-workers must be at least 1"
    if args.ray_cpus_per_worker <= 0:
        return "--ray-cpus-per-worker must be more than 0"
    if args.ray_gpus_per_worker is not None and args.ray_gpus_per_worker < 0:
        return "--ray-gpus-per-worker must be 0 or more"
    if args.ray_generation_idle is not None and args.ray_generation_idle <= 0:
        return "--ray-generation-idle must be more than 0 seconds"
    if args.quantize is not None:
        return "--quantize is not available with --ray (it trains in this machine's workers)"
    if args.storage is not None and not args.storage.strip():
        return "--storage needs a folder or a URI (s3://BUCKET/PATH, gs://BUCKET/PATH)"
    return None


def join(args: argparse.Namespace, state_dir: Path) -> str:
    """Join the cluster of ``--ray``; the service's node id. Before, the API key leaves this
    process's environment, so that nothing Ray starts from here could see it."""
    os.environ.pop("JOBSPEC_SERVE_API_KEY", None)
    try:
        from .rayconnect import connect, namespace_for  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(f"--ray needs Ray: pip install 'jobspec[ray]' ({exc})") from None
    node = connect(args.ray, namespace_for(state_dir))
    print(f"jobspec serve: joined the Ray cluster at {args.ray} (this service's node "
          f"{node[:8]}, namespace {namespace_for(state_dir)})", file=sys.stderr, flush=True)
    return node


def generator(args: argparse.Namespace, here: Any, registry: Any, state_dir: Path) -> Any:
    """The RayGenerator that chooses where each generation runs (on a GPU node, or ``here``,
    an inference.Generator); None with --ray-generation service: always ``here``."""
    if args.ray_generation == "service":
        return None
    from .raygenerate import RayGenerator  # noqa: PLC0415
    from .rayconnect import namespace_for  # noqa: PLC0415

    return RayGenerator(here, registry, _storage(args, state_dir), namespace_for(state_dir),
                        idle_seconds=(DEFAULT_GENERATION_IDLE_SECONDS
                                      if args.ray_generation_idle is None
                                      else args.ray_generation_idle))


def _storage(args: argparse.Namespace, state_dir: Path) -> str:
    return args.storage or str(state_dir / "ray-storage")


def dispatcher(args: argparse.Namespace, store: Any, state_dir: Path, registry: Any,
               node: str, idle: Any, on_idle: Any) -> Any:
    """The RayDispatcher that trains the service's jobs on the cluster."""
    from .rayconnect import namespace_for  # noqa: PLC0415
    from .raydispatch import RayDispatcher, RayOptions  # noqa: PLC0415

    storage = _storage(args, state_dir)
    # A run's ranks would all have to halve a measured pass size together (batchfit.py), so on
    # Ray the pass size is the flag's, or the default, for every run.
    max_batch_tokens = (DEFAULT_MAX_BATCH_TOKENS if args.max_batch_tokens is None
                        else args.max_batch_tokens)
    options = RayOptions(args.ray, storage, args.ray_workers, args.ray_cpus_per_worker,
                         args.ray_gpus_per_worker, max_batch_tokens, args.checkpoint_interval,
                         standby=args.ray_standby)
    return RayDispatcher(store, state_dir, registry, options, args.max_concurrent_jobs, node,
                         namespace_for(state_dir), idle=idle, on_idle=on_idle)
