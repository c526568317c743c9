"""Examples uploaded apart from a create (the local wire's extension, described in
jobspec/wire.py): kept in the state directory, named by their SHA-256, and read back a line at a
time, so that neither receiving nor training on a data set of hundreds of MB holds it whole.

An upload is written to a partial file beside its final place while its SHA-256 and size are
measured as it arrives; only a body whose digest is the one its name gives, and whose size is
the one it declared, is renamed into place (atomically), so a file under an upload's name always
holds exactly that content. Anything else leaves nothing behind. Files are opened without
following links, and the folder is the service's own (mode 0700).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from array import array
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from .. import wire
from ..conversation import Conversation, ConversationProblem
from . import protojson
from .protojson import ApiError

FOLDER = "uploads"
PARTIAL_PREFIX = ".partial-"
_READ_BYTES = 1 << 20

Example = Conversation


def _too_large() -> ApiError:
    return ApiError("INVALID_ARGUMENT", f"Request payload size exceeds the limit: "
                    f"{wire.UPLOAD_MAX_BYTES} bytes (an upload may have "
                    f"{wire.UPLOAD_MAX_BYTES // 2**30} GiB).")


def checked_sha256(sha256: str) -> str:
    if not wire.is_sha256(sha256):
        raise ApiError("INVALID_ARGUMENT", f"{wire.UPLOADS}/{sha256[:80]} is not an upload's "
                       "name: an upload is named by the SHA-256 of its content, 64 lowercase "
                       "hex digits.")
    return sha256


def sha256_of_name(name: str, where: str) -> str:
    """``uploads/{sha256}`` → the digest; INVALID_ARGUMENT naming ``where`` otherwise."""
    prefix = f"{wire.UPLOADS}/"
    if not name.startswith(prefix) or not wire.is_sha256(name[len(prefix):]):
        raise ApiError("INVALID_ARGUMENT", f"{where} must name an upload, "
                       f"{wire.UPLOADS}/SHA256 (64 lowercase hex digits), got {name[:100]!r}.")
    return name[len(prefix):]


class Uploads:
    """The uploads of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / FOLDER

    def _folder(self) -> Path:
        if self.root.is_symlink():
            raise ApiError("FAILED_PRECONDITION", f"{self.root} is a symbolic link; the service "
                           "keeps uploads only in its own folder.")
        self.root.mkdir(mode=0o700, exist_ok=True)
        return self.root

    def path(self, sha256: str) -> Path:
        return self.root / f"{checked_sha256(sha256)}.jsonl"

    def info(self, sha256: str) -> dict[str, Any] | None:
        """The upload's metadata (what GET uploads/{sha256} answers); None when there is none."""
        try:
            found = os.lstat(self.path(sha256))
        except FileNotFoundError:
            return None
        if not os.path.isfile(self.path(sha256)) or os.path.islink(self.path(sha256)):
            return None
        return {"name": wire.upload_name(sha256), "sha256": sha256,
                "sizeBytes": str(found.st_size),
                "createTime": protojson.timestamp(found.st_mtime)}

    def require(self, sha256: str, where: str) -> Path:
        if self.info(sha256) is None:
            raise ApiError("FAILED_PRECONDITION", f"{where}: {wire.upload_name(sha256)} does not "
                           f"exist on this service; upload it first (PUT /{wire.UPLOAD_PREFIX}/"
                           f"v1beta/{wire.upload_name(sha256)}).")
        return self.path(sha256)

    async def receive(self, sha256: str, declared: int | None, body: AsyncIterator[bytes],
                      on_chunk: Callable[[], None] = lambda: None) -> dict[str, Any]:
        """Store ``body`` as the upload ``sha256``: measured as it arrives, kept only when it is
        what its name and its Content-Length say, renamed into place at once."""
        checked_sha256(sha256)
        if declared is not None and declared > wire.UPLOAD_MAX_BYTES:
            raise _too_large()
        folder = self._folder()
        partial = folder / f"{PARTIAL_PREFIX}{sha256}-{secrets.token_hex(6)}"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        kept = False
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(descriptor, "wb") as out:
                async for chunk in body:
                    size += len(chunk)
                    if size > wire.UPLOAD_MAX_BYTES:
                        raise _too_large()
                    digest.update(chunk)
                    out.write(chunk)
                    on_chunk()
                out.flush()
                os.fsync(out.fileno())
            if declared is not None and size != declared:
                raise ApiError("INVALID_ARGUMENT", f"The upload ended after {size} bytes of the "
                               f"{declared} its Content-Length declared; nothing was kept.")
            if size == 0:
                raise ApiError("INVALID_ARGUMENT", "The upload is empty: send one example a "
                               "line; nothing was kept.")
            if digest.hexdigest() != sha256:
                raise ApiError("INVALID_ARGUMENT", f"The upload's content has SHA-256 "
                               f"{digest.hexdigest()}, not {sha256} as its name says; nothing "
                               "was kept.")
            os.replace(partial, self.path(sha256))
            kept = True
        finally:
            if not kept:
                partial.unlink(missing_ok=True)
        info = self.info(sha256)
        assert info is not None
        return info

    def remove_stale_partials(self) -> list[Path]:
        """Partial uploads an interrupted service left; only while no upload can be arriving."""
        if not self.root.is_dir() or self.root.is_symlink():
            return []
        stale = list(self.root.glob(f"{PARTIAL_PREFIX}*"))
        for path in stale:
            path.unlink(missing_ok=True)
        return stale


