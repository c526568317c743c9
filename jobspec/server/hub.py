"""Base models named by their Hugging Face id (``Qwen/Qwen2.5-0.5B-Instruct``): found in, or
fetched once into, the standard Hugging Face cache with huggingface_hub.

The cache is huggingface_hub's own (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
``~/.cache/huggingface/hub``), so a model another tool fetched is used as it is, and one fetched
here serves those tools too. ``HF_HUB_OFFLINE`` set (to anything but 0/false): the cache only.
A model in the cache is used as it is, without asking the network (fetched once); one that is
not is fetched when the network allows. ``HF_TOKEN`` opens gated models; it is huggingface_hub's to
read and send, and is never part of anything this module says.

This runs in the service's main process before anything else reads the hub's settings: the
service then sets ``HF_HUB_OFFLINE`` for itself and its workers (models.quiet_libraries), which
load the folder resolved here and never ask the network again.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path


# What a causal LM needs from a repository; weights in other formats (GGUF, ONNX, Flax, TF,
# Meta's original checkpoints) are left on the Hub.
_IGNORED = ["*.gguf", "*.onnx", "*.onnx_data", "onnx/*", "*.msgpack", "*.h5", "*.ot",
            "original/*", "*.pth", "*.tflite", "coreml/*", "*.mlmodel"]
_FALSE = ("", "0", "false", "no", "off")


class HubModelUnavailable(Exception):
    """The model is neither cached nor can be fetched; the message says what to do."""


def offline() -> bool:
    """Whether the user asked for the cache only (``HF_HUB_OFFLINE``, read as huggingface_hub
    reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in _FALSE


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` with the Hub's characters, and not a path that exists here (a folder
    ``org/model`` beside the service is the folder)."""
    if Path(spec).exists() or spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        return False
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}",
                             spec))


def _fetch_advice(hub_id: str) -> str:
    return (f"fetch it on a machine with network access with `hf download {hub_id}` "
            "(huggingface_hub's command line, formerly huggingface-cli) into the same Hugging "
            "Face cache (HF_HOME / HF_HUB_CACHE), or start the service with network access and "
            "HF_HUB_OFFLINE unset")


def _hidden(text: str) -> str:
    """``text`` with the token, should a library have put it into a message, blotted out."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    return text.replace(token, "***") if token and len(token) >= 4 else text


def resolve(hub_id: str) -> Path:
    """The folder of ``hub_id``'s cached (else fetched) snapshot; HubModelUnavailable with what
    to do when it is neither cached nor can be fetched."""
    from huggingface_hub import snapshot_download  # noqa: PLC0415
    from huggingface_hub import errors  # noqa: PLC0415

    cache_only = offline()
    try:
        try:  # fetched once: a cached snapshot is used without asking the network
            folder = snapshot_download(hub_id, local_files_only=True, ignore_patterns=_IGNORED)
        except errors.LocalEntryNotFoundError:
            if cache_only:
                raise
            print(f"jobspec serve: fetching {hub_id} from Hugging Face into {cache_dir()} "
                  "(once)", file=sys.stderr, flush=True)
            folder = snapshot_download(hub_id, ignore_patterns=_IGNORED)
    except errors.GatedRepoError:
        raise HubModelUnavailable(
            f"--model {hub_id}: the model is gated on Hugging Face: accept its licence on its "
            "page, then set HF_TOKEN to a token of that account") from None
    except errors.RepositoryNotFoundError:
        raise HubModelUnavailable(
            f"--model {hub_id}: Hugging Face has no such model, or it is private (set HF_TOKEN "
            "to a token that may read it)") from None
    except errors.RevisionNotFoundError:
        raise HubModelUnavailable(f"--model {hub_id}: its main revision is not on Hugging Face") \
            from None
    except errors.LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if cache_only else "the Hugging Face Hub cannot be reached"
        raise HubModelUnavailable(f"--model {hub_id}: not in the Hugging Face cache "
                                  f"({cache_dir()}) and {why}: {_fetch_advice(hub_id)}") \
            from None
    except (errors.HfHubHTTPError, OSError, ValueError) as exc:
        raise HubModelUnavailable(_hidden(f"--model {hub_id}: could not be fetched from "
                                          f"Hugging Face: {exc}")) from None
    path = Path(folder)
    if not (path / "config.json").is_file():
        raise HubModelUnavailable(f"--model {hub_id}: its snapshot ({path}) has no "
                                  "config.json; it is not a transformers model folder")
    return path


def cache_dir() -> Path:
    """The Hugging Face cache huggingface_hub reads and writes, with the user's settings."""
    from huggingface_hub import constants  # noqa: PLC0415

    return Path(constants.HF_HUB_CACHE)


def hub_id_of(folder: Path) -> str | None:
    """``ORG/NAME`` for a snapshot folder of the Hugging Face cache
    (``.../models--ORG--NAME/snapshots/REV``); None for any other folder."""
    parts = folder.resolve().parts if folder.exists() else folder.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        org_and_name = parts[-3].removeprefix("models--").split("--", 1)
        if len(org_and_name) == 2:
            return "/".join(org_and_name)
    return None
