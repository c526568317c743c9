"""A run's results as values (jobspec/results.py, jobspec/evaloutcome.py): where each job stands,
how its eval went and whether its gate passed, whether an earlier eval stands in for asking
again; and their rendering: the JSON report is the value's JSON, read back into the same value,
and the Markdown is rendered from values alone. The journeys through `jobspec apply`, `eval` and
`report` are in test_eval_reuse.py, test_eval_statistics.py and test_reports.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from xml.etree import ElementTree

import pytest

from jobspec import report, results, spec, stats
from jobspec.backends.base import ACTIVE, CREATING, FAILED, Progress, RemoteModel, Snapshot
from jobspec.evaloutcome import eval_outcome
from jobspec.evaluate import Answer, EvalResult, PromptResult, check, generation_config
from jobspec.identity import Identity
from jobspec.reconcile import FAILED_ACTION, IN_PROGRESS, UNCHANGED, JobPlan, Outcome
from jobspec.results import EvalMode
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(60)

EVAL = """eval:
  prompts:
    - input: one
      expect: "1"
    - input: two
      expect: "2"
  min_pass_rate: 1.0
"""
IDENTITY = Identity("ab" * 32, "counter-abababab", 3)
BACKEND, ENDPOINT = "gemini", "https://user:secret@generativelanguage.googleapis.com/?key=k"
MODEL = RemoteModel("tunedModels/counter-abababab", ACTIVE, "models/gemini-1.0-pro-001",
                    create_time="2024-05-01T10:00:00Z", start_time="2024-05-01T10:00:01Z",
                    complete_time="2024-05-01T10:02:31.5Z",
                    snapshots=(Snapshot(1, 1, 2.5), Snapshot(2, 1, 1.5), Snapshot(3, 2, 1.0)))


def load(repo, extra: str = EVAL, name: str = "counter") -> spec.Job:
    return spec.load_job(str(repo.job(name=name, extra=extra).relative_to(repo.root)))


def plan_of(job: spec.Job, current: RemoteModel | None = MODEL, action: str = UNCHANGED,
            identity: Identity = IDENTITY) -> JobPlan:
    return JobPlan(job, identity, action, MODEL.name, current, expected_steps=9,
                   hyperparameters={"batch_size": 2, "epoch_count": 5})


def asked(job: spec.Job, *answers: str, base: tuple[str, ...] | None = None,
          failed: tuple[str, ...] = ()) -> EvalResult:
    """The eval of ``job`` as if its tuned model answered ``answers`` (an input in ``failed``:
    its request failed), and the base model ``base``."""
    eval_spec = job.eval
    assert eval_spec is not None

    def answer(text: str, expect: spec.Expectation) -> Answer:
        return Answer(text=text, passed=check(expect, text))

    prompts = []
    for i, prompt in enumerate(eval_spec.prompts):
        tuned = ((Answer(error="503 unavailable"),) if prompt.input in failed
                 else (answer(answers[i], prompt.expect),))
        prompts.append(PromptResult(prompt.input, prompt.expect, tuned,
                                    None if base is None else (answer(base[i], prompt.expect),)))
    return EvalResult(tuple(prompts), eval_spec.min_pass_rate, eval_spec.compare_base,
                      generation_config(eval_spec), eval_spec.samples,
                      eval_spec.require_improvement, eval_spec.significance)


def result_of(job: spec.Job, evaluation, how: str = results.ASKED,
              status: results.JobStatus | None = None) -> results.JobResult:
    status = status or results.status_now(plan_of(job))
    return results.job_result(status, BACKEND, ENDPOINT, evaluation, how)


# Where a job stands: one builder, whether after apply or as the service holds it now.

def test_a_job_never_created_and_one_active_as_the_service_holds_them(repo):
    job = load(repo)
    missing = results.status_now(plan_of(job, current=None))
    assert (missing.state, missing.model, missing.reason) == (
        results.NOT_CREATED, None, "not created yet; run `jobspec apply` first")
    assert (missing.model_name, missing.expected_steps, missing.hyperparameters) == (
        MODEL.name, 9, {"batch_size": 2, "epoch_count": 5})
    active = results.status_now(plan_of(job))
    assert (active.state, active.model, active.reason) == (ACTIVE, MODEL, None)
    # apply's status of the same ACTIVE model is the same value
    assert results.status_after_apply(Outcome(plan_of(job), ACTIVE, MODEL), "unused") == active


@pytest.mark.parametrize("state, why", [
    (CREATING, "still training; run `jobspec apply` to wait for it"),
    (FAILED, "its tuning failed; `jobspec apply --recreate-failed` trains it again")])
def test_a_model_not_active_now_says_why(repo, state, why):
    status = results.status_now(plan_of(load(repo), replace(MODEL, state=state)))
    assert (status.state, status.reason) == (state, why)


def test_after_apply_a_status_says_why_it_is_not_active(repo):
    job = load(repo)
    training = replace(MODEL, state=CREATING, name="tunedModels/counter-renamed")
    progress = Progress(training.name, None, False, snapshots=(Snapshot(4, 2, 0.5),))
    waited = Outcome(plan_of(job, current=None), CREATING, progress=progress)
    status = results.status_after_apply(waited, "submitted; not waited for (--no-wait)")
    assert (status.state, status.reason, status.model_name, status.snapshots) == (
        CREATING, "submitted; not waited for (--no-wait)", training.name, (Snapshot(4, 2, 0.5),))
    refused = results.status_after_apply(
        Outcome(plan_of(job, current=None), "ERROR", error="400: tuning is not supported"), "")
    assert (refused.state, refused.reason, refused.model) == (
        "ERROR", "400: tuning is not supported", None)
    # a FAILED model left alone, or one still training, is reported as planned
    failed = replace(MODEL, state=FAILED)
    for action in (FAILED_ACTION, IN_PROGRESS):
        left = results.status_after_apply(Outcome(plan_of(job, failed, action), FAILED), "")
        assert (left.model, left.reason) == (failed, "not ACTIVE")


# How an eval went: its statistics and its gate, decided once.

def test_an_eval_that_passes_every_prompt_passes_its_gate(repo):
    outcome = eval_outcome(asked(load(repo), "1", "2"))
    assert (outcome.passed, outcome.pass_rate, outcome.prompt_count) == (2.0, 1.0, 2)
    low, high = stats.wilson(2, 2)
    assert (outcome.interval.low, outcome.interval.high) == (round(low, 6), round(high, 6))
    assert outcome.gate_passed and outcome.failed_inputs == [] and outcome.errors == 0
    assert outcome.base_passed is None and outcome.paired is None


def test_a_wrong_answer_or_a_failed_request_fails_the_gate(repo):
    job = load(repo)
    wrong = eval_outcome(asked(job, "1", "twenty"))
    assert (wrong.pass_rate, wrong.gate_passed, wrong.failed_inputs) == (0.5, False, ["two"])
    errored = eval_outcome(asked(job, "1", "", failed=("two",)))
    assert (errored.errors, errored.gate_passed, errored.prompts[1].tuned.verdict) == (
        1, False, "error")
    lenient = eval_outcome(asked(load(repo, EVAL.replace("1.0", "0.5")), "1", "twenty"))
    assert lenient.gate_passed  # 50% reaches min_pass_rate 0.5


def six_prompts(gate: str) -> str:
    prompts = "".join(f"    - input: q{i}\n      expect: \"a{i}\"\n" for i in range(6))
    return f"eval:\n  prompts:\n{prompts}  require_improvement: true\n{gate}"


def test_require_improvement_passes_only_on_a_significant_paired_improvement(repo):
    tuned, base = tuple(f"a{i}" for i in range(6)), ("no",) * 6
    better = eval_outcome(asked(load(repo, six_prompts("")), *tuned, base=base))
    assert better.paired is not None
    assert (better.paired.tuned_only, better.paired.base_only) == (6, 0)
    assert better.paired.p_value == 0.03125 and better.paired.improved and better.gate_passed
    stricter = eval_outcome(asked(load(repo, six_prompts("  significance: 0.01\n")), *tuned,
                                  base=base))
    assert stricter.pass_rate == 1.0 and not stricter.paired.improved
    assert not stricter.gate_passed  # every prompt passes, but not significantly better
    worse = eval_outcome(asked(load(repo, six_prompts("")), *base, base=tuned))
    assert worse.paired.base_better(0.05) and not worse.gate_passed


# Whether an earlier eval stands in for asking again.

def decide(job, earlier, mode=EvalMode.REUSE, status=None, endpoint=ENDPOINT):
    status = status or results.status_now(plan_of(job))
    return results.decide_eval(status, mode, earlier, BACKEND, endpoint)


def test_an_earlier_eval_of_the_same_model_and_prompts_is_reused(repo):
    job = load(repo)
    earlier = result_of(job, eval_outcome(asked(job, "1", "2")))
    reused = decide(job, earlier)
    assert (reused.how, reused.earlier, reused.refusal) == (results.REUSED, earlier.evaluation,
                                                           None)
    kept = decide(job, earlier, EvalMode.KEEP)
    assert (kept.how, kept.earlier) == (results.KEPT, earlier.evaluation)
    # a failed gate is reused as it was: asking again would fail it again
    failing = result_of(job, eval_outcome(asked(job, "1", "twenty")))
    assert decide(job, failing).earlier.gate_passed is False
    assert decide(job, earlier, EvalMode.ASK).how == results.ASKED  # `jobspec eval` asks


def test_an_eval_of_another_model_or_other_prompts_is_asked_again(repo):
    job = load(repo)
    earlier = result_of(job, eval_outcome(asked(job, "1", "2")))
    retrained = results.status_now(plan_of(job, identity=replace(IDENTITY, fingerprint="cd" * 32)))
    changed = load(repo, EVAL.replace("input: two", "input: three"))
    stricter = load(repo, EVAL + "  samples: 1\n  compare_base: true\n")
    for decision in (decide(job, earlier, status=retrained), decide(changed, earlier),
                     decide(stricter, earlier),
                     decide(job, earlier, endpoint="https://elsewhere.example/"),
                     decide(job, None)):
        assert (decision.how, decision.earlier, decision.refusal) == (results.ASKED, None, None)
    assert decide(changed, earlier, EvalMode.KEEP) == results.EvalDecision(results.NOT_RUN)


def test_an_eval_that_would_not_answer_the_same_is_asked_again_saying_why(repo):
    sampled = load(repo, EVAL + "  generation_config: {temperature: 0.7}\n")
    earlier = result_of(sampled, eval_outcome(asked(sampled, "1", "2")))
    assert decide(sampled, earlier) == results.EvalDecision(
        results.ASKED, refusal="generation is not deterministic (temperature 0.7)")
    job = load(repo)
    errored = result_of(job, eval_outcome(asked(job, "1", "", failed=("two",))))
    assert decide(job, errored) == results.EvalDecision(
        results.ASKED, refusal="1 prompt(s) could not be asked last time")


def test_no_eval_without_an_active_model_an_eval_section_or_when_skipped(repo):
    job = load(repo)
    earlier = result_of(job, eval_outcome(asked(job, "1", "2")))
    training = results.status_now(plan_of(job, replace(MODEL, state=CREATING)))
    assert decide(job, earlier, status=training).how == results.NOT_RUN
    assert decide(job, earlier, EvalMode.SKIP).how == results.SKIPPED
    bare = load(repo, extra="", name="bare")
    assert decide(bare, None).how == results.NO_EVAL


def test_a_result_is_ok_when_active_and_its_gate_passed(repo):
    job = load(repo)
    assert result_of(job, eval_outcome(asked(job, "1", "2"))).ok
    assert not result_of(job, eval_outcome(asked(job, "1", "twenty"))).ok
    assert result_of(job, None, results.SKIPPED).ok  # no gate judged
    not_created = results.status_now(plan_of(job, current=None))
    unmade = result_of(job, None, results.NOT_RUN, not_created)
    assert not unmade.ok and unmade.reason == "not created yet; run `jobspec apply` first"


def test_token_counts_of_the_same_model_on_the_same_backend_are_reused(repo):
    job = load(repo)
    status = results.status_now(plan_of(job))
    tokens = results.Tokens(3, 30, 6, 36, 5, 180, True, "countTokens")
    earlier = results.job_result(status, BACKEND, ENDPOINT, None, results.NO_EVAL, tokens)
    assert results.earlier_tokens(earlier, status, BACKEND) == tokens
    assert results.earlier_tokens(earlier, status, "local") is None
    other = results.status_now(plan_of(job, identity=replace(IDENTITY, fingerprint="cd" * 32)))
    assert results.earlier_tokens(earlier, other, BACKEND) is None


# Rendering: the values as the reports show them.

def test_the_json_report_is_the_results_json_and_reads_back_into_the_same_value(repo, tmp_path):
    job = load(repo, six_prompts("  samples: 2\n  generation_config: {temperature: 0.5}\n"))
    evaluation = asked(job, *(f"a{i}" for i in range(6)), base=("no",) * 6)
    # the second sample of q0 differs: a pass fraction of a half
    first = evaluation.results[0]
    two = replace(first, tuned=(first.tuned[0], Answer(text="x", passed=False)),
                  base=first.base * 2)
    rest = [replace(r, tuned=r.tuned * 2, base=r.base * 2) for r in evaluation.results[1:]]
    evaluation = replace(evaluation, results=(two, *rest))
    tokens = results.Tokens(3, 30, 6, 36, 5, 180, False, "estimate: 4 characters a token")
    result = results.job_result(results.status_now(plan_of(job)), BACKEND, ENDPOINT,
                                eval_outcome(evaluation), results.ASKED, tokens)
    report.write(tmp_path, [result])
    written = (tmp_path / "counter.json").read_text(encoding="utf-8")
    assert written == json.dumps(report.as_json(result), indent=2, ensure_ascii=False) + "\n"
    data = json.loads(written)
    assert data["endpoint"] == "https://generativelanguage.googleapis.com/"  # no credentials
    assert data["eval"]["passed"] == 5.5 and data["eval"]["gate"] == "passed"
    assert data["eval"]["prompts"][0]["pass_fraction"] == 0.5
    assert [s["verdict"] for s in data["eval"]["prompts"][0]["samples"]] == ["pass", "fail"]
    assert data["timings"]["duration_seconds"] == 150.5
    assert report.earlier(tmp_path, "counter") == result  # read once, the same value
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["jobs"][0]["tokens_trained"] == 180 and summary["ok"] is True
    assert summary["jobs"][0]["paired"] == data["eval"]["paired"]


def test_an_unreadable_or_older_earlier_report_is_none_or_has_no_eval(repo, tmp_path):
    job = load(repo)
    result = result_of(job, eval_outcome(asked(job, "1", "2")))
    report.write(tmp_path, [result])
    path = tmp_path / "counter.json"
    older = json.loads(path.read_text())
    for key in ("samples", "significance", "interval"):  # what no eval had before statistics
        older["eval"].pop(key)
    path.write_text(json.dumps(older))
    assert report.earlier(tmp_path, "counter") == replace(result, evaluation=None)
    path.write_text("{not json")
    assert report.earlier(tmp_path, "counter") is None
    path.write_text(json.dumps({**older, "report_version": 2}))
    assert report.earlier(tmp_path, "counter") is None
    assert report.earlier(tmp_path, "absent") is None


def test_markdown_renders_from_values_without_the_estimator(tmp_path):
    script = textwrap.dedent("""
        import sys
        from jobspec import reportmd, results
        from jobspec.evaloutcome import Answers, EvalOutcome, Interval, PromptOutcome
        evaluation = EvalOutcome(
            generation_config={"temperature": 0.0}, min_pass_rate=1.0,
            require_improvement=False, significance=0.05, samples=1, prompt_count=1,
            passed=1.0, pass_rate=1.0, interval=Interval(0.206549, 1.0), base_passed=None,
            base_pass_rate=None, base_interval=None, paired=None, gate_passed=True, errors=0,
            prompts=(PromptOutcome("one", {"equals": "1"}, Answers("1", None, "pass")),))
        result = results.JobResult(
            job="counter", file="jobs/counter.yaml", fingerprint="ab" * 32,
            tuned_model="tunedModels/counter-abababab", state="ACTIVE", service_state=None,
            reason=None, backend="gemini", endpoint="https://example.test/",
            base_model="models/gemini-1.0-pro-001", hyperparameters={"batch_size": 2},
            example_count=3, total_steps=9, data_stats=None,
            tokens=results.Tokens(3, 30, 6, 36, 5, 180, True, "countTokens"),
            timings=results.Timings(None, "2024-05-01T10:00:01Z", "2024-05-01T10:03:31Z", 210.0),
            loss_curve=(results.LossPoint(1, 1, 2.5), results.LossPoint(2, 1, 1.5)),
            validation_curve=(), kept_epoch=None, stop_reason=None, device="cpu",
            eval_status="reused", evaluation=evaluation)
        print(reportmd.markdown(result))
        print(reportmd.summary_markdown([result]))
        print("estimate imported:", "jobspec.estimate" in sys.modules)
    """)
    shown = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           cwd=ROOT, timeout=30)
    assert shown.returncode == 0, shown.stderr
    assert "estimate imported: False" in shown.stdout
    assert ("## counter: `tunedModels/counter-abababab` is ACTIVE; eval 100% (gate 100%: "
            "**passed**)") in shown.stdout
    assert "- **Time**: 3m 30s (210.0 s) on cpu" in shown.stdout
    assert "- **Tokens trained**: 180 (36 tokens × 5 epochs; exact: countTokens)" in shown.stdout
    assert "_Eval reused from the last report: the same prompts of the same model._" \
        in shown.stdout
    assert "| one | equals: 1 | 1 | ✅ pass |" in shown.stdout
    assert ("| [counter](counter.md) | `tunedModels/counter-abababab` | ACTIVE | "
            "1/1 = 100% (21–100%) | - | - | 180 | 3m 30s | passed | reused from the last "
            "report: the same prompts of the same model |") in shown.stdout


def test_junit_counts_the_results_failures_and_errors(repo):
    job = load(repo)
    failing = result_of(job, eval_outcome(asked(job, "twenty", "", failed=("two",))))
    suite = ElementTree.fromstring(report.junit([failing])).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    one, two = suite.findall("testcase")[1:]
    assert one.find("failure").text == "answer: 'twenty'"
    assert one.find("failure").get("message") == 'expected {"equals": "1"}'
    assert two.find("error").text == "503 unavailable"


GOLDEN = ROOT / "tests" / "golden_reports"


@pytest.mark.parametrize("case", sorted(p.name for p in GOLDEN.iterdir()))
def test_reports_written_before_results_were_values_are_rendered_byte_for_byte(case, tmp_path):
    """Reports that `jobspec apply` wrote when reports were built from dicts (copied from the
    runs of test_eval_statistics, test_reports, test_charts and test_eval_reuse): read into
    values and written again, every file is the same, byte for byte."""
    golden = GOLDEN / case
    order = [job["job"] for job in json.loads((golden / "summary.json").read_text())["jobs"]]
    values = [report.from_json(json.loads((golden / f"{name}.json").read_text(encoding="utf-8")))
              for name in order]
    written = report.write(tmp_path, values)
    assert sorted(p.name for p in written) == sorted(p.name for p in golden.iterdir())
    for path in written:
        assert path.read_bytes() == (golden / path.name).read_bytes(), path.name
