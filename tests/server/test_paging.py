"""Paging parameters of every list method of the local service, as a caller can craft them: a
token or size the service did not issue is 400 INVALID_ARGUMENT in Google's envelope, never a
500 (which clients retry) and never a traceback in the service's log.

Runs the real service (`python -m jobspec.server`) with a tiny randomly initialised model.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server.test_app import create, tutorial_body

LISTS = ("/v1beta/tunedModels", "/v1beta/models", "/v1beta/tunedModels/paged/operations")


def b64(text: bytes) -> str:
    return base64.urlsafe_b64encode(text).decode()


BAD_TOKENS = [
    b64(b"after:99999999999999999999"),  # past SQLite's 64-bit integers: was a 500
    b64(b"after:9223372036854775808"),  # one past the largest
    b64(b"after:-5"), b64(b"after:0"), b64(b"after:+3"), b64(b"after: 3"), b64(b"after:3_0"),
    b64("after:٣".encode()),  # a digit, to int(), but not one this service writes
    b64(b"before:3"), b64(b"3"), b64(b"after:"), b64(b"after:x"),
    b64(b"after:1").rstrip("="),  # not the text issued
    b64(b"after:1") + "!!", "YWZ0ZXI6MQ", "zz", "%%%", "not base64 at all", "=",
    b64(b"\xff\xfe\x00after:1"),  # decodes to bytes that are not text
    "after:1",  # not encoded
]
BAD_SIZES = ["99999999999999999999", "2147483648", "-1", "abc", "1.5", " 5", "٥", "0x10", "1e3",
             "-0x1"]


def error_envelope(response) -> dict:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "status"}, body
    return body["error"]


def assert_invalid_argument(response) -> None:
    assert response.status_code == 400, (response.status_code, response.text)
    error = error_envelope(response)
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")


@pytest.fixture(scope="module")
def listed(service):
    """A service with a tuned model (so operations.list has one to answer for) and more models
    than a page of two, so tunedModels.list issues a token."""
    with service.client() as http:
        for model_id in ("paged", "paged-2", "paged-3"):
            assert create(http, tutorial_body(epochs=1), model_id).status_code == 200
    return service


def no_server_errors(service) -> None:
    assert "Traceback" not in service.log
    assert " 500 " not in service.log


@pytest.mark.parametrize("path", LISTS)
def test_every_bad_page_token_is_invalid_argument(listed, path):
    with listed.client() as http:
        for token in BAD_TOKENS:
            assert_invalid_argument(http.get(path, params={"pageToken": token}))
            assert_invalid_argument(http.get(path, params={"page_token": token}))
        # Bytes that are not UTF-8 in the query string itself.
        assert_invalid_argument(http.get(f"{path}?pageToken=%FF%FEafter%3A1"))
    no_server_errors(listed)


@pytest.mark.parametrize("path", LISTS)
def test_every_bad_page_size_is_invalid_argument(listed, path):
    with listed.client() as http:
        for size in BAD_SIZES:
            assert_invalid_argument(http.get(path, params={"pageSize": size}))
        assert_invalid_argument(http.get(f"{path}?pageSize=%FF"))
        for size in ("", "0", "1", "1000", "2147483647"):  # absent, default and the most
            assert http.get(path, params={"pageSize": size}).status_code == 200
    no_server_errors(listed)


def test_the_token_issued_still_pages(listed):
    with listed.client() as http:
        first = http.get("/v1beta/tunedModels", params={"pageSize": 2}).json()
        token = first["nextPageToken"]
        second = http.get("/v1beta/tunedModels", params={"pageSize": 2, "pageToken": token})
    assert second.status_code == 200
    names = [m["name"] for m in first["tunedModels"] + second.json()["tunedModels"]]
    assert len(names) == len(set(names)) == 3


token_texts = st.one_of(
    st.text(max_size=40),
    st.binary(max_size=30).map(b64),
    st.integers().map(lambda n: b64(f"after:{n}".encode())),
    st.text(max_size=20).map(lambda t: b64(f"after:{t}".encode())),
)


@settings(max_examples=120, deadline=None)
@given(token=token_texts, size=st.one_of(st.none(), st.text(max_size=12),
                                         st.integers().map(str)))
def test_any_crafted_paging_is_answered_never_a_server_error(listed, token, size):
    params = {"pageToken": token, **({} if size is None else {"pageSize": size})}
    with listed.client() as http:
        response = http.get("/v1beta/tunedModels", params=params)
    assert response.status_code in (200, 400), (params, response.status_code, response.text)
    if response.status_code == 400:
        assert error_envelope(response)["status"] == "INVALID_ARGUMENT"
    no_server_errors(listed)


def test_a_token_for_another_list_is_refused_where_no_token_is_issued(listed):
    with listed.client() as http:
        token = http.get("/v1beta/tunedModels", params={"pageSize": 1}).json()["nextPageToken"]
        for path in LISTS[1:]:
            response = http.get(path, params={"pageToken": token})
            assert_invalid_argument(response)
            assert "issues no page tokens" in error_envelope(response)["message"]
        assert http.get(f"/v1beta/tunedModels?pageToken={quote(token)}").status_code == 200
