"""Text jobspec can send: every string that reaches a request is encoded as UTF-8, and a lone
UTF-16 surrogate (what ``"\\ud83d"`` in JSON or YAML decodes to) has no UTF-8 form. Such text is
refused where it is read, with its position, instead of failing inside the HTTP layer."""

from __future__ import annotations

import re

_SURROGATE = re.compile("[\ud800-\udfff]")
_HIGH, _LOW = range(0xD800, 0xDC00), range(0xDC00, 0xE000)


def surrogate_problem(value: str) -> str | None:
    """What is wrong with ``value`` if it holds a surrogate code point, else None."""
    if value.isascii():  # the common case, checked in C without a regex
        return None
    found = _SURROGATE.search(value)
    if found is None:
        return None
    at = found.start()
    pair = value[at:at + 2]
    if len(pair) == 2 and ord(pair[0]) in _HIGH and ord(pair[1]) in _LOW:
        # YAML escapes are code points, so "\ud83d\ude00" in YAML is two halves, not one emoji.
        joined = pair.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        return (f"has {ascii(pair)[1:-1]} at character {at + 1}: two halves of a UTF-16 "
                "surrogate pair, which YAML does not join and which cannot be sent as UTF-8; "
                f"write the character itself or {ascii(joined)[1:-1]}")
    return (f"has a lone surrogate {ascii(pair[0])[1:-1]} at character {at + 1}, which cannot "
            "be sent as UTF-8; write the character itself instead of the escape")


def escape_problem(code_point: int) -> str:
    """A YAML escape (``\\uD83D``) that libyaml refused, said the way surrogate_problem says it."""
    if code_point in _HIGH or code_point in _LOW:
        return (f"\\u{code_point:04x} is half of a UTF-16 surrogate pair, which cannot be sent "
                "as UTF-8; write the character itself or its \\U escape (\\U0001f600, not "
                "\\ud83d\\ude00)")
    return f"\\U{code_point:08x} is not a Unicode character"
