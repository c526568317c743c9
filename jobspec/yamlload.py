"""Safe YAML loading that remembers where every value came from.

PyYAML's composer gives a node tree with start marks; this module turns it into plain Python
values (dict, list, str, int, float, bool, None) and a map from field path to (line, column), so
that schema errors can point at the offending node. It rejects what plain ``yaml.safe_load``
silently accepts: duplicate keys, several documents, and tags other than the core schema's.
Aliases are expanded under a node budget so that a "billion laughs" file fails fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, Location

FieldPath = tuple[str | int, ...]

# Far above any real job file; an alias bomb of a few hundred bytes reaches it in microseconds.
MAX_NODES = 100_000

_SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
}
# Dates become the text the user wrote: a job file has no use for datetime objects.
_TEXT_TAGS = {"tag:yaml.org,2002:timestamp"}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


def _short_tag(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def format_path(path: FieldPath) -> str:
    """``("eval", "prompts", 0, "input")`` → ``eval.prompts[0].input``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


@dataclass
class Positions:
    """Line and column (1-based) of each value, and of each mapping key, by field path."""

    values: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[FieldPath, tuple[int, int]] = field(default_factory=dict)

    def of_value(self, path: FieldPath) -> tuple[int, int] | None:
        # Walk up: a missing field is reported at the mapping that should hold it.
        for end in range(len(path), -1, -1):
            if path[:end] in self.values:
                return self.values[path[:end]]
        return None

    def of_key(self, path: FieldPath) -> tuple[int, int] | None:
        return self.keys.get(path) or self.of_value(path)


@dataclass
class LoadedYaml:
    data: Any
    positions: Positions


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _error_from_yaml(file: str, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}"
    if context and "expected a single document" not in context:
        message = f"invalid YAML: {context}, {problem}"
    if context and "expected a single document" in context:
        message = "several YAML documents in one file; a job file holds exactly one"
    if mark is None:
        return ConfigError(Location(file), message)
    return ConfigError(Location(file, mark.line + 1, mark.column + 1), message)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.positions = Positions()
        self.nodes_built = 0

    def error(self, node: yaml.Node, path: FieldPath, message: str) -> ConfigError:
        line, column = _mark(node)
        return ConfigError(Location(self.file, line, column, format_path(path)), message)

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        self.nodes_built += 1
        if self.nodes_built > MAX_NODES:
            raise self.error(node, path, f"too many YAML nodes (over {MAX_NODES:,}); "
                             "anchors and aliases expand past the limit")
        self.positions.values.setdefault(path, _mark(node))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ_TAG:
                raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}")
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        if node.tag in _TEXT_TAGS:
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}; "
                             "only plain values (text, numbers, true/false, null) are allowed")
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict:
        if node.tag != _MAP_TAG:
            raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}")
        # Resolve merge keys (<<) the way PyYAML does, so anchors used for sharing work.
        self.loader.flatten_mapping(node)
        result: dict = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, path, "a mapping key must be plain text")
            key = self._scalar(key_node, path)
            if not isinstance(key, str):
                key = str(key).lower() if isinstance(key, bool) else str(key)
            child = path + (key,)
            if key in result:
                first = self.positions.keys[child]
                raise self.error(key_node, child, f"duplicate key {key!r} "
                                 f"(first defined at line {first[0]}); YAML would keep only the last")
            self.positions.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        return result


def load_yaml(text: str, file: str) -> LoadedYaml:
    """Parse one YAML document from ``text``; ``file`` is only used in error messages."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        line, column = before.count("\n") + 1, exc.position - (before.rfind("\n") + 1) + 1
        raise ConfigError(Location(file, line, column), f"invalid YAML: unacceptable character "
                          f"#x{exc.character:04x}: {exc.reason}") from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _error_from_yaml(file, exc) from None
        if node is None:
            raise ConfigError(Location(file, 1, 1), "the file is empty; expected a job mapping")
        builder = _Builder(file, loader)
        try:
            data = builder.build(node, ())
        except yaml.YAMLError as exc:
            raise _error_from_yaml(file, exc) from None
        return LoadedYaml(data, builder.positions)
    finally:
        loader.dispose()
