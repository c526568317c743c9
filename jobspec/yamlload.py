"""Safe YAML loading that remembers where every value came from.

PyYAML's composer gives a node tree with start marks; this module turns it into plain Python
values (dict, list, str, int, float, bool, None) and a map from field path to (line, column), so
that schema errors can point at the offending node. It rejects what plain ``yaml.safe_load``
silently accepts: duplicate keys, several documents, and tags other than the core schema's.
Aliases are expanded under a budget of nodes reached through them, so that a "billion laughs"
file fails fast while a long plain list (a data file of many examples) is read whole; nesting is
capped, so that no file can exhaust the stack. Strings holding a UTF-16 surrogate (a ``"\\ud83d"``
escape), which cannot be sent as UTF-8, are refused at their node.

Files are read with libyaml when it is there and limits nesting (about eight times faster than
PyYAML's pure-Python parser). A job file libyaml refuses, or one the builder refuses, is read
again with the pure-Python parser, whose messages and positions jobspec's tests and users know;
data files keep libyaml's. Without libyaml, the pure-Python parser reads everything.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from .errors import ConfigError, Location
from .utf8 import escape_problem, surrogate_problem

FieldPath = tuple[str | int, ...]
_Pair = tuple[str, yaml.Node, yaml.Node]  # a mapping's key, its node, and its value's node

# Nodes built a second (or later) time because an alias leads to them. Plain nodes are bounded by
# the file's size; what aliases expand to is not: a "billion laughs" file of a few hundred bytes
# reaches this budget in a fraction of a second, and no real job or data file comes near it.
MAX_ALIAS_NODES = 100_000
# Levels of nesting (the top-level value is level 0). A job file needs 5, an example 1 or 2.
MAX_DEPTH = 100

_STR_TAG = "tag:yaml.org,2002:str"
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
_MERGE_TAG = "tag:yaml.org,2002:merge"
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


def _too_deep(file: str, line: int, column: int) -> ConfigError:
    return ConfigError(Location(file, line, column),
                       f"nested more than {MAX_DEPTH} levels deep; no job or data file needs "
                       "that many")


def _error_from_yaml(file: str, text: str, exc: yaml.YAMLError,
                     several_documents: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    message = f"invalid YAML: {problem}"
    if context and "expected a single document" not in context:
        message = f"invalid YAML: {context}, {problem}"
    if context and "expected a single document" in context:
        message = several_documents
    if mark is None:
        return ConfigError(Location(file), message)
    if "maximum nesting depth" in problem:  # libyaml's own cap (1,000 levels)
        return _too_deep(file, mark.line + 1, mark.column + 1)
    if problem == "found invalid Unicode character escape code":  # libyaml: \ud83d and the like
        bad_escape = _bad_escape(file, text, mark)
        if bad_escape is not None:
            return bad_escape
    return ConfigError(Location(file, mark.line + 1, mark.column + 1), message)


def _bad_escape(file: str, text: str, mark: yaml.Mark) -> ConfigError | None:
    """The escape whose digits start at ``mark`` (where both parsers stop), shown at its
    backslash; None if no \\u or \\U escape is there."""
    escape = _escape_at(text, mark.line, mark.column)
    if escape is None:
        return None
    return ConfigError(Location(file, mark.line + 1, mark.column - 1),
                       f"invalid YAML: {escape_problem(escape)}")


def _escape_at(text: str, line: int, column: int) -> int | None:
    """The code point of the \\u or \\U escape whose digits start at (0-based) line, column."""
    start = 0
    for _ in range(line):
        start = text.find("\n", start) + 1
        if start == 0:
            return None
    letter = text[start + column - 1:start + column]
    digits = text[start + column:start + column + (4 if letter == "u" else 8)]
    if letter not in ("u", "U") or not all(c in "0123456789abcdefABCDEF" for c in digits):
        return None
    return int(digits, 16) if digits else None


def _reader_error(file: str, text: str, exc: yaml.reader.ReaderError,
                  offsets_in_bytes: bool) -> ConfigError:
    position = exc.position
    if offsets_in_bytes:  # libyaml counts bytes of the UTF-8 text
        position = len(text.encode("utf-8", "surrogatepass")[:position].decode("utf-8", "ignore"))
    before = text[:position]
    line, column = before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1
    character = exc.character if isinstance(exc.character, int) else ord(exc.character or "?")
    return ConfigError(Location(file, line, column), f"invalid YAML: unacceptable character "
                       f"#x{character:04x}: {exc.reason}")


class _DepthLimitedLoader(yaml.SafeLoader):
    """PyYAML's pure-Python composer recurses once per level: stop it at MAX_DEPTH, at the node,
    before Python's recursion limit does."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.depth > MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise _TooDeep(mark.line + 1, mark.column + 1)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# Text that libyaml and PyYAML's pure-Python parser read differently (tabs, a byte-order mark
# inside the text, the Unicode line breaks, a carriage return not followed by a line feed, a
# comment right after a block scalar's indicator): a job file holding one is read by the
# pure-Python parser alone. tests/test_yaml_paths.py looks for more.
_LIBYAML_MAY_DIFFER = re.compile("[\t\ufeff\x85\u2028\u2029]|\r(?!\n)|[|>][-+0-9]*#")


class _Unsure(Exception):
    """libyaml read a node that PyYAML's pure-Python parser may read otherwise or place elsewhere:
    an empty scalar (each puts it at another mark), or a plain one holding "?" inside [...] or
    {...} (which the pure-Python parser refuses)."""


class _TooDeep(Exception):
    def __init__(self, line: int, column: int) -> None:
        super().__init__(line, column)
        self.line, self.column = line, column


@functools.cache
def _libyaml_caps_nesting() -> bool:
    """Whether libyaml is there and refuses deep nesting itself (libyaml 0.2.5 and later):
    its composer recurses in C, where no RecursionError would stop a deep file."""
    if not getattr(yaml, "__with_libyaml__", False):
        return False
    probe = yaml.CSafeLoader("[" * 1001 + "]" * 1001)
    try:
        probe.get_single_node()
    except yaml.YAMLError as exc:
        return "maximum nesting depth" in str(exc)
    finally:
        probe.dispose()
    return False


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader, *, exact: bool = False) -> None:
        self.file = file
        self.loader = loader
        self.exact = exact  # refuse (_Unsure) what the pure-Python parser may read otherwise
        self.flow_depth = 0  # how many [...] or {...} hold the node being built
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
            raise _too_deep(self.file, *_mark(node))
        if path not in self.positions.values:
            self.positions.values[path] = _mark(node)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        flow = self.exact and node.flow_style
        self.flow_depth += flow
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if node.tag != _SEQ_TAG:
                raise self.error(node, path, f"unsupported YAML tag {_short_tag(node.tag)}")
            return [self.build(child, path + (i,)) for i, child in enumerate(node.value)]
        finally:
            self.flow_depth -= flow

    def _scalar(self, node: yaml.ScalarNode, path: FieldPath) -> Any:
        value, tag = node.value, node.tag
        if self.exact and (not value or self.flow_depth and not node.style and "?" in value):
            raise _Unsure
        if tag == _STR_TAG:  # most values: the text is the value, as SafeConstructor makes it
            pass
        elif tag in _TEXT_TAGS:
            return value
        elif tag not in _SCALAR_TAGS:
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
            return self.loader.yaml_constructors[node.tag](self.loader, node)
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
        if node.tag != _MAP_TAG:
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
            if key_node.tag == _MERGE_TAG:
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
            if key_node.tag != _MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else \
                [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):  # PyYAML's own words
                    expected = "a mapping" if source is not value_node else \
                        "a mapping or list of mappings"
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"expected {expected} for merging, but found {source.id}",
                        source.start_mark)
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
            raise _too_deep(self.file, *_mark(node))
        pairs, expanded = self._merged(node, path, depth)
        at = {pair[0]: index for index, pair in enumerate(pairs)}
        own: set[str] = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
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
    if not _libyaml_caps_nesting():
        return _load(text, file, data_file, fast=False)
    if data_file:
        return _load(text, file, data_file, fast=True)
    if _LIBYAML_MAY_DIFFER.search(text):
        return _load(text, file, data_file, fast=False)
    try:
        return _load(text, file, data_file, fast=True)
    except (ConfigError, _Unsure):
        # A job file libyaml cannot read (or one the builder refuses) is read again by the
        # pure-Python parser, for the message and position users and tests know: libyaml's
        # wording differs, and it finds some problems at another place.
        return _load(text, file, data_file, fast=False)


