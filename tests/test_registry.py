"""The backend registry's seam, below the journeys that reach it: which backend a command uses,
the rules each backend type brings to a job file, the options the command line gives a backend,
and apply's resume command, derived from apply's parser so that every option is repeated."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

import pytest

from jobspec import reconcile, spec, workspace
from jobspec.backends import registry
from jobspec.backends.base import BackendOptions
from jobspec.backends.endpoints import BACKEND_VARIABLE
from jobspec.cli import build_parser
from jobspec.commands import replay
from jobspec.commands.apply import resume_command
from jobspec.commands.common import backend_options
from jobspec.errors import UsageError
from jobspec.identity import identify

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def no_backend_from_the_environment(monkeypatch):
    monkeypatch.delenv(BACKEND_VARIABLE, raising=False)


def jobs_with(repo, *backends: str | None) -> list[spec.Job]:
    for number, backend in enumerate(backends):
        repo.job(f"job{number}", extra=f"backend: {backend}\n" if backend else "")
    return spec.load_jobs([f"jobs/job{n}.yaml" for n in range(len(backends))])


# --- choosing a backend ------------------------------------------------------------------------


def test_the_backends_are_known_by_the_names_their_modules_give_them():
    assert registry.names() == ("local", "gemini", "vertex")
    for name in registry.names():
        assert registry.backend_type(name).name == name


def test_the_job_files_choose_the_backend_else_local(repo):
    assert registry.choose(None, jobs_with(repo, "gemini", "gemini")) == "gemini"
    assert registry.choose(None, jobs_with(repo, None, "vertex")) == "vertex"
    assert registry.choose(None, jobs_with(repo, None)) == "local"
    assert registry.choose(None, []) == "local"


def test_the_operator_chooses_over_the_job_files(repo, monkeypatch):
    jobs = jobs_with(repo, "gemini")
    assert registry.choose("vertex", jobs) == "vertex"
    monkeypatch.setenv(BACKEND_VARIABLE, "local")
    assert registry.choose(None, jobs) == "local"
    assert registry.choose("vertex", jobs) == "vertex"  # --backend, then the variable
    assert registry.chosen_by_operator(None)


def test_jobs_that_name_different_backends_are_applied_separately(repo):
    with pytest.raises(UsageError, match=r"the jobs name different backends \(job0: gemini, "
                                         r"job1: vertex\); apply them separately or pass "
                                         r"--backend"):
        registry.choose(None, jobs_with(repo, "gemini", "vertex"))


def test_an_unknown_backend_in_the_environment_is_a_usage_error(monkeypatch):
    monkeypatch.setenv(BACKEND_VARIABLE, "colab")
    with pytest.raises(UsageError, match="JOBSPEC_BACKEND=colab: expected one of local, "
                                         "gemini, vertex"):
        registry.choose(None, [])


# --- what each backend type asks of a job file --------------------------------------------------


def test_a_backend_setting_belongs_to_the_types_that_take_it():
    assert registry.types_taking("project") == ("vertex",)
    assert registry.types_taking("staging_bucket") == ("vertex",)
    assert registry.types_taking("endpoint") == ()  # every type takes one
    assert registry.types_taking("type") == ()


def test_the_rules_are_those_of_the_backend_the_job_goes_to(repo):
    repo.job(extra="backend: gemini\n", hyperparameters="epoch_count: 5\n  adapter_size: 4")
    assert spec.load_job("jobs/demo.yaml", rules=registry.Rules("vertex")).hyperparameters \
        .adapter_size == 4
    with pytest.raises(spec.ConfigError, match="jobs/demo.yaml:6:17: hyperparameters.adapter_size"
                                               ": the Gemini API takes no adapter size"):
        spec.load_job("jobs/demo.yaml", rules=registry.Rules(None))


def test_delete_by_file_checks_the_files_backend_section_only(repo, cli):
    """A job file names models to delete: its `backend` settings must be its type's, but the
    rules of where it would train do not apply (an adapter size on gemini is not refused)."""
    repo.job(extra="backend:\n  type: local\n  project: my-project\n")
    result = cli("delete", "jobs/demo.yaml", "--yes")
    assert result.code == 1
    assert "jobs/demo.yaml:11:3: backend.project: applies only to the vertex backend, not " \
           "local" in result.err

    repo.job(extra="backend: gemini\n", hyperparameters="epoch_count: 5\n  adapter_size: 4")
    assert spec.load_job("jobs/demo.yaml", rules=registry.FileRules()).hyperparameters \
        .adapter_size == 4


# --- the options the command line gives a backend ----------------------------------------------


def test_every_backend_option_comes_from_its_command_line_option():
    given = {f.name: f"value of {f.name}" for f in dataclasses.fields(BackendOptions)}
    words = [word for name, value in given.items()
             for word in (f"--{name.replace('_', '-')}", value)]
    args = build_parser().parse_args(["get", *words])
    assert backend_options(args) == BackendOptions(**given)
    assert backend_options(build_parser().parse_args(["get"])) == BackendOptions()


# --- the resume command, derived from apply's parser -------------------------------------------

SAMPLES = {"timeout": "2h", "poll_interval": "0.05", "parallel": "2"}  # options with a type


def every_option_given(parser: argparse.ArgumentParser) -> list[str]:
    """Words that give each of ``parser``'s options a value other than its default."""
    words = ["jobs/", "more jobs/"]
    for action in parser._actions:  # noqa: SLF001
        if not action.option_strings or action.default == argparse.SUPPRESS:  # --help
            continue
        option = action.option_strings[-1]
        if action.nargs == 0:
            words.append(option)
        elif action.choices:
            words += [option, next(c for c in action.choices if c != action.default)]
        else:
            words += [option, SAMPLES.get(action.dest, f"a {action.dest} value")]
    return words


