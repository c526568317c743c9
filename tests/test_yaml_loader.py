"""The YAML loader: libyaml and the pure-Python parser read every job file alike, merge keys
(<<) mean what YAML says and cannot be made a bomb, and odd values are located errors."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobspec import yamlparse
from jobspec.errors import ConfigError
from jobspec.spec import load_job
from jobspec.yamlload import load_yaml
from tests.test_validate import errors_of

ROOT = Path(__file__).resolve().parent.parent
needs_libyaml = pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False),
                                   reason="libyaml is not installed: one parser reads all")


# --- libyaml and the pure-Python parser ----------------------------------------------------------

def reading(text: str) -> tuple:
    """What load_yaml makes of a job file's text: its values and positions, or its error."""
    try:
        loaded = load_yaml(text, "job.yaml")
    except ConfigError as exc:
        return ("error", str(exc))
    return ("values", loaded.data, loaded.positions.values, loaded.positions.keys)


def pure_python_reading(text: str) -> tuple:
    with mock.patch.object(yamlparse, "_libyaml_caps_nesting", return_value=False):
        return reading(text)


# Pieces that the two parsers are known to read apart somewhere, and the plain ones around them.
PIECES = st.sampled_from([
    "[", "]", "{", "}", ", ", "?", ":", ": ", "? ", "a?", "x:y", "- ", "\n  - ", "\n  b: ", "a: ",
    "#", "&x ", "*x", "<<: *x", "<<: [*x, *x]", "!!int ", "!!str ", "!x!int ", "!", "|", ">",
    "|-#", "'", '"', "\\", "\\u00e9", "\\x41", "\\/", "%YAML 1.1\n", "---", "...", "\t", "\r",
    "\r\n", "\n", " ", "\u2028", "\x85", "\ufeff", "é", "😀", "1", "0.5", "null", "true", "abc"])
texts = st.lists(PIECES, max_size=40).map("".join)
values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=10)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=6), children, max_size=4)),
    max_leaves=15)
dumped = st.builds(
    lambda value, flow, style: yaml.safe_dump(value, allow_unicode=True, default_flow_style=flow,
                                              default_style=style),
    values, st.sampled_from([None, True, False]), st.sampled_from([None, '"', "'", "|", ">"]))
mutated = st.builds(lambda text, at, piece: text[:at % (len(text) + 1)] + piece
                    + text[at % (len(text) + 1):], dumped, st.integers(0, 300), PIECES)


@needs_libyaml
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(texts, dumped, mutated, st.text(max_size=60)))
def test_both_parsers_read_every_job_file_alike(text):
    """Job files are read by libyaml where it reads them as the pure-Python parser does: the same
    values at the same lines and columns, or the same error, word for word."""
    assert reading(text) == pure_python_reading(text)


@needs_libyaml
def test_the_shipped_jobs_are_read_by_libyaml_alone():
    """What keeps validate fast (bench/validate_scale.py): real job files never need the
    pure-Python parser."""
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        with mock.patch.object(yamlparse, "_DepthLimitedLoader", side_effect=AssertionError):
            loaded = load_yaml(path.read_text(encoding="utf-8"), str(path))
        assert loaded == load_yaml_pure(path)


def load_yaml_pure(path: Path):
    with mock.patch.object(yamlparse, "_libyaml_caps_nesting", return_value=False):
        return load_yaml(path.read_text(encoding="utf-8"), str(path))


# --- merge keys ----------------------------------------------------------------------------------

