"""RunStorage: one run's folder under --storage (here a local folder), through pyarrow's
filesystem layer, the one Ray Train uses. Examples written as upload lines come back as the same
conversations through the service's own reader; a folder round-trips; remove leaves nothing.
AdapterStorage: a tuned model's published adapters, read only once complete."""

from __future__ import annotations

import pytest

from jobspec import wire
from jobspec.conversation import Conversation, Turn

pytest.importorskip("pyarrow.fs", reason="pyarrow comes with the optional extra jobspec[ray]")

from jobspec.server.raystorage import (COMPLETE, AdapterStorage, RunStorage,  # noqa: E402
                                       ray_storage_path)
from jobspec.server.uploads import StoredExamples  # noqa: E402

EXAMPLES = [
    Conversation.one_turn("What is 2+2?", "4"),
    Conversation.one_turn("Ünïcödé ✓", "line one\nline two"),
    Conversation((Turn("user", "Hi"), Turn("model", "Hello", trained=False),
                  Turn("user", "Count"), Turn("model", "1 2 3")), system="Be brief."),
]


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_examples_round_trip_through_the_services_reader(tmp_path, as_uri):
    # A URI goes through pyarrow's URI resolution, as s3:// or gs:// would.
    root = f"file://{tmp_path}/storage" if as_uri else str(tmp_path / "storage")
    run = RunStorage(root, "m-1", "op-1")
    assert run.uri == f"{root}/jobs/m-1/op-1"
    run.write_examples("training", (wire.conversation_line(c) for c in EXAMPLES))
    # str lines without their newline are written as lines too
    run.write_examples("validation", [wire.conversation_line(EXAMPLES[0]).decode().rstrip("\n")])

    training = run.local_examples("training", tmp_path / "local")
    validation = run.local_examples("validation", tmp_path / "local")

    assert list(StoredExamples(training)) == EXAMPLES
    assert StoredExamples(training)[2] == EXAMPLES[2]
    assert list(StoredExamples(validation)) == EXAMPLES[:1]
    assert sorted(p.name for p in (tmp_path / "storage/jobs/m-1/op-1").iterdir()) == [
        "training.jsonl", "validation.jsonl"]  # no partial file left
    run.upload_dir(training.parent, "copy")
    run.download_dir("copy", tmp_path / "copy")
    assert (tmp_path / "copy/training.jsonl").read_bytes() == training.read_bytes()
    run.remove()
    assert not (tmp_path / "storage/jobs/m-1/op-1").exists()


def test_a_folder_round_trips_and_remove_leaves_nothing(tmp_path):
    adapter = tmp_path / "adapter"
    (adapter / "nested").mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "nested" / "weights.bin").write_bytes(bytes(range(256)) * 5000)
    run = RunStorage(str(tmp_path / "storage"), "m-1", "op-1")

    run.upload_dir(adapter, "adapter")
    (adapter / "adapter_config.json").write_text('{"r": 16}')
    run.upload_dir(adapter, "adapter")  # a second upload replaces the first
    back = tmp_path / "back"
    run.download_dir("adapter", back)

    assert (back / "adapter_config.json").read_text() == '{"r": 16}'
    assert (back / "nested" / "weights.bin").read_bytes() == bytes(range(256)) * 5000
    other = RunStorage(str(tmp_path / "storage"), "m-1", "op-2")
    other.write_examples("training", [wire.conversation_line(EXAMPLES[0])])

    run.remove()
    run.remove()  # nothing left to remove is not an error
    assert not (tmp_path / "storage/jobs/m-1/op-1").exists()
    assert (tmp_path / "storage/jobs/m-1/op-2/training.jsonl").exists()  # only this run's


def test_paths_are_absolute_and_names_are_checked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert RunStorage("store", "m", "o").uri == f"{tmp_path}/store/jobs/m/o"
    assert ray_storage_path("store") == f"{tmp_path}/store/ray"
    assert ray_storage_path("s3://bucket/prefix/") == "s3://bucket/prefix/ray"
    assert RunStorage("s3://bucket/p", "m", "o").uri == "s3://bucket/p/jobs/m/o"
    with pytest.raises(ValueError, match="model_id must be one plain name"):
        RunStorage("store", "../x", "o")
    with pytest.raises(ValueError, match="examples are named one of training, validation"):
        RunStorage("store", "m", "o").write_examples("other", [])
    with pytest.raises(FileNotFoundError, match="jobs/m/o/training.jsonl"):
        RunStorage("store", "m", "o").local_examples("training", tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="jobs/m/o/adapter"):
        RunStorage("store", "m", "o").download_dir("adapter", tmp_path / "y")


@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_published_adapters_are_read_only_once_complete(tmp_path, as_uri):
    root = f"file://{tmp_path}/storage" if as_uri else str(tmp_path / "storage")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights" * 1000)
    stored = AdapterStorage(root, "m-1")
    assert stored.uri == f"{root}/adapters/m-1"
    assert not stored.has("op-1")

    # A copy cut short (no marker) is not an adapter: not read, and replaced by the next put.
    stored.upload_dir(adapter, "op-1")
    assert not stored.has("op-1")
    with pytest.raises(FileNotFoundError, match="adapters/m-1/op-1: no adapter in the storage"):
        stored.get("op-1", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    stored.put("op-1", adapter)
    assert stored.has("op-1")
    stored.get("op-1", tmp_path / "back")
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == [
        COMPLETE, "adapter_config.json", "adapter_model.safetensors"]
    assert (tmp_path / "back/adapter_model.safetensors").read_bytes() == b"weights" * 1000

    AdapterStorage(root, "m-2").put("op-9", adapter)
    stored.remove()  # the model deleted: all its operations' adapters, no other model's
    assert not stored.has("op-1") and not (tmp_path / "storage/adapters/m-1").exists()
    assert AdapterStorage(root, "m-2").has("op-9")
    with pytest.raises(ValueError, match="model_id must be one plain name"):
        AdapterStorage(root, "..")
