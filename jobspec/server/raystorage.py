"""Where a job trained on a Ray cluster keeps what every node must see: its examples, its final
adapter, and (under ``ray_storage_path``) Ray Train's own run folders with their checkpoints.

``--storage`` is a local path (a folder every node shares: on one machine any folder; on several,
a network mount) or a URI that pyarrow's filesystem layer understands (``s3://``, ``gs://``...),
the same layer Ray Train itself writes its checkpoints through, so one setting serves both.

Layout under the storage root::

    jobs/{model_id}/{operation_id}/training.jsonl     the examples, as the local wire's upload lines
    jobs/{model_id}/{operation_id}/validation.jsonl
    jobs/{model_id}/{operation_id}/adapter/           the trained adapter, written by rank 0
    ray/                                              Ray Train's runs (RunConfig.storage_path)
    adapters/{model_id}/{operation_id}/               a published adapter, where generation
                                                      runs on the cluster (raygenerate.py)

pyarrow is imported where it is used: it comes with the optional extra ``jobspec[ray]``, and the
plain service never imports this module's filesystem code.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pyarrow.fs

EXAMPLE_NAMES = ("training", "validation")
_COPY_BYTES = 1 << 20
COMPLETE = "COMPLETE"  # in an adapter's folder: its files are all there


def _is_uri(storage: str) -> bool:
    return "://" in storage


def _root(storage: str) -> str:
    """The storage root as given, a plain path made absolute (a relative path would mean a
    different folder on a worker whose working directory differs), without a trailing slash."""
    if not storage:
        raise ValueError("--storage must be a folder or a URI (s3://, gs://...), got ''")
    if _is_uri(storage):
        return storage.rstrip("/")
    return os.path.abspath(os.path.expanduser(storage))


def ray_storage_path(storage: str) -> str:
    """Where Ray Train keeps its runs (``RunConfig.storage_path``): ``{storage}/ray``."""
    return f"{_root(storage)}/ray"


def remove_ray_run(storage: str, name: str) -> None:
    """Remove Ray Train's folder of the run ``name`` (under ``ray_storage_path``), if there is
    one: a finished run's checkpoints, through the same filesystem layer as Ray Train."""
    import pyarrow.fs

    fs, base = pyarrow.fs.FileSystem.from_uri(ray_storage_path(storage))
    _delete_dir(fs, f"{base}/{_checked_name(name, 'run name')}")


def _delete_dir(fs: pyarrow.fs.FileSystem, path: str) -> None:
    """Delete the folder ``path`` of ``fs`` and all it holds; nothing there is not an error."""
    import pyarrow.fs

    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(path)


def _examples_name(name: str) -> str:
    if name not in EXAMPLE_NAMES:
        raise ValueError(f"examples are named one of {', '.join(EXAMPLE_NAMES)}, got {name!r}")
    return name


