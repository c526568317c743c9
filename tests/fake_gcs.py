"""fake_gcs: the Cloud Storage half of fake_vertex (storage.googleapis.com, which tests cannot
reach), and the plumbing both halves share: Google's error envelope and a deterministic clock.

Built from ../shared/reference/vertex-tuning-api.md §7 (Cloud Storage JSON API, simple upload):

* ``POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}`` (objects.insert): the
  body is the object's bytes, sent with Content-Length or chunked; ``Content-Type`` is required
  (§7 says to set it; the fake refuses a request without it rather than guess a default);
  ``ifGenerationMatch=N`` is honoured (0: only if the object does not exist), else 412. The
  answer is the object's metadata: ``kind`` ``storage#object``, ``size`` and ``generation`` as
  strings (int64/uint64 in JSON), ``md5Hash`` base64.
* ``GET /storage/v1/b/{bucket}/o/{object}`` (objects.get): the same metadata, or 404. The object
  name must be URL-encoded in the path (``data%2Ftrain.jsonl``); a raw ``/`` is answered 404.

FakeVertex serves this on its own server, behind the same Bearer-token check (§1). Errors carry
``code``, ``message`` and the canonical ``status`` (gemini-tuning-api.md §9) and, as Cloud
Storage's JSON API does, ``errors[]`` with a ``reason`` (``notFound``, ``conditionNotMet``, ...;
that list is not in the reference). Simplifications: only ``uploadType=media`` (multipart and
resumable uploads, §7, are refused with 400), no ``alt=media`` downloads, no crc32c, the bucket
set is fixed by the test, and generations come from the fake clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote

from tests.loopback_http import Request

Reply = tuple[int, object, dict[str, str]]

# google/rpc/code.proto's HTTP mapping (gemini-tuning-api.md §9); 412 is Cloud Storage's
# HTTP code for a failed precondition (the canonical mapping would say 400).
CANONICAL = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
             404: "NOT_FOUND", 409: "ALREADY_EXISTS", 412: "FAILED_PRECONDITION",
             429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 501: "UNIMPLEMENTED",
             503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google_error(code: int, message: str, status: str | None = None, *,
                 details: list | None = None, headers: dict[str, str] | None = None) -> Reply:
    error: dict = {"code": code, "message": message, "status": status or CANONICAL[code]}
    if details:
        error["details"] = details
    return code, {"error": error}, headers or {}


def storage_error(code: int, reason: str, message: str) -> Reply:
    status, body, headers = google_error(code, message)
    body["error"]["errors"] = [{"message": message, "domain": "global", "reason": reason}]
    return status, body, headers


def header(request: Request, name: str) -> str | None:
    """A request header by name, whatever case the client wrote it in."""
    return next((value for key, value in request.headers.items() if key.lower() == name), None)


class FakeClock:
    """Time as the fakes tell it: each reading one second after the last, from
    2026-12-01T10:00:00, so timestamps are distinct, ordered and the same on every run."""

    START = datetime(2026, 12, 1, 10, 0, 0, tzinfo=timezone.utc)

    def __init__(self) -> None:
        self.readings = 0

    def now(self) -> datetime:
        self.readings += 1
        return self.START + timedelta(seconds=self.readings - 1)


def rfc3339(moment: datetime, digits: int = 9) -> str:
    """As Google writes timestamps: fractional seconds (Vertex: nine digits) and a Z."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + "123456789"[:digits] + "Z"


@dataclass
class StoredObject:
    bucket: str
    name: str
    data: bytes
    content_type: str
    generation: int
    created: datetime

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"

    def lines(self) -> list:
        """The object read as JSON Lines: one parsed value per non-blank line."""
        return [json.loads(line) for line in self.data.decode("utf-8").splitlines() if line.strip()]

    def metadata(self) -> dict:
        created = rfc3339(self.created, digits=3)  # Cloud Storage writes milliseconds
        return {"kind": "storage#object", "id": f"{self.bucket}/{self.name}/{self.generation}",
                "name": self.name, "bucket": self.bucket, "generation": str(self.generation),
                "metageneration": "1", "contentType": self.content_type,
                "storageClass": "STANDARD", "size": str(self.size),
                "md5Hash": base64.b64encode(hashlib.md5(self.data).digest()).decode(),
                "timeCreated": created, "updated": created}


