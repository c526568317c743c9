"""The Gemini API's published shapes, and a response cut down to them.

A strict client refuses any field its message lacks: google-generativeai 0.8 parses operations
with protobuf's JSON parser and ``ignore_unknown_fields=False``, so one extra field
(``tuningTask.device``) makes every poll of a job fail. So a caller that did not ask for
jobspec's extensions (``wire.EXTENSIONS_HEADER``) gets, from every published method, only the
fields Google's discovery document gives that method's response type; app.py applies the cut to
every answer in one place, so a later extension is covered without being named here.

The document is ``reference/generativelanguage.v1beta.json`` (Google's, verbatim; its
provenance is in reference/README.md) plus ``reference/supplement.json``: what that 2024
revision lacks and the service serves (the tuning operations, their metadata, Google's error
envelope), in the same format. Both are read once, on first use.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

REFERENCE = Path(__file__).parent / "reference"
DOCUMENT = REFERENCE / "generativelanguage.v1beta.json"
SUPPLEMENT = REFERENCE / "supplement.json"
ERROR_TYPE = "Error"  # the supplement's name for Google's JSON error envelope

_DROPPED = object()  # a google.protobuf.Any whose type the document does not describe
Restrict = Callable[[Any], Any]


def methods(resources: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every method of a discovery document's ``resources``, nested resources included."""
    for resource in resources.values():
        yield from resource.get("methods", {}).values()
        yield from methods(resource.get("resources", {}))


def _merge(into: dict[str, Any], extra: dict[str, Any], where: str) -> None:
    """Add ``extra`` to ``into``: new resources, methods and schemas only; a method or schema the
    document has is never changed."""
    for key, value in extra.items():
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, dict) \
                and where.rpartition(".")[2] not in ("methods", "schemas"):
            _merge(into[key], value, f"{where}.{key}")
        else:
            raise ValueError(f"{SUPPLEMENT.name}: {where}.{key} would replace the discovery "
                             "document's own")


@cache
def document() -> dict[str, Any]:
    """The discovery document with the supplement's resources and schemas added."""
    merged = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    supplement = json.loads(SUPPLEMENT.read_text(encoding="utf-8"))
    for part in ("resources", "schemas"):
        _merge(merged[part], copy.deepcopy(supplement[part]), part)
    return merged


class Published:
    """Response types by method, and ``restrict``: a body with only its type's fields."""

    def __init__(self, discovery: dict[str, Any]) -> None:
        self._schemas: dict[str, Any] = discovery["schemas"]
        # "tunedModels.get" → "TunedModel" (the id without the service's name); a method with
        # no response answers google.protobuf.Empty.
        self._responses = {method["id"].partition(".")[2]:
                           method.get("response", {}).get("$ref", "Empty")
                           for method in methods(discovery["resources"])}
        # Per type: its field names, and how to cut the fields that hold messages.
        self._compiled: dict[str, tuple[frozenset[str], dict[str, Restrict]]] = {}

    def response_type(self, method_id: str) -> str:
        return self._responses[method_id]

    def restrict(self, value: Any, type_name: str) -> Any:
        """``value`` (a message of ``type_name`` in JSON) without the fields the type lacks, at
        every depth. Values are not checked, only cut; a part with nothing to cut is returned
        as it is, not copied."""
        if not isinstance(value, dict):
            return value
        compiled = self._compiled.get(type_name) or self._compile(type_name)
        names, nested = compiled
        if not nested and value.keys() <= names:
            return value
        kept = {key: item for key, item in value.items() if key in names}
        for key, restrict in nested.items():
            if key in kept:
                item = restrict(kept[key])
                if item is _DROPPED:
                    del kept[key]
                else:
                    kept[key] = item
        return kept

    def _compile(self, type_name: str) -> tuple[frozenset[str], dict[str, Restrict]]:
        properties = self._schemas[type_name].get("properties", {})
        kinds = {name: self._kind(prop) for name, prop in properties.items()}
        compiled = (frozenset(properties),
                    {name: kind for name, kind in kinds.items() if kind is not None})
        self._compiled[type_name] = compiled
        return compiled

    def _kind(self, prop: dict[str, Any]) -> Restrict | None:
        """How to cut a field's value; None: keep it whole (a scalar, or a free JSON value)."""
        if "$ref" in prop:
            name = prop["$ref"]
            return lambda value: self.restrict(value, name)
        if prop.get("type") == "array":
            inner = self._kind(prop.get("items", {}))
            if inner is None:
                return None
            return lambda values: [kept for kept in map(inner, values) if kept is not _DROPPED] \
                if isinstance(values, list) else values
        extra = prop.get("additionalProperties") if prop.get("type") == "object" else None
        if extra is None:
            return None
        if extra.get("type") == "any":  # google.protobuf.Any (with "@type") or Struct
            return self._any
        inner = self._kind(extra)  # a map of messages
        if inner is None:
            return None
        return lambda mapping: {key: inner(item) for key, item in mapping.items()} \
            if isinstance(mapping, dict) else mapping

    def _any(self, value: Any) -> Any:
        """An Any is cut to the type its ``@type`` names (a strict client unpacks it with that
        message); one of a type the document does not describe is left out, since no strict
        client could read it. A free JSON object (a Struct, no ``@type``) stays as it is."""
        if not isinstance(value, dict) or "@type" not in value:
            return value
        name = str(value["@type"]).rpartition("/")[2].rpartition(".")[2]
        if name not in self._schemas:
            return _DROPPED
        return {"@type": value["@type"], **self.restrict(value, name)}


@cache
def published() -> Published:
    return Published(document())