def _checked_name(name: str, what: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{what} must be one plain name (no '/', not '.' or '..'), got {name!r}")
    return name


class StorageFolder:
    """One folder under --storage (a local path or a URI pyarrow.fs understands: s3://, gs://),
    through the filesystem layer Ray Train itself uses."""

    def __init__(self, storage: str, *parts: str) -> None:
        self.storage = _root(storage)
        self.uri = "/".join([self.storage, *(_checked_name(part, "folder name") for part in parts)])

    def _fs(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """The filesystem and this folder's path within it (resolved on each use: a
        FileSystem is not meant to travel between processes with the object)."""
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.uri)

    def upload_dir(self, local: Path, name: str) -> None:
        """Copy the local folder ``local`` to ``{uri}/{name}``, replacing what was there."""
        import pyarrow.fs

        if not local.is_dir():
            raise NotADirectoryError(f"{local} is not a folder to upload")
        fs, base = self._fs()
        target = f"{base}/{_checked_name(name, 'folder name')}"
        _delete_dir(fs, target)
        fs.create_dir(target, recursive=True)
        local_fs = pyarrow.fs.LocalFileSystem()
        pyarrow.fs.copy_files(str(local.resolve()), target, source_filesystem=local_fs,
                              destination_filesystem=fs)

    def download_dir(self, name: str, local: Path) -> None:
        """Copy ``{uri}/{name}`` into the local folder ``local`` (made if missing).
        FileNotFoundError naming the folder when there is none."""
        import pyarrow.fs

        fs, base = self._fs()
        source = f"{base}/{_checked_name(name, 'folder name')}"
        if fs.get_file_info(source).type != pyarrow.fs.FileType.Directory:
            raise FileNotFoundError(f"{self.uri}/{name}: no such folder in the storage")
        local.mkdir(parents=True, exist_ok=True)
        pyarrow.fs.copy_files(source, str(local.resolve()), source_filesystem=fs,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())

    def remove(self) -> None:
        """Remove the whole folder (nothing to remove is not an error)."""
        fs, base = self._fs()
        _delete_dir(fs, base)


class RunStorage(StorageFolder):
    """One run's folder: ``jobs/{model_id}/{operation_id}``."""

    def __init__(self, storage: str, model_id: str, operation_id: str) -> None:
        super().__init__(storage, "jobs", _checked_name(model_id, "model_id"),
                         _checked_name(operation_id, "operation_id"))

    def write_examples(self, name: str, lines: Iterable[str | bytes]) -> None:
        """``{name}.jsonl`` (name: "training" | "validation") from upload lines (as
        ``jobspec.wire.conversation_line`` makes them; a line without its newline gets one).
        Written to a partial name and moved into place, so a reader never sees half a file."""
        _examples_name(name)
        fs, base = self._fs()
        fs.create_dir(base, recursive=True)
        partial, final = f"{base}/.partial-{name}.jsonl", f"{base}/{name}.jsonl"
        with fs.open_output_stream(partial) as out:
            for line in lines:
                data = line.encode("utf-8") if isinstance(line, str) else line
                out.write(data if data.endswith(b"\n") else data + b"\n")
        fs.move(partial, final)

    def local_examples(self, name: str, into: Path) -> Path:
        """Copy ``{name}.jsonl`` into the local folder ``into``; the local file's path.
        FileNotFoundError naming the run's file when there is none."""
        import pyarrow.fs

        fs, base = self._fs()
        source = f"{base}/{_examples_name(name)}.jsonl"
        if fs.get_file_info(source).type != pyarrow.fs.FileType.File:
            raise FileNotFoundError(f"{self.uri}/{name}.jsonl: no such examples in the storage")
        into.mkdir(parents=True, exist_ok=True)
        target = into / f"{name}.jsonl"
        with fs.open_input_stream(source) as data, open(target, "wb") as out:
            shutil.copyfileobj(data, out, _COPY_BYTES)
        return target


class AdapterStorage(StorageFolder):
    """A tuned model's published adapters: ``adapters/{model_id}/{operation_id}``, each with a
    ``COMPLETE`` marker written after its files, so that a copy cut short is never read."""

    def __init__(self, storage: str, model_id: str) -> None:
        super().__init__(storage, "adapters", _checked_name(model_id, "model_id"))

    def has(self, operation_id: str) -> bool:
        import pyarrow.fs

        fs, base = self._fs()
        marker = f"{base}/{_checked_name(operation_id, 'operation_id')}/{COMPLETE}"
        return fs.get_file_info(marker).type == pyarrow.fs.FileType.File

    def put(self, operation_id: str, folder: Path) -> None:
        """Copy the adapter in ``folder`` into the storage (replacing a partial copy)."""
        self.upload_dir(folder, operation_id)
        fs, base = self._fs()
        with fs.open_output_stream(f"{base}/{operation_id}/{COMPLETE}"):
            pass

    def get(self, operation_id: str, into: Path) -> None:
        """Copy a complete adapter into the local folder ``into``. FileNotFoundError when the
        storage has none."""
        if not self.has(operation_id):
            raise FileNotFoundError(f"{self.uri}/{operation_id}: no adapter in the storage")
        self.download_dir(operation_id, into)