class FakeStorage:
    def __init__(self, buckets: set[str], clock: FakeClock) -> None:
        self.buckets = buckets
        self.clock = clock
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.uploads: list[StoredObject] = []  # every stored upload, in order

    @staticmethod
    def serves(path: str) -> bool:
        return path.startswith(("/upload/storage/", "/storage/"))

    def route(self, request: Request) -> Reply:
        # Split before decoding: an encoded "/" (%2F) belongs to the object name.
        parts = request.path.split("/")[1:]
        if request.method == "POST" and len(parts) == 6 \
                and parts[:4] == ["upload", "storage", "v1", "b"] and parts[5] == "o":
            return self.insert(unquote(parts[4]), request)
        if request.method == "GET" and len(parts) >= 6 \
                and parts[:3] == ["storage", "v1", "b"] and parts[4] == "o":
            return self.get(unquote(parts[3]), parts[5:], request)
        return google_error(404, f"fake_gcs does not serve {request.method} {request.path}")

    def insert(self, bucket: str, request: Request) -> Reply:
        query = {key: values[-1] for key, values in request.query.items()}
        if query.get("uploadType") != "media":
            return storage_error(400, "invalid", "fake_gcs serves only uploadType=media, not "
                                                 f"uploadType={query.get('uploadType')!r}")
        name = query.get("name", "")
        if not name:
            return storage_error(400, "required", "Required parameter: name")
        if len(name.encode()) > 1024 or "\r" in name or "\n" in name or name in (".", ".."):
            return storage_error(400, "invalid", f"The object name {name!r} is not valid.")
        content_type = header(request, "content-type")
        if not content_type:
            return storage_error(400, "required", "A media upload needs a Content-Type header "
                                                  "(the object's type, e.g. application/jsonl).")
        if bucket not in self.buckets:
            return storage_error(404, "notFound", "The specified bucket does not exist.")
        existing = self.objects.get((bucket, name))
        if "ifGenerationMatch" in query:
            try:
                wanted = int(query["ifGenerationMatch"])
            except ValueError:
                return storage_error(400, "invalid", "Invalid value for ifGenerationMatch: "
                                                     f"{query['ifGenerationMatch']!r}")
            if wanted != (existing.generation if existing else 0):
                return storage_error(412, "conditionNotMet", "At least one of the "
                                     "pre-conditions you specified did not hold.")
        created = self.clock.now()
        # Like Cloud Storage's, a generation is the creation time in microseconds.
        generation = int(created.timestamp()) * 1_000_000 + 123456
        stored = StoredObject(bucket, name, request.body, content_type, generation, created)
        self.objects[(bucket, name)] = stored
        self.uploads.append(stored)
        return 200, stored.metadata(), {}

    def get(self, bucket: str, encoded_name: list[str], request: Request) -> Reply:
        if bucket not in self.buckets:
            return storage_error(404, "notFound", "The specified bucket does not exist.")
        if request.query.get("alt", ["json"])[-1] != "json":
            return storage_error(400, "invalid", "fake_gcs serves object metadata only (alt=json)")
        name = unquote("/".join(encoded_name))
        if len(encoded_name) > 1:
            return storage_error(404, "notFound", f"No such object: {bucket}/{name} (a '/' in "
                                                  "an object name must be sent as %2F)")
        stored = self.objects.get((bucket, name))
        if stored is None:
            return storage_error(404, "notFound", f"No such object: {bucket}/{name}")
        return 200, stored.metadata(), {}
