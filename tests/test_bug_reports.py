"""An exception jobspec did not raise on purpose is a bug: one line says so and where the
traceback is, and the exit code (70) tells it apart from a failure the user can fix (1)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from jobspec import spec


def _planted_bug(*args, **kwargs):
    raise KeyError("an internal key that is not there")


def test_a_bug_is_one_line_a_file_and_exit_70(repo, cli, monkeypatch):
    repo.job()
    monkeypatch.setattr(spec, "load_jobs", _planted_bug)

    result = cli("validate", "jobs/")

    assert result.code == 70
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "internal error (a bug in jobspec" in lines[0]
    assert "KeyError: 'an internal key that is not there'" in lines[0]
    assert "Traceback" not in result.err
    written = Path(re.search(r"the traceback is in (\S+);", lines[0])[1])
    text = written.read_text(encoding="utf-8")
    assert text.startswith("jobspec 0.1.0 on Python")
    assert "command: jobspec validate jobs/" in text
    assert "Traceback (most recent call last)" in text and "_planted_bug" in text
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    # In the private state directory, never in the repository.
    assert Path(os.environ["XDG_STATE_HOME"]) in written.parents
    assert repo.root not in written.parents


def test_a_bug_with_nowhere_to_write_prints_the_traceback(repo, cli, monkeypatch, tmp_path):
    repo.job()
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the state directory would be")
    monkeypatch.setenv("XDG_STATE_HOME", str(blocked))
    monkeypatch.setattr(spec, "load_jobs", _planted_bug)

    result = cli("validate", "jobs/")

    assert result.code == 70
    assert "the traceback follows" in result.err
    assert "Traceback (most recent call last)" in result.err


def test_errors_jobspec_means_keep_their_codes(repo, cli):
    repo.write("jobs/bad.yaml", "version: 1\nname: Bad Name\n")
    result = cli("validate", "jobs/")
    assert result.code == 1
    assert "internal error" not in result.err
