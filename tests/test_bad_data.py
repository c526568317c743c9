"""Bad input in job and data files ends in `path:line:column: field: message` and exit 1, never a
traceback: lone surrogates, deep nesting, alias bombs (while long plain YAML lists pass), and
training data too large for the backend's create request."""

from __future__ import annotations

import csv
import dataclasses
import json
import time

import httpx
import pytest
import yaml

from jobspec import data, spec, wire
from jobspec.backends import gemini, local
from jobspec.backends.gemini import CREATE_ENVELOPE_BYTES
from jobspec.errors import Location
from tests.test_validate import errors_of

LONE = "has a lone surrogate {} at character {}, which cannot be sent as UTF-8; write the " \
       "character itself instead of the escape"
TOO_DEEP = "nested too deeply to read; an example is one object of text fields"
DEEPER_THAN_100 = "nested more than 100 levels deep; no job or data file needs that many"


@pytest.fixture(autouse=True)
def no_backend_from_the_environment(monkeypatch):
    monkeypatch.delenv("JOBSPEC_BACKEND", raising=False)


# --- lone surrogates ------------------------------------------------------------------------

def test_lone_surrogate_in_jsonl_is_refused_at_its_line(repo, cli):
    repo.write("jobs/data/demo.jsonl", '{"text_input": "a", "output": "b"}\n'
               '{"text_input": "ok \\ud83d", "output": "b"}\n'
               '{"text_input": "pair \\ud83d\\ude00 is fine", "output": "b"}\n')
    repo.job()
    result = cli("validate", "jobs/demo.yaml")
    assert result.code == 1
    assert errors_of(result) == [
        "jobs/data/demo.jsonl:2: text_input: " + LONE.format("\\ud83d", 4)]


def test_surrogate_bytes_in_jsonl_are_refused_too(repo, cli):
    # Python's json decodes raw (CESU-style) surrogate bytes instead of rejecting them.
    path = repo.root / "jobs/data/demo.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"text_input": "a", "output": "x\xed\xa0\xbd"}\n')
    repo.job()
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/demo.jsonl:1: output: " + LONE.format("\\ud83d", 2)]


def test_lone_surrogate_in_a_json_file_names_the_record(repo, cli):
    repo.write("jobs/data/a.json", '[\n  {"text_input": "a", "output": "b"},\n'
               '  {"text_input": "a", "output": "\\udc00"}\n]\n')
    repo.job(data="data/a.json")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/a.json:3:3: [1].output: " + LONE.format("\\udc00", 1)]


def test_surrogate_escape_in_a_yaml_data_file(repo, cli):
    repo.write("jobs/data/b.yaml", '- text_input: a\n  output: "x\\ud83d"\n')
    repo.job(data="data/b.yaml")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/data/b.yaml:2:13: invalid YAML: \\ud83d is half of a UTF-16 surrogate pair, which "
        "cannot be sent as UTF-8; write the character itself or its \\U escape (\\U0001f600, "
        "not \\ud83d\\ude00)"]


def test_surrogates_in_job_file_strings(repo, cli):
    repo.job(extra='description: "caf\\u00e9 \\ud83d"\n')
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:9:14: description: " + LONE.format("\\ud83d", 6)]
    repo.job(extra='eval:\n  prompts:\n    - {input: "\\ud83d\\ude00", expect: x}\n')
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:11:15: eval.prompts[0].input: has \\ud83d\\ude00 at character 1: two "
        "halves of a UTF-16 surrogate pair, which YAML does not join and which cannot be sent "
        "as UTF-8; write the character itself or \\U0001f600"]
    repo.job(data='[{text_input: "\\U0001F600", output: "ok"}]')  # the escape YAML means
    assert cli("validate", "jobs/demo.yaml").code == 0


def test_a_surrogate_never_reaches_the_fingerprint_or_a_backend(repo, cli, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "1")
    repo.write("jobs/data/demo.jsonl", '{"text_input": "\\ud83d", "output": "b"}\n')
    repo.job()
    expected = "jobs/data/demo.jsonl:1: text_input: " + LONE.format("\\ud83d", 1)
    shown = cli("show", "jobs/demo.yaml", "--format", "json")
    assert (shown.code, shown.out, shown.err) == (1, "", expected + "\n")
    planned = cli("plan", "jobs/demo.yaml")
    assert planned.code == 1
    assert expected in planned.err.splitlines()
    assert not (repo.root / ".jobspec").exists()  # no local service was looked for or started


