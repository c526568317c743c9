"""What Vertex AI does not take of a job, refused at the job file's line before anything is sent
(the vertex backend's ``check_job``): a Gemini model's rules here (shared/reference/
vertex-tuning-api.md), an open model's in vertexopen.py, the project and region in
vertexsettings.py."""

from __future__ import annotations

from ..errors import ConfigError
from ..spec import Job
from . import openmodels, vertexopen
from .gemini import refuse_resources
from .vertexsettings import check_settings

RESOURCES_REFUSED = ("Vertex AI chooses the machines it tunes on; resources applies to the local "
                     "service: remove it, or tune on local")


def check_job(job: Job) -> list[ConfigError]:
    """What Vertex AI v1 does not take, refused at the job file's line before anything is
    sent (§3: learningRate and batchSize are v1beta1 only, for open models only); a job naming
    an open model by its Hugging Face id has the rules of Vertex's open-model tuning
    (vertexopen.check_job)."""
    if openmodels.is_open_model(job.base_model):
        return (vertexopen.check_job(job) + check_settings(job)
                + refuse_resources(job, RESOURCES_REFUSED))
    given, problems = job.hyperparameters.given, []
    named = openmodels.from_vertex_name(job.base_model)
    if named is not None:
        problems.append(ConfigError(job.at("base_model"), (
            f"{job.base_model} is Vertex AI's name for {named.display_name}; a job names an "
            f"open model by its Hugging Face id: base_model: {named.hf_id}")))
    if "learning_rate" in given:
        problems.append(ConfigError(job.at("hyperparameters", "learning_rate"), (
            "Vertex AI takes no learning rate for a Gemini model (only for an open model); use "
            "learning_rate_multiplier (a multiplier on Vertex's recommended rate for the base "
            "model) instead")))
    if "batch_size" in given:
        problems.append(ConfigError(job.at("hyperparameters", "batch_size"), (
            "Vertex AI takes no batch size for a Gemini model (it chooses one; it takes one "
            "only for an open model); remove batch_size")))
    if job.early_stopping is not None:
        problems.append(ConfigError(job.at("early_stopping"), (
            "Vertex AI has no early stopping (its validation loss is only measured); remove "
            "early_stopping, or tune on the local backend")))
    return (problems + vertexopen.refuse_full_tuning(job) + vertexopen.refuse_deployment(job)
            + check_settings(job) + refuse_resources(job, RESOURCES_REFUSED))
