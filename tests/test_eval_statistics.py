"""Eval statistics a careful reviewer would accept, through `jobspec apply` and `validate`:
Wilson intervals on every pass rate, base and tuned answers paired by prompt with the exact
McNemar p-value, the `require_improvement` gate, validate's warning when a prompt set is too small
for it, and `samples` for sampled generation. Against fake_generate (a contract fake of the
Gemini API's generateContent) with scripted answers, so the counts are known in advance."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from tests.conftest import ROOT
from tests.fake_generate import ENVIRONMENT, FakeGenerate, serve_job

pytestmark = pytest.mark.timeout(60)
SCHEMA = json.loads((ROOT / "schemas/report.schema.json").read_text())


def prompts(count: int) -> str:
    return "".join(f'    - input: "q{n}"\n      expect: "ok"\n' for n in range(count))


class SampledFake(FakeGenerate):
    """fake_generate whose answers to one prompt may differ from one request to the next, as
    sampled generation's do: each request takes the next answer of the script, in turn."""

    def __init__(self) -> None:
        super().__init__()
        self.turns: dict[tuple[str, str], list[str]] = {}
        self.asked: dict[tuple[str, str], int] = {}

    def take_turns(self, model: str, prompt: str, *answers: str) -> None:
        self.turns[(model, prompt)] = list(answers)
        self.script(model, prompt, answers[0])

    def _generate(self, model, request):
        prompt = "".join(p.get("text", "") for p in json.loads(request.body)["contents"][0]["parts"])
        key = (model, prompt)
        if key in self.turns:
            count = self.asked.get(key, 0)
            self.asked[key] = count + 1
            self.answers[key] = [self.turns[key][count % len(self.turns[key])]]
        return super()._generate(model, request)


@pytest.fixture
def gemini(repo, monkeypatch):
    for variable in ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", "fake-key-for-fake-generate")
    monkeypatch.setenv("JOBSPEC_OWNER", "tests/test_eval_statistics")
    with SampledFake() as fake:
        yield fake


def serve(fake, cli, repo, name, eval_section, tuned_passes, base_passes, count):
    """A job whose tuned model passes the first ``tuned_passes`` prompts and whose base model
    passes the first ``base_passes``."""
    repo.job(name=name, extra=eval_section)
    tuned = serve_job(fake, cli, f"jobs/{name}.yaml")
    for n in range(count):
        fake.script(tuned, f"q{n}", "ok" if n < tuned_passes else "no")
        fake.script("models/gemini-1.0-pro-001", f"q{n}", "ok" if n < base_passes else "no")
    return tuned


def apply(cli, fake):
    return cli("apply", "jobs/", "--backend", "gemini", "--endpoint", fake.url)


def reports(repo, name):
    directory = repo.root / "reports"
    data = json.loads((directory / f"{name}.json").read_text())
    jsonschema.validate(data, SCHEMA)
    summary = json.loads((directory / "summary.json").read_text())
    jsonschema.validate(summary, {**SCHEMA["$defs"]["summary"], "$defs": SCHEMA["$defs"]})
    return (data, (directory / f"{name}.md").read_text(), summary,
            (directory / "SUMMARY.md").read_text())