# --- deep nesting -----------------------------------------------------------------------------

DEEP = 3000


def test_deeply_nested_jsonl(repo, cli):
    nested = "[" * DEEP + "]" * DEEP
    repo.write("jobs/data/demo.jsonl", '{"text_input": "a", "output": "b"}\n'
               f'{{"text_input": {nested}, "output": "b"}}\n')
    repo.job()
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [f"jobs/data/demo.jsonl:2: {TOO_DEEP}"]


def test_deeply_nested_json_file(repo, cli):
    repo.write("jobs/data/a.json", '[{"text_input": "a", "output": "b"},\n '
               + "[" * DEEP + "]" * DEEP + "]")
    repo.job(data="data/a.json")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [f"jobs/data/a.json:2:2: {TOO_DEEP}"]


def test_deeply_nested_yaml_data_file(repo, cli):
    repo.write("jobs/data/b.yaml", "- {text_input: a, output: b}\n- " + "[" * DEEP + "]" * DEEP)
    repo.job(data="data/b.yaml")
    # libyaml stops at 1,000 levels itself; past 100 jobspec stops at the node.
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/b.yaml:2:1002: {DEEPER_THAN_100}"]
    block = "".join("  " * level + "-\n" for level in range(150)) + "  " * 150 + "- x\n"
    repo.write("jobs/data/b.yaml", block)
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/b.yaml:102:203: {DEEPER_THAN_100}"]


def test_deeply_nested_job_file(repo, cli):
    repo.job(extra="description: " + "[" * DEEP + "]" * DEEP + "\n")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/demo.yaml:9:114: {DEEPER_THAN_100}"]
    repo.write("jobs/demo.yaml", "version: 1\nx:\n" + "".join(  # block style, 1,000 levels
        " " * level + "-\n" for level in range(1, 1000)))
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/demo.yaml:103:102: {DEEPER_THAN_100}"]


def test_a_recursive_alias_is_nesting_not_a_hang(repo, cli):
    repo.write("jobs/data/b.yaml", "- &a [*a]\n")
    repo.job(data="data/b.yaml")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        f"jobs/data/b.yaml:1:3: {DEEPER_THAN_100}"]


# --- the alias budget -------------------------------------------------------------------------

def test_a_long_plain_yaml_data_file_is_read_whole(repo, cli):
    repo.write("jobs/data/many.yaml", "".join(
        f"- text_input: question {i}\n  output: answer {i}\n" for i in range(34_000)))
    repo.job(data="data/many.yaml")
    result = cli("validate", "jobs/demo.yaml")
    assert (result.code, result.out, result.err) == (0, "jobs/demo.yaml: ok (demo)\n", "")


def test_merge_keys_for_shared_values_are_not_a_bomb(repo, cli):
    repo.write("jobs/data/shared.yaml", "- &base {text_input: a, output: b}\n" + "".join(
        f"- {{<<: *base, text_input: q{i}}}\n" for i in range(2000)))
    repo.job(data="data/shared.yaml")
    assert cli("validate", "jobs/demo.yaml").code == 0