def _load(text: str, file: str, data_file: bool, fast: bool) -> LoadedYaml:
    what = "a data file" if data_file else "a job file"
    several = f"several YAML documents in one file; {what} holds exactly one"
    try:
        loader = yaml.CSafeLoader(text) if fast else _DepthLimitedLoader(text)
    except yaml.reader.ReaderError as exc:  # the pure-Python reader checks the text up front
        raise _reader_error(file, text, exc, offsets_in_bytes=False) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.reader.ReaderError as exc:  # libyaml finds bad characters as it parses
            raise _reader_error(file, text, exc, offsets_in_bytes=True) from None
        except yaml.YAMLError as exc:
            raise _error_from_yaml(file, text, exc, several) from None
        except _TooDeep as exc:
            raise _too_deep(file, exc.line, exc.column) from None
        except (ValueError, OverflowError):  # the pure-Python scanner's chr() of "\U0bad0000"
            bad_escape = _bad_escape(file, text, loader.get_mark())
            if bad_escape is None:
                raise
            raise bad_escape from None
        if node is None:
            expected = "a list of examples" if data_file else "a job mapping"
            raise ConfigError(Location(file, 1, 1), f"the file is empty; expected {expected}")
        builder = _Builder(file, loader, exact=fast and not data_file)
        try:
            data = builder.build(node, ())
        except yaml.YAMLError as exc:
            raise _error_from_yaml(file, text, exc, several) from None
        return LoadedYaml(data, builder.positions)
    finally:
        loader.dispose()
