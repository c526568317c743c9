"""The compiled schema (fastjsonschema), which validate asks first, decides every job as the
reference validator (jsonschema) does: a job it passed with a violation would go unreported."""

from __future__ import annotations

import copy
import json

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobspec import schema
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "schemas/jobspec.schema.json").read_text(encoding="utf-8"))
ITEM = "[]"  # a path step into a list's items


def schema_paths(node: dict, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every place the schema describes (through properties, items and each form of a oneOf
    or anyOf), with its sub-schema."""
    found = [(path, node)] if path else []
    for name, sub in node.get("properties", {}).items():
        found.extend(schema_paths(sub, path + (name,)))
    if isinstance(node.get("items"), dict):
        found.extend(schema_paths(node["items"], path + (ITEM,)))
    for form in node.get("oneOf", []) + node.get("anyOf", []):
        found.extend(schema_paths(form, path))
    return found


PATHS = schema_paths(SCHEMA)


def edge_values(sub: dict) -> list:
    """Values at the edges of what ``sub`` allows, and just past them."""
    values = list(sub.get("enum", []))
    if "const" in sub:
        values.append(sub["const"])
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in sub:
            bound = sub[key]
            values.extend([bound, bound - 1, bound + 1, bound - 0.5, bound + 0.5, float(bound)])
    for key in ("minLength", "maxLength"):
        if key in sub:
            values.extend(["x" * max(sub[key] - 1, 0), "x" * sub[key], "x" * (sub[key] + 1)])
    return values


COMMON = [None, True, False, 0, 1, 2, -1, 1.0, 2.0, 0.5, 10**12, 10**30, float("nan"),
          float("inf"), float("-inf"), "", " ", "x", "a b", "é", {"one_of": ["a", "a"]},
          "models/gemini-1.0-pro-001", "tunedModels/x", "data/x.jsonl", "UPPER", "name-1", [], [1],
          ["a"], [{}], {}, {"a": 1}, {"input": "a", "expect": "b"}]
EDGES = sorted({json.dumps(v) for _, sub in PATHS for v in edge_values(sub)})
VALUES = st.one_of(st.sampled_from(COMMON), st.sampled_from(EDGES).map(json.loads))


def base_jobs() -> list[dict]:
    jobs = [yaml.safe_load(path.read_text(encoding="utf-8"))
            for path in sorted((ROOT / "jobs").glob("*.yaml"))]
    fuller = copy.deepcopy(jobs[0])
    fuller.update({"backend": {"type": "vertex", "project": "p", "location": "us-central1"},
                   "validation_split": 0.2, "early_stopping": {"patience": 2}})
    fuller["hyperparameters"]["adapter_size"] = 4
    return jobs + [fuller]


def assign(document: dict, path: tuple, value) -> None:
    """Set ``path`` in ``document`` to ``value``, making the containers on the way."""
    node = document
    for step, after in zip(path, path[1:]):
        fresh = [] if after == ITEM else {}
        if step == ITEM:
            if not isinstance(node, list):
                return
            if not node:
                node.append(fresh)
            if not isinstance(node[0], (list, dict)):
                node[0] = fresh
            node = node[0]
        else:
            if not isinstance(node, dict):
                return
            if not isinstance(node.get(step), (list, dict)):
                node[step] = fresh
            node = node[step]
    last = path[-1]
    if last == ITEM:
        if isinstance(node, list):
            node[:1] = [value]
    elif isinstance(node, dict):
        node[last] = value


edits = st.lists(st.tuples(st.sampled_from([p for p, _ in PATHS]), VALUES), max_size=4)
removals = st.lists(st.sampled_from(sorted(SCHEMA["properties"]) + ["unknown"]), max_size=2)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(base_jobs()), edits, removals, st.booleans())
def test_the_compiled_schema_decides_as_jsonschema(job, changes, removed, extra):
    document = copy.deepcopy(job)
    for path, value in changes:
        assign(document, path, value)
    for name in removed:
        document.pop(name, None)
    if extra:
        document["unknown_field"] = 1
    reference = list(schema._validator().iter_errors(document))
    assert schema.passes(document) == (not reference), [e.message for e in reference]