def test_an_alias_bomb_in_a_data_file_fails_fast(repo, cli):
    lines = ['- &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        lines.append(f"- &{level} [{','.join(['*' + chr(ord(level) - 1)] * 9)}]")
    repo.write("jobs/data/bomb.yaml", "\n".join(lines) + "\n")
    repo.job(data="data/bomb.yaml")
    started = time.perf_counter()
    result = cli("validate", "jobs/demo.yaml")
    assert time.perf_counter() - started < 1
    assert errors_of(result) == [
        "jobs/data/bomb.yaml:1:49: [5][0][3][3][7][3][7]: aliases expand to more than 100,000 YAML "
        "nodes; jobspec stops there, as against an alias bomb (write the repeated values out)"]


# --- the backend's request limit --------------------------------------------------------------

def write_examples(repo, count: int, input_chars: int, output_chars: int = 100) -> None:
    line = json.dumps({"text_input": "x" * input_chars, "output": "y" * output_chars}) + "\n"
    (repo.root / "jobs/data").mkdir(parents=True, exist_ok=True)
    (repo.root / "jobs/data/demo.jsonl").write_text(line * count, encoding="utf-8")


def small_local_limit(monkeypatch, max_bytes: int, unit_bytes: int = data.MIB,
                      unit: str = "MiB") -> None:
    """The local backend's limit, made small for a test (an upload of 2 GiB takes too long to
    read); everything else about it as shipped."""
    monkeypatch.setattr(local, "LOCAL", dataclasses.replace(local.LOCAL, limits=dataclasses.replace(
        local.LOCAL.limits, max_bytes=max_bytes, unit_bytes=unit_bytes, unit=unit)))


def test_the_local_limit_is_an_upload_of_2_gib(repo, cli, monkeypatch):
    limits = local.LOCAL.limits
    assert (limits.carrier, limits.max_bytes, limits.stated()) == ("upload", 2 * 1024**3, "2 GiB")
    # 1,000 × {"textInput":"x…35,000","output":"y…100"}: a create request would have had
    # 33.6 MiB, over the 32 MiB the service reads in one; as an upload it is well within.
    write_examples(repo, 1000, 35_000)
    repo.job()
    assert cli("validate", "jobs/demo.yaml").code == 0
    small_local_limit(monkeypatch, 32 * data.MIB)
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [
        "jobs/demo.yaml:8:16: training_data: the examples make an upload of 33.5 MiB; the local "
        "backend accepts at most 32 MiB (the local service's limit on an upload of examples); "
        "use fewer or shorter examples"]
    write_examples(repo, 900, 35_000)  # 30.1 MiB
    assert cli("validate", "jobs/demo.yaml").code == 0


def test_the_limit_is_the_backend_in_effects(repo, cli, monkeypatch):
    write_examples(repo, 110, 38_000)  # 4.2 MB: over Google's, well under the local service's
    repo.job(extra="backend: gemini\n")
    gemini = ("jobs/demo.yaml:8:16: training_data: the examples make a create request of "
              "4.3 MB; the gemini backend accepts at most 4 MB (the Gemini API's published "
              "limit for tuning data); use fewer or shorter examples")
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [gemini]
    assert cli("show", "jobs/demo.yaml").err == gemini + "\n"
    assert cli("validate", "--backend", "local", "jobs/demo.yaml").code == 0
    assert cli("show", "--backend", "local", "jobs/demo.yaml").code == 0
    # Vertex uploads a file instead (and takes neither batch_size nor learning_rate).
    repo.job(extra="backend: gemini\n", hyperparameters="epoch_count: 5")
    assert cli("validate", "--backend", "vertex", "jobs/demo.yaml").code == 0
    repo.job(extra="backend: local\n")
    assert cli("validate", "jobs/demo.yaml").code == 0
    monkeypatch.setenv("JOBSPEC_BACKEND", "gemini")  # overrides the job, as it does for apply
    assert errors_of(cli("validate", "jobs/demo.yaml")) == [gemini]
    assert cli("validate", "--backend", "local", "jobs/demo.yaml").code == 0


def test_plan_meets_the_same_limit_before_any_backend(repo, cli, monkeypatch):
    monkeypatch.setenv("JOBSPEC_LOCAL_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("JOBSPEC_RETRY_DEADLINE", "1")
    write_examples(repo, 1000, 35_000)
    repo.job()
    small_local_limit(monkeypatch, 32 * data.MIB)
    result = cli("plan", "jobs/demo.yaml")
    assert result.code == 1
    assert ("jobs/demo.yaml:8:16: training_data: the examples make an upload of 33.5 MiB"
            in result.err)
    assert not (repo.root / ".jobspec").exists()


TRICKY = [("plain", "ascii"), ('a "quoted" \\ back\\slash', "tab\there\nnewline\r\x01\x1f"),
          ("café, naïve, 日本語", "😀 emoji, \u2028 separator, \x7f delete"),
          ("</script> & <b>", "é" * 50)]


def inline_size(examples) -> int:
    """What the Gemini API's create request holds of ``examples``, as httpx encodes them
    (compact, UTF-8), with the fixed room left for the rest of the request: jobspec counts a
    comma after every example (the array has one fewer) and no brackets."""
    wired = [{"textInput": i, "output": o} for i, o in examples]
    return len(httpx.Request("POST", "http://127.0.0.1/", json=wired).content) - 2 + 1 \
        + CREATE_ENVELOPE_BYTES


def upload_size(examples) -> int:
    """What the local service's upload of ``examples`` holds: one line each."""
    return sum(len(wire.upload_line(i, o)) for i, o in examples)


@pytest.mark.parametrize("fmt", ["jsonl-ascii", "jsonl-utf8", "json", "csv", "yaml", "inline"])
@pytest.mark.parametrize("backend", ["local", "gemini"])
def test_the_size_is_exactly_what_is_sent(repo, cli, monkeypatch, fmt, backend):
    """Validate passes at the exact limit and fails one byte under it, for every format and for
    text that needs JSON escapes: the count is the examples as they are sent (the local
    service's upload; the Gemini API's create request)."""
    size = upload_size if backend == "local" else inline_size
    examples = TRICKY
    counted = size(examples)
    records = [{"text_input": i, "output": o} for i, o in TRICKY]
    if fmt.startswith("jsonl"):
        repo.write("jobs/data/t.jsonl", "".join(
            json.dumps(r, ensure_ascii=fmt == "jsonl-ascii") + "\n" for r in records))
        repo.job(data="data/t.jsonl")
    elif fmt == "json":
        repo.write("jobs/data/t.json", json.dumps(records, indent=1))
        repo.job(data="data/t.json")
    elif fmt == "csv":
        (repo.root / "jobs/data").mkdir(parents=True)
        with open(repo.root / "jobs/data/t.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, ["text_input", "output"])
            writer.writeheader()
            writer.writerows(r for r in records if "\x01" not in r["output"])  # CSV: no controls
        examples = [(i, o) for i, o in examples if "\x01" not in o]
        counted = size(examples)
        repo.job(data="data/t.csv")
    elif fmt == "yaml":
        repo.write("jobs/data/t.yaml", yaml.safe_dump(records, allow_unicode=True))
        repo.job(data="data/t.yaml")
    else:
        repo.job(data=yaml.safe_dump(records, allow_unicode=True, default_flow_style=True,
                                     width=10**6).strip())
    module = local if backend == "local" else gemini
    name = backend.upper()
    for limit, code in ((counted, 0), (counted - 1, 1)):
        monkeypatch.setattr(module, name, dataclasses.replace(
            getattr(module, name), limits=dataclasses.replace(
                getattr(module, name).limits, max_bytes=limit, unit_bytes=1, unit="bytes",
                stated_by="a test's limit")))
        result = cli("validate", "--backend", backend, "jobs/demo.yaml")
        assert result.code == code, result.err
    carrier = "an upload" if backend == "local" else "a create request"
    assert f"{carrier} of {counted:.1f} bytes" in result.err



# --- where each example came from -------------------------------------------------------------

@pytest.mark.parametrize("fmt, text, expected", [
    ("jsonl", '{"text_input": "a", "output": "b"}\n\n{"text_input": "c", "output": "d"}\n',
     [("jobs/data/t.jsonl", 1, None, ""), ("jobs/data/t.jsonl", 3, None, "")]),
    ("json", '[{"text_input": "a", "output": "b"},\n  {"text_input": "c", "output": "d"}]',
     [("jobs/data/t.json", 1, 2, "[0]"), ("jobs/data/t.json", 2, 3, "[1]")]),
    ("csv", 'text_input,output\na,b\n"c\nc",d\n',
     [("jobs/data/t.csv", 2, None, ""), ("jobs/data/t.csv", 3, None, "")]),
    ("yaml", "- {text_input: a, output: b}\n-\n  text_input: c\n  output: d\n",
     [("jobs/data/t.yaml", 1, 3, ""), ("jobs/data/t.yaml", 3, 3, "")]),
])
def test_every_example_knows_where_it_is(repo, fmt, text, expected):
    repo.write(f"jobs/data/t.{fmt}", text)
    repo.job(data=f"data/t.{fmt}")
    examples = list(data.iter_examples(spec.load_job("jobs/demo.yaml").training_data))
    assert [e.where for e in examples] == [Location(*where) for where in expected]
    assert [(e.text_input, e.output) for e in examples] == [("a", "b"), ("c\nc" if fmt == "csv"
                                                                       else "c", "d")]


def test_inline_examples_know_their_job_file_line(repo):
    repo.job(data="\n  - {text_input: a, output: b}\n  - {text_input: c, output: d}")
    examples = list(data.iter_examples(spec.load_job("jobs/demo.yaml").training_data))
    assert [e.where for e in examples] == [
        Location("jobs/demo.yaml", 9, 5, "training_data[0]"),
        Location("jobs/demo.yaml", 10, 5, "training_data[1]")]
    # Where an example is written is not part of what it is (nor of the fingerprint).
    assert examples[0] == data.Example.one_turn("a", "b") and "where" not in repr(examples[0])
