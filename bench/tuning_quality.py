"""Does the local trainer learn the idea, or only the examples? Google's tutorial claim, measured.

Tunes the shipped number-generator job (jobs/number-generator.yaml: the tutorial's 15 examples,
batch 2, learning rate 0.001, 5 epochs, exactly as the job file says) with the local service's
own trainer (``jobspec.server.trainer.train``, what a training worker runs), then asks the tuned
and the base model every prompt of bench/number_probes.json (49 prompts in 7 notations the
examples never show, written before any measurement, never tuned on) through the service's own
generation code (``jobspec.server.inference.Generator``, greedy, as generateContent answers), and
prints the exact-match rate per notation and overall, tuned vs base, and the time taken.

    .venv/bin/python bench/tuning_quality.py                  # the service's recipe
    .venv/bin/python bench/tuning_quality.py --recipe legacy --full-logits  # the trainer before
    .venv/bin/python bench/tuning_quality.py --set rank=16 --set schedule=constant --skip-base
    .venv/bin/python bench/tuning_quality.py --seeds 0,1,2    # spread over LoRA-init seeds
    .venv/bin/python bench/tuning_quality.py --base-system "Reply with ..."  # base, told the task

``--set NAME=VALUE`` changes one field of ``jobspec.server.recipe.Recipe`` (what the service controls:
layout, LoRA shape, schedule, precision, ...), for measuring one choice against another;
``--base-system TEXT`` asks the base model under that system turn (the task in words, to see
what it knows untuned); ``--json FILE`` writes every answer. It is a benchmark, not a test: CI
never runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "jobs" / "number-generator.yaml"
PROBES = Path(__file__).resolve().parent / "number_probes.json"
MAX_OUTPUT_TOKENS = 24


def load_job() -> tuple[list[tuple[str, str]], dict]:
    from jobspec import data, spec

    job = spec.load_job(str(JOB))
    examples = [(e.text_input, e.output) for e in data.iter_examples(job.training_data)]
    hp = job.hyperparameters
    rate = hp.learning_rate if hp.learning_rate is not None else \
        0.001 * (hp.learning_rate_multiplier or 1.0)
    return examples, {"epochs": hp.epoch_count, "batch_size": hp.batch_size,
                      "learning_rate": rate}


def load_probes() -> list[tuple[str, str, tuple[str, ...]]]:
    notations = json.loads(PROBES.read_text(encoding="utf-8"))["notations"]
    return [(notation, prompt, tuple(accepted)) for notation, items in notations.items()
            for prompt, accepted in items]


def recipe_from(args: argparse.Namespace):
    from jobspec.server import recipe as recipes

    recipe = recipes.LEGACY_RECIPE if args.recipe == "legacy" else recipes.RECIPE
    try:
        return recipe.with_settings(args.set)
    except ValueError as error:
        raise SystemExit(f"--set {error}") from None


def ask(generator, model_id: str, probes, adapter, layout) -> list[str]:
    from jobspec.server.inference import GenerationSettings

    settings = GenerationSettings(max_output_tokens=MAX_OUTPUT_TOKENS)
    answers = []
    for _, prompt, _ in probes:
        messages = [{"role": "user", "content": prompt}]
        result = generator.generate(model_id, messages, settings, adapter, layout=layout)
        answers.append(result.candidates[0].text)
    return answers


def contained(probes, answers) -> int:
    """Answers that hold a right answer as a word of a longer reply ("The next one is X."): a
    lenient count, for what a model knows even when it does not answer the way it was asked."""
    import re

    def holds(answer: str, accepted: tuple[str, ...]) -> bool:
        return any(re.search(rf"(?<![\w,.'-]){re.escape(a)}(?![\w,'-]|[.]\w)", answer)
                   for a in accepted)

    return sum(holds(answer, accepted) for (_, _, accepted), answer in zip(probes, answers))


def rates(probes, answers) -> dict[str, tuple[int, int]]:
    table: dict[str, list[int]] = {}
    for (notation, _, accepted), answer in zip(probes, answers):
        row = table.setdefault(notation, [0, 0])
        row[0] += answer.strip() in accepted
        row[1] += 1
    return {k: (v[0], v[1]) for k, v in table.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", choices=("service", "legacy"), default="service")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--seeds", default="", help="comma-separated LoRA seeds (default: the "
                        "recipe's)")
    parser.add_argument("--skip-base", action="store_true", help="do not ask the base model")
    parser.add_argument("--base-system", default=None, metavar="TEXT", help="ask the base model "
                        "under this system turn (default: its chat template's own)")
    parser.add_argument("--model", default=None, help="a base model (.gguf or HF folder); "
                        "default: the service's default")
    parser.add_argument("--state-dir", default=None, help="where the converted model is cached "
                        "(default: a scratch folder, so the GGUF is converted once per run)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all)")
    parser.add_argument("--json", default=None, help="write every answer to this file")
    parser.add_argument("--full-logits", action="store_true", help="run the output layer on "
                        "every position, as the trainer did before issue 10 (with --recipe "
                        "legacy: today's trainer before it, for its training time)")
    args = parser.parse_args()

    import os

    import torch

    from jobspec.server import recipe as recipes
    from jobspec.server import trainer
    from jobspec.server.adapters import save_partial
    from jobspec.server.inference import Adapter, Generator
    from jobspec.server.models import ModelRegistry, load_base, quiet_libraries

    quiet_libraries()
    torch.set_num_threads(args.threads or os.cpu_count() or 2)
    scratch = tempfile.TemporaryDirectory()
    state = Path(args.state_dir) if args.state_dir else Path(scratch.name)
    registry = ModelRegistry.build([args.model] if args.model else [], [])
    model = registry.default
    examples, hp = load_job()
    probes = load_probes()
    base_recipe = recipe_from(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()] or [base_recipe.seed]
    print(f"job {JOB.relative_to(ROOT)}: {len(examples)} examples, batch {hp['batch_size']}, "
          f"learning rate {hp['learning_rate']:g}, {hp['epochs']} epochs; base "
          f"models/{model.id}; {len(probes)} probes in {len(rates(probes, [''] * len(probes)))} "
          f"notations; {torch.get_num_threads()} threads")
    print(f"recipe: {base_recipe}")
    network, tokenizer = load_base(model, state / "models")
    if args.full_logits:
        network._jobspec_no_split = True  # losses._heads: the whole model's logits
    generator = Generator(registry, state / "models")
    report: dict = {"recipe": dataclasses.asdict(base_recipe), "runs": []}

    base_answers = None
    if not args.skip_base:
        started = time.perf_counter()
        layout = None if args.base_system is None else {"system_prompt": args.base_system}
        base_answers = ask(generator, model.id, probes, None, layout)
        report["base"] = base_answers
        print(f"base model asked in {time.perf_counter() - started:.1f}s"
              + (f", under the system turn {args.base_system!r}" if layout else ""))

    for seed in seeds:
        recipe = dataclasses.replace(base_recipe, seed=seed)
        losses: list[float] = []
        started = time.perf_counter()
        result = trainer.train(network, tokenizer, examples, epochs=hp["epochs"],
                               batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
                               recipe=recipe, on_step=lambda r: losses.append(r.loss) or True)
        trained = time.perf_counter() - started
        folder = Path(scratch.name) / f"adapter-{seed}"
        save_partial(result.model, folder)
        recipes.write_layout(folder, recipe)
        started = time.perf_counter()
        answers = ask(generator, model.id, probes, Adapter("bench", f"seed-{seed}", folder),
                      recipes.read_layout(folder))
        asked = time.perf_counter() - started
        report["runs"].append({"seed": seed, "train_seconds": trained, "answers": answers,
                               "losses": losses})
        tuned = rates(probes, answers)
        base = rates(probes, base_answers) if base_answers else None
        print(f"\nseed {seed}: trained {len(losses)} steps in {trained:.1f}s (final loss "
              f"{losses[-1]:.3f}); probes asked in {asked:.1f}s")
        print(f"  {'notation':<26} {'tuned':>7} {'base':>7}")
        for notation, (right, total) in tuned.items():
            base_cell = f"{base[notation][0]}/{total}" if base else "-"
            print(f"  {notation:<26} {right:>3}/{total:<3} {base_cell:>7}")
        right = sum(r for r, _ in tuned.values())
        base_right = sum(r for r, _ in base.values()) if base else None
        print(f"  {'overall':<26} {right:>3}/{len(probes):<3} "
              f"{(f'{base_right}/{len(probes)}' if base else '-'):>7}   "
              f"tuned {100 * right / len(probes):.1f}% exact"
              + (f", base {100 * base_right / len(probes):.1f}%" if base else ""))
        print(f"  {'answer contained':<26} {contained(probes, answers):>3}/{len(probes):<3} "
              + (f"{contained(probes, base_answers):>3}/{len(probes)}" if base else "      -")
              + "   (lenient: the right answer as a word of a longer reply)")
        wrong = [(p, a) for (_, p, acc), a in zip(probes, answers) if a.strip() not in acc]
        print("  wrong: " + "; ".join(f"{p!r}→{a!r}" for p, a in wrong[:60]))
    if len(seeds) > 1:
        totals = [sum(a.strip() in acc for (_, _, acc), a in zip(probes, run["answers"]))
                  for run in report["runs"]]
        mean = sum(totals) / len(totals)
        print(f"\nover seeds {seeds}: exact {totals} of {len(probes)}; mean "
              f"{100 * mean / len(probes):.1f}%; train time mean "
              f"{sum(r['train_seconds'] for r in report['runs']) / len(seeds):.1f}s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
