"""The Gemini API's tuning contract, as both of jobspec's sides speak it: the client backend
(``backends/gemini.py``) and the local service (``server/``), which imports nothing else from
the client side. Everything here is stated by shared/reference/gemini-tuning-api.md (the
section is named beside each value) or is the local service's own: its published limit, its
extensions, and the handshake by which it proves it is the service jobspec started.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math

from .conversation import Conversation, ConversationProblem, from_contents, to_contents

# Tuned model states (§4 TunedModel.state).
STATE_UNSPECIFIED, CREATING, ACTIVE, FAILED = "STATE_UNSPECIFIED", "CREATING", "ACTIVE", "FAILED"

# Type URLs of a create operation's metadata and response (§5).
TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1beta."
METADATA_TYPE = TYPE_PREFIX + "CreateTunedModelMetadata"
TUNED_MODEL_TYPE = TYPE_PREFIX + "TunedModel"

# Published limits of one tuning example (§10).
MAX_INPUT_CHARS = 40_000
MAX_OUTPUT_CHARS = 5_000

# Where an INVALID_ARGUMENT about one example points (the local service names examples so; the
# client maps the index back to the line of the user's data file).
EXAMPLES_FIELD = "tuned_model.tuning_task.training_data.examples.examples"

# The local service adds fields to Google's messages (validation loss, early stopping, the
# device; later ones too). It sends them only to a caller that asks with this header set to
# EXTENSIONS_ON, as jobspec's own client does: everyone else gets Google's published fields
# only (server/published.py), since strict clients refuse a field they do not know.
EXTENSIONS_HEADER = "X-Jobspec-Extensions"
EXTENSIONS_ON = "1"

# The largest request body the local service reads (its own limit; Google states none).
LOCAL_MAX_BODY_BYTES = 32 * 1024 * 1024

# What one training run may use (the local service's extension, a job file's ``resources:``): a
# TuningTask's "resources": {"workers": N, "gpusPerWorker": M}. Data-parallel workers where the
# service fronts a Ray cluster (`jobspec serve --ray`); a service without Ray trains in one
# process, with the same steps. Absent: the service's defaults.
RESOURCES_FIELD = "resources"
MAX_WORKERS = 64
MAX_GPUS_PER_WORKER = 16

# Examples uploaded apart from the create (the local service's extension; Google's media upload,
# ``media.upload`` at /upload/v1beta/files, takes files up to the same 2 GiB), so that a data
# set of hundreds of MB is streamed once, never held whole by either side, and never sent again:
#   GET  /v1beta/uploads/{sha256}          the upload's metadata (UploadInfo), or 404
#   PUT  /upload/v1beta/uploads/{sha256}   the body, Content-Type UPLOAD_CONTENT_TYPE: one
#        example a line: a one-turn example {"textInput": ..., "output": ...} (upload_line), a
#        conversation in Vertex AI's training-line form {"systemInstruction"?: Content,
#        "contents": [Content, ...]} (conversation_line), where a model turn that is context,
#        not a target, carries "weight": 0 (this extension's only field); the service keeps it
#        only when the body's SHA-256 is the one named (and its size the Content-Length)
# A create (or countExampleTokens) then names it in a Dataset, {"upload": "uploads/{sha256}"},
# in place of the inline examples. An upload is named by its content, so one made before is
# found (GET) and not sent again; the service keeps uploads in its state directory.
UPLOADS = "uploads"  # the collection: an upload's name is uploads/{sha256}
UPLOAD_PREFIX = "upload"  # media paths: /upload/v1beta/...
UPLOAD_CONTENT_TYPE = "application/jsonl"
UPLOAD_MAX_BYTES = 2 * 1024**3
UPLOAD_FIELD = "upload"  # of a Dataset (trainingData, validationData)
# Where an INVALID_ARGUMENT about line i+1 of an uploaded training set points (as EXAMPLES_FIELD
# does for inline examples; the client maps it back to the line of the user's data file).
UPLOADED_EXAMPLES_FIELD = "tuned_model.tuning_task.training_data.upload"
_SHA256_HEX = frozenset("0123456789abcdef")


def upload_name(sha256: str) -> str:
    return f"{UPLOADS}/{sha256}"


def is_sha256(text: str) -> bool:
    return len(text) == 64 and set(text) <= _SHA256_HEX


def upload_line(text_input: str, output: str) -> bytes:
    """One example as a line of an upload: compact JSON, UTF-8, newline-terminated."""
    return (json.dumps({"textInput": text_input, "output": output}, ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


def conversation_line(conversation: Conversation) -> bytes:
    """One example as a line of an upload: a one-turn conversation as ``upload_line`` (so the
    uploads of every job made before conversations keep their names), any other in the contents
    form with weights."""
    if conversation.is_one_turn:
        return upload_line(conversation.turns[0].text, conversation.turns[1].text)
    return (json.dumps(to_contents(conversation, weights=True), ensure_ascii=False,
                       separators=(",", ":")) + "\n").encode("utf-8")


def read_upload_line(record: object) -> Conversation:
    """The conversation of one upload line (parsed JSON); ConversationProblem if it is none."""
    if isinstance(record, dict) and "contents" in record:
        return from_contents(record, weights=True)
    if not isinstance(record, dict):
        raise ConversationProblem("", "must be an object: {textInput, output} or "
                                  "{systemInstruction?, contents}")
    for name in ("textInput", "output"):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ConversationProblem(name, "missing" if value is None else
                                      "must be a non-empty string")
    return Conversation.one_turn(record["textInput"], record["output"])


# An example as the local service trains on it (its extension, for `jobspec data preview`;
# answered only to a caller that sends EXTENSIONS_HEADER): POST
# /v1beta/{model=models/*}:renderExample, or /v1beta/{name=tunedModels/*}:renderExample (laid
# out as that model was trained), with the body {"example": <an upload line, parsed: the
# one-turn form or the contents form>}, answers {"segments": [{"text", "trained", "tokenCount"},
# ...], "tokenCount": N, "trainedTokenCount": M}: the base model's chat template rendered over
# the conversation in order, each piece marked trained (the loss covers its tokens: a trained
# model turn and its end-of-turn token) or not, and the tokens of the whole.
RENDER_EXAMPLE_METHOD = "renderExample"
RENDER_EXAMPLE_FIELD = "example"
RENDER_SEGMENTS_FIELD = "segments"
SEGMENT_TEXT_FIELD, SEGMENT_TRAINED_FIELD = "text", "trained"
TOKEN_COUNT_FIELD = "tokenCount"  # of a segment, and of the whole example
TRAINED_TOKEN_COUNT_FIELD = "trainedTokenCount"

# What a line adds around its two JSON strings (the client's limits count each string with its
# quotes).
UPLOAD_LINE_BYTES = len(upload_line("", "")) - 4

# The local service proves it is the one jobspec started (backends/local.py, server/handshake.py):
# jobspec hands it a secret in this environment variable (never on the command line, where the
# process list would show it), then asks IDENTITY_PATH?challenge=HEX for identity_proof's HMAC.
IDENTITY_SECRET_VARIABLE = "JOBSPEC_SERVE_IDENTITY_SECRET"
IDENTITY_PATH = "/jobspec/identity"


def identity_proof(secret: str, challenge: str) -> str:
    return hmac.new(secret.encode(), challenge.encode(), hashlib.sha256).hexdigest()


# TuningTask.hyperparameters on the wire (§4) ↔ the job file's names.
HYPERPARAMETERS = {"batchSize": "batch_size", "epochCount": "epoch_count",
                   "learningRate": "learning_rate",
                   "learningRateMultiplier": "learning_rate_multiplier"}


def total_steps(example_count: int, epochs: int, batch_size: int) -> int:
    """Training steps as the Gemini API counts them (§5: 15 examples, batch 2, 5 epochs gave
    totalSteps 38): the examples of every epoch form one stream cut into batches."""
    return math.ceil(example_count * epochs / batch_size)
