"""Cloud Storage as the vertex backend uses it: one object per training file, staged with the
JSON API's simple media upload (shared/reference/vertex-tuning-api.md §7).

An object is named by the job's fingerprint, so one upload serves every apply of the same job:
its metadata is read first (``GET /storage/v1/b/{bucket}/o/{name}``, the name URL-encoded), and
the upload (``POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name=...``) carries
``ifGenerationMatch=0``, so that it creates the object or does nothing: a retried upload whose
first answer was lost meets 412 and finds its own object there. The bytes are streamed: one
pass over the data measures them (length and MD5), another sends them with that
Content-Length, so a 1 GB file is never held in memory. What is found under the name must be
what would be uploaded (its MD5, else its size): jobspec never trains on other bytes than the
job's.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..client import ApiClient
from ..errors import PermanentBackendError, UsageError
from . import streaming

STORAGE_ENDPOINT = "https://storage.googleapis.com"
CONTENT_TYPE = "application/jsonl"
CHUNK_BYTES = 1 << 20
# Cloud Storage's bucket-name rule, roughly: 3..222 of a-z 0-9 - _ . starting and ending with
# a letter or digit (the name goes into request paths, so nothing else may pass).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")


@dataclass(frozen=True)
class StagingBucket:
    """``gs://bucket`` or ``gs://bucket/prefix``: where training files go."""

    bucket: str
    prefix: str  # "" or "some/path/"

    @classmethod
    def parse(cls, text: str, source: str) -> "StagingBucket":
        found = re.fullmatch(r"gs://([^/]+)(?:/(.*))?", text.strip())
        if not found or not _BUCKET.fullmatch(found[1]) or ".." in found[1]:
            raise UsageError(f"{source} {text!r}: expected gs://BUCKET or gs://BUCKET/PREFIX, "
                             "with a Cloud Storage bucket name (lowercase letters, digits, "
                             "dashes, underscores, dots)")
        prefix = (found[2] or "").strip("/")
        return cls(found[1], f"{prefix}/" if prefix else "")

    def object_name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def uri(self, object_name: str) -> str:
        return f"gs://{self.bucket}/{object_name}"

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True)
class Measured:
    size: int
    md5: str  # base64 of the digest, as Cloud Storage writes md5Hash


def measure(chunks: Iterable[bytes]) -> Measured:
    digest, size = hashlib.md5(usedforsecurity=False), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return Measured(size, base64.b64encode(digest.digest()).decode("ascii"))


def rechunk(pieces: Iterable[bytes], size: int | None = None) -> Iterator[bytes]:
    """``pieces`` (one JSONL line each) joined into chunks of about ``size`` bytes (default
    CHUNK_BYTES)."""
    return streaming.rechunk(pieces, size or CHUNK_BYTES)


def _exactly(content: Callable[[], Iterable[bytes]], size: int,
             uri: str) -> Callable[[], Iterator[bytes]]:
    return streaming.exactly(content, size, f"{uri}: the training data changed while it was "
                             "being uploaded; nothing was stored. Apply again")


class Storage:
    """The two Cloud Storage calls staging needs, over one ApiClient at the storage root."""

    def __init__(self, client: ApiClient, region_hint: str) -> None:
        self.client = client
        self.region_hint = region_hint  # for messages: where the bucket should be

    def metadata(self, bucket: StagingBucket, name: str) -> dict[str, Any] | None:
        """The object's metadata, or None when there is no such object."""
        path = f"b/{quote(bucket.bucket, safe='')}/o/{quote(name, safe='')}"
        try:
            return self.client.request("GET", path, version="storage/v1")
        except PermanentBackendError as exc:
            if exc.http_status != 404:
                raise
            if "bucket does not exist" in exc.message.lower():
                raise self._no_bucket(bucket, exc) from None
            return None

    def stage(self, bucket: StagingBucket, name: str,
              content: Callable[[], Iterable[bytes]]) -> bool:
        """Make ``gs://bucket/name`` hold ``content()``; True when it was uploaded now, False
        when it was there already. ``content`` is called once to measure and once per upload
        attempt."""
        measured = measure(content())
        found = self.metadata(bucket, name)
        if found is not None:
            self._check_same(bucket, name, found, measured)
            return False
        try:
            stored = self.client.send_stream(
                "POST", f"b/{quote(bucket.bucket, safe='')}/o", version="upload/storage/v1",
                params={"uploadType": "media", "name": name, "ifGenerationMatch": "0"},
                content=_exactly(content, measured.size, bucket.uri(name)),
                length=measured.size, content_type=CONTENT_TYPE)
        except PermanentBackendError as exc:
            if exc.http_status == 404:
                raise self._no_bucket(bucket, exc) from None
            if exc.http_status != 412:  # 412: the object exists (an earlier attempt made it)
                raise
            stored = self.metadata(bucket, name)
            if stored is None:
                raise
            self._check_same(bucket, name, stored, measured)
            return False
        self._check_same(bucket, name, stored, measured, just_sent=True)
        return True

    def _check_same(self, bucket: StagingBucket, name: str, found: dict[str, Any],
                    measured: Measured, just_sent: bool = False) -> None:
        same = (found.get("md5Hash") == measured.md5 if found.get("md5Hash")
                else str(found.get("size")) == str(measured.size))
        if same:
            return
        uri = bucket.uri(name)
        if just_sent:
            raise PermanentBackendError(
                f"{uri}: Cloud Storage stored other bytes than jobspec sent (size "
                f"{found.get('size')}, {measured.size} sent): did the training data change "
                f"while it was uploaded? Delete it (gcloud storage rm {uri}) and apply again")
        raise PermanentBackendError(
            f"{uri} exists but holds other data than this job's training file (size "
            f"{found.get('size')}, md5 {found.get('md5Hash')}; expected {measured.size} bytes, "
            f"md5 {measured.md5}); jobspec will not train on it. Delete it (gcloud storage rm "
            f"{uri}) and apply again")

    def _no_bucket(self, bucket: StagingBucket, error: PermanentBackendError) -> Exception:
        return PermanentBackendError(
            f"the staging bucket gs://{bucket.bucket} was not found ({error.message}); create "
            f"it in the job's project, in the job's region ({self.region_hint}), or name "
            "another with --staging-bucket, backend.staging_bucket or JOBSPEC_STAGING_BUCKET",
            http_status=404, status=error.status or "NOT_FOUND")
