"""The local tuning service on this machine, with the real SmolLM2-135M model.

Prints, from one run:
- create → ACTIVE for the number-generator job, cold (a new state directory: the service starts,
  converts the GGUF once, loads the model) and warm (the same service again); goals 60 s / 30 s;
- the trainer's step time against a bare PyTorch + PEFT loop on the same model, data and batches
  (goal: ratio at most 1.1);
- generateContent latency p50/p95 for a short answer on the tuned model;
- p99 of `GET tunedModels` while a training job runs (goal: under 50 ms);
- achieved training FLOP/s on the shipped job (forward and backward FLOPs per step counted from
  the model's shapes and the tokens of each batch; padding not counted) against the peak of a
  torch matmul of the model's shapes at the same batch size on the same cores, measured in the
  same run (goal: at least 0.4), and the share of computed tokens that are padding;
- with ``--only ceiling``: what the adapters cost, the trainer's model against the frozen model
  with no adapters at all, both as shares of that peak, interleaved on the shipped job's batches.
Usage: python bench/local_tuning.py [--only service|steps|flops|ceiling] [--recipe legacy]
       [--full-logits] [--set NAME=VALUE ...]
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


class StepTimer:
    """An ``on_step`` for trainer.train that records each step's seconds (and stops it after
    ``limit`` steps, when given)."""

    def __init__(self, limit: int | None = None) -> None:
        self.times: list[float] = []
        self.limit = limit
        self.start()

    def start(self) -> None:
        self._last = time.perf_counter()

    def __call__(self, _result) -> bool:
        now = time.perf_counter()
        self.times.append(now - self._last)
        self._last = now
        return self.limit is None or len(self.times) < self.limit


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
    from peft import get_peft_model

    from jobspec.server import recipe as recipes
    from jobspec.server import losses, trainer
    from jobspec.server.chat import encode_example
    from jobspec.server.models import ModelRegistry, load_base, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(2)
    base, tokenizer = load_base(ModelRegistry.build([], []).default, state / "models")
    examples = [(e["text_input"], e["output"]) for e in EXAMPLES]

    on_step = StepTimer(steps)
    times = on_step.times
    trainer.train(base, tokenizer, examples, epochs=5, batch_size=2, learning_rate=1e-3,
                  on_step=on_step)

    recipe = recipes.RECIPE  # the bare loop trains the same LoRA on the same layout
    torch.manual_seed(0)
    model = get_peft_model(base, recipes.lora_config(recipe))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    bf16 = recipes.precision_for(recipe, "cpu") == "bf16"
    encoded = [encode_example(tokenizer, i, o, recipe.system_prompt) for i, o in examples]
    batches = [losses.collate([encoded[i] for i in idx], tokenizer.pad_token_id, "cpu")
               for _, idx in trainer.batches(len(encoded), 5, 2)][:steps]
    bare: list[float] = []
    for batch in batches:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bare.append(time.perf_counter() - t0)
    # The first steps warm caches up; compare the steady state.
    ours, theirs = sorted(times[3:])[len(times[3:]) // 2], sorted(bare[3:])[len(bare[3:]) // 2]
    print(f"trainer step (median): {ours * 1000:.0f} ms; bare PyTorch+PEFT loop: "
          f"{theirs * 1000:.0f} ms; ratio {ours / theirs:.2f} (goal <= 1.1)")


def linear_shapes(config) -> list[tuple[str, int, int]]:
    """(name, in, out) of the linear layers of one decoder layer of a Llama-type model."""
    h, f = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", heads) * (h // heads)
    return [("q_proj", h, h), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", h, h),
            ("gate_proj", h, f), ("up_proj", h, f), ("down_proj", f, h)]


def step_flops(config, rows: list[tuple[list[int], list[int]]], rank: int,
               lora_targets: set[str] | None) -> float:
    """Forward + backward FLOPs of one training step of a LoRA on a frozen model, from its
    shapes and the batch's real (unpadded) tokens: each linear layer costs 2·in·out per token
    forward and as much backward for the gradient of its input (a frozen weight needs no
    gradient of its own; layer 0's q/k/v need none for their input either, which comes from the
    frozen embeddings); a LoRA pair costs 2·r·(in+out) forward and twice that backward;
    attention 2·2·s²/2·width per layer forward (causal) and twice that backward; the output
    layer (hidden × vocab) runs only where the loss is taken, forward and backward."""
    from jobspec.server.trainer import target_count

    shapes = linear_shapes(config)
    layers = config.num_hidden_layers
    tokens = sum(len(ids) for ids, _ in rows)
    scored = sum(target_count(labels) for _, labels in rows)
    base = sum(i * o for _, i, o in shapes)
    no_input_grad = sum(i * o for n, i, o in shapes if n in ("q_proj", "k_proj", "v_proj"))
    lora = sum(rank * (i + o) for n, i, o in shapes if lora_targets is None or n in lora_targets)
    forward = 2 * tokens * layers * (base + lora)
    backward = 2 * tokens * (layers * base - no_input_grad) + 2 * 2 * tokens * layers * lora
    width = config.hidden_size
    attention = sum(2 * 2 * (len(ids) ** 2 / 2) * width for ids, _ in rows) * layers
    head = 2 * scored * config.hidden_size * config.vocab_size
    return forward + backward + 3 * attention + 2 * head


def matmul_peak(config, tokens: int, dtype, seconds: float = 4.0) -> tuple[float, str]:
    """The best FLOP/s of torch.matmul on this model's linear shapes with ``tokens`` rows
    (x @ Wᵀ, as nn.Linear does), on the threads torch uses here: per shape the median of many
    timed calls (a machine shared with other work gives bursts; the median is what a matmul
    sustains), then the best shape."""
    import torch

    best, which = 0.0, ""
    shapes = linear_shapes(config) + [("lm_head", config.hidden_size, config.vocab_size)]
    for name, i, o in shapes:
        x = torch.randn(tokens, i, dtype=dtype)
        w = torch.randn(o, i, dtype=dtype)
        for _ in range(3):
            x @ w.t()
        timings, started = [], time.perf_counter()
        while time.perf_counter() - started < seconds / len(shapes):
            t0 = time.perf_counter()
            x @ w.t()
            timings.append(time.perf_counter() - t0)
        rate = 2 * tokens * i * o / sorted(timings)[len(timings) // 2]
        if rate > best:
            best, which = rate, f"{name} ({tokens}×{i} @ {i}×{o})"
    return best, which


def flops_figures(state: Path, recipe_name: str, full_logits: bool = False,
                  settings: list[str] | None = None) -> None:
    """The trainer on the shipped job, in this process: achieved FLOP/s vs a matmul's peak."""
    import os

    import torch

    from jobspec.server import recipe as recipes
    from jobspec.server import trainer
    from jobspec.server.chat import encode_example
    from jobspec.server.models import ModelRegistry, load_base, quiet_libraries

    quiet_libraries()
    threads = os.cpu_count() or 2
    torch.set_num_threads(threads)
    base, tokenizer = load_base(ModelRegistry.build([], []).default, state / "models")
    config = base.config
    if full_logits:
        base._jobspec_no_split = True  # losses._heads: logits at every position, as before
    recipe = recipes.LEGACY_RECIPE if recipe_name == "legacy" else recipes.RECIPE
    try:
        recipe = recipe.with_settings(settings or [])
    except ValueError as error:
        raise SystemExit(f"--set {error}") from None
    examples = [(e["text_input"], e["output"]) for e in EXAMPLES]
    encoded = [encode_example(tokenizer, i, o, recipe.system_prompt) for i, o in examples]
    plan = list(trainer.batches(len(encoded), 5, 2))
    targets = None if recipe.targets == "all-linear" else set(recipe.targets.split(","))
    flops = [step_flops(config, [encoded[i] for i in idx], recipe.rank, targets)
             for _, idx in plan]
    real = sum(len(encoded[i][0]) for _, idx in plan for i in idx)
    computed = sum(len(idx) * max(len(encoded[i][0]) for i in idx) for _, idx in plan)
    on_step = StepTimer()
    times = on_step.times
    tokens = round(sum(len(idx) * max(len(encoded[i][0]) for i in idx)
                       for _, idx in plan) / len(plan))
    precision = recipes.precision_for(recipe, str(next(base.parameters()).device))
    before, _ = matmul_peak(config, tokens,
                            torch.bfloat16 if precision == "bf16" else torch.float32)
    on_step.start()
    result = trainer.train(base, tokenizer, examples, epochs=5, batch_size=2,
                           learning_rate=1e-3, on_step=on_step, recipe=recipe)
    precision = result.precision
    steady = slice(3, None)  # the first steps warm caches and allocators up
    achieved = sum(flops[steady]) / sum(times[steady])
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # Before and after would differ as the machine's other load does; the mean of the two.
    after, shape = matmul_peak(config, tokens, dtype)
    peak = (before + after) / 2
    changed = f" with {', '.join(settings)}" if settings else ""
    print(f"training FLOP/s ({recipe_name} recipe{changed}, {precision}, "
          f"{'logits everywhere' if full_logits else 'logits where scored'}, {threads} threads, load "
          f"{os.getloadavg()[0]:.1f}): {len(plan)} steps in {sum(times):.1f}s (median step "
          f"{sorted(times)[len(times) // 2] * 1000:.0f} ms); {sum(flops) / len(flops) / 1e9:.2f} "
          f"GFLOP a step; achieved {achieved / 1e9:.1f} GFLOP/s")
    print(f"matmul peak ({precision}, {tokens} rows, the batch's padded size, best shape "
          f"{shape}; before training {before / 1e9:.1f}, after {after / 1e9:.1f}): "
          f"{peak / 1e9:.1f} GFLOP/s; ratio {achieved / peak:.2f} (goal >= 0.4)")
    print(f"padding: {computed - real} of {computed} computed tokens "
          f"({100 * (computed - real) / computed:.1f}%)")


