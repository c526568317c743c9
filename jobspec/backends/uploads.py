"""A job's examples uploaded to the local service apart from its create (the local wire's
extension, jobspec/wire.py), so that a data set of hundreds of MB goes once, streamed, and the
create stays small.

An upload is named by the SHA-256 of its content (one example a line, ``wire.conversation_line``:
a one-turn example's line is today's ``{"textInput", "output"}``, so uploads made before
conversations keep their names): a
first pass over the examples measures it, then the service is asked whether it has it already
(``GET uploads/{sha256}``); only when it has not is the content sent (``PUT``, streamed by a
second pass, with that Content-Length; the service keeps it only when it is what its name says).
So a second apply of the same examples sends nothing. A PUT of a name is idempotent: it is
retried like any request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..client import ApiClient
from ..conversation import to_contents
from ..data import Example
from ..errors import PermanentBackendError
from . import streaming

CHUNK_BYTES = 1 << 20
UPLOAD_VERSION = f"{wire.UPLOAD_PREFIX}/v1beta"  # PUT /upload/v1beta/uploads/{sha256}
# Examples a plan has counted go inline, in one request, up to this many bytes (no upload to
# make, nothing kept on the service); more are uploaded and the count names the uploads, so
# that no request (and no process) holds a data set of hundreds of MB.
INLINE_COUNT_BYTES = 1 << 20
# A create or a count that names uploads is answered once the service has read every example
# and (unless a plan had it count them already) put each through the tokenizer: about 3 MB a
# second on two cores, measured. So such a request waits a minute, plus a second for every
# 256 KiB it names, before it gives up on the answer.
ANSWER_SECONDS = 60.0
ANSWER_BYTES_PER_SECOND = 256 * 1024


def answer_timeout(uploaded_bytes: int) -> float:
    """How long to wait for the answer to a request that names uploads of this many bytes."""
    return ANSWER_SECONDS + uploaded_bytes / ANSWER_BYTES_PER_SECOND


@dataclass(frozen=True)
class Measured:
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return wire.upload_name(self.sha256)


def lines(examples: Iterable[Example]) -> Iterator[bytes]:
    """The upload's content, in chunks of about CHUNK_BYTES."""
    return streaming.rechunk((wire.upload_line(*e.pair) if e.pair is not None
                              else wire.conversation_line(e.conversation) for e in examples),
                             CHUNK_BYTES)


def wire_example(example: Example) -> dict[str, Any]:
    """One example inline in a request, as its upload line has it: a one-turn example the
    Gemini API's TuningExample ``{"textInput", "output"}``, as ever; any other conversation
    its contents line (``{"systemInstruction"?, "contents"}``, weights included), which the
    local service reads where it reads uploads (countExampleTokens)."""
    if example.pair is not None:
        return {"textInput": example.pair[0], "output": example.pair[1]}
    return to_contents(example.conversation, weights=True)


def measure(chunks: Iterable[bytes]) -> Measured:
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return Measured(digest.hexdigest(), size)


def has(client: ApiClient, measured: Measured) -> bool:
    """Whether the service holds the upload (and it is the size measured: a name is a digest,
    so the same name with another size cannot be this content)."""
    try:
        found = client.request("GET", measured.name)
    except PermanentBackendError as exc:
        if exc.http_status == 404:
            return False
        raise
    return str(found.get("sizeBytes")) == str(measured.size)


def measure_examples(examples: Iterable[Example]) -> Measured:
    """The upload that would hold ``examples``: its name and size (reading them checks each)."""
    return measure(lines(examples))


def ensure(client: ApiClient, examples: Callable[[], Iterable[Example]],
           measured: Measured) -> bool:
    """Make the service hold ``examples()`` as the upload ``measured`` (``measure_examples``);
    True when it was sent now, False when the service had it. ``examples`` is called once per
    attempt to send."""
    if has(client, measured):
        return False
    try:
        client.send_stream(
            "PUT", measured.name, version=UPLOAD_VERSION,
            content=streaming.exactly(lambda: lines(examples()), measured.size,
                                      "the training data changed while it was being uploaded; "
                                      "the local service kept none of it. Apply again"),
            length=measured.size, content_type=wire.UPLOAD_CONTENT_TYPE)
    except PermanentBackendError as exc:
        # A service that takes uploads never answers their PUT 404: this one has no such
        # method (a jobspec serve from before uploads, still running after an upgrade).
        if exc.http_status in (404, 501):
            raise UploadsUnsupported(exc.message) from None
        raise
    return True


class UploadsUnsupported(Exception):
    """The service takes no uploads: send the examples inline, as the Gemini API takes them."""
