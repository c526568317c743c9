"""The Gemini API's JSON on the wire: lenient parsing in, exact rendering out.

Requests are read the way Google's front end reads them: field names in lowerCamelCase or
snake_case (mixed in one body), trailing commas tolerated, numbers given as strings accepted.
Unknown fields, wrong types and missing required fields are INVALID_ARGUMENT with a message that
names the field. Responses use lowerCamelCase, RFC 3339 timestamps, enum names, and omit fields
at their default value (proto3 JSON).
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime, timezone
from typing import Any

from ..wire import ACTIVE, CREATING, FAILED, STATE_UNSPECIFIED

# google.rpc.Code: name → (number, HTTP status)
CODES = {
    "CANCELLED": (1, 499), "UNKNOWN": (2, 500), "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504), "NOT_FOUND": (5, 404), "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403), "RESOURCE_EXHAUSTED": (8, 429),
    "FAILED_PRECONDITION": (9, 400), "ABORTED": (10, 409), "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501), "INTERNAL": (13, 500), "UNAVAILABLE": (14, 503),
    "DATA_LOSS": (15, 500), "UNAUTHENTICATED": (16, 401),
}
CODE_NAMES = {number: name for name, (number, _) in CODES.items()}


class ApiError(Exception):
    """An error answered with Google's envelope: {"error": {"code", "message", "status"}}."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def http_status(self) -> int:
        return CODES[self.status][1]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.http_status, "message": self.message, "status": self.status}}


# -- parsing -------------------------------------------------------------------------------------

_TRAILING_COMMA = re.compile(r'("(?:\\.|[^"\\])*")|,(\s*[}\]])')