def ceiling_figures(state: Path, rounds: int = 3) -> None:
    """Forward + backward of the trainer's LoRA model and of the frozen model without adapters
    (its input gradients on, as a LoRA needs them through every layer), taking turns on each of
    the shipped job's batches, each as a share of the matmul peak measured in the same run: the
    second is what the trainer would reach if its adapters cost nothing."""
    import copy
    import os

    import torch

    from jobspec.server import recipe as recipes
    from jobspec.server import losses, trainer
    from jobspec.server.chat import encode_example
    from jobspec.server.models import ModelRegistry, load_base, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(os.cpu_count() or 2)
    base, tokenizer = load_base(ModelRegistry.build([], []).default, state / "models")
    recipe = recipes.RECIPE
    encoded = [encode_example(tokenizer, e["text_input"], e["output"], recipe.system_prompt)
               for e in EXAMPLES]
    plan = [indices for _, indices in trainer.batches(len(encoded), 5, 2)]
    frozen = copy.deepcopy(base)
    frozen.requires_grad_(False)
    frozen.enable_input_require_grads()
    models = {"the trainer's LoRA model": (trainer.lora_model(base, recipe), recipe.rank),
              "the frozen model, no adapters": (frozen, 0)}
    pad_id = tokenizer.pad_token_id or 0
    tokens = round(sum(len(idx) * max(len(encoded[i][0]) for i in idx) for idx in plan)
                   / len(plan))
    before, _ = matmul_peak(base.config, tokens, torch.float32)
    seconds = {name: [] for name in models}
    flops = {name: 0.0 for name in models}
    for _ in range(rounds):
        for indices in plan:
            rows = [encoded[i] for i in indices]
            batch = losses.collate(rows, pad_id, "cpu")
            for name, (model, rank) in models.items():
                model.train()
                started = time.perf_counter()
                losses.summed_loss(model, batch).backward()
                seconds[name].append(time.perf_counter() - started)
                model.zero_grad(set_to_none=True)
                flops[name] += step_flops(base.config, rows, rank, None)
    after, _ = matmul_peak(base.config, tokens, torch.float32)
    peak = (before + after) / 2
    reference = None
    for name, times in seconds.items():
        median = sorted(times)[len(times) // 2]
        reference = reference or median
        rate = flops[name] / sum(times)
        print(f"{name}: forward + backward median {median * 1000:.0f} ms ({median / reference:.2f}"
              f" of the first), {rate / 1e9:.1f} GFLOP/s, {rate / peak:.2f} of the matmul peak "
              f"({peak / 1e9:.1f} GFLOP/s)")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("service", "steps", "flops", "ceiling"),
                        default=None)
    parser.add_argument("--recipe", choices=("service", "legacy"), default="service")
    parser.add_argument("--full-logits", action="store_true",
                        help="the output layer on every position, as before issue 10")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="change one field of the trainer's Recipe for the FLOP/s figures "
                        "(e.g. targets=q_proj,v_proj)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        state = Path(scratch) / "state"
        if args.only in (None, "service"):
            service_figures(state)
        if args.only in (None, "steps"):
            step_figures(state)
        if args.only in (None, "flops"):
            flops_figures(state, args.recipe, args.full_logits, args.set)
        if args.only == "ceiling":
            ceiling_figures(state)


if __name__ == "__main__":
    main()
