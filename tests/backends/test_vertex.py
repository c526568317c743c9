"""The vertex backend through the CLI, against fake_vertex: what it sends (recorded request by
request), idempotence across applies, resuming after a lost answer or a killed apply, failed jobs,
listing every page, other teams' jobs, get/delete/prune, eval against the tuned endpoint and the
publisher model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jobspec.backends.registry import Rules
from jobspec.backends.vertex import VertexBackend
from jobspec.data import iter_examples
from jobspec.spec import load_job
from tests.backends.conftest import (JOBS_PATH, OWNER_ID, PARENT, TOKEN, Vertex,
                                     apply, job_text)
from tests.conftest import NUMBER_EXAMPLES
from tests.fake_gcs import google_error
from tests.fake_vertex import RUNNING, SUCCEEDED

pytestmark = pytest.mark.timeout(120)


def fingerprint(cli, path: str = "jobs/numbers.yaml") -> str:
    shown = cli("show", path)
    assert shown.code == 0, shown.err
    return next(line.split(": ", 1)[1] for line in shown.out.splitlines()
                if line.startswith("fingerprint: "))


def line_of(text_input: str, output: str) -> dict:
    return {"contents": [{"role": "user", "parts": [{"text": text_input}]},
                         {"role": "model", "parts": [{"text": output}]}]}


def test_apply_stages_the_data_then_creates_one_labelled_job_and_evals_it(vertex: Vertex, cli):
    fp = fingerprint(cli)
    result = apply(cli)
    assert result.code == 0, result.err
    fake = vertex.fake
    object_name = f"jobspec/training/{fp}.jsonl"
    sent = [(r.method, r.path) for r in fake.requests]
    assert sent[:5] == [
        ("GET", JOBS_PATH),  # plan: this workspace's jobs
        ("GET", JOBS_PATH),  # create: this job's, by labels, before creating
        ("GET", f"/storage/v1/b/my-bucket/o/jobspec%2Ftraining%2F{fp}.jsonl"),
        ("POST", "/upload/storage/v1/b/my-bucket/o"),
        ("POST", JOBS_PATH)]
    listing, lookup = fake.requests[0], fake.requests[1]
    assert listing.query == {"filter": [f'labels."jobspec-owner"="{OWNER_ID}"']}
    assert lookup.query == {"filter": [
        f'labels."jobspec-owner"="{OWNER_ID}" AND labels."jobspec-name"="numbers" AND '
        f'labels."jobspec-fingerprint"="{fp}"']}

    upload = fake.requests[3]
    assert upload.query == {"uploadType": ["media"], "name": [object_name],
                            "ifGenerationMatch": ["0"]}
    assert upload.headers["Content-Type"] == "application/jsonl"
    assert upload.headers["Content-Length"] == str(len(upload.body))
    assert "Transfer-Encoding" not in upload.headers  # an explicit length, not chunked
    assert upload.body == b"".join(
        json.dumps(line_of(i, o), separators=(",", ":")).encode() + b"\n"
        for i, o in NUMBER_EXAMPLES)
    assert fake.objects[("my-bucket", object_name)].lines() == [line_of(i, o)
                                                                for i, o in NUMBER_EXAMPLES]

    assert fake.requests[4].json() == {
        "baseModel": "gemini-2.5-flash",
        "tunedModelDisplayName": f"numbers-{fp[:8]}",
        "description": "The numbers job.",
        "supervisedTuningSpec": {
            "trainingDatasetUri": f"gs://my-bucket/{object_name}",
            "hyperParameters": {"epochCount": "3", "learningRateMultiplier": 0.5,
                                "adapterSize": "ADAPTER_SIZE_FOUR"}},
        "labels": {"jobspec-name": "numbers", "jobspec-fingerprint": fp,
                   "jobspec-owner": OWNER_ID}}
    job = vertex.job_of("numbers")
    name, endpoint = job["name"], job["tunedModel"]["endpoint"]
    assert job["state"] == SUCCEEDED and len(fake.jobs) == 1

    rest = fake.requests[5:]
    polls = [r for r in rest if r.method == "GET"]
    assert polls and {r.path for r in polls} == {f"/v1/{name}"}
    asked = sorted((r.path, r.json()["contents"][0]["parts"][0]["text"])
                   for r in rest if r.method == "POST")
    base = f"/v1/{PARENT}/publishers/google/models/gemini-2.5-flash:generateContent"
    assert asked == sorted([(f"/v1/{endpoint}:generateContent", "41"),
                            (f"/v1/{endpoint}:generateContent", "7"),
                            (base, "41"), (base, "7")])
    config = next(r for r in rest if r.method == "POST").json()["generationConfig"]
    assert config == {"temperature": 0, "maxOutputTokens": 16}
    for request in fake.requests:
        assert request.headers["Authorization"] == f"Bearer {TOKEN}"
        assert "x-goog-api-key" not in {k.lower() for k in request.headers}

    report = vertex.report("numbers")
    assert report["state"] == "ACTIVE" and report["backend"] == "vertex"
    assert report["service_state"] == "JOB_STATE_SUCCEEDED"
    characters = [len(i) + len(o) for i, o in NUMBER_EXAMPLES]  # the fake counts so (§3)
    assert report["data_stats"] == {"examples": 15, "steps": 15 * 3,
                                    "characters": sum(characters),
                                    "billable_tokens": sum(-(-c // 4) for c in characters)}
    assert [p["answer"] for p in report["eval"]["prompts"]] == ["42", "8"]


def test_a_second_apply_uploads_nothing_and_creates_nothing(vertex: Vertex, cli):
    assert apply(cli, "--skip-eval").code == 0
    before = len(vertex.fake.requests)
    again = apply(cli, "--skip-eval")
    assert again.code == 0, again.err
    # One listing: the job is ACTIVE, so unchanged; no object lookup, no upload, no create.
    assert [(r.method, r.path) for r in vertex.fake.requests[before:]] == [("GET", JOBS_PATH)]
    assert "= numbers  unchanged projects/my-project/locations/us-central1/tuningJobs/" \
        in again.err
    assert len(vertex.uploads()) == 1 and len(vertex.creates()) == 1
    assert len(vertex.fake.jobs) == 1


def test_the_report_names_the_job_vertex_made_so_the_next_apply_reuses_the_eval(vertex, cli):
    assert apply(cli).code == 0
    assert vertex.report("numbers")["tuned_model"] == vertex.job_of("numbers")["name"]
    before = len(vertex.fake.requests)
    again = apply(cli)
    assert again.code == 0, again.err
    assert vertex.report("numbers")["eval_status"] == "reused"
    assert [(r.method, r.path) for r in vertex.fake.requests[before:]] == [("GET", JOBS_PATH)]


def test_a_lost_create_answer_is_found_by_listing_and_adopted_not_duplicated(vertex, cli):
    vertex.fake.drop_next_create_answer()
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    assert len(vertex.fake.jobs) == 1 and len(vertex.creates()) == 1
    name = vertex.job_of("numbers")["name"]
    assert f"numbers: adopted {name}" in result.err
    sent = [(r.method, r.path) for r in vertex.fake.requests]
    create = sent.index(("POST", JOBS_PATH))
    assert sent[create + 1] == ("GET", JOBS_PATH)  # listed again, and found what it made
    again = apply(cli, "--skip-eval")
    assert again.code == 0 and len(vertex.creates()) == 1 and len(vertex.fake.jobs) == 1


def test_a_lost_create_answer_is_waited_for_while_the_listing_lags(vertex: Vertex, cli):
    vertex.fake.drop_next_create_answer()
    vertex.fake.lag_next_listing(3)  # the job it made stays out of the next three listings
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    assert len(vertex.creates()) == 1 and len(vertex.fake.jobs) == 1  # never a second job
    assert f"numbers: adopted {vertex.job_of('numbers')['name']}" in result.err


def test_a_lost_create_answer_is_not_repeated_while_the_listing_lags_past_the_deadline(
        vertex: Vertex, cli, monkeypatch):
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "1.5")
    vertex.fake.drop_next_create_answer()
    vertex.fake.lag_next_listing(1000)
    result = apply(cli, "--skip-eval")
    assert result.code == 1
    assert ("whether that create made a job is unknown, and after 1s Vertex AI's listing, which "
            "can lag behind a create, shows none; jobspec did not create another. Apply again "
            "in a minute: it adopts the job if the create made one, or creates it)") \
        in result.err
    assert len(vertex.creates()) == 1 and len(vertex.fake.jobs) == 1
    vertex.fake.catch_up_listing()
    again = apply(cli, "--skip-eval")  # plan finds the job the lost create made
    assert again.code == 0, again.err
    assert len(vertex.creates()) == 1 and len(vertex.fake.jobs) == 1


def test_a_create_answered_503_lists_again_then_creates_once(vertex: Vertex, cli):
    fake = vertex.fake
    real_create = fake._create

    def unavailable_once(request):
        fake._create = real_create  # the next one goes through
        return google_error(503, "The service is currently unavailable.")

    fake._create = unavailable_once
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    sent = [(r.method, r.path) for r in fake.requests]
    first = sent.index(("POST", JOBS_PATH))
    assert sent[first + 1:first + 3] == [("GET", JOBS_PATH), ("POST", JOBS_PATH)]
    assert len(fake.jobs) == 1 and len(vertex.uploads()) == 1


def test_creates_that_keep_failing_give_up_after_a_last_listing(vertex: Vertex, cli,
                                                                 monkeypatch):
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "1.5")
    fake = vertex.fake
    fake._create = lambda request: google_error(503, "The service is currently unavailable.")
    result = apply(cli, "--skip-eval")
    assert result.code == 1
    assert "The service is currently unavailable. (creating the tuning job: gave up after " \
        in result.err
    assert "attempts, and no job was made; apply again to retry)" in result.err
    sent = [(r.method, r.path) for r in fake.requests if r.path.startswith(JOBS_PATH)][1:]
    creates = sent.count(("POST", JOBS_PATH))
    assert 2 <= creates <= 4 and fake.jobs == {}
    # Every create is preceded by a listing, and the last listing follows the last create.
    assert sent == [("GET", JOBS_PATH), ("POST", JOBS_PATH)] * creates + [("GET", JOBS_PATH)]


def test_a_killed_apply_resumes_polling_the_same_job(vertex: Vertex, cli):
    fake = vertex.fake
    fake.polls_until_done = None  # trains until the test says
    process = subprocess.Popen(
        [sys.executable, "-m", "jobspec", "apply", "jobs/", "--poll-interval", "0.05",
         "--skip-eval"], cwd=vertex.repo.root, env=dict(os.environ),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (fake.jobs and len(vertex.requests("GET", f"/v1/{next(iter(fake.jobs))}"))
                   >= 2):
            assert time.monotonic() < deadline and process.poll() is None, \
                process.stderr.read().decode() if process.poll() is not None else "too slow"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)  # no goodbye: a crash, not an interrupt
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        process.stderr.close()
    (name,) = fake.jobs
    assert fake.jobs[name]["state"] == RUNNING
    killed_at = len(fake.requests)
    # It ends at the resumed apply's second poll (the plan's listing is one observation).
    fake.polls_until_done = fake.progress[name].observations + 3

    resumed = apply(cli, "--skip-eval")
    assert resumed.code == 0, resumed.err
    after = fake.requests[killed_at:]
    assert not [r for r in after if r.method == "POST"]  # no create, no upload
    assert [r.path for r in after] == [JOBS_PATH, f"/v1/{name}", f"/v1/{name}"]
    assert len(fake.jobs) == 1 and fake.jobs[name]["state"] == SUCCEEDED
    assert f"numbers: {name} is ACTIVE" in resumed.err


def test_a_failed_job_fails_apply_with_vertex_message_and_recreate_failed_makes_another(
        vertex: Vertex, cli):
    fake = vertex.fake
    fake.fail_next_job("The training dataset has 3 examples over the token limit.")
    failed = apply(cli, "--skip-eval")
    assert failed.code == 1
    assert "The training dataset has 3 examples over the token limit." in failed.err
    old = vertex.job_of("numbers")["name"]
    assert vertex.report("numbers")["state"] == "FAILED"
    assert "over the token limit" in vertex.report("numbers")["reason"]

    plan = cli("plan", "jobs/")
    assert plan.code == 0 and "! numbers" in plan.out
    still = apply(cli, "--skip-eval")
    assert still.code == 1 and len(vertex.creates()) == 1  # nothing recreated unasked

    recreated = apply(cli, "--skip-eval", "--recreate-failed")
    assert recreated.code == 0, recreated.err
    assert len(fake.jobs) == 2 and len(vertex.creates()) == 2
    new = next(n for n in fake.jobs if n != old)
    assert fake.jobs[new]["state"] == SUCCEEDED
    assert fake.jobs[old]["state"] == "JOB_STATE_FAILED"  # kept in Vertex's history
    assert vertex.cancels() == [] and len(vertex.uploads()) == 1  # the data was there already
    assert vertex.report("numbers")["state"] == "ACTIVE"


def test_listing_follows_every_page_and_never_touches_other_teams_jobs(repo, cli, vertex):
    fake = vertex.fake
    fake.page_size = 1
    vertex.write_antonyms()
    fp = fingerprint(cli)
    # Other teams' jobs: one of the same job name and fingerprint (they copied the file) but
    # their owner, running; one with jobspec's labels but no owner; one with no labels.
    theirs = [fake.add_foreign_job({"jobspec-name": "numbers", "jobspec-fingerprint": fp,
                                    "jobspec-owner": "0123456789abcdef"}, RUNNING)["name"],
              fake.add_foreign_job({"jobspec-name": "numbers", "jobspec-fingerprint": fp},
                                   SUCCEEDED)["name"],
              fake.add_foreign_job(None, RUNNING)["name"]]
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    assert len(vertex.creates()) == 2 and len(fake.jobs) == 5  # ours made, none adopted
    ours = {vertex.job_of("numbers")["name"], vertex.job_of("antonyms")["name"]}
    assert not ours & set(theirs)

    before = len(fake.requests)
    listed = cli("get", "--backend", "vertex", "--project", "my-project", "-o", "json")
    assert listed.code == 0, listed.err
    assert {row["name"] for row in listed.json()} == ours
    pages = fake.requests[before:]
    assert [r.query.get("pageToken") is not None for r in pages] == [False, True]

    # A third job of ours (the numbers changed), and prune: the old one is explained, and
    # theirs of the same name are not touched.
    vertex.write_numbers(NUMBER_EXAMPLES[:-1])
    pruned = apply(cli, "--skip-eval", "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert pruned.err.count("Vertex AI cannot delete tuning jobs: superseded ") == 1
    before = len(fake.requests)
    deleted = cli("delete", "numbers", "antonyms", "--yes", "--backend", "vertex",
                  "--project", "my-project")
    assert deleted.code == 0, deleted.err
    pages = [r for r in fake.requests[before:] if r.path == JOBS_PATH]
    assert [r.query.get("pageToken") is not None for r in pages] == [False, True, True]
    assert deleted.err.count("Vertex AI cannot delete tuning jobs: ") == 3
    assert vertex.cancels() == []  # ours had all finished; theirs are never cancelled
    for name in theirs:
        assert name not in deleted.err + pruned.err + result.err
    assert fake.jobs[theirs[0]]["state"] == RUNNING and fake.jobs[theirs[2]]["state"] == RUNNING


def test_delete_cancels_a_running_job_and_explains_what_a_finished_one_leaves(vertex, cli):
    fake = vertex.fake
    fake.polls_until_done = None
    vertex.write_antonyms()
    assert apply(cli, "--no-wait").code == 0
    numbers, antonyms = vertex.job_of("numbers")["name"], vertex.job_of("antonyms")["name"]
    fake.end_job(numbers, SUCCEEDED)
    cli("get", "--backend", "vertex", "--project", "my-project")  # observed: now SUCCEEDED
    assert fake.jobs[numbers]["state"] == SUCCEEDED
    tuned = fake.jobs[numbers]["tunedModel"]

    result = cli("delete", "numbers", "antonyms", "--yes", "--backend", "vertex",
                 "--project", "my-project")
    assert result.code == 0, result.err
    assert [(r.path, r.json()) for r in vertex.cancels()] == [(f"/v1/{antonyms}:cancel", {})]
    assert f"cancelled {antonyms} (Vertex AI stops it asynchronously" in result.err
    endpoint_id = tuned["endpoint"].rsplit("/", 1)[1]
    model_id = tuned["model"].rsplit("/", 1)[1].split("@")[0]
    scope = "--project=my-project --region=us-central1"
    assert (f"Vertex AI cannot delete tuning jobs: {numbers} stays in its history, and jobspec "
            f"leaves in place what it made: model {tuned['model']}, endpoint "
            f"{tuned['endpoint']}. To remove them:\n") in result.err
    for command in (f"gcloud ai endpoints undeploy-model {endpoint_id} {scope} "
                    "--deployed-model-id=ID",
                    f"gcloud ai endpoints delete {endpoint_id} {scope}",
                    f"gcloud ai models delete {model_id} {scope}"):
        assert f"\n  {command}" in result.err

    cli("get", "--backend", "vertex", "--project", "my-project")  # CANCELLING, then CANCELLED
    cli("get", "--backend", "vertex", "--project", "my-project")
    assert fake.jobs[antonyms]["state"] == "JOB_STATE_CANCELLED"
    again = cli("delete", "antonyms", "--yes", "--backend", "vertex", "--project", "my-project")
    assert again.code == 0
    assert f"nothing to remove: {antonyms} ended JOB_STATE_CANCELLED" in again.err
    assert len(vertex.cancels()) == 1


def test_prune_cancels_a_superseded_job_that_still_runs(vertex: Vertex, cli):
    fake = vertex.fake
    fake.polls_until_done = None
    assert apply(cli, "--no-wait", "--skip-eval").code == 0
    old = vertex.job_of("numbers")["name"]
    vertex.write_numbers(NUMBER_EXAMPLES[:-1])
    assert apply(cli, "--no-wait", "--skip-eval").code == 0
    new = next(n for n in fake.jobs if n != old)
    fake.end_job(new, SUCCEEDED)

    plan = cli("plan", "jobs/")
    assert "superseded" in plan.out and old in plan.out
    pruned = apply(cli, "--skip-eval", "--prune", "--yes")
    assert pruned.code == 0, pruned.err
    assert [r.path for r in vertex.cancels()] == [f"/v1/{old}:cancel"]
    assert f"cancelled superseded {old}" in pruned.err
    assert fake.jobs[new]["state"] == SUCCEEDED


def test_eval_asks_the_tuned_endpoint_and_the_publisher_model_again(vertex: Vertex, cli):
    assert apply(cli).code == 0
    endpoint = vertex.job_of("numbers")["tunedModel"]["endpoint"]
    before = len(vertex.fake.requests)
    result = cli("eval", "jobs/")
    assert result.code == 0, result.err
    asked = [r.path for r in vertex.fake.requests[before:] if r.method == "POST"]
    assert sorted(asked) == sorted(
        [f"/v1/{endpoint}:generateContent"] * 2
        + [f"/v1/{PARENT}/publishers/google/models/gemini-2.5-flash:generateContent"] * 2)
    report = vertex.report("numbers")
    assert [p["answer"] for p in report["eval"]["prompts"]] == ["42", "8"]
    assert [p.get("base_answer") for p in report["eval"]["prompts"]] == ["forty-two", "8"]


def test_a_second_team_on_the_same_project_gets_its_own_job(vertex: Vertex, cli, monkeypatch):
    assert apply(cli, "--skip-eval").code == 0
    monkeypatch.setenv("JOBSPEC_OWNER", "team-b")
    theirs = apply(cli, "--skip-eval")
    assert theirs.code == 0, theirs.err
    assert len(vertex.fake.jobs) == 2 and len(vertex.creates()) == 2
    assert len(vertex.uploads()) == 1  # same data, same object: uploaded once
    owners = {j["labels"]["jobspec-owner"] for j in vertex.fake.jobs.values()}
    assert len(owners) == 2 and OWNER_ID in owners


def test_texts_that_json_escapes_arrive_as_written(vertex: Vertex, cli):
    """Texts that JSON escapes (quotes, newlines, non-ASCII) arrive as written."""
    vertex.repo.write_jsonl("jobs/data/numbers.jsonl",
                            [('say "hi"\nplease', 'hi — "you"'), ("naïve", "ünïcode ✓")])
    assert apply(cli, "--skip-eval").code == 0
    (stored,) = vertex.fake.uploads
    assert stored.lines() == [line_of('say "hi"\nplease', 'hi — "you"'),
                              line_of("naïve", "ünïcode ✓")]
    assert "✓".encode() in stored.data  # UTF-8, not \\u escapes


def test_every_vertex_state_maps_to_one_of_three_and_keeps_its_name(vertex: Vertex, cli):
    from tests.fake_vertex import JOB_STATES

    fake = vertex.fake
    labels = {"jobspec-name": "numbers", "jobspec-fingerprint": "0" * 64,
              "jobspec-owner": OWNER_ID}
    made = {fake.add_foreign_job(labels, state)["name"]: state for state in JOB_STATES}
    listed = cli("get", "--backend", "vertex", "--project", "my-project", "-o", "json")
    assert listed.code == 0, listed.err
    seen = {row["name"]: row for row in listed.json()}
    assert set(seen) == set(made)
    expected = {"JOB_STATE_SUCCEEDED": "ACTIVE", "JOB_STATE_FAILED": "FAILED",
                "JOB_STATE_CANCELLED": "FAILED", "JOB_STATE_EXPIRED": "FAILED",
                "JOB_STATE_PARTIALLY_SUCCEEDED": "FAILED"}
    for name, state in made.items():
        row = seen[name]
        # A listing is an observation: the fake moves a queued or pending job to RUNNING.
        now = fake.jobs[name]["state"]
        assert row["state"] == expected.get(now, "CREATING"), (state, row)
        assert row["state_label"] in (now, f"{row['state']} ({now})")
        assert (row["error"] is not None) == (row["state"] == "FAILED"), row
        assert row["job"] == "numbers" and row["owned"] is True
    failed = next(row for row in seen.values() if row["name"] in made
                  and made[row["name"]] == "JOB_STATE_FAILED")
    assert failed["error"] == "Internal error occurred. (code 3, JOB_STATE_FAILED)"


def test_reports_of_vertex_jobs_follow_the_report_schema(vertex: Vertex, cli):
    import jsonschema

    from tests.conftest import ROOT

    schema = json.loads((ROOT / "schemas/report.schema.json").read_text())
    vertex.write_antonyms()
    vertex.fake.fail_next_job("The job could not read its data.")
    apply(cli)  # one FAILED, one ACTIVE (in whichever order they were created)
    for name in ("numbers", "antonyms"):
        report = vertex.report(name)
        assert report["tuned_model"] == vertex.job_of(name)["name"]
        jsonschema.validate(report, schema)
    summary = json.loads((vertex.repo.root / "reports" / "summary.json").read_text())
    jsonschema.validate(summary, {**schema["$defs"]["summary"], "$defs": schema["$defs"]})


def test_validation_examples_are_staged_and_named_as_the_validation_dataset(vertex: Vertex, cli):
    vertex.write_numbers(extra="validation_split: 0.2\n")
    fp = fingerprint(cli)
    result = apply(cli, "--skip-eval")
    assert result.code == 0, result.err
    spec = json.loads(vertex.creates()[0].body)["supervisedTuningSpec"]
    assert spec["trainingDatasetUri"] == f"gs://my-bucket/jobspec/training/{fp}.jsonl"
    assert spec["validationDatasetUri"] == f"gs://my-bucket/jobspec/validation/{fp}.jsonl"
    training = vertex.fake.objects[("my-bucket", f"jobspec/training/{fp}.jsonl")].lines()
    held_out = vertex.fake.objects[("my-bucket", f"jobspec/validation/{fp}.jsonl")].lines()
    assert len(training) + len(held_out) == len(NUMBER_EXAMPLES) and len(held_out) == 3
    assert not {json.dumps(line) for line in training} & {json.dumps(line) for line in held_out}


def test_early_stopping_is_refused_for_vertex_before_anything_is_sent(vertex: Vertex, cli):
    vertex.write_numbers(extra="validation_split: 0.2\nearly_stopping: 2\n")
    result = cli("validate", "jobs/numbers.yaml")
    assert result.code == 1
    assert "early_stopping: Vertex AI has no early stopping" in result.err
    assert vertex.fake.requests == []


VERTEX_CONVERSATIONS = [
    {"systemInstruction": {"parts": [{"text": "Answer with one word."}]},
     "contents": [{"role": "user", "parts": [{"text": "hot?"}]},
                  {"role": "model", "parts": [{"text": "cold"}]},
                  {"role": "user", "parts": [{"text": "naïve \"up\"?"}]},
                  {"role": "model", "parts": [{"text": "down 😀"}]}]},
    {"contents": [{"role": "user", "parts": [{"text": "big?"}]},
                  {"role": "model", "parts": [{"text": "small"}]}]},
]


def test_a_vertex_training_file_is_staged_as_the_user_wrote_it(vertex: Vertex, cli):
    """A file already in Vertex AI's own format (contents, systemInstruction) is staged line
    for line as written; the same conversations as chat messages stage the same lines."""
    written = "".join(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
                      for line in VERTEX_CONVERSATIONS).encode("utf-8")
    (vertex.repo.root / "jobs/data/numbers.jsonl").write_bytes(written)
    vertex.repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl"))
    fp = fingerprint(cli)
    assert apply(cli, "--skip-eval").code == 0
    staged = vertex.fake.objects[("my-bucket", f"jobspec/training/{fp}.jsonl")]
    assert vertex.uploads()[0].body == written
    assert staged.lines() == VERTEX_CONVERSATIONS

    # The same conversations as chat messages: the same fingerprint (so the same object), and
    # the same lines staged from them.
    messages = [{"messages": [{"role": "system", "content": "Answer with one word."},
                              {"role": "user", "content": "hot?"},
                              {"role": "assistant", "content": "cold"},
                              {"role": "user", "content": "naïve \"up\"?"},
                              {"role": "assistant", "content": "down 😀"}]},
                {"messages": [{"role": "user", "content": "big?"},
                              {"role": "assistant", "content": "small"}]}]
    vertex.repo.write("jobs/data/numbers.jsonl",
                      "".join(json.dumps(m) + "\n" for m in messages))
    assert fingerprint(cli) == fp
    job = load_job("jobs/numbers.yaml", rules=Rules("vertex"))
    assert b"".join(VertexBackend._lines(iter_examples(job.training_data))) == written


def test_a_plan_estimates_a_conversation_from_every_text(vertex: Vertex, cli):
    """Vertex AI counts nothing before tuning: the plan estimates each conversation from all of
    its texts (system instruction and user turns as input, model turns as output), and names
    the longest by its line."""
    lines = [{"systemInstruction": {"parts": [{"text": "s" * 40}]},
              "contents": [{"role": "user", "parts": [{"text": "u" * 8}]},
                           {"role": "model", "parts": [{"text": "m" * 8}]},
                           {"role": "user", "parts": [{"text": "u" * 4}]},
                           {"role": "model", "parts": [{"text": "m" * 4}]}]},
             {"contents": [{"role": "user", "parts": [{"text": "u" * 4}]},
                           {"role": "model", "parts": [{"text": "m" * 4}]}]}]
    vertex.repo.write("jobs/data/numbers.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    vertex.repo.write("jobs/numbers.yaml", job_text("numbers", "data/numbers.jsonl"))
    plan = cli("plan", "jobs/", "--format", "json")
    assert plan.code == 0, plan.err
    (job,) = plan.json()["jobs"]
    estimate = job["estimate"]
    assert (estimate["input_tokens"], estimate["output_tokens"]) == (13 + 1, 3 + 1)
    assert estimate["longest_example"] == {"where": "jobs/data/numbers.jsonl:1", "tokens": 16}
    assert not estimate["exact"]