def loads_lenient(raw: bytes) -> Any:
    """JSON, tolerating the trailing commas of Google's published curl samples."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. Body is not valid "
                       f"UTF-8 (byte {exc.start}).") from None
    text = _TRAILING_COMMA.sub(lambda m: m.group(1) or m.group(2), text)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. {exc.msg} at line "
                       f"{exc.lineno}, column {exc.colno}.") from None
    except RecursionError:
        raise ApiError("INVALID_ARGUMENT", "Invalid JSON payload received. Nested too deeply.") \
            from None


def snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


# A message is described as {snake_name: kind}; a kind is "string", "int32", "int64", "float",
# "bool", "any" (kept as given), a nested message dict, a one-item list [kind] (repeated), or a
# tuple of an enum's value names in number order (proto3 JSON gives an enum by name or number:
# google-generativeai sends numbers).
Spec = dict[str, Any]

TUNED_MODEL_STATES = (STATE_UNSPECIFIED, CREATING, ACTIVE, FAILED)

TUNING_EXAMPLE: Spec = {"text_input": "string", "output": "string"}
HYPERPARAMETERS: Spec = {"learning_rate": "float", "learning_rate_multiplier": "float",
                         "epoch_count": "int32", "batch_size": "int32"}
SNAPSHOT: Spec = {"step": "int32", "epoch": "int32", "mean_loss": "float", "compute_time": "string"}
# "upload" is the local service's addition: the examples uploaded apart (jobspec/wire.py).
DATASET: Spec = {"examples": {"examples": [TUNING_EXAMPLE]}, "upload": "string"}
TUNING_TASK: Spec = {
    "start_time": "string", "complete_time": "string", "snapshots": [SNAPSHOT],
    "training_data": DATASET,
    "hyperparameters": HYPERPARAMETERS,
    # The local service's additions, which Google's TuningTask does not have (a client that
    # does not know them ignores them, as proto3 JSON parsers and Google's SDKs do): examples
    # held out to measure validation loss on (a Dataset, like training_data), early stopping
    # on that loss, and what training measured and decided (output only).
    "validation_data": DATASET,
    "early_stopping": {"patience": "int32"},
    "resources": {"workers": "int32", "gpus_per_worker": "float"},  # wire.RESOURCES_FIELD
    "validation_snapshots": [SNAPSHOT], "kept_epoch": "int32", "stop_reason": "string",
    "device": "string",
}
TUNED_MODEL: Spec = {
    "name": "string", "display_name": "string", "description": "string", "base_model": "string",
    "tuned_model_source": {"tuned_model": "string", "base_model": "string"},
    "temperature": "float", "top_p": "float", "top_k": "int32", "state": TUNED_MODEL_STATES,
    "create_time": "string", "update_time": "string", "tuning_task": TUNING_TASK,
    "reader_project_numbers": ["int64"],
}
PART: Spec = {
    "text": "string", "inline_data": "any", "function_call": "any", "function_response": "any",
    "file_data": "any", "executable_code": "any", "code_execution_result": "any",
    "video_metadata": "any", "thought": "bool", "thought_signature": "string",
    "part_metadata": "any",
}
CONTENT: Spec = {"parts": [PART], "role": "string"}
GENERATION_CONFIG: Spec = {
    "candidate_count": "int32", "stop_sequences": ["string"], "max_output_tokens": "int32",
    "temperature": "float", "top_p": "float", "top_k": "int32", "seed": "int32",
    "response_mime_type": "string", "response_schema": "any", "response_json_schema": "any",
    "presence_penalty": "float", "frequency_penalty": "float", "response_logprobs": "bool",
    "logprobs": "int32", "enable_enhanced_civic_answers": "bool", "response_modalities": ["any"],
    "speech_config": "any", "thinking_config": "any", "image_config": "any",
    "media_resolution": "any",
}
GENERATE_CONTENT_REQUEST: Spec = {
    "model": "string", "contents": [CONTENT], "system_instruction": CONTENT, "tools": ["any"],
    "tool_config": "any", "safety_settings": ["any"], "generation_config": GENERATION_CONFIG,
    "cached_content": "string",
}

_TYPE_LABELS = {"string": "TYPE_STRING", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "float": "TYPE_FLOAT", "bool": "TYPE_BOOL"}


def parse(value: Any, spec: Spec, where: str) -> dict[str, Any]:
    """Check ``value`` against ``spec``; return it with snake_case keys and typed scalars."""
    if not isinstance(value, dict):
        raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. Expected an object "
                       f"at '{where}', got {json.dumps(value)[:40]}.")
    result: dict[str, Any] = {}
    for key, item in value.items():
        name = key if key in spec else snake(key)
        if name not in spec:
            raise ApiError("INVALID_ARGUMENT", f'Invalid JSON payload received. Unknown name '
                           f'"{key}" at \'{where}\': Cannot find field.')
        if name in result:
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. Field "
                           f"'{where}.{name}' is given twice (as {camel(name)} and {name}).")
        if item is None:  # null means "default"
            continue
        result[name] = _parse_kind(item, spec[name], f"{where}.{name}")
    return result


def _parse_kind(value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, dict):
        return parse(value, kind, where)
    if isinstance(kind, list):
        if not isinstance(value, list):
            raise ApiError("INVALID_ARGUMENT", f"Invalid JSON payload received. Expected a list "
                           f"at '{where}', got {json.dumps(value)[:40]}.")
        return [_parse_kind(item, kind[0], f"{where}[{i}]") for i, item in enumerate(value)]
    if kind == "any":
        return value
    if isinstance(kind, tuple):
        if value in kind or (type(value) is int and 0 <= value < len(kind)):
            return value if isinstance(value, str) else kind[value]
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{where}' (TYPE_ENUM), "
                       f"{json.dumps(value)[:60]}")
    parsed = _scalar(value, kind)
    if parsed is None:
        raise ApiError("INVALID_ARGUMENT", f"Invalid value at '{where}' ({_TYPE_LABELS[kind]}), "
                       f"{json.dumps(value)[:60]}")
    return parsed


def _scalar(value: Any, kind: str) -> Any:
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value) if kind == "float" else int(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        return None
    if kind == "float":
        return float(value)
    if isinstance(value, float) and not value.is_integer():
        return None
    number = int(value)
    bits = 31 if kind == "int32" else 63
    return number if -(2**bits) <= number < 2**bits else None


def require(values: dict[str, Any], name: str, where: str) -> Any:
    if name not in values or values[name] in ("", [], {}):
        raise ApiError("INVALID_ARGUMENT", f"{where}.{name} is required.")
    return values[name]


# -- rendering -----------------------------------------------------------------------------------

def timestamp(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def compact(value: Any) -> Any:
    """Drop keys at their proto3 default (None, "", [], {}, False, 0), as Google's JSON does."""
    if isinstance(value, dict):
        cleaned = {k: compact(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, "", [], {}, False)}
    if isinstance(value, list):
        return [compact(v) for v in value]
    return value
