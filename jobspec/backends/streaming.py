"""Request bodies streamed from a generator: a data set of hundreds of MB goes out in chunks of
about a MB, measured first (its length, its digest) and never held whole (Cloud Storage's
staging, gcs.py; the local service's uploads, uploads.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..errors import PermanentBackendError


def rechunk(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``pieces`` (one JSONL line each) joined into chunks of about ``size`` bytes, so that a
    large file goes out in few writes but is never held whole."""
    buffer: list[bytes] = []
    held = 0
    for piece in pieces:
        buffer.append(piece)
        held += len(piece)
        if held >= size:
            yield b"".join(buffer)
            buffer, held = [], 0
    if buffer:
        yield b"".join(buffer)


def exactly(content: Callable[[], Iterable[bytes]], size: int,
            changed: str) -> Callable[[], Iterator[bytes]]:
    """``content``, refusing (PermanentBackendError ``changed``) to send more or fewer bytes
    than were measured (the data changed in between) rather than let the upload fail on its
    Content-Length and be retried."""
    def stream() -> Iterator[bytes]:
        sent, held = 0, b""
        for chunk in content():
            sent += len(chunk)
            if sent > size:
                break
            if chunk:  # one chunk is held back, so the last is sent only once the total is
                if held:  # known to be right: a wrong one never completes the upload
                    yield held
                held = chunk
        if sent != size:
            raise PermanentBackendError(changed)
        yield held
    return stream
