"""How many times one command reads each training file, however many jobs name it: validate
once; plan twice (identify's pass, and the pass that digests the trained examples and keeps
them when they are few, so the backend's count and the longest example read memory, not the
file, and the validation split is identify's, never drawn again); apply as many times as its
create needs (identify, the upload's measure and, when the service lacks it, its send), plus
once for the report's token count; nothing more once the model exists. Through the CLI against
the real local service (tiny model), each pass over a data file counted where its records are
read (datareaders.READERS)."""

from __future__ import annotations

import collections
import json

import httpx
import pytest

from jobspec import datareaders, estimate, spec
from jobspec.identity import identify

pytestmark = pytest.mark.timeout(300)

DATA = "jobs/data/demo.jsonl"
APPLY = ("apply", "jobs/", "--poll-interval", "0.05", "--skip-eval")


@pytest.fixture
def passes(monkeypatch) -> collections.Counter:
    """Passes over each data file (by the path its messages show), as commands read them."""
    counted: collections.Counter = collections.Counter()
    for suffix, reader in list(datareaders.READERS.items()):
        def counting(source, reader=reader):
            counted[source.display_path] += 1
            return reader(source)
        monkeypatch.setitem(datareaders.READERS, suffix, counting)
    return counted


@pytest.fixture
def local_repo(repo, service, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", service.url)
    for variable in ("JOBSPEC_BACKEND", "JOBSPEC_PRICE_PER_MILLION_TOKENS"):
        monkeypatch.delenv(variable, raising=False)
    with httpx.Client(base_url=service.url) as http:  # no earlier runs
        for model in http.get("/v1beta/tunedModels", params={"pageSize": 1000}).json().get(
                "tunedModels", []):
            http.delete(f"/v1beta/{model['name']}")
    return repo


def reads(cli, passes, *command: str) -> int:
    passes.clear()
    result = cli(*command)
    assert result.code == 0, result.err
    assert set(passes) <= {DATA}, passes
    return passes[DATA]


# Apply's passes: identify; the upload of the training examples measured, then sent (the service
# has none of them yet); with a validation split, its held-out side measured and sent too; and
# the report's count of the trained examples (kept from the plan before: no count asked).
@pytest.mark.parametrize("extra,apply_reads", [("", 4), ("validation_split: 0.2\n", 6)])
def test_each_command_reads_a_training_file_the_fewest_times(local_repo, cli, passes, extra,
                                                             apply_reads):
    local_repo.job("demo", extra=extra)
    assert reads(cli, passes, "validate", "jobs/") == 1
    assert reads(cli, passes, "plan", "jobs/") == 2  # the service counts the tokens
    assert reads(cli, passes, "plan", "jobs/") == 2  # the count is kept: none asked
    assert reads(cli, passes, *APPLY) == apply_reads
    assert reads(cli, passes, "plan", "jobs/") == 1  # unchanged: identify alone
    assert reads(cli, passes, *APPLY) == 1


def test_jobs_that_share_a_training_file_read_it_as_one_job_does(local_repo, cli, passes):
    """A data file many jobs name is read once per pass, not once per job: plan's identify
    reads it for all of them at once, as validate does (it read it once per job, which made
    plans of 1,000 jobs sharing a file half again as slow as they are now)."""
    for name, epochs in (("demo", 5), ("demo-b", 6), ("demo-c", 7)):
        local_repo.job(name, hyperparameters=f"batch_size: 2\n  epoch_count: {epochs}")
    assert reads(cli, passes, "validate", "jobs/") == 1
    assert reads(cli, passes, "plan", "jobs/") == 2  # identify, then the trained examples
    planned = json.loads(cli("plan", "jobs/", "--format", "json").out)["jobs"]
    # Each job's fingerprint is the one it has alone: the same examples, three fingerprints.
    alone = {name: identify(spec.load_job(f"jobs/{name}.yaml")).fingerprint
             for name in ("demo", "demo-b", "demo-c")}
    assert {job["name"]: job["fingerprint"] for job in planned} == alone
    assert len(set(alone.values())) == 3


def test_examples_too_many_to_hold_are_read_again_and_planned_alike(local_repo, cli, passes,
                                                                    monkeypatch):
    """A plan holds a few MB of examples at most; past that it walks the file again (the
    service's count, then the longest example), and says exactly what it says of held ones."""
    local_repo.job("demo", extra="validation_split: 0.2\n")
    assert reads(cli, passes, "plan", "jobs/", "--format", "json") == 2
    held = json.loads(cli("plan", "jobs/", "--format", "json").out)
    monkeypatch.setattr(estimate, "HELD_CHARACTERS", 0)
    monkeypatch.setattr("jobspec.countcache.CountCache.get", lambda self, key, count: None)
    assert reads(cli, passes, "plan", "jobs/", "--format", "json") == 5
    streamed = json.loads(cli("plan", "jobs/", "--format", "json").out)
    assert streamed == held
    assert held["jobs"][0]["estimate"]["exact"] is True
