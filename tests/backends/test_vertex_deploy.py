"""A tuned open model on Vertex AI is served only once deployed: `eval.deploy` asks the eval to
deploy it (endpoints.create, deployModel), ask the prompts on the endpoint, then undeploy it and
delete the endpoint, through the CLI against fake_vertex (its endpoints:
tests/fake_vertex_deploy.py, from jobspec/backends/reference/vertex-open-models.md §8)."""

from __future__ import annotations

import pytest

from tests.backends.conftest import Vertex
from tests.backends.test_vertex_open_models import open_job, refusals

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
