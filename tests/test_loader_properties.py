"""Property-based: whatever text or structure a job file or a training-data file holds, the
loader answers with jobspec's own validation errors, never a traceback."""

from __future__ import annotations

import csv
import io
import json

import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jobspec.errors import ConfigError, ConfigErrors
from jobspec.spec import load_job, load_jobs

SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20))
keys = st.sampled_from(["version", "name", "base_model", "hyperparameters", "batch_size",
                        "training_data", "eval", "prompts", "expect", "input", "regex", "path",
                        "backend", "type", "one_of", "min_pass_rate", "text_input", "output"])
structures = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.one_of(keys, st.text(max_size=8)),
                                                    children, max_size=5)), max_leaves=25)


def load_text(tmp_path, text: str) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_job(str(path))
    except ConfigError:
        pass


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(tmp_path, text):
    load_text(tmp_path, text)


@SETTINGS
@given(structures)
def test_arbitrary_yaml_structures(tmp_path, value):
    load_text(tmp_path, yaml.safe_dump(value, allow_unicode=True))


@SETTINGS
@given(st.fixed_dictionaries({"version": st.just(1), "name": st.just("job"),
                              "base_model": st.just("models/m")}, optional={
    "hyperparameters": structures, "training_data": structures, "eval": structures,
    "backend": structures}))
def test_nearly_valid_jobs(tmp_path, value):
    load_text(tmp_path, yaml.safe_dump(value, allow_unicode=True))


# --- the training-data readers ----------------------------------------------------------------
# Whatever a data file holds, validate answers with ConfigErrors that each name a file (the data
# file, or the job file for a problem with the job as a whole) and carry a message: never
# another exception. Kept small (a few seconds in all): each example writes two files.

DATA_SETTINGS = settings(max_examples=120, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])
FORMATS = st.sampled_from(["jsonl", "json", "csv", "yaml"])
# Any code point, lone surrogates included (JSON escapes them; the other writers may refuse),
# with the characters that need care drawn often enough to matter.
TRICKY_CHARACTERS = '"\\\n\r\t\x00\x1f\x7f\ud83d\ude00é😀\u2028 ab'
any_text = st.one_of(st.text(st.sampled_from(TRICKY_CHARACTERS), max_size=12),
                     st.text(st.characters(exclude_categories=()), max_size=12))
fields = st.one_of(st.sampled_from(["text_input", "output"]), any_text)
values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(),
                                any_text), lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(fields, children, max_size=3)),
    max_leaves=12)
examples = st.fixed_dictionaries({"text_input": st.one_of(any_text, values),
                                  "output": st.one_of(any_text, values)},
                                 optional={"extra": values})
records = st.lists(st.one_of(examples, values), max_size=5)


def validate_data(tmp_path, fmt: str, content: bytes) -> None:
    (tmp_path / ".git").mkdir(exist_ok=True)
    data_file = tmp_path / f"examples.{fmt}"
    data_file.write_bytes(content)
    job_file = tmp_path / "job.yaml"
    job_file.write_text(f"version: 1\nname: job\nbase_model: models/m\n"
                        f"training_data: examples.{fmt}\n", encoding="utf-8")
    try:
        load_jobs([str(job_file)], check_examples=True)
    except ConfigError as exc:
        problems = exc.errors if isinstance(exc, ConfigErrors) else [exc]
        for problem in problems:
            assert problem.location.path in (str(data_file), str(job_file)), problem
            assert problem.message, problem


def encode(fmt: str, value: list) -> bytes | None:
    """``value`` written as a data file of ``fmt``, or None where that format cannot hold it."""
    try:
        if fmt == "jsonl":
            return "".join(json.dumps(v) + "\n" for v in value).encode()
        if fmt == "json":
            return json.dumps(value, indent=1).encode()
        if fmt == "yaml":
            return yaml.safe_dump(value, allow_unicode=True).encode("utf-8", "surrogatepass")
        rows = [v for v in value if isinstance(v, dict)]
        header = list(dict.fromkeys(k for row in rows for k in row))
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(header)
        writer.writerows([row.get(k, "") for k in header] for row in rows)
        return out.getvalue().encode("utf-8", "surrogatepass")
    except (ValueError, yaml.YAMLError):  # e.g. NaN in strict JSON writers, unrepresentable
        return None


@DATA_SETTINGS
@given(FORMATS, st.binary(max_size=200))
def test_arbitrary_bytes_as_data(tmp_path, fmt, content):
    validate_data(tmp_path, fmt, content)


@DATA_SETTINGS
@given(FORMATS, st.text(max_size=200))
def test_arbitrary_text_as_data(tmp_path, fmt, text):
    validate_data(tmp_path, fmt, text.encode())


@DATA_SETTINGS
@given(FORMATS, records)
def test_arbitrary_structures_as_data(tmp_path, fmt, value):
    content = encode(fmt, value)
    assume(content is not None)
    validate_data(tmp_path, fmt, content)
