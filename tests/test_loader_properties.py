"""Property-based: whatever text or structure a job file holds, the loader answers with
jobspec's own validation errors, never a traceback."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobspec.errors import ConfigError
from jobspec.spec import load_job

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
