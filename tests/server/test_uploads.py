"""Examples uploaded apart from the create (the local wire's extension, jobspec/wire.py): named
by their SHA-256, verified as they arrive, kept only whole, and trained on from the file.

Runs the real service with the tiny model; every request goes over loopback HTTP.
"""

from __future__ import annotations

import hashlib
import json
import socket

import pytest

from jobspec import wire
from jobspec.conversation import Conversation
from jobspec.server import datasets
from jobspec.server.recipe import RECIPE
from jobspec.server.store import Store
from jobspec.server.training_state import run_key
from jobspec.server.uploads import StoredExamples, Uploads
from tests.conftest import NUMBER_EXAMPLES
from tests.server.test_app import create, error_of, tutorial_body

def jsonl(examples) -> bytes:
    return b"".join(wire.upload_line(i, o) for i, o in examples)


def put(http, content: bytes, sha256: str | None = None,
        content_type: str = wire.UPLOAD_CONTENT_TYPE):
    sha256 = sha256 or hashlib.sha256(content).hexdigest()
    return http.put(f"/upload/v1beta/uploads/{sha256}", content=content,
                    headers={"Content-Type": content_type})


def uploaded_body(sha256: str, validation: str | None = None, **extra) -> dict:
    body = tutorial_body(**extra)
    body["tuning_task"]["training_data"] = {"upload": f"uploads/{sha256}"}
    if validation:
        body["tuning_task"]["validationData"] = {"upload": f"uploads/{validation}"}
    return body


def partials(service) -> list:
    return sorted(p.name for p in (service.state_dir / "uploads").glob(".partial-*"))


@pytest.mark.timeout(120)
def test_an_upload_is_kept_under_its_digest_and_a_create_trains_on_it(service):
    content = jsonl(NUMBER_EXAMPLES)
    sha256 = hashlib.sha256(content).hexdigest()
    with service.client() as http:
        assert error_of(http.get(f"/v1beta/uploads/{sha256}")) == (
            404, "NOT_FOUND", f"uploads/{sha256} does not exist.")
        stored = put(http, content)
        assert stored.status_code == 200, stored.text
        info = stored.json()
        assert (info["name"], info["sha256"], info["sizeBytes"]) == (
            f"uploads/{sha256}", sha256, str(len(content)))
        assert http.get(f"/v1beta/uploads/{sha256}").json() == info
        assert (service.state_dir / "uploads" / f"{sha256}.jsonl").read_bytes() == content
        operation = create(http, uploaded_body(sha256)).json()
        assert operation["metadata"]["totalSteps"] == 38, operation  # 15 examples, batch 2
        done = service.wait_done(operation["name"])
    assert "error" not in done, done
    assert [s["step"] for s in done["metadata"]["snapshots"]] == list(range(1, 39))
    model_id = operation["metadata"]["tunedModel"].removeprefix("tunedModels/")
    training, validation = datasets.stored(Store(service.state_dir / "state.db"),
                                           Uploads(service.state_dir), model_id)
    one_turns = [Conversation.one_turn(*example) for example in NUMBER_EXAMPLES]
    assert list(training) == one_turns and training[3] == one_turns[3]
    assert list(validation) == []


@pytest.mark.timeout(120)
def test_an_upload_whose_content_is_not_its_name_is_refused_and_nothing_is_kept(service):
    content = jsonl(NUMBER_EXAMPLES)
    other = hashlib.sha256(b"other").hexdigest()
    with service.client() as http:
        assert error_of(put(http, content, other)) == (
            400, "INVALID_ARGUMENT", f"The upload's content has SHA-256 "
            f"{hashlib.sha256(content).hexdigest()}, not {other} as its name says; nothing "
            "was kept.")
        assert http.get(f"/v1beta/uploads/{other}").status_code == 404
        assert error_of(put(http, content, "not-a-digest")) == (
            400, "INVALID_ARGUMENT", "uploads/not-a-digest is not an upload's name: an upload "
            "is named by the SHA-256 of its content, 64 lowercase hex digits.")
        assert error_of(put(http, content, content_type="text/plain")) == (
            400, "INVALID_ARGUMENT", "Content-Type 'text/plain' is not supported: send the "
            "body as JSON Lines (UTF-8) with Content-Type: application/jsonl.")
        # A create may not name an upload that is not there, nor one that is not an upload.
        assert error_of(create(http, uploaded_body(other))) == (
            400, "FAILED_PRECONDITION", f"tuned_model.tuning_task.training_data.upload: "
            f"uploads/{other} does not exist on this service; upload it first (PUT "
            f"/upload/v1beta/uploads/{other}).")
        body = tutorial_body()
        body["tuning_task"]["training_data"]["upload"] = "files/abc"
        assert error_of(create(http, body)) == (
            400, "INVALID_ARGUMENT", "tuned_model.tuning_task.training_data: give examples or "
            "upload, not both.")
    assert partials(service) == []


