"""The local tuning service on this machine, with the real SmolLM2-135M model.

Prints, from one run:
- create → ACTIVE for the number-generator job, cold (a new state directory: the service starts,
  converts the GGUF once, loads the model) and warm (the same service again); goals 60 s / 30 s;
- the trainer's step time against a bare PyTorch + PEFT loop on the same model, data and batches
  (goal: ratio at most 1.1);
- generateContent latency p50/p95 for a short answer on the tuned model;
- p99 of `GET tunedModels` while a training job runs (goal: under 50 ms).
Usage: python bench/local_tuning.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._service import Service, percentile, wait_active  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [json.loads(line) for line in (ROOT / "jobs/data/number-generator.jsonl").read_text().splitlines()]


def body(epochs: int = 5) -> dict:
    return {"displayName": "bench", "baseModel": "models/gemini-1.0-pro-001",
            "tuningTask": {"hyperparameters": {"batchSize": 2, "learningRate": 0.001,
                                               "epochCount": epochs},
                           "trainingData": {"examples": {"examples": [
                               {"textInput": e["text_input"], "output": e["output"]}
                               for e in EXAMPLES]}}}}


def service_figures(state: Path) -> None:
    started = time.monotonic()
    service = Service(state)
    try:
        with httpx.Client(base_url=service.url, timeout=120) as http:
            op = http.post("/v1beta/tunedModels", params={"tunedModelId": "cold"}, json=body()).json()
            cold = wait_active(http, op["metadata"]["tunedModel"]) + 0
            cold_total = time.monotonic() - started
            op = http.post("/v1beta/tunedModels", params={"tunedModelId": "warm"}, json=body()).json()
            warm = wait_active(http, op["metadata"]["tunedModel"])
            print(f"create → ACTIVE, cold (service start + GGUF conversion + training): "
                  f"{cold_total:.1f} s (goal < 60 s); from create alone {cold:.1f} s")
            print(f"create → ACTIVE, warm: {warm:.1f} s (goal < 30 s)")

            latencies = []
            request = {"contents": [{"parts": [{"text": "41"}]}],
                       "generationConfig": {"maxOutputTokens": 8}}
            http.post("/v1beta/tunedModels/warm:generateContent", json=request)  # load adapter
            for _ in range(20):
                t0 = time.perf_counter()
                http.post("/v1beta/tunedModels/warm:generateContent", json=request).raise_for_status()
                latencies.append((time.perf_counter() - t0) * 1000)
            print(f"generateContent (tuned, ≤ 8 tokens): p50 {percentile(latencies, 0.5):.0f} ms, "
                  f"p95 {percentile(latencies, 0.95):.0f} ms")

            op = http.post("/v1beta/tunedModels", params={"tunedModelId": "busy"},
                           json=body(epochs=50)).json()
            while not http.get(f"/v1/{op['name']}").json()["metadata"].get("completedSteps"):
                time.sleep(0.1)
            listing = []
            for _ in range(300):
                t0 = time.perf_counter()
                http.get("/v1beta/tunedModels").raise_for_status()
                listing.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.01)
            print(f"GET tunedModels while training: p50 {percentile(listing, 0.5):.1f} ms, "
                  f"p99 {percentile(listing, 0.99):.1f} ms (goal < 50 ms)")
            http.delete("/v1beta/tunedModels/busy")
    finally:
        service.stop()


def step_figures(state: Path, steps: int = 30) -> None:
    """Trainer vs a bare loop, in this process, same model, data and batches."""
    import torch
    from peft import LoraConfig, get_peft_model

    from jobspec.server import trainer
    from jobspec.server.chat import encode_example
    from jobspec.server.models import ModelRegistry, load_base, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(2)
    base, tokenizer = load_base(ModelRegistry.build([], []).default, state / "models")
    examples = [(e["text_input"], e["output"]) for e in EXAMPLES]

    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(_result) -> bool:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now
        return len(times) < steps

    last[0] = time.perf_counter()
    trainer.train(base, tokenizer, examples, epochs=5, batch_size=2, learning_rate=1e-3,
                  on_step=on_step)

    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    encoded = [encode_example(tokenizer, i, o) for i, o in examples]
    batches = [trainer.collate([encoded[i] for i in idx], tokenizer.pad_token_id, "cpu")
               for _, idx in trainer.batches(len(encoded), 5, 2)][:steps]
    bare: list[float] = []
    for batch in batches:
        t0 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bare.append(time.perf_counter() - t0)
    # The first steps warm caches up; compare the steady state.
    ours, theirs = sorted(times[3:])[len(times[3:]) // 2], sorted(bare[3:])[len(bare[3:]) // 2]
    print(f"trainer step (median): {ours * 1000:.0f} ms; bare PyTorch+PEFT loop: "
          f"{theirs * 1000:.0f} ms; ratio {ours / theirs:.2f} (goal <= 1.1)")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        service_figures(state)
        step_figures(state)


if __name__ == "__main__":
    main()
