"""`jobspec serve --ray`: generation (generateContent, and so jobspec's eval) on a GPU node of
the cluster, in a Ray actor, when the cluster has a GPU free; in the service otherwise.

The service decides at each request (``RayGenerator.generate``):
- the cluster has no GPU → in this service (inference.Generator), as without Ray;
- it has one free → a generation actor is started on a GPU node (one GPU, no CPU reserved:
  generation's CPU part is small, and the CPUs are the training workers') and answers this request
  and the next ones. A tuned model's adapter reaches it through --storage
  (raystorage.AdapterStorage: copied there from the service's state directory the first time the
  model is asked, and read from there by the actor into a folder of its node);
- none is free (training holds them) → in this service, and no actor is tried again for
  RETRY_SECONDS.
The actor gives its GPU back after ``idle_seconds`` without a request (training needs it more)
and when the service stops; it is not detached, so it ends with the service's process too. An
actor lost mid-request (its node died), or one that fails, leaves that request to this service:
generation changes nothing, so asking twice is safe. The answers are the same wherever they are
made: the actor runs inference.Generator on the same base model, adapter and layout.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .inference import Adapter, GenerationSettings, Generator, PromptTooLong

PREFIX = "jobspec-generation-"  # the actor's name: PREFIX + a random part
START_SECONDS = 120.0  # an actor not placed and answering within this is given up
GENERATE_SECONDS = 600.0  # one request on the actor, the base model's first load included
CLOSE_SECONDS = 10.0
RETRY_SECONDS = 60.0  # after no actor could be had, the next is tried no sooner
IDLE_CHECK_SECONDS = 1.0
MAX_CONCURRENCY = 4  # requests queue on the model's lock; where/forget/close are answered


class GenerationActor:
    """On a GPU node: inference.Generator over the service's base models (whose files must
    exist on the node, as for training), tuned adapters read from ``storage``."""

    def __init__(self, registry: Any, storage: str) -> None:
        from .models import quiet_libraries  # noqa: PLC0415
        from .raytrain import node_cache_dir  # noqa: PLC0415

        quiet_libraries()
        self.storage = storage
        self.adapters = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.generator = Generator(registry, node_cache_dir())
        self.fetching = threading.Lock()

    def where(self) -> dict[str, str]:
        """The node it runs on, and the device it generates on."""
        import ray  # noqa: PLC0415

        from .models import device  # noqa: PLC0415

        return {"node_id": ray.get_runtime_context().get_node_id(),
                "node_ip": ray.util.get_node_ip_address(), "device": device()}

    def generate(self, local_model: str, conversation: Any, settings: GenerationSettings,
                 adapter: tuple[str, str] | None,
                 layout: dict[str, Any] | None) -> tuple[str, Any]:
        """("answer", inference.Generation), or ("too long", PromptTooLong's arguments): an
        exception of the caller's own would reach it wrapped in Ray's, its message a traceback."""
        tuned = None if adapter is None else Adapter(*adapter, self._fetched(*adapter))
        try:
            return "answer", self.generator.generate(local_model, conversation, settings, tuned,
                                                     layout)
        except PromptTooLong as exc:
            return "too long", exc.args_given

    def _fetched(self, model_id: str, operation_id: str) -> Path:
        """The adapter's folder on this node, read from the storage the first time."""
        from .raystorage import AdapterStorage  # noqa: PLC0415

        folder = self.adapters / model_id / operation_id
        with self.fetching:
            if not folder.is_dir():
                partial = folder.with_name(f".{operation_id}.partial")
                shutil.rmtree(partial, ignore_errors=True)
                AdapterStorage(self.storage, model_id).get(operation_id, partial)
                os.replace(partial, folder)
        return folder

    def forget_model(self, model_id: str) -> None:
        self.generator.forget_model(model_id)
        with self.fetching:
            shutil.rmtree(self.adapters / model_id, ignore_errors=True)

    def close(self) -> None:
        """Remove the adapters read to this node (before the actor is killed)."""
        with self.fetching:
            shutil.rmtree(self.adapters, ignore_errors=True)


class RayGenerator:
    """inference.Generator's interface, answered on the cluster's GPU or by ``here``."""

    def __init__(self, here: Generator, registry: Any, storage: str, namespace: str, *,
                 idle_seconds: float) -> None:
        self.here = here
        self.registry = registry
        self.storage = storage
        self.namespace = namespace
        self.idle_seconds = idle_seconds
        self.lock = threading.Lock()  # the actor: started, used, released
        self.actor: Any = None
        self.name = ""
        self.node = ""
        self.busy = 0  # requests on the actor now
        self.last_request = time.monotonic()
        self.refused_at: float | None = None
        self.said_here = ""  # why requests are answered here, as last logged
        self.stored: set[tuple[str, str]] = set()  # adapters known to be in the storage
        self.storing = threading.Lock()
        self.stopping = threading.Event()
        self.watch: threading.Thread | None = None

    def generate(self, local_model: str, conversation: Any, settings: GenerationSettings,
                 adapter: Adapter | None = None,
                 layout: dict[str, Any] | None = None) -> Any:
        import ray  # noqa: PLC0415

        actor = self._take()
        if actor is None:
            return self.here.generate(local_model, conversation, settings, adapter, layout)
        try:
            stored = None
            if adapter is not None:
                self._store(adapter)
                stored = (adapter.model_id, adapter.operation_id)
            outcome, value = ray.get(actor.generate.remote(local_model, conversation, settings,
                                                           stored, layout),
                                     timeout=GENERATE_SECONDS)
        except (ray.exceptions.RayError, OSError) as exc:
            self._give_up(actor, f"generation on the cluster failed ({_first_line(exc)})")
            return self.here.generate(local_model, conversation, settings, adapter, layout)
        finally:
            with self.lock:
                self.busy -= 1
                self.last_request = time.monotonic()
        if outcome == "too long":
            raise PromptTooLong(*value)
        return value

    def forget_model(self, model_id: str) -> None:
        """The model was deleted: its adapters leave memory here and on the actor, and the
        storage."""
        from .raystorage import AdapterStorage  # noqa: PLC0415

        self.here.forget_model(model_id)
        with self.storing:
            self.stored = {key for key in self.stored if key[0] != model_id}
            try:
                AdapterStorage(self.storage, model_id).remove()
            except OSError as exc:
                log(f"tunedModels/{model_id}: its adapters in {self.storage} were not removed: "
                    f"{exc}")
        with self.lock:
            if self.actor is not None:
                try:
                    self.actor.forget_model.remote(model_id)
                except Exception as exc:  # noqa: BLE001 - its copy is released with it
                    log(f"tunedModels/{model_id}: not dropped by the generation actor: "
                        f"{_first_line(exc)}")

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            if self.actor is not None:
                self._release("(the service stops)")

    # -- the actor -----------------------------------------------------------------------------

    def _take(self) -> Any:
        """The actor, started if need be, counted busy; None: answer here."""
        with self.lock:
            if self.actor is None and not self.stopping.is_set() and (
                    self.refused_at is None
                    or time.monotonic() - self.refused_at >= RETRY_SECONDS):
                try:
                    self._start()
                except Exception as exc:  # noqa: BLE001 - the cluster gone, or Ray failing:
                    # whatever it is, this service can answer, and says why it does
                    self.refused_at = time.monotonic()
                    self._here(f"no generation actor could be started ({_first_line(exc)})")
            if self.actor is not None:
                self.busy += 1
            return self.actor

    def _start(self) -> None:
        """Start the actor on a free GPU; where there is none, say why requests stay here."""
        import ray  # noqa: PLC0415

        if ray.cluster_resources().get("GPU", 0) < 1:
            # Asked again no sooner than RETRY_SECONDS, not at every request: a GPU node that
            # joins later is found then.
            self.refused_at = time.monotonic()
            return self._here("the Ray cluster has no GPU")
        if ray.available_resources().get("GPU", 0) < 1:
            self.refused_at = time.monotonic()
            return self._here("no GPU of the Ray cluster is free (training, or a standby "
                              "run, holds them)")
        name = PREFIX + uuid.uuid4().hex[:12]
        actor = ray.remote(max_concurrency=MAX_CONCURRENCY)(GenerationActor).options(
            name=name, namespace=self.namespace, num_gpus=1, num_cpus=0,
        ).remote(self.registry, self.storage)
        try:
            where = ray.get(actor.where.remote(), timeout=START_SECONDS)
        except ray.exceptions.RayError as exc:
            ray.kill(actor)
            self.refused_at = time.monotonic()
            return self._here(f"no generation actor started on a GPU node "
                              f"({_first_line(exc)})")
        self.actor, self.name, self.node = actor, name, where["node_id"]
        self.refused_at, self.said_here = None, ""
        log(f"generation runs on the Ray cluster: actor {name} on node {self.node[:8]} "
            f"({where['node_ip']}), {where['device']}; tuned adapters are read from "
            f"{self.storage}")
        if self.watch is None:
            self.watch = threading.Thread(target=self._watch_idle, daemon=True,
                                          name="generation-idle")
            self.watch.start()

    def _here(self, why: str) -> None:
        if why != self.said_here:
            log(f"generation runs in this service: {why}")
            self.said_here = why

    def _store(self, adapter: Adapter) -> None:
        """Put the adapter in the storage unless it is there."""
        from .raystorage import AdapterStorage  # noqa: PLC0415

        key = (adapter.model_id, adapter.operation_id)
        with self.storing:
            if key not in self.stored:
                stored = AdapterStorage(self.storage, adapter.model_id)
                if not stored.has(adapter.operation_id):
                    stored.put(adapter.operation_id, adapter.folder)
                self.stored.add(key)

    def _watch_idle(self) -> None:
        while not self.stopping.wait(IDLE_CHECK_SECONDS):
            with self.lock:
                if (self.actor is not None and self.busy == 0
                        and time.monotonic() - self.last_request >= self.idle_seconds):
                    self._release(f"after {self.idle_seconds:g}s without a request: its GPU is "
                                  "free for training")

    def _give_up(self, actor: Any, why: str) -> None:
        with self.lock:
            if self.actor is actor:
                self._release(f"({why}); this request is answered in this service")
                self.refused_at = time.monotonic()

    def _release(self, why: str) -> None:
        """End the actor (under the lock)."""
        import ray  # noqa: PLC0415

        actor, self.actor = self.actor, None
        try:
            ray.get(actor.close.remote(), timeout=CLOSE_SECONDS)
        except ray.exceptions.RayError:
            pass  # gone already, or not answering: killed all the same
        ray.kill(actor)
        log(f"generation actor {self.name} on node {self.node[:8]} released {why}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def log(message: str) -> None:
    print(f"jobspec serve: {message}", file=sys.stderr, flush=True)