def test_pass_rates_carry_wilson_intervals_and_the_paired_test(repo, gemini, cli):
    serve(gemini, cli, repo, "paired", f"eval:\n  prompts:\n{prompts(10)}  min_pass_rate: 0.5\n"
          "  compare_base: true\n", tuned_passes=6, base_passes=0, count=10)
    result = apply(cli, gemini)
    assert result.code == 0, result.err
    assert "paired: eval 60% passed, base model 0%; gate 50% passed" in result.err
    assert ("paired: tuned 6/10 = 60% (95% CI 31–83%), base 0/10 = 0% (95% CI 0–28%); 6 prompts "
            "pass only when tuned, 0 only on the base model (0 both, 4 neither); exact McNemar "
            "p = 0.0312: a significant improvement at 0.05") in result.err

    data, markdown, summary, summary_md = reports(repo, "paired")
    section = data["eval"]
    assert (section["passed"], section["prompt_count"], section["samples"]) == (6, 10, 1)
    assert section["interval"] == {"confidence": 0.95, "method": "wilson",
                                   "low": pytest.approx(0.3127, abs=1e-4),
                                   "high": pytest.approx(0.8318, abs=1e-4)}
    assert section["base_interval"]["low"] == 0 and \
        section["base_interval"]["high"] == pytest.approx(0.2775, abs=1e-4)
    assert {k: section["paired"][k] for k in ("tuned_only", "base_only", "both", "neither",
                                              "excluded", "improved")} == \
        {"tuned_only": 6, "base_only": 0, "both": 0, "neither": 4, "excluded": 0, "improved": True}
    assert section["paired"]["p_value"] == 2 * 0.5**6

    assert "### What tuning did" in markdown
    assert "- **Tuned model**: 6/10 = 60% (95% CI 31–83%) of the eval prompts pass" in markdown
    assert "- **Base model**: 0/10 = 0% (95% CI 0–28%)" in markdown
    assert ("- **Paired by prompt**: 6 prompts pass only when tuned, 0 only on the base model "
            "(0 both, 4 neither); exact McNemar p = 0.0312: a significant improvement at 0.05"
            in markdown)
    assert re.search(r"- \*\*Tokens trained\*\*: [\d,]+ \([\d,]+ tokens × 5 epochs; estimate: "
                     r"estimated at 4 characters per token", markdown)
    assert "- **Time**: 1m 30s (90.4 s)" in markdown  # fake_generate's start and end times
    assert ("| [paired](paired.md) | `tunedModels/paired-19bdb71b` | ACTIVE | 6/10 = 60% "
            "(31–83%) | 0/10 = 0% (0–28%) | 6 / 0, p = 0.0312 | ") in summary_md
    row = summary["jobs"][0]
    assert row["interval"] == section["interval"] and row["paired"] == section["paired"]
    assert row["tokens_trained"] == data["tokens"]["trained"] > 0


def test_require_improvement_gates_apply(repo, gemini, cli):
    five = f"eval:\n  prompts:\n{prompts(5)}  require_improvement: true\n"
    serve(gemini, cli, repo, "small", five, tuned_passes=5, base_passes=0, count=5)
    warned = cli("validate")
    assert warned.code == 0
    assert re.search(r"jobs/small\.yaml:\d+:\d+: eval\.require_improvement: warning: this gate "
                     r"can never pass: with 5 prompts the smallest possible p-value is "
                     r"2 x 0\.5\^5 = 0\.0625, above the significance 0\.05; at least 6 prompts "
                     r"are needed", warned.err), warned.err
    failed = apply(cli, gemini)
    assert failed.code == 1
    assert ("small: eval 100% passed, base model 0%; gate 0% and a significant improvement over "
            "the base model (p ≤ 0.05) FAILED") in failed.err
    assert "exact McNemar p = 0.0625: no significant difference at 0.05" in failed.err
    assert "Apply incomplete: 1/1 jobs ACTIVE; an eval gate failed" in failed.err
    data, markdown, summary, _ = reports(repo, "small")
    assert data["eval"]["gate"] == "failed" and data["eval"]["require_improvement"] is True
    assert data["eval"]["base_pass_rate"] == 0.0  # compare_base is implied
    assert summary["ok"] is False
    assert "(gate 0% and a significant improvement: **failed**)" in markdown

    # A looser significance, which 5 prompts can reach: the same answers now pass the gate.
    job = repo.root / "jobs/small.yaml"
    job.write_text(job.read_text() + "  significance: 0.1\n")
    assert "warning" not in cli("validate").err
    passed = apply(cli, gemini)
    assert passed.code == 0, passed.err
    assert "p = 0.0625: a significant improvement at 0.1" in passed.err


def test_the_base_model_doing_better_is_not_an_improvement(repo, gemini, cli):
    serve(gemini, cli, repo, "worse", f"eval:\n  prompts:\n{prompts(8)}  require_improvement: "
          "true\n", tuned_passes=0, base_passes=8, count=8)
    result = apply(cli, gemini)
    assert result.code == 1
    assert ("0 prompts pass only when tuned, 8 only on the base model (0 both, 0 neither); exact "
            "McNemar p = 0.00781: the base model is significantly better at 0.05") in result.err


def test_compare_base_false_contradicts_require_improvement(repo, cli):
    repo.job(name="contradiction", extra=f"eval:\n  prompts:\n{prompts(6)}  "
             "require_improvement: true\n  compare_base: false\n")
    result = cli("validate")
    assert result.code == 1
    assert re.search(r"jobs/contradiction\.yaml:\d+:\d+: eval\.compare_base: "
                     r"require_improvement compares the tuned model with the base model", result.err)


