"""A tuned open model on Vertex AI is served only once deployed: `eval.deploy` asks the eval to
deploy it (endpoints.create, deployModel), ask the prompts on the endpoint, then undeploy it and
delete the endpoint, through the CLI against fake_vertex (its endpoints:
tests/fake_vertex_deploy.py, from jobspec/backends/reference/vertex-open-models.md §8)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from xml.etree import ElementTree

import jsonschema
import pytest

from tests.backends.conftest import OWNER_ID, PARENT, Vertex, apply
from tests.backends.test_vertex_open_models import fingerprint, open_job, refusals
from tests.conftest import ROOT

pytestmark = pytest.mark.timeout(120)

PROMPTS = ('eval:\n  prompts:\n    - input: "41"\n      expect: "42"\n'
           '    - input: "7"\n      expect: "8"\n')
DEPLOY = ("  deploy: {machine_type: g2-standard-12, accelerator_type: NVIDIA_L4, "
          "accelerator_count: 1}\n")


def test_eval_deploy_is_refused_for_a_gemini_model_and_on_other_backends(vertex: Vertex, cli):
    open_job(vertex, extra=PROMPTS + DEPLOY)
    assert cli("validate", "jobs/").code == 0
    open_job(vertex, base_model="gemini-2.5-flash", settings="epoch_count: 3",
             extra=PROMPTS + DEPLOY)
    (line,) = refusals(cli)
    assert line.startswith("jobs/numbers.yaml:14:11: eval.deploy: Vertex AI serves a tuned "
                           "Gemini model (gemini-2.5-flash) on the endpoint its tuning job makes")
    open_job(vertex, base_model="gemini-2.5-flash", settings="epoch_count: 3",
             extra=PROMPTS + DEPLOY, backend="backend: {type: gemini}\n")
    (line,) = refusals(cli)
    assert line.startswith("jobs/numbers.yaml:14:11: eval.deploy: the Gemini API serves a "
                           "tuned model as soon as it is ACTIVE")
    open_job(vertex, base_model="HuggingFaceTB/SmolLM2-135M-Instruct", settings="epoch_count: 3",
             extra=PROMPTS + DEPLOY, backend="backend: {type: local}\n")
    (line,) = refusals(cli)
    assert line.startswith("jobs/numbers.yaml:14:11: eval.deploy: the local service serves "
                           "what it tunes")
    open_job(vertex, extra=PROMPTS + "  deploy: {machine_type: g2-standard-12}\n")
    assert refusals(cli) == [
        "jobs/numbers.yaml:17:11: eval.deploy.accelerator_type: is required",
        "jobs/numbers.yaml:17:11: eval.deploy.accelerator_count: is required"]
    assert vertex.fake.requests == []


ENDPOINTS = f"{PARENT}/endpoints"


def deploy_job(vertex: Vertex, deploy: str = DEPLOY) -> None:
    open_job(vertex, extra=PROMPTS + deploy)


def test_apply_deploys_asks_on_the_endpoint_then_undeploys_and_deletes(vertex: Vertex, cli):
    deploy_job(vertex)
    result = apply(cli)
    assert result.code == 0, result.err
    deploys = vertex.fake.deploys
    (endpoint,) = {name for _, name in deploys.calls}
    assert [verb for verb, _ in deploys.calls] == ["create", "deploy", "undeploy", "delete"]
    tuned = vertex.job_of("numbers")["tunedModel"]["model"]
    assert deploys.deploy_bodies == [{
        "deployedModel": {
            "model": tuned, "displayName": "jobspec numbers eval",
            "dedicatedResources": {
                "machineSpec": {"machineType": "g2-standard-12", "acceleratorType": "NVIDIA_L4",
                                "acceleratorCount": 1},
                "minReplicaCount": 1, "maxReplicaCount": 1}},
        "trafficSplit": {"0": 100}}]
    (create,) = [r for r in vertex.requests("POST") if r.path == f"/v1/{ENDPOINTS}"]
    assert create.json()["labels"] == {"jobspec-owner": OWNER_ID, "jobspec-name": "numbers",
                                       "jobspec-fingerprint": fingerprint(cli)}
    assert [body["messages"] for body in deploys.chat_bodies] == [
        [{"role": "user", "content": "41"}], [{"role": "user", "content": "7"}]]
    assert all(body["max_tokens"] == 32 and body["temperature"] == 0
               for body in deploys.chat_bodies)
    assert [r.path for r in vertex.requests("POST") if r.path.endswith("/chat/completions")] \
        == [f"/v1beta1/{endpoint}/chat/completions"] * 2
    assert deploys.endpoints == {}  # nothing left serving, nothing left billing
    report = vertex.report("numbers")
    assert report["eval_status"] == "asked" and report["eval"]["pass_rate"] == 1.0
    assert f"numbers: deploying {tuned} on g2-standard-12 with 1 x NVIDIA_L4" in result.err
    assert f"numbers: undeploying {tuned} and deleting {endpoint}" in result.err


def test_a_failed_deployment_is_removed_and_reported_and_the_other_jobs_still_run(
        vertex: Vertex, cli):
    """The first job's deployment fails: its endpoint is still deleted, its result says the
    eval was not run and why, the second job is deployed and asked, every report is written,
    and apply exits 1."""
    deploy_job(vertex)
    letters = (vertex.repo.root / "jobs/numbers.yaml").read_text().replace(
        "name: numbers\n", "name: letters\n")
    vertex.repo.write("jobs/letters.yaml", letters)
    vertex.fake.deploys.fail_next_deploy("The machine type is out of capacity.")
    result = apply(cli)
    assert result.code == 1, result.err
    (failed,) = [line for line in result.err.splitlines()
                 if line.startswith("letters: eval not run: ")]
    assert "Vertex AI could not deploy" in failed
    assert "The machine type is out of capacity." in failed
    assert "Apply incomplete: 2/2 jobs ACTIVE; the eval of letters could not be run" \
        in result.err
    calls = vertex.fake.deploys.calls
    assert [verb for verb, _ in calls] == ["create", "deploy", "delete",  # letters
                                           "create", "deploy", "undeploy", "delete"]  # numbers
    assert calls[0][1] != calls[3][1]
    assert vertex.fake.deploys.endpoints == {}  # nothing left serving, nothing left billing
    schema = json.loads((ROOT / "schemas/report.schema.json").read_text())
    lost = vertex.report("letters")
    jsonschema.validate(lost, schema)
    assert (lost["state"], lost["eval_status"], lost["eval"]) == ("ACTIVE", "deploy_failed",
                                                                 None)
    assert lost["eval_note"] == failed.removeprefix("letters: eval not run: ")
    asked = vertex.report("numbers")
    jsonschema.validate(asked, schema)
    assert (asked["eval_status"], asked["eval"]["pass_rate"]) == ("asked", 1.0)
    assert "eval_note" not in asked
    reports = vertex.repo.root / "reports"
    summary = json.loads((reports / "summary.json").read_text())
    jsonschema.validate(summary, {**schema["$defs"]["summary"], "$defs": schema["$defs"]})
    assert [(j["job"], j["eval_status"], j["ok"]) for j in summary["jobs"]] == [
        ("letters", "deploy_failed", False), ("numbers", "asked", True)]
    assert summary["ok"] is False
    page = (reports / "letters.md").read_text()
    assert ("_Eval not run: deploying the tuned model for it failed (the deployment was "
            "removed): Vertex AI could not deploy") in page
    assert "The machine type is out of capacity." in page
    overview = (reports / "SUMMARY.md").read_text()
    assert "❌ 1 of 2 jobs need attention" in overview
    (row,) = [line for line in overview.splitlines() if line.startswith("| [letters]")]
    assert "not run: deploying the tuned model for it failed" in row
    suites = {suite.get("name"): suite for suite in
              ElementTree.parse(reports / "junit.xml").getroot().findall("testsuite")}
    assert (suites["letters"].get("tests"), suites["letters"].get("errors")) == ("2", "1")
    (error,) = suites["letters"].iter("error")
    assert (error.get("message"), error.text) == ("deploy_failed", lost["eval_note"])
    assert suites["numbers"].get("errors") == "0"


def test_when_removing_a_failed_deployment_fails_too_both_are_said_and_a_rerun_removes_it(
        vertex: Vertex, cli):
    deploy_job(vertex)
    deploys = vertex.fake.deploys
    deploys.fail_next_deploy("The machine type is out of capacity.")
    deploys.fail_next_delete("Internal error deleting the endpoint.")
    result = apply(cli)
    assert result.code == 1, result.err
    (endpoint,) = deploys.endpoints  # left behind, labelled as the tuning job
    note = vertex.report("numbers")["eval_note"]
    assert note.startswith("Vertex AI could not deploy ")
    assert "The machine type is out of capacity." in note
    assert (f"; then removing {endpoint} failed too, so it may still be deployed (the next "
            "eval of this job removes it, or remove it by hand): Vertex AI could not delete "
            f"the endpoint {endpoint}: Internal error deleting the endpoint.") in note
    assert f"numbers: eval not run: {note}" in result.err
    deploys.calls.clear()
    again = apply(cli)
    assert again.code == 0, again.err
    assert f"numbers: removing {endpoint}, which an earlier run left" in again.err
    assert [verb for verb, _ in deploys.calls] == ["delete", "create", "deploy", "undeploy",
                                                   "delete"]
    assert deploys.endpoints == {}
    assert vertex.report("numbers")["eval_status"] == "asked"


def test_a_failing_eval_request_still_undeploys(vertex: Vertex, cli):
    deploy_job(vertex)
    vertex.fake.answers.pop(("tuned", "7"))  # the endpoint answers 400 to that prompt
    result = apply(cli)
    assert result.code != 0
    assert [verb for verb, _ in vertex.fake.deploys.calls] == [
        "create", "deploy", "undeploy", "delete"]
    assert vertex.fake.deploys.endpoints == {}
    report = vertex.report("numbers")
    assert report["eval"]["errors"] == 1


def test_a_rerun_reuses_the_endpoint_a_killed_run_left_and_removes_other_leftovers(
        vertex: Vertex, cli):
    deploy_job(vertex)
    assert apply(cli, "--skip-eval").code == 0
    deploys, tuned = vertex.fake.deploys, vertex.job_of("numbers")["tunedModel"]["model"]
    labels = {"jobspec-owner": OWNER_ID, "jobspec-name": "numbers",
              "jobspec-fingerprint": fingerprint(cli)}
    # What a run killed after deploying left: one endpoint serving the model on the machine
    # asked for, one still empty (killed between its create and its deploy).
    from jobspec.backends.vertexdeploy import deployed_model_body
    from jobspec.evalspec import Deployment

    def leave(body: dict) -> str:
        _, operation, _ = deploys._create(json.dumps(body).encode())
        return operation["name"].split("/operations/")[0]

    serving = leave({"displayName": "left", "labels": labels})
    request = deployed_model_body(tuned, Deployment("g2-standard-12", "NVIDIA_L4", 1), "left")
    operation = deploys._deploy(serving, json.dumps(request).encode())[1]
    deploys._observe(deploys.operations[operation["name"]])
    empty = leave({"displayName": "left", "labels": labels})
    deploys.calls.clear()
    result = cli("eval", "jobs/")
    assert result.code == 0, result.err
    assert f"numbers: reusing {serving}, which an earlier run left serving {tuned}" in result.err
    assert f"numbers: removing {empty}, which an earlier run left" in result.err
    assert deploys.calls == [("delete", empty), ("undeploy", serving), ("delete", serving)]
    assert [r.path for r in vertex.requests("POST") if r.path.endswith("/chat/completions")] \
        == [f"/v1beta1/{serving}/chat/completions"] * 2
    assert deploys.endpoints == {}


def test_without_eval_deploy_the_report_says_the_eval_was_not_run_and_why(vertex: Vertex, cli):
    open_job(vertex, extra=PROMPTS)
    result = apply(cli)
    assert result.code == 0, result.err
    assert "numbers: eval not run: Vertex AI serves a tuned open model only once it is " \
           "deployed, and the job has no eval.deploy" in result.err
    assert vertex.fake.deploys.calls == []
    assert not [r for r in vertex.requests("POST") if "generateContent" in r.path
                or r.path.endswith("/chat/completions")]
    report = vertex.report("numbers")
    assert (report["eval_status"], report["eval"]) == ("not_deployed", None)
    jsonschema.validate(report, json.loads((ROOT / "schemas/report.schema.json").read_text()))
    markdown = (vertex.repo.root / "reports" / "numbers.md").read_text()
    assert "not run: Vertex AI serves a tuned open model only once it is deployed" in markdown


def test_plan_says_the_eval_will_deploy_the_model(vertex: Vertex, cli):
    deploy_job(vertex)
    text = cli("plan", "jobs/")
    assert text.code == 0, text.err
    assert ("      eval deploys the tuned model to an endpoint on g2-standard-12 with 1 x "
            "NVIDIA_L4 (billed while deployed), asks the prompts, then undeploys it and "
            "deletes the endpoint") in text.out + text.err
    (job,) = cli("plan", "jobs/", "--format", "json").json()["jobs"]
    assert job["eval_deployment"] == {"machine_type": "g2-standard-12",
                                      "accelerator_type": "NVIDIA_L4", "accelerator_count": 1}
    open_job(vertex, extra=PROMPTS)
    (job,) = cli("plan", "jobs/", "--format", "json").json()["jobs"]
    assert job["eval_deployment"] is None
    assert "eval deploys" not in cli("plan", "jobs/").err
    assert vertex.fake.deploys.calls == []  # a plan deploys nothing


@pytest.mark.timeout(180)
def test_ctrl_c_while_deploying_still_undeploys_and_deletes(vertex: Vertex, cli):
    deploy_job(vertex)
    assert apply(cli, "--skip-eval").code == 0
    deploys = vertex.fake.deploys
    deploys.slow_next_deploy(12)
    process = subprocess.Popen(
        [sys.executable, "-m", "jobspec", "apply", "jobs/", "--poll-interval", "0.05"],
        cwd=vertex.repo.root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def deploy_polled_twice() -> bool:
        operations = [o for o in list(deploys.operations.values())
                      if o.metadata_type == "DeployModelOperationMetadata"]
        return bool(operations) and operations[0].polls_left <= 10

    deadline = time.monotonic() + 60
    while not deploy_polled_twice():  # waiting for the deployment
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    (endpoint,) = {name for _, name in deploys.calls}
    assert f"undeploying {vertex.job_of('numbers')['tunedModel']['model']} and deleting " \
           f"{endpoint}" in err
    assert [verb for verb, _ in deploys.calls] == ["create", "deploy", "undeploy", "delete"]
    assert deploys.endpoints == {}


def test_comparing_with_an_open_base_model_is_refused_at_its_line(vertex: Vertex, cli):
    open_job(vertex, extra=PROMPTS + DEPLOY + "  compare_base: true\n")
    assert refusals(cli) == [
        "jobs/numbers.yaml:18:17: eval.compare_base: compare_base asks the base model too, and "
        "Vertex AI serves an open base model only once it is deployed as well, which jobspec "
        "does not do; remove it (eval.deploy deploys the tuned model only)"]
    assert vertex.fake.requests == []
