"""The shipped pre-commit hook and GitHub Actions workflow are valid YAML calling real commands."""

from __future__ import annotations

import re
import shlex

import yaml

from jobspec.cli import build_parser
from tests.conftest import ROOT


def parses(command: str) -> None:
    words = shlex.split(command.split(">")[0])
    assert words[0] == "jobspec"
    build_parser().parse_args(words[1:])  # exits 64 on an unknown command or flag


def test_pre_commit_hook_validates_the_job_directory_on_any_change_under_it():
    """Data files are never passed as job files; tests/test_precommit.py runs the hook."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert [h["id"] for h in hooks] == ["jobspec-validate"]
    hook = hooks[0]
    assert hook["language"] == "python" and hook["pass_filenames"] is False
    assert all(re.match(hook["files"], path) for path in (
        "jobs/a.yaml", "jobs/data/a.yaml", "jobs/data/a.jsonl", "jobs/data/a.csv",
        "jobs/data/a.json"))
    assert not re.match(hook["files"], "src/jobs/a.yaml")
    parses(shlex.join([*shlex.split(hook["entry"]), *hook["args"]]))
    for override in ("`args`", "`files`"):  # what a user with job files elsewhere changes
        assert override in hook["description"]


def test_github_workflow_validates_plans_and_applies():
    workflow = yaml.safe_load((ROOT / "examples/github-actions.yml").read_text())
    steps = {name: [s.get("run") for s in job["steps"] if s.get("run")]
             for name, job in workflow["jobs"].items()}
    commands = [c for runs in steps.values() for c in runs if c.startswith("jobspec")]
    assert commands == ["jobspec validate jobs/", "jobspec plan jobs/ --format markdown > plan.md",
                        "jobspec apply jobs/ --report-dir reports"]
    for command in commands:
        parses(command)
    uploads = [s for s in workflow["jobs"]["apply"]["steps"]
               if s.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads[0]["with"]["path"] == "reports/"