def apply_arguments(*words: str) -> argparse.Namespace:
    return build_parser().parse_args(["apply", *words])


def test_the_command_gives_every_option_again():
    args = apply_arguments(*every_option_given(apply_arguments().parser))
    again = replay.words(args.parser, args)
    assert again[:2] == ["jobspec", "apply"]
    assert vars(apply_arguments(*again[2:])).keys() == vars(args).keys()
    for name, value in vars(apply_arguments(*again[2:])).items():
        if name not in ("parser", "handler"):
            assert value == getattr(args, name), name


def test_an_option_added_to_the_parser_is_repeated_without_more_code():
    args = apply_arguments("--report-dir", "r")
    args.parser.add_argument("--new-option", type=float)
    args.parser.add_argument("--new-flag", action="store_true")
    args = args.parser.parse_args(["--new-flag", "--new-option", "1e-7", "--report-dir", "r"],
                                  namespace=argparse.Namespace(parser=args.parser))
    assert replay.words(args.parser, args) == [
        "jobspec", "apply", "--report-dir", "r", "--new-option", "1e-07", "--new-flag"]


def test_defaults_are_left_out_and_numbers_written_as_given():
    args = apply_arguments("--timeout", "24h", "--parallel", "4", "--poll-interval", "90s")
    assert replay.words(args.parser, args) == ["jobspec", "apply", "--poll-interval", "90"]
    args = apply_arguments("--timeout", "1234567.25")
    assert replay.words(args.parser, args)[2:] == ["--timeout", "1234567.25"]


def plan_of(repo, action: str) -> reconcile.Plan:
    [job] = jobs_with(repo, None)
    identity = identify(job)
    return reconcile.Plan("local", "http://127.0.0.1:1", workspace.owner("team"), (
        reconcile.JobPlan(job, identity, action, f"tunedModels/{identity.tuned_model_id}"),))


def test_the_resume_command_drops_what_no_longer_matters(repo):
    words = ["jobs/", "--target", "a b", "--backend", "gemini", "--endpoint", "http://e",
             "--owner", "team a", "--report-dir", "my reports", "--timeout", "2h",
             "--poll-interval", "0.05", "--parallel", "2", "--allow-outside-paths",
             "--skip-eval", "--recreate-failed", "--prune", "--yes", "--quiet"]
    args = apply_arguments(*words)
    resumed = shlex.split(resume_command(args.parser, args, plan_of(repo, reconcile.RECREATE)))
    assert resumed == [
        "jobspec", "apply", "jobs/", "--target", "a b", "--backend", "gemini", "--endpoint",
        "http://e", "--owner", "team a", "--report-dir", "my reports", "--timeout", "7200",
        "--poll-interval", "0.05", "--parallel", "2", "--allow-outside-paths", "--skip-eval",
        "--recreate-failed", "--prune", "--yes", "--quiet"]

    # Once nothing failed is left to recreate, and without --prune, --yes confirms nothing.
    args = apply_arguments("--recreate-failed", "--yes", "--no-wait")
    assert resume_command(args.parser, args, plan_of(repo, reconcile.CREATE)) == \
        "jobspec apply --no-wait"
