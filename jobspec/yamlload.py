"""Safe YAML loading that remembers where every value came from.

PyYAML's composer gives a node tree with start marks; this module turns it into plain Python
values (dict, list, str, int, float, bool, None) and a map from field path to (line, column), so
that schema errors can point at the offending node. It rejects what plain ``yaml.safe_load``
silently accepts: duplicate keys, several documents, and tags other than the core schema's.
Aliases are expanded under a budget of nodes reached through them, so that a "billion laughs"
file fails fast while a long plain list (a data file of many examples) is read whole; nesting is
capped, so that no file can exhaust the stack. Strings holding a UTF-16 surrogate (a ``"\\ud83d"``
escape), which cannot be sent as UTF-8, are refused at their node.

yamlparse reads the text into nodes (libyaml where it reads the file as PyYAML's pure-Python
parser would); merge keys (``<<``) are resolved here, each mapping once, and what they expand
to counts against the alias budget too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, Location
from .utf8 import surrogate_problem
from .yamlparse import (MAP_TAG, MAX_DEPTH, MERGE_TAG, SCALAR_TAGS, SEQ_TAG, STR_TAG, TEXT_TAGS,
                        compose, too_deep)

FieldPath = tuple[str | int, ...]
_Pair = tuple[str, yaml.Node, yaml.Node]  # a mapping's key, its node, and its value's node

# Nodes built a second (or later) time because an alias leads to them. Plain nodes are bounded by
# the file's size; what aliases expand to is not: a "billion laughs" file of a few hundred bytes
# reaches this budget in a fraction of a second, and no real job or data file comes near it.
MAX_ALIAS_NODES = 100_000
# Makes nulls, booleans and numbers from their text, as yaml.safe_load would (it keeps no state).
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


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


class _Builder:
    def __init__(self, file: str) -> None:
        self.file = file
        self.positions = Positions()
        self.seen: set[int] = set()  # ids of nodes built once: building one again is an alias
        self.alias_nodes = 0
        # id of a merged mapping -> its pairs, and how many it holds with its merges written out
        self.resolved: dict[int, tuple[list[_Pair], int]] = {}

    def error(self, node: yaml.Node, path: FieldPath, message: str) -> ConfigError:
        line, column = _mark(node)
        return ConfigError(Location(self.file, line, column, format_path(path)), message)

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        if id(node) in self.seen:
            self.alias_nodes += 1
            if self.alias_nodes > MAX_ALIAS_NODES:
                raise self.error(node, path, f"aliases expand to more than "
                                 f"{MAX_ALIAS_NODES:,} YAML nodes; jobspec stops there, as "
                                 "against an alias bomb (write the repeated values out)")
        else:
            self.seen.add(id(node))
        if len(path) > MAX_DEPTH:
            raise too_deep(self.file, *_mark(node))
        if path not in self.positions.values:
            self.positions.values[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if node.tag != SEQ_TAG:
            raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}")
        return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]

    def _scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        value, tag = node.value, node.tag
        if tag == STR_TAG:  # most values: the text is the value, as SafeConstructor makes it
            pass
        elif tag in TEXT_TAGS:
            return value
        elif tag not in SCALAR_TAGS:
            raise self.error(node, path, f"unsupported YAML tag {_short_tag(tag)}; "
                             "only plain values (text, numbers, true/false, null) are allowed")
        else:
            value = self._construct(node, path)
        if isinstance(value, str):
            problem = surrogate_problem(value)
            if problem is not None:
                raise self.error(node, path, problem)
        return value

    def _construct(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        """A null, boolean or number, by SafeConstructor's own function for its tag."""
        try:
            return _CONSTRUCTOR.yaml_constructors[node.tag](_CONSTRUCTOR, node)
        except ValueError as exc:  # e.g. an integer past Python's 4,300-digit limit
            raise self.error(node, path, f"cannot read this value: {exc}") from None
        except (IndexError, KeyError):  # PyYAML's own: `!!int` with no digits, `!!bool maybe`
            raise self.error(node, path, f"cannot read this value: {node.value!r} is not "
                             f"{_short_tag(node.tag)}") from None

    def _key(self, key_node: yaml.Node, path: FieldPath) -> str:
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.error(key_node, path, "a mapping key must be plain text")
        key = self._scalar(key_node, path)
        if not isinstance(key, str):
            key = str(key).lower() if isinstance(key, bool) else str(key)
        return key

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict:
        if node.tag != MAP_TAG:
            raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}")
        # Merge keys (<<), so that anchors used for sharing work: the merged pairs come first, a
        # key of the mapping's own overrides them, and of two merged ones the first wins. Only two
        # of the mapping's own keys are a duplicate.
        result: dict = {}
        merged: set[str] = set()
        for key, key_node, value_node in self._merged(node, path, 0)[0]:
            child = path + (key,)
            merged.add(key)
            self.positions.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self._key(key_node, path)
            child = path + (key,)
            if key in result:
                if key not in merged:
                    first = self.positions.keys[child]
                    raise self.error(key_node, child, f"duplicate key {key!r} (first defined "
                                     f"at line {first[0]}); YAML would keep only the last")
                merged.discard(key)
                self.positions.values.pop(child, None)
            self.positions.keys[child] = _mark(key_node)
            result[key] = self.build(value_node, child)
        return result

    def _merged(self, node: yaml.MappingNode, path: FieldPath,
                depth: int) -> tuple[list[_Pair], int]:
        """The pairs that ``node``'s merge keys bring in (the first of each key, in order), and
        how many pairs the merges hold before duplicates are dropped.

        Resolved here rather than by PyYAML, whose flatten_mapping copies every merged pair
        before anything counts them (nested ``<<: [*a, *a, ...]`` grows exponentially up to
        PyYAML 6.0.3, a chain of merges quadratically after). Each mapping's pairs are worked out
        once, and what the merges expand to, counted as if each were written out, is charged to
        the alias budget: the count is arithmetic, so a bomb is refused before it grows."""
        found: list[_Pair] = []
        keys: set[str] = set()
        expanded = 0
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else \
                [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):  # PyYAML's own words
                    expected = "a mapping" if source is not value_node else \
                        "a mapping or list of mappings"
                    line, column = _mark(source)
                    raise ConfigError(Location(self.file, line, column), "invalid YAML: while "
                                      f"constructing a mapping, expected {expected} for "
                                      f"merging, but found {source.id}")
                pairs, source_expanded = self._pairs(source, path, depth + 1)
                expanded += source_expanded
                self.alias_nodes += source_expanded
                if self.alias_nodes > MAX_ALIAS_NODES:
                    raise self.error(value_node, path, f"merge keys (<<) and aliases expand to "
                                     f"more than {MAX_ALIAS_NODES:,} YAML nodes; jobspec stops "
                                     "there, as against a merge-key bomb (write the repeated "
                                     "values out)")
                for pair in pairs:
                    if pair[0] not in keys:
                        keys.add(pair[0])
                        found.append(pair)
        return found, expanded

    def _pairs(self, node: yaml.MappingNode, path: FieldPath,
               depth: int) -> tuple[list[_Pair], int]:
        """The pairs of a mapping merged into another, as the mapping itself reads (its merged
        pairs, overridden by its own keys; of two own ones the first), and how many pairs it
        holds with its merges written out."""
        if id(node) in self.resolved:
            return self.resolved[id(node)]
        if depth > MAX_DEPTH:  # a mapping that merges itself, or a chain of merges as long
            raise too_deep(self.file, *_mark(node))
        pairs, expanded = self._merged(node, path, depth)
        at = {pair[0]: index for index, pair in enumerate(pairs)}
        own: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            expanded += 1
            key = self._key(key_node, path)
            if key in own:
                continue
            own.add(key)
            if key in at:
                pairs[at[key]] = (key, key_node, value_node)
            else:
                at[key] = len(pairs)
                pairs.append((key, key_node, value_node))
        self.resolved[id(node)] = pairs, expanded
        return pairs, expanded


def load_yaml(text: str, file: str, *, data_file: bool = False) -> LoadedYaml:
    """Parse one YAML document from ``text``; ``file`` is only used in error messages.
    ``data_file``: the text is a list of training examples (possibly large), not a job file."""
    node = compose(text, file, data_file=data_file)
    if node is None:
        expected = "a list of examples" if data_file else "a job mapping"
        raise ConfigError(Location(file, 1, 1), f"the file is empty; expected {expected}")
    builder = _Builder(file)
    return LoadedYaml(builder.build(node, ()), builder.positions)