def nested_merges(levels: int, indent: str = "") -> str:
    """Each level merges the one before nine times: written out, 9**levels mappings."""
    lines = [f"{indent}a: &a {{input: x, expect: y}}"]
    for level in range(1, levels + 1):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{indent}{name}: &{name} {{<<: [{', '.join(['*' + previous] * 9)}], "
                     f"k{name}: 1}}")
    return "\n".join(lines) + "\n"


def quickly_and_small(run):
    """``run()``'s result, the second time (the first imports what validate needs), asserting
    that it took a small fraction of a second of CPU (wall time on a busy machine says little)
    and little memory."""
    run()
    tracemalloc.start()
    started = time.process_time()
    try:
        result = run()
        seconds = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 0.5, seconds
    assert peak < 20 * 2**20, peak
    return result


BOMB = ("merge keys (<<) and aliases expand to more than 100,000 YAML nodes; jobspec stops "
        "there, as against a merge-key bomb (write the repeated values out)")


def test_a_nested_merge_key_bomb_in_a_job_file_is_refused_quickly(repo, cli):
    """556 bytes of nested `<<: [*a, *a, ...]` took 8.3 s and 189 MB with PyYAML 6.0.3's
    merge; with 6.0.4 the file passed, whatever the merges expanded to."""
    repo.write("jobs/bomb.yaml", nested_merges(6))
    result = quickly_and_small(lambda: cli("validate", "jobs/bomb.yaml"))
    assert result.code == 1
    assert errors_of(result) == [f"jobs/bomb.yaml:6:12: f: {BOMB}"]


def test_a_nested_merge_key_bomb_in_a_data_file_is_refused_quickly(repo, cli):
    repo.write("jobs/data/bomb.yaml", "- " + nested_merges(6, "  ").lstrip())
    repo.job(data="data/bomb.yaml")
    result = quickly_and_small(lambda: cli("validate", "jobs/demo.yaml"))
    assert errors_of(result) == [f"jobs/data/bomb.yaml:6:14: [0].f: {BOMB}"]


def test_a_few_levels_of_merges_are_read(repo, cli):
    repo.write("jobs/data/shared.yaml", "- " + nested_merges(3, "  ").lstrip()
               + "".join(f"- {{<<: *d, text_input: q{i}, output: a{i}}}\n" for i in range(3)))
    repo.job(data="data/shared.yaml")
    result = cli("validate", "jobs/demo.yaml")
    assert errors_of(result) == ["jobs/data/shared.yaml:1:3: text_input: missing"]


PROMPTS = """eval:
  prompts:
    - &one {input: one, expect: one}
    - &two {<<: *one, expect: two}
    - {<<: *two}
    - &three {<<: {input: three, expect: x}, expect: three}
    - *three
"""


def test_merges_mean_what_yaml_says(repo, cli):
    """A merged mapping's own keys override what it merges, wherever it is merged again (the
    third prompt is the second's: expect two; PyYAML and jobspec took expect one), and an alias
    to a mapping with merges is that mapping (it was a "duplicate key 'expect'")."""
    repo.job(extra=PROMPTS)
    result = cli("show", "jobs/demo.yaml", "--format", "json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["eval"]["prompts"] == [
        {"input": "one", "expect": {"equals": "one"}},
        {"input": "one", "expect": {"equals": "two"}},
        {"input": "one", "expect": {"equals": "two"}},
        {"input": "three", "expect": {"equals": "three"}},
        {"input": "three", "expect": {"equals": "three"}}]


def test_merging_a_value_that_is_no_mapping_is_located(repo, cli):
    repo.job(extra="eval:\n  prompts:\n    - {<<: [{input: a}, 2], expect: b}\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:11:25: invalid YAML: while constructing a mapping, expected a mapping "
        "for merging, but found scalar"]


# --- values --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("!!int", "'' is not !!int"), ("!!float", "'' is not !!float"),
    ("!!bool maybe", "'maybe' is not !!bool")])
def test_a_typed_value_that_is_no_value_is_located(repo, cli, value, message):
    """These were tracebacks (IndexError, KeyError from PyYAML's constructors)."""
    repo.job(hyperparameters=f"batch_size: {value}\n  epoch_count: 5")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/demo.yaml:5:15: hyperparameters.batch_size: cannot read this value: {message}"]


@pytest.mark.parametrize("escape", ["\\U0b001951", "\\Uc000e2ad"])
def test_an_escape_past_unicode_is_located(repo, cli, escape):
    """PyYAML's pure-Python scanner raised ValueError or OverflowError (chr() of the number):
    a traceback."""
    repo.job(extra=f'description: "no {escape} here"\n')
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/demo.yaml:9:18: invalid YAML: {escape} is not a Unicode character"]


def test_a_job_file_libyaml_reads_otherwise_keeps_its_message(repo):
    """A tab, which the pure-Python parser refuses after a value, is still refused where it was
    (libyaml would read the file)."""
    repo.job(extra="description: text\t\n")
    with pytest.raises(ConfigError) as refused:
        load_job("jobs/demo.yaml")
    assert str(refused.value).startswith("jobs/demo.yaml:9:18: invalid YAML:")


# --- a data file many jobs share -----------------------------------------------------------------

def test_a_shared_data_file_is_checked_against_each_jobs_backend(repo, cli):
    """validate reads a data file that jobs share once, but each job against its own backend's
    limits: 5 MB of examples fit the local service, not the Gemini API's 4 MB."""
    line = json.dumps({"text_input": "x" * 10_000, "output": "y"}) + "\n"
    repo.write("jobs/data/big.jsonl", line * 500)
    repo.job("local-one", data="data/big.jsonl")
    repo.job("local-two", data="data/big.jsonl")
    repo.job("remote", data="data/big.jsonl", extra="backend: gemini\n")
    result = cli("validate", "jobs/")
    assert errors_of(result) == [
        "jobs/remote.yaml:8:16: training_data: the examples make a create request of 5.1 MB; the "
        "gemini backend accepts at most 4 MB (the Gemini API's published limit for tuning data); "
        "use fewer or shorter examples"]


# --- job files as read from disk -----------------------------------------------------------------

def test_a_job_file_that_is_a_directory_or_missing_is_said_so(repo, cli):
    (repo.root / "jobs/folder.yaml").mkdir(parents=True)
    assert errors_of(cli("show", "jobs/folder.yaml")) == [
        "jobs/folder.yaml: is a directory, not a job file"]
    assert errors_of(cli("show", "jobs/none.yaml")) == ["jobs/none.yaml: no such job file"]
