"""Reading a YAML text into PyYAML's node tree (values still text, each with its marks), with
libyaml when it can and PyYAML's pure-Python parser when it must, and their errors as located
ConfigErrors.

libyaml is about eight times faster; it is used where it is installed and limits nesting itself.
A data file, possibly large, is read by libyaml alone, with libyaml's messages. A job file is
read by libyaml only where both parsers read it alike: the text avoids what they read apart
(_LIBYAML_MAY_DIFFER) and the tree holds nothing they compose apart (_composed_alike); anything
else, and any file libyaml refuses, is read by the pure-Python parser, whose messages and
positions jobspec's users and tests know. tests/test_yaml_loader.py compares the two on
generated text. Without libyaml, the pure-Python parser reads everything.
"""

from __future__ import annotations

import functools
import re

import yaml

from .errors import ConfigError, Location
from .utf8 import escape_problem

# Levels of nesting (the top-level value is level 0). A job file needs 5, an example 1 or 2.
MAX_DEPTH = 100

STR_TAG = "tag:yaml.org,2002:str"
SCALAR_TAGS = {
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    STR_TAG,
}
# Dates become the text the user wrote: a job file has no use for datetime objects.
TEXT_TAGS = {"tag:yaml.org,2002:timestamp"}
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"
MERGE_TAG = "tag:yaml.org,2002:merge"
_KNOWN_TAGS = SCALAR_TAGS | TEXT_TAGS | {MAP_TAG, SEQ_TAG, MERGE_TAG}


def compose(text: str, file: str, *, data_file: bool) -> yaml.Node | None:
    """The one document's node tree, None for an empty file; ConfigError for a text that is not
    one YAML document."""
    if _libyaml_caps_nesting() and (data_file or not _LIBYAML_MAY_DIFFER.search(text)):
        try:
            return _compose_with(yaml.CSafeLoader, text, file, data_file, exact=not data_file)
        except _Unsure:
            pass
    return _compose_with(_DepthLimitedLoader, text, file, data_file, exact=False)


def _compose_with(parser: type[yaml.SafeLoader], text: str, file: str, data_file: bool,
                  exact: bool) -> yaml.Node | None:
    """The node tree by ``parser``. ``exact`` (a job file read by libyaml): _Unsure, for the
    pure-Python parser to read the file, unless both parsers read it alike."""
    what = "a data file" if data_file else "a job file"
    several = f"several YAML documents in one file; {what} holds exactly one"
    try:
        node = _compose(parser, text, file, several)
    except ConfigError:
        if exact:
            raise _Unsure from None
        raise
    if exact and not _composed_alike(node):
        raise _Unsure
    return node


def _compose(parser: type[yaml.SafeLoader], text: str, file: str,
             several: str) -> yaml.Node | None:
    try:
        loader = parser(text)
    except yaml.reader.ReaderError as exc:  # the pure-Python reader checks the text up front
        raise _reader_error(file, text, exc, offsets_in_bytes=False) from None
    try:
        return loader.get_single_node()
    except yaml.reader.ReaderError as exc:  # libyaml finds bad characters as it parses
        raise _reader_error(file, text, exc, offsets_in_bytes=True) from None
    except yaml.YAMLError as exc:
        raise _error_from_yaml(file, text, exc, several) from None
    except _TooDeep as exc:
        raise too_deep(file, exc.line, exc.column) from None
    except (ValueError, OverflowError):  # the pure-Python scanner's chr() of "\U0bad0000"
        bad_escape = _bad_escape(file, text, loader.get_mark())
        if bad_escape is None:
            raise
        raise bad_escape from None
    finally:
        loader.dispose()


def _composed_alike(root: yaml.Node | None) -> bool:
    """Whether PyYAML's pure-Python parser composes the tree libyaml did, from a text that
    _LIBYAML_MAY_DIFFER passed (tests/test_yaml_loader.py compares the two on generated text):
    only the tags jobspec reads, no empty scalar (each parser puts one at another mark), no
    plain scalar holding "?" inside [...] or {...} (which the pure-Python parser refuses),
    nothing nested deeper than its composer allows. Collections are walked in document order,
    each once (an alias is not expanded), so that each is seen where it is written."""
    if root is None:
        return True
    if isinstance(root, yaml.ScalarNode):
        return _scalar_alike(root, False)
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, in_flow = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.tag not in _KNOWN_TAGS:
            return False
        in_flow = in_flow or bool(node.flow_style)
        children = [child for pair in node.value for child in pair] \
            if isinstance(node, yaml.MappingNode) else node.value
        if children and depth + 1 > MAX_DEPTH:
            return False
        for child in reversed(children):
            if isinstance(child, yaml.ScalarNode):
                if not _scalar_alike(child, in_flow):
                    return False
            else:
                stack.append((child, depth + 1, in_flow))
    return True


def _scalar_alike(node: yaml.ScalarNode, in_flow: bool) -> bool:
    return bool(node.value) and node.tag in _KNOWN_TAGS and not (
        in_flow and not node.style and "?" in node.value)


def too_deep(file: str, line: int, column: int) -> ConfigError:
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
        return too_deep(file, mark.line + 1, mark.column + 1)
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
# pure-Python parser alone. _composed_alike checks the tree for the rest.
_LIBYAML_MAY_DIFFER = re.compile("[\t\ufeff\x85\u2028\u2029]|\r(?!\n)|[|>][-+0-9]*#")


class _Unsure(Exception):
    """libyaml could not read a job file, or PyYAML's pure-Python parser may read it otherwise
    (_composed_alike): the pure-Python parser reads it."""


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
