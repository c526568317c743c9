"""Tuned adapters on disk, through the real service: one folder per operation, the layout of
earlier versions still served, delete removes every one, and partial files a kill -9 left are
removed when the service starts."""

from __future__ import annotations

import shutil

import pytest

from tests.server.test_app import create, error_of, tutorial_body
from tests.service import LocalService

ASK = {"contents": [{"parts": [{"text": "7"}]}], "generationConfig": {"maxOutputTokens": 4}}


def operation_id(operation: dict) -> str:
    return operation["name"].rsplit("/", 1)[1]


def train(service, http, model_id: str) -> str:
    operation = create(http, tutorial_body(epochs=1), model_id).json()
    assert service.wait_done(operation["name"])["response"]["state"] == "ACTIVE"
    return operation_id(operation)


@pytest.mark.timeout(180)
def test_adapters_are_kept_per_operation_and_delete_removes_them_all(service):
    adapters = service.state_dir / "adapters"
    with service.client() as http:
        first = train(service, http, "per-operation")
        assert (adapters / "per-operation" / first / "adapter_config.json").is_file()
        # Asked, its adapter is loaded; deleted, it is dropped from memory too (the base
        # model's answers go on, with no adapter left loaded).
        assert http.post("/v1beta/tunedModels/per-operation:generateContent",
                         json=ASK).status_code == 200
        base = http.post("/v1beta/models/gemini-1.5-flash-001-tuning:generateContent", json=ASK)
        assert http.delete("/v1beta/tunedModels/per-operation").json() == {}
        assert not (adapters / "per-operation").exists()
        after = http.post("/v1beta/models/gemini-1.5-flash-001-tuning:generateContent", json=ASK)
        assert after.json().get("candidates") == base.json()["candidates"], service.log[-3000:]
        second = train(service, http, "per-operation")  # the same id, a new operation
        assert second != first
        assert [p.name for p in (adapters / "per-operation").iterdir()] == [second]
        assert http.post("/v1beta/tunedModels/per-operation:generateContent",
                         json=ASK).status_code == 200


@pytest.mark.timeout(180)
def test_a_missing_adapter_is_data_loss_not_a_crash(service):
    with service.client() as http:
        operation = train(service, http, "lost-adapter")
        shutil.rmtree(service.state_dir / "adapters" / "lost-adapter")
        assert error_of(http.post("/v1beta/tunedModels/lost-adapter:generateContent",
                                  json=ASK)) == (
            500, "DATA_LOSS", f"The adapter of tunedModels/lost-adapter (operation {operation}) "
            f"is missing from {service.state_dir.resolve() / 'adapters'}; delete the model and "
            "tune it again.")


@pytest.mark.timeout(300)
def test_an_adapter_stored_the_old_way_is_still_served(tiny_model, tmp_path):
    state = tmp_path / "state"
    first = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with first.client() as http:
            operation = train(first, http, "from-before")
            before = http.post("/v1beta/tunedModels/from-before:generateContent", json=ASK).json()
    finally:
        first.stop()
    # Earlier versions kept one adapter per model, in adapters/<model id>/ itself.
    folder = state / "adapters" / "from-before"
    for item in (folder / operation).iterdir():
        item.rename(folder / item.name)
    (folder / operation).rmdir()
    assert (folder / "adapter_model.safetensors").is_file()

    second = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with second.client() as http:
            assert http.get("/v1beta/tunedModels/from-before").json()["state"] == "ACTIVE"
            after = http.post("/v1beta/tunedModels/from-before:generateContent", json=ASK).json()
            assert after["candidates"] == before["candidates"]
            assert http.delete("/v1beta/tunedModels/from-before").json() == {}
            assert not folder.exists()
    finally:
        second.stop()


@pytest.mark.timeout(300)
def test_partial_files_a_kill_left_are_removed_at_start(tiny_model, tmp_path):
    state = tmp_path / "state"
    first = LocalService(state, "--model", str(tiny_model)).start()
    try:
        with first.client() as http:
            kept = train(first, http, "kept")
    finally:
        first.stop()
    stale = [state / "adapters" / "kept" / f".{kept}.partial-4242",    # a run killed mid-save
             state / "adapters" / "gone" / ".abc123.partial-99",       # of a deleted model
             state / "adapters" / ".older.partial-7",                  # the layout before
             state / "models" / "smollm2-135m-instruct-0123456789abcdef.partial-31337"]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"\0" * 1024)

    second = LocalService(state, "--model", str(tiny_model)).start()
    try:
        assert [folder for folder in stale if folder.exists()] == []
        assert "jobspec serve: removed 4 partial file(s) left by an interrupted run: " in second.log
        assert (state / "adapters" / "kept" / kept / "adapter_config.json").is_file()
        with second.client() as http:
            assert http.post("/v1beta/tunedModels/kept:generateContent",
                             json=ASK).status_code == 200
            train(second, http, "after-cleanup")
    finally:
        second.stop()