def parse_line(raw: bytes, index: int, where: str) -> Example:
    """Line ``index`` (0-based) of an upload as a conversation (``wire.read_upload_line``: a
    one-turn ``{"textInput", "output"}`` line or a contents line)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise ApiError("INVALID_ARGUMENT", f"{where}[{index}] (line {index + 1} of the upload) "
                       "is not a JSON object; an upload has one example a line, "
                       '{"textInput": ..., "output": ...} or {"systemInstruction"?: ..., '
                       '"contents": [...]}.')
    try:
        return wire.read_upload_line(value)
    except ConversationProblem as problem:
        field = f"{where}[{index}]" + (f".{problem.field}" if problem.field else "")
        raise ApiError("INVALID_ARGUMENT", f"{field} (line {index + 1} of the upload): "
                       f"{problem.message}.") from None


def stream_examples(path: Path, where: str) -> Iterator[Example]:
    """The upload's examples in order, a line at a time."""
    with open(path, "rb", buffering=_READ_BYTES) as lines:
        for index, raw in enumerate(lines):
            yield parse_line(raw, index, where)


class StoredExamples(Sequence[Example]):
    """An upload's examples as a sequence that holds only where each line starts (8 bytes an
    example): iterating reads the file a line at a time, and example i is read from its line
    when asked for, as training asks for each batch's. The file never changes once in place."""

    def __init__(self, path: Path, where: str = wire.UPLOADED_EXAMPLES_FIELD,
                 count: int | None = None) -> None:
        self.path = path
        self.where = where
        self._count = count  # when known: its length without reading the file
        self._starts: array[int] | None = None

    def _index(self) -> array[int]:
        if self._starts is None:
            starts, offset = array("q", [0]), 0
            with open(self.path, "rb", buffering=_READ_BYTES) as lines:
                for raw in lines:
                    offset += len(raw)
                    starts.append(offset)
            self._starts = starts
        return self._starts

    def __len__(self) -> int:
        if self._count is None:
            self._count = len(self._index()) - 1
        return self._count

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...

    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        starts = self._index()
        count = len(starts) - 1
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(index)
        with open(self.path, "rb") as handle:
            handle.seek(starts[index])
            raw = handle.read(starts[index + 1] - starts[index])
        return parse_line(raw, index, self.where)

    def __iter__(self) -> Iterator[Example]:
        return stream_examples(self.path, self.where)

