"""The shipped pre-commit hook, run by a real pre-commit (and a real `git commit`) in a scratch
repository whose training data is YAML: a data-only edit triggers validation, a bad one fails
the commit with the data file's line, and a YAML data file is never taken for a job file.

pre-commit installs a `language: python` hook by pip-installing its repository, which would reach
off this machine. So the test runs the shipped definition as a `repo: local` hook: the same id,
entry, args, files, pass_filenames and types, with `language: unsupported` (pre-commit 4.4's name
for `system`) and the entry resolved to this environment's jobspec. pip's index is pointed at a
closed loopback port, so anything that did try to install would fail here, not reach out.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent
PRE_COMMIT = BIN / "pre-commit"
SHIPPED = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))[0]
# What a user's .pre-commit-config.yaml takes from the manifest and may override per hook.
COPIED_KEYS = ("id", "name", "args", "files", "exclude", "types", "types_or", "exclude_types",
               "pass_filenames", "always_run")


def local_hook() -> dict:
    words = shlex.split(SHIPPED["entry"])
    hook = {key: SHIPPED[key] for key in COPIED_KEYS if key in SHIPPED}
    hook.update(entry=shlex.join([str(BIN / words[0]), *words[1:]]), language="unsupported",
                verbose=True)  # print the hook's output when it passes too
    return hook


class Checkout:
    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def write(self, relative: str, text: str) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")

    def run(self, *command: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(c) for c in command], cwd=self.root, env=self.env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)

    def commit(self, message: str) -> subprocess.CompletedProcess[str]:
        self.run("git", "add", "-A")
        return self.run("git", "commit", "-q", "-m", message)

    def commits(self) -> int:
        return int(self.run("git", "rev-list", "--count", "HEAD").stdout)


@pytest.fixture
def checkout(tmp_path) -> Checkout:
    assert PRE_COMMIT.exists(), "pre-commit is a dev dependency: pip install -e '.[dev]'"
    root = tmp_path / "repo"
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_NO_INPUT": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    env.pop("JOBSPEC_BACKEND", None)
    repo = Checkout(root, env)
    root.mkdir()
    repo.run("git", "init", "-q", "-b", "main")
    repo.write(".pre-commit-config.yaml", yaml.safe_dump(
        {"repos": [{"repo": "local", "hooks": [local_hook()]}]}, sort_keys=False))
    repo.write("README.md", "notes\n")
    repo.write("jobs/qa.yaml", """
        version: 1
        name: qa
        base_model: models/gemini-1.0-pro-001
        training_data: data/qa.yaml
        """)
    repo.write("jobs/data/qa.yaml", """
        - text_input: What is two plus two?
          output: four
        - text_input: What is the capital of France?
          output: Paris
        """)
    repo.write("jobs/numbers.yaml", """
        version: 1
        name: numbers
        base_model: models/gemini-1.0-pro-001
        training_data: {path: data/numbers.csv, input_field: q, output_field: a}
        """)
    repo.write("jobs/data/numbers.csv", "q,a\n1,2\n3,4\n")
    first = repo.commit("jobs")  # before the hook is installed
    assert first.returncode == 0, first.stdout
    installed = repo.run(PRE_COMMIT, "install")
    assert installed.returncode == 0, installed.stdout
    return repo


def test_the_local_hook_is_the_shipped_one():
    hook = local_hook()
    assert hook["id"] == "jobspec-validate"
    assert shlex.split(hook["entry"])[1:] == shlex.split(SHIPPED["entry"])[1:] == ["validate"]
    assert (hook["files"], hook["pass_filenames"], hook["args"]) == ("^jobs/", False, ["jobs/"])


def test_a_data_only_edit_is_validated_and_committed(checkout):
    checkout.write("jobs/data/qa.yaml", """
        - text_input: What is two plus two?
          output: four
        - text_input: What is the capital of France?
          output: Paris
        - text_input: What is the capital of Italy?
          output: Rome
        """)
    result = checkout.commit("one more example")
    assert result.returncode == 0, result.stdout
    assert "jobspec validate" in result.stdout and "Passed" in result.stdout
    assert "jobs/qa.yaml: ok (qa)" in result.stdout
    assert "jobs/numbers.yaml: ok (numbers)" in result.stdout
    assert checkout.commits() == 2


def test_a_bad_yaml_data_edit_fails_the_commit_at_the_data_files_line(checkout):
    checkout.write("jobs/data/qa.yaml", """
        - text_input: What is two plus two?
          output: 4
        """)
    result = checkout.commit("a number is not an answer")
    assert result.returncode == 1, result.stdout
    assert "jobs/data/qa.yaml:2:11: output: must be a string, got number" in result.stdout
    assert "1 problem found" in result.stdout
    assert "job file" not in result.stdout  # the data file is never read as a job
    assert checkout.commits() == 1


def test_a_csv_data_edit_triggers_it_too(checkout):
    checkout.write("jobs/data/numbers.csv", "q,a\n1,2\n3,\n")
    result = checkout.commit("empty answer")
    assert result.returncode == 1, result.stdout
    assert "jobs/data/numbers.csv:3: a: must not be empty" in result.stdout
    assert checkout.commits() == 1


def test_a_jsonl_data_edit_triggers_it_through_pre_commit_run(checkout):
    checkout.write("jobs/data/more.jsonl", '{"text_input": "a", "output": "b"}\n{"text_input": "c"}\n')
    checkout.write("jobs/more.yaml", """
        version: 1
        name: more
        base_model: models/gemini-1.0-pro-001
        training_data: data/more.jsonl
        """)
    checkout.run("git", "add", "-A")
    result = checkout.run(PRE_COMMIT, "run", "--files", "jobs/data/more.jsonl")
    assert result.returncode == 1, result.stdout
    assert "jobs/data/more.jsonl:2: output: missing" in result.stdout


def test_a_change_outside_jobs_does_not_run_it(checkout):
    checkout.write("README.md", "more notes\n")
    result = checkout.commit("docs")
    assert result.returncode == 0, result.stdout
    assert "(no files to check)" in result.stdout and "Skipped" in result.stdout
    assert "ok (qa)" not in result.stdout
