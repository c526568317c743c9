"""The paging parameters of the local service's list methods: ``pageSize`` and ``pageToken``.

Both arrive from whoever calls, so every value is checked here and anything this service did not
issue is ``400 INVALID_ARGUMENT``, never an error further down (SQLite takes only 64-bit
integers: a token for seq 10**20 was once a 500, which clients retry). A token is what
``tunedModels.list`` hands out: the URL-safe base64 of ``after:<seq>``, where seq is the last
model's creation order. Methods that return everything in one page issue no token, so any token
given to them is one this service never issued.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .protojson import ApiError

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 10, 1000
_INT32_MAX = 2**31 - 1  # pageSize is an int32 in Google's API
_SEQ_MAX = 2**63 - 1  # SQLite's INTEGER
_PREFIX = "after:"
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_SEQ = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class Page:
    size: int  # how many to answer with at most
    after: int  # the seq to continue after (0: from the start)


def page_size(value: str | None) -> int:
    """``pageSize`` as Google reads it: absent or 0 means the default, more than the maximum
    means the maximum; not an int32, or negative, is refused."""
    if value is None or value == "":
        return DEFAULT_PAGE_SIZE
    if not _DECIMAL.fullmatch(value) or abs(int(value)) > _INT32_MAX:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at 'page_size' (TYPE_INT32), "
                       f"{value!r}.")
    size = int(value)
    if size < 0:
        raise ApiError("INVALID_ARGUMENT", "page_size must not be negative.")
    return min(size, MAX_PAGE_SIZE) if size else DEFAULT_PAGE_SIZE


def next_page_token(last_seq: int) -> str:
    return base64.urlsafe_b64encode(f"{_PREFIX}{last_seq}".encode()).decode()


def _after(token: str) -> int:
    """The seq a token this service issued continues after; ValueError for anything else."""
    try:
        decoded = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
    except (UnicodeError, binascii.Error) as exc:
        raise ValueError(token) from exc
    digits = decoded.removeprefix(_PREFIX)
    if not decoded.startswith(_PREFIX) or not _SEQ.fullmatch(digits) or int(digits) > _SEQ_MAX:
        raise ValueError(token)
    # Only the exact text issued: no padding dropped or added, no second spelling of a seq.
    if next_page_token(int(digits)) != token:
        raise ValueError(token)
    return int(digits)


def page(size: str | None, token: str | None) -> Page:
    """The page a list call asks for, from its raw query parameters."""
    if not token:
        return Page(page_size(size), 0)
    try:
        after = _after(token)
    except ValueError:
        raise ApiError("INVALID_ARGUMENT", "Invalid page_token: it is not one this service "
                       "issued; omit it to list from the start.") from None
    return Page(page_size(size), after)


def single_page(size: str | None, token: str | None) -> None:
    """Check the paging parameters of a method that answers everything at once."""
    page_size(size)
    if token:
        raise ApiError("INVALID_ARGUMENT", "Invalid page_token: this method answers in one "
                       "page and issues no page tokens; omit it.")
