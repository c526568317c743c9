"""What answering a strict client costs: cutting a list of tuned models to Google's published
fields (server/published.py), against rendering and encoding that list, which every answer pays.

Builds ``--models`` tuned models as the local service stores them (each with ``--steps`` loss
snapshots, five validation snapshots, early stopping and a device: every extension field), then
times, side by side in one run (best of ``--repeat``): rendering the ListTunedModelsResponse
(service.py), encoding it as JSON (what app.py's JSONResponse does), and the cut. Prints each and
the cut's share of the answer's cost. Usage: python bench/published_cut.py [--models 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable

from starlette.responses import JSONResponse

from jobspec.server.published import published
from jobspec.server.service import TuningService
from jobspec.server.store import Snapshot, TunedModelRecord


def record(index: int, steps: int) -> TunedModelRecord:
    return TunedModelRecord(
        id=f"model-{index}", operation_id=f"op{index}", display_name="number generator",
        description="[jobspec job=demo fingerprint=" + "0" * 64 + " owner=0123abcd]",
        base_model="models/gemini-1.5-flash-001-tuning", local_model="smollm2-135m",
        temperature=0.0, top_p=None, top_k=None, state="ACTIVE", create_time=1.7e9,
        update_time=1.7e9, start_time=1.7e9, complete_time=1.7e9 + 60,
        hyperparameters={"batchSize": 2, "learningRate": 0.001, "epochCount": 5},
        effective_lr=0.001, example_count=15, total_steps=steps, completed_steps=steps,
        error_code=None, error_message=None, cancel_requested=False, worker_pid=None, attempts=1,
        validation_count=3, early_stopping_patience=2, kept_epoch=3,
        stop_reason="early stopping: the validation loss did not improve for 2 epochs",
        device="cpu (fp32)",
        snapshots=tuple(Snapshot(s, s * 5 // steps + 1, 1.0 / s, 1.7e9 + s)
                        for s in range(1, steps + 1)),
        validation_snapshots=tuple(Snapshot(s, e, 0.5, 1.7e9 + s)
                                   for e, s in enumerate(range(steps // 5, steps + 1,
                                                               steps // 5), 1)))


def best(seconds: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        seconds()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=38)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    service = TuningService(None, None, None, None, Path("."))  # type: ignore[arg-type]
    records = [record(i, options.steps) for i in range(options.models)]
    shapes = published()

    def render() -> dict[str, Any]:
        return {"tunedModels": [service.tuned_model(r) for r in records]}

    body = render()
    shapes.restrict(body, "ListTunedModelsResponse")  # the document is read once, on first use
    rendering = best(render, options.repeat)
    encoding = best(lambda: JSONResponse(body), options.repeat)
    cutting = best(lambda: shapes.restrict(body, "ListTunedModelsResponse"), options.repeat)
    size = len(JSONResponse(body).body)
    print(f"{options.models} tuned models, {options.steps} snapshots each, {size / 1e6:.1f} MB "
          f"of JSON:")
    print(f"  render {rendering * 1000:.1f} ms, encode {encoding * 1000:.1f} ms, "
          f"cut to the published fields {cutting * 1000:.1f} ms")
    print(f"  the cut adds {cutting / (rendering + encoding):.2f}x of rendering + encoding "
          f"({cutting / options.models * 1e6:.1f} us a model)")


if __name__ == "__main__":
    main()