@pytest.mark.timeout(60)
def test_a_body_over_the_upload_limit_is_refused_before_it_is_read(service):
    sha256 = hashlib.sha256(b"x").hexdigest()
    host, port = service.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall((f"PUT /upload/v1beta/uploads/{sha256} HTTP/1.1\r\nHost: {host}\r\n"
                      f"Content-Type: {wire.UPLOAD_CONTENT_TYPE}\r\n"
                      f"Content-Length: {wire.UPLOAD_MAX_BYTES + 1}\r\n\r\n").encode())
        answer = b""
        while b"}}" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert body.decode() == (
        '{"error":{"code":400,"message":"Request payload size exceeds the limit: 2147483648 '
        'bytes (an upload may have 2 GiB).","status":"INVALID_ARGUMENT"}}')
    assert partials(service) == []


@pytest.mark.timeout(60)
def test_a_bad_line_of_an_upload_is_refused_at_create_by_its_index(service):
    content = jsonl(NUMBER_EXAMPLES[:3]) + b'{"textInput": "4", "output": " "}\n'
    validation = jsonl([("a", "b")]) + b"[1, 2]\n"
    with service.client() as http:
        assert put(http, content).status_code == 200
        assert put(http, validation).status_code == 200
        sha256 = hashlib.sha256(content).hexdigest()
        assert error_of(create(http, uploaded_body(sha256))) == (
            400, "INVALID_ARGUMENT",
            "tuned_model.tuning_task.training_data.upload[3].output (line 4 of the upload): "
            "must be a non-empty string.")
        good = jsonl(NUMBER_EXAMPLES)
        assert put(http, good).status_code == 200
        assert error_of(create(http, uploaded_body(
            hashlib.sha256(good).hexdigest(), hashlib.sha256(validation).hexdigest()))) == (
            400, "INVALID_ARGUMENT", "tuned_model.tuning_task.validation_data.upload[1] (line 2 "
            'of the upload) is not a JSON object; an upload has one example a line, '
            '{"textInput": ..., "output": ...} or {"systemInstruction"?: ..., "contents": '
            '[...]}.')


@pytest.mark.timeout(120)
def test_an_upload_is_counted_as_inline_examples_are_and_its_count_is_kept(service):
    examples = [*NUMBER_EXAMPLES[:4], (" ".join(["word"] * 700), "long")]
    content = jsonl(examples)
    sha256 = hashlib.sha256(content).hexdigest()
    count = "/v1beta/models/tiny-smollm2:countExampleTokens"
    with service.client() as http:
        assert put(http, content).status_code == 200
        inline = http.post(count, json={"examples": [{"textInput": i, "output": o}
                                                     for i, o in examples]}).json()
        by_upload = http.post(count, json={"requests": [{"upload": f"uploads/{sha256}"}]})
        assert by_upload.status_code == 200, by_upload.text
        assert by_upload.json() == {"responses": [inline]}
        (kept,) = (service.state_dir / "uploads").glob(f"{sha256}.*.tokens")
        # The create measures the upload's examples from that count: the long one is refused
        # by its line's index, as an inline example is by its own.
        kept_at = kept.stat().st_mtime_ns
        assert error_of(create(http, uploaded_body(sha256))) == (
            400, "INVALID_ARGUMENT", "tuned_model.tuning_task.training_data.upload[4] is 732 "
            "tokens long (input and output, in models/tiny-smollm2's tokenizer), over the "
            "model's limit of 512 tokens.")
        assert kept.stat().st_mtime_ns == kept_at
        assert error_of(http.post(count, json={"examples": [{"textInput": "a", "output": "b"}],
                                               "upload": f"uploads/{sha256}"})) == (
            400, "INVALID_ARGUMENT", "examples and upload: give one.")


def test_the_run_key_of_an_upload_is_that_of_the_same_examples_in_a_list(tmp_path):
    """A checkpoint made before uploads (its key: the SHA-256 of json.dumps of the examples
    in a list) is resumed by a run of the same examples read from an upload."""
    examples = [*NUMBER_EXAMPLES, ('quote " and \\ back', "naïve ✓\n")]
    path = tmp_path / "upload.jsonl"
    path.write_bytes(jsonl(examples))
    settings = ([("v", "w")], 3, 2, 0.001, 2, RECIPE)
    text = json.dumps([examples, *settings[:-1], RECIPE.as_dict()], ensure_ascii=False)
    before = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    assert run_key(StoredExamples(path), *settings) == run_key(examples, *settings) == before
