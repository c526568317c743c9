"""Open base models named by their Hugging Face id, on Vertex AI's managed open-model tuning,
through the CLI against fake_vertex (its open-model rules: tests/fake_vertex_open.py, from
jobspec/backends/reference/vertex-open-models.md): what validate refuses, each at its line and
before anything is sent; the create an apply sends, request by request; adopting instead of
creating again; what plan shows."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.backends.conftest import BACKEND, OWNER_ID, PARENT, Vertex, apply
from tests.conftest import NUMBER_EXAMPLES, ROOT
from tests.fake_vertex import RUNNING, SUCCEEDED

pytestmark = pytest.mark.timeout(120)

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
CREATE_PATH = f"/v1beta1/{PARENT}/tuningJobs"
V1_JOBS = f"/v1/{PARENT}/tuningJobs"
LORA_SETTINGS = "learning_rate: 0.0002\n  batch_size: 8\n  epoch_count: 3\n  adapter_size: 16"


def open_job(vertex: Vertex, *, base_model: str = LLAMA, settings: str = LORA_SETTINGS,
             tuning_mode: str | None = None, backend: str = BACKEND, extra: str = "") -> None:
    """jobs/numbers.yaml naming an open model (line 3: base_model; line 4: tuning_mode, when
    given; then hyperparameters, one a line)."""
    vertex.repo.write_jsonl("jobs/data/numbers.jsonl", NUMBER_EXAMPLES)
    mode = f"tuning_mode: {tuning_mode}\n" if tuning_mode else ""
    vertex.repo.write("jobs/numbers.yaml", (
        f"version: 1\nname: numbers\nbase_model: {base_model}\n{mode}"
        f"description: The numbers job.\nhyperparameters:\n  {settings}\n"
        f"training_data: data/numbers.jsonl\n{extra}{backend}"))


def fingerprint(cli) -> str:
    shown = cli("show", "jobs/numbers.yaml", "--format", "json")
    assert shown.code == 0, shown.err
    return shown.json()["fingerprint"]


def refusals(cli, *args: str) -> list[str]:
    result = cli("validate", "jobs/", *args)
    assert result.code == 1, result.out + result.err
    return [line for line in (result.out + result.err).splitlines() if line.startswith("jobs/")]


# Validate: what Vertex does not take of an open model, at its line, nothing sent.

def test_a_model_vertex_does_not_tune_names_the_ones_it_does(vertex: Vertex, cli):
    open_job(vertex, base_model="meta-llama/Llama-3.1-8b-instruct")
    (line,) = refusals(cli)
    assert line.startswith(
        "jobs/numbers.yaml:3:13: base_model: Vertex AI does not tune "
        "meta-llama/Llama-3.1-8b-instruct (did you mean meta-llama/Llama-3.1-8B-Instruct?); "
        "the open models it tunes, by Hugging Face id, are: google/gemma-3-1b-it (full), ")
    assert "meta-llama/Llama-4-Scout-17B-16E-Instruct (lora), Qwen/Qwen3-4B (full)" in line
    assert line.endswith("To tune meta-llama/Llama-3.1-8b-instruct, use the local backend, "
                         "which tunes the Hugging Face models it serves")
    open_job(vertex, base_model="mistralai/Mistral-7B-Instruct-v0.3")
    (line,) = refusals(cli)
    assert "Vertex AI does not tune mistralai/Mistral-7B-Instruct-v0.3; the open models" in line
    assert vertex.fake.requests == []


def test_vertex_own_name_for_a_model_is_answered_with_its_hugging_face_id(vertex: Vertex, cli):
    open_job(vertex, base_model="meta/llama3_1@llama-3.1-8b-instruct", settings="epoch_count: 3")
    assert refusals(cli) == [
        "jobs/numbers.yaml:3:13: base_model: meta/llama3_1@llama-3.1-8b-instruct is Vertex AI's "
        "name for Llama 3.1 8B Instruct; a job names an open model by its Hugging Face id: "
        f"base_model: {LLAMA}"]


def test_a_tuning_mode_the_model_is_not_offered_in_is_refused(vertex: Vertex, cli):
    open_job(vertex, base_model="meta-llama/Llama-4-Scout-17B-16E-Instruct", tuning_mode="full",
             settings="epoch_count: 3")
    assert refusals(cli) == [
        "jobs/numbers.yaml:4:14: tuning_mode: Vertex AI tunes "
        "meta-llama/Llama-4-Scout-17B-16E-Instruct with LoRA (parameter-efficient) only, not "
        "full fine-tuning; use tuning_mode: lora"]
    # The default, lora, for a model tuned in full only: said at base_model, with the fix.
    open_job(vertex, base_model="meta-llama/Llama-3.2-1B-Instruct", settings="epoch_count: 3")
    assert refusals(cli) == [
        "jobs/numbers.yaml:3:13: base_model: Vertex AI tunes meta-llama/Llama-3.2-1B-Instruct "
        "with full fine-tuning only, not LoRA (parameter-efficient) (the default tuning_mode); "
        "set tuning_mode: full"]
    assert vertex.fake.requests == []


def test_gemini_settings_and_adapters_without_lora_are_refused_for_open_models(vertex, cli):
    open_job(vertex, tuning_mode="full",
             settings="learning_rate_multiplier: 2\n  adapter_size: 8\n  epoch_count: 3")
    assert refusals(cli) == [
        "jobs/numbers.yaml:7:29: hyperparameters.learning_rate_multiplier: Vertex AI takes a "
        "learning rate multiplier for Gemini models only; for an open model give learning_rate "
        "(an absolute rate), or leave both out for Vertex's default",
        "jobs/numbers.yaml:8:17: hyperparameters.adapter_size: an adapter size is a LoRA "
        "adapter's rank, and full fine-tuning trains no adapter; remove adapter_size, or use "
        "tuning_mode: lora"]


def test_learning_rate_and_batch_size_are_for_open_models_only(vertex: Vertex, cli):
    open_job(vertex)  # learning_rate and batch_size with an open model: valid
    assert cli("validate", "jobs/").code == 0
    open_job(vertex, base_model="gemini-2.5-flash")
    assert refusals(cli) == [
        "jobs/numbers.yaml:6:18: hyperparameters.learning_rate: Vertex AI takes no learning "
        "rate for a Gemini model (only for an open model); use learning_rate_multiplier (a "
        "multiplier on Vertex's recommended rate for the base model) instead",
        "jobs/numbers.yaml:7:15: hyperparameters.batch_size: Vertex AI takes no batch size for "
        "a Gemini model (it chooses one; it takes one only for an open model); remove "
        "batch_size"]
    open_job(vertex, base_model="gemini-2.5-flash", tuning_mode="full",
             settings="epoch_count: 3")
    (line,) = refusals(cli)
    assert line.startswith("jobs/numbers.yaml:4:14: tuning_mode: Vertex AI tunes Gemini models "
                           "with an adapter (LoRA) only; full fine-tuning is for some open "
                           "models (by Hugging Face id: google/gemma-3-1b-it (full), ")
    assert vertex.fake.requests == []


def test_a_region_vertex_does_not_tune_open_models_in_is_refused(vertex: Vertex, cli):
    open_job(vertex, backend=BACKEND.replace("}", ", location: europe-north1}"))
    assert refusals(cli) == [
        "jobs/numbers.yaml:11:88: backend.location: Vertex AI tunes open models in us-central1, "
        "europe-west4, us-west1, us-east5, asia-southeast1 only, not europe-north1"]
    open_job(vertex)  # the region from the command line: refused before anything is sent
    result = cli("plan", "jobs/", "--location", "europe-north1")
    assert result.code == 64
    assert (f"--location europe-north1: Vertex AI tunes open models (jobs/numbers.yaml: {LLAMA}) "
            "in us-central1, europe-west4, us-west1, us-east5, asia-southeast1 only; pass "
            "--location with one of them") in result.err
    assert vertex.fake.requests == []


def test_the_same_open_model_job_validates_for_local_and_not_for_gemini(vertex: Vertex, cli):
    open_job(vertex, settings="learning_rate: 0.0002\n  epoch_count: 3",
             backend="backend: local\n")
    assert cli("validate", "jobs/").code == 0
    assert cli("validate", "jobs/", "--backend", "vertex").code == 0
    assert refusals(cli, "--backend", "gemini") == [
        f"jobs/numbers.yaml:3:13: base_model: the Gemini API tunes no open models; tune {LLAMA} "
        "on vertex (Vertex AI's managed open-model tuning) or local (the local service tunes "
        "the Hugging Face models it serves)"]
    open_job(vertex, settings="epoch_count: 3", tuning_mode="full", backend="backend: local\n")
    assert refusals(cli) == [
        "jobs/numbers.yaml:4:14: tuning_mode: the local service trains a LoRA adapter, not "
        "every weight; remove tuning_mode: full, or tune on vertex (full fine-tuning of some "
        "open models)"]


def test_tuning_mode_is_in_the_fingerprint_only_when_it_is_not_the_default(vertex: Vertex, cli):
    open_job(vertex)
    default = fingerprint(cli)
    open_job(vertex, tuning_mode="lora")
    assert fingerprint(cli) == default  # an explicit default is the same job
    open_job(vertex, tuning_mode="full", settings="learning_rate: 0.0002\n  epoch_count: 3")
    full = fingerprint(cli)
    open_job(vertex, settings="learning_rate: 0.0002\n  epoch_count: 3")
    assert full != fingerprint(cli)


# Apply: the create, exactly; then adopting, never creating twice.

def messages_line(text_input: str, output: str) -> dict:
    return {"messages": [{"role": "user", "content": text_input},
                         {"role": "assistant", "content": output}]}


def test_apply_stages_the_chat_form_and_creates_the_open_model_job(vertex: Vertex, cli):
    open_job(vertex)
    fp = fingerprint(cli)
    result = apply(cli)
    assert result.code == 0, result.err
    fake = vertex.fake
    sent = [(r.method, r.path) for r in fake.requests]
    assert sent[:5] == [
        ("GET", V1_JOBS), ("GET", V1_JOBS),
        ("GET", f"/storage/v1/b/my-bucket/o/jobspec%2Ftraining%2F{fp}.jsonl"),
        ("POST", "/upload/storage/v1/b/my-bucket/o"),
        ("POST", CREATE_PATH)]
    assert fake.requests[3].body == b"".join(
        json.dumps(messages_line(i, o), separators=(",", ":")).encode() + b"\n"
        for i, o in NUMBER_EXAMPLES)
    assert fake.requests[4].json() == {
        "baseModel": "meta/llama3_1@llama-3.1-8b-instruct",
        "tunedModelDisplayName": f"numbers-{fp[:8]}",
        "description": "The numbers job.",
        "supervisedTuningSpec": {
            "trainingDatasetUri": f"gs://my-bucket/jobspec/training/{fp}.jsonl",
            "tuningMode": "TUNING_MODE_PEFT_ADAPTER",
            "hyperParameters": {"epochCount": "3", "learningRate": 0.0002, "batchSize": "8",
                                "adapterSize": "ADAPTER_SIZE_SIXTEEN"}},
        "outputUri": f"gs://my-bucket/jobspec/output/{fp}/",
        "labels": {"jobspec-name": "numbers", "jobspec-fingerprint": fp,
                   "jobspec-owner": OWNER_ID}}
    # Polled on v1, as a Gemini job is, until it succeeds.
    job = vertex.job_of("numbers")
    assert job["state"] == SUCCEEDED and "endpoint" not in job["tunedModel"]
    assert {r.path for r in fake.requests[5:] if r.method == "GET"} == {f"/v1/{job['name']}"}
    report = vertex.report("numbers")
    assert report["state"] == "ACTIVE" and report["service_state"] == "JOB_STATE_SUCCEEDED"
    assert report["data_stats"]["examples"] == 15 and report["data_stats"]["steps"] == 45


def test_full_tuning_sends_its_mode_and_no_adapter_or_unasked_setting(vertex: Vertex, cli):
    open_job(vertex, base_model="Qwen/Qwen3-8B", tuning_mode="full", settings="epoch_count: 2",
             extra="system_instruction: Answer with a number.\n")
    fp = fingerprint(cli)
    assert apply(cli).code == 0
    (create,) = vertex.requests("POST", CREATE_PATH)
    body = create.json()
    assert body["baseModel"] == "qwen/qwen3@qwen3-8b"
    assert body["supervisedTuningSpec"]["tuningMode"] == "TUNING_MODE_FULL"
    assert body["supervisedTuningSpec"]["hyperParameters"] == {"epochCount": "2"}
    assert body["outputUri"] == f"gs://my-bucket/jobspec/output/{fp}/"
    first = vertex.fake.objects[("my-bucket", f"jobspec/training/{fp}.jsonl")].lines()[0]
    assert first == {"messages": [{"role": "system", "content": "Answer with a number."},
                                  *messages_line(*NUMBER_EXAMPLES[0])["messages"]]}


def test_a_running_job_is_adopted_and_never_created_twice(vertex: Vertex, cli):
    open_job(vertex)
    fake = vertex.fake
    fake.polls_until_done = None  # trains until the test says
    assert apply(cli, "--no-wait").code == 0
    again = apply(cli, "--no-wait")
    assert again.code == 0, again.err
    (name,) = fake.jobs
    assert fake.jobs[name]["state"] == RUNNING
    fake.polls_until_done = fake.progress[name].observations + 2
    done = apply(cli)
    assert done.code == 0, done.err
    assert len(vertex.requests("POST", CREATE_PATH)) == 1 and len(fake.jobs) == 1
    assert len(vertex.uploads()) == 1
    assert fake.jobs[name]["state"] == SUCCEEDED
    assert f"numbers: {name} is ACTIVE" in done.err
    # Done: unchanged, one listing, nothing sent.
    before = len(fake.requests)
    assert apply(cli).code == 0
    assert [(r.method, r.path) for r in fake.requests[before:]] == [("GET", V1_JOBS)]


def test_a_lost_create_answer_is_adopted_from_the_listing(vertex: Vertex, cli):
    open_job(vertex)
    vertex.fake.drop_next_create_answer()
    result = apply(cli)
    assert result.code == 0, result.err
    assert len(vertex.requests("POST", CREATE_PATH)) == 1 and len(vertex.fake.jobs) == 1


# Plan: what it will do, and why it would tune again.

def test_plan_shows_the_open_model_job_and_what_changed_since_its_model(vertex: Vertex, cli):
    open_job(vertex)
    plan = cli("plan", "jobs/", "--format", "json")
    assert plan.code == 0, plan.err
    (job,) = plan.json()["jobs"]
    assert job["action"] == "create"
    text = cli("plan", "jobs/")
    shown = text.out + text.err
    assert f"+ numbers  create tuningJobs/(new) numbers-{job['fingerprint'][:8]}" in shown
    # Vertex's longest sequence for the model (8,192 in full mode), not Gemini's 131,072.
    assert "longest example 7 tokens of the 8,192 allowed" in shown
    assert apply(cli).code == 0
    open_job(vertex, settings="learning_rate: 0.0001\n  batch_size: 8\n  epoch_count: 3\n"
                              "  adapter_size: 16")
    plan = cli("plan", "jobs/", "--format", "json")
    (job,) = plan.json()["jobs"]
    assert job["action"] == "create"
    assert job["reasons"] == ["learning_rate 0.0002 → 0.0001"]


# The example job file: an open model, valid for vertex and local alike.

def test_the_example_open_model_job_validates_for_vertex_and_local(cli):
    example = str(ROOT / "examples" / "vertex-open-model.yaml")
    schema = json.loads((ROOT / "schemas" / "jobspec.schema.json").read_text())
    jsonschema.validate(yaml.safe_load(Path(example).read_text()), schema)  # editors' check
    for backend in ("vertex", "local"):
        result = cli("validate", example, "--backend", backend)
        assert result.code == 0, (backend, result.out + result.err)
    shown = cli("show", example, "--format", "json").json()
    assert shown["base_model"] == LLAMA and shown["tuning_mode"] == "lora"
    assert shown["training_data"]["example_count"] == 15


# Prune and delete: as for Gemini jobs; a finished open-model job leaves a model, no endpoint.

def test_prune_cancels_a_superseded_open_model_job_and_delete_names_its_model(vertex, cli):
    fake = vertex.fake
    fake.polls_until_done = None
    open_job(vertex)
    assert apply(cli, "--no-wait").code == 0
    old = vertex.job_of("numbers")["name"]
    open_job(vertex, settings="learning_rate: 0.0001\n  batch_size: 8\n  epoch_count: 3\n"
                              "  adapter_size: 16")
    assert apply(cli, "--no-wait").code == 0
    new = next(name for name in fake.jobs if name != old)
    fake.end_job(new, SUCCEEDED)
    pruned = apply(cli, "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert [r.path for r in vertex.cancels()] == [f"/v1/{old}:cancel"]
    assert f"cancelled superseded {old}" in pruned.err

    for _ in range(2):  # observed: CANCELLING, then CANCELLED
        cli("get", "--backend", "vertex", "--project", "my-project")
    assert fake.jobs[old]["state"] == "JOB_STATE_CANCELLED"
    deleted = cli("delete", "numbers", "--yes", "--backend", "vertex", "--project", "my-project")
    assert deleted.code == 0, deleted.err
    model = fake.jobs[new]["tunedModel"]["model"]
    assert (f"Vertex AI cannot delete tuning jobs: {new} stays in its history, and jobspec "
            f"leaves in place what it made: model {model}. To remove them:\n  gcloud ai models "
            f"delete {model.rsplit('/', 1)[1].split('@')[0]} --project=my-project "
            "--region=us-central1") in deleted.err
    assert len(vertex.cancels()) == 1