def test_samples_average_per_prompt_pass_fractions(repo, gemini, cli):
    section = ('eval:\n  prompts:\n    - input: "a"\n      expect: "ok"\n    - input: "b"\n'
               '      expect: "ok"\n  samples: 3\n  min_pass_rate: 0.8\n  compare_base: true\n'
               '  generation_config: {temperature: 0.7}\n')
    repo.job(name="sampled", extra=section)
    tuned = serve_job(gemini, cli, "jobs/sampled.yaml")
    base = "models/gemini-1.0-pro-001"
    gemini.take_turns(tuned, "a", "ok", "ok", "no")
    gemini.take_turns(tuned, "b", "ok")
    gemini.take_turns(base, "a", "no")
    gemini.take_turns(base, "b", "ok", "no", "no")
    result = apply(cli, gemini)
    assert result.code == 0, result.err
    assert len(gemini.generate_requests(tuned)) == 6 and len(gemini.generate_requests(base)) == 6
    assert ("sampled: tuned 1.7/2 = 83% (95% CI 24–99%, over 2 prompts of 3 samples each), base "
            "0.3/2 = 17% (95% CI 1–76%, over 2 prompts of 3 samples each); 2 prompts pass only "
            "when tuned, 0 only on the base model") in result.err
    data, markdown, _, _ = reports(repo, "sampled")
    first, second = data["eval"]["prompts"]
    assert first["pass_fraction"] == pytest.approx(2 / 3) and first["verdict"] == "pass"
    assert [s["answer"] for s in first["samples"]] == ["ok", "ok", "no"]
    assert second["base_pass_fraction"] == pytest.approx(1 / 3)
    assert second["base_verdict"] == "fail"
    assert data["eval"]["pass_rate"] == pytest.approx(5 / 6)
    assert "| a | equals: ok | no | ❌ fail 0/3 | ok | ✅ pass 2/3 |" in markdown
    assert "Each prompt was asked 3 times" in markdown

    # Sampled answers are never reused: apply asks again.
    again = apply(cli, gemini)
    assert "sampled: asking the eval prompts again: generation is not deterministic" in again.err


def test_samples_of_greedy_answers_are_warned_about(repo, cli):
    repo.job(name="greedy", extra=f"eval:\n  prompts:\n{prompts(2)}  samples: 4\n")
    result = cli("validate")
    assert result.code == 0
    assert re.search(r"jobs/greedy\.yaml:\d+:\d+: eval\.samples: warning: 4 samples of greedy "
                     r"answers \(temperature 0\) are the same answer asked again", result.err)


def test_a_changed_gate_or_an_older_report_asks_again(repo, gemini, cli):
    serve(gemini, cli, repo, "again", f"eval:\n  prompts:\n{prompts(6)}  require_improvement: "
          "true\n", tuned_passes=6, base_passes=0, count=6)
    assert apply(cli, gemini).code == 0
    asked = len(gemini.generate_requests())
    same = apply(cli, gemini)
    assert "again: eval unchanged since the last report (100% passed; gate passed)" in same.err
    assert "again: tuned 6/6 = 100% (95% CI 61–100%)" in same.err
    assert len(gemini.generate_requests()) == asked

    job = repo.root / "jobs/again.yaml"
    job.write_text(job.read_text() + "  significance: 0.01\n")  # 6 prompts cannot reach it
    stricter = apply(cli, gemini)
    assert len(gemini.generate_requests()) == 2 * asked  # the gate changed: asked again
    assert stricter.code == 1 and "p = 0.0312: no significant difference at 0.01" in stricter.err

    # A report written before statistics existed is not reused (it has none to show).
    path = repo.root / "reports/again.json"
    old = json.loads(path.read_text())
    for key in ("samples", "require_improvement", "significance", "interval", "paired"):
        old["eval"].pop(key)
    path.write_text(json.dumps(old))
    apply(cli, gemini)
    assert len(gemini.generate_requests()) == 3 * asked


def test_show_prints_the_eval_statistics_settings(repo, cli):
    repo.job(name="shown", extra=f"eval:\n  prompts:\n{prompts(6)}  require_improvement: true\n"
             "  samples: 2\n  generation_config: {temperature: 0.5}\n")
    shown = cli("show", "jobs/shown.yaml", "--format", "json").json()["eval"]
    assert (shown["require_improvement"], shown["significance"], shown["samples"],
            shown["compare_base"], shown["min_pass_rate"]) == (True, 0.05, 2, True, 0.0)
