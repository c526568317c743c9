"""The published JSON Schema: valid 2020-12, documented, and what `jobspec schema` prints."""

from __future__ import annotations

import json

import jsonschema
import yaml

from tests.conftest import ROOT


def walk_properties(schema, path="$"):
    for name, sub in schema.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from walk_properties(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk_properties(schema["items"], f"{path}[]")


def test_schema_command_prints_a_valid_2020_12_schema(cli):
    result = cli("schema")
    assert result.code == 0
    schema = json.loads(result.out)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"]
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((ROOT / "schemas/jobspec.schema.json").read_text())


def test_every_property_has_title_and_description():
    schema = json.loads((ROOT / "schemas/jobspec.schema.json").read_text())
    missing = [path for path, sub in walk_properties(schema)
               if not (sub.get("title") and sub.get("description"))]
    assert missing == []


def test_example_jobs_validate_against_the_schema_alone():
    """Editors use the schema without jobspec: the shipped jobs must pass it on their own."""
    schema = json.loads((ROOT / "schemas/jobspec.schema.json").read_text())
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
        first_line = path.read_text().splitlines()[0]
        assert first_line == "# yaml-language-server: $schema=../schemas/jobspec.schema.json"
