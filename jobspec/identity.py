"""A job's identity: the fingerprint of what determines its trained weights, and its model id.

The fingerprint is SHA-256 over a canonical byte form of the format version, the base model, the
resolved hyperparameters and the training examples in order (after field mapping). Anything that
does not change the weights (display name, description, eval prompts, YAML layout, the examples'
file format) is left out, so editing it never causes retraining.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from .data import Example, iter_examples
from .spec import FORMAT_VERSION, Job

FINGERPRINT_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class Identity:
    fingerprint: str  # full hex SHA-256
    tuned_model_id: str
    example_count: int


def _header(job: Job) -> bytes:
    header = {
        "format_version": FORMAT_VERSION,
        "base_model": job.base_model,
        "hyperparameters": job.hyperparameters.as_dict(),
    }
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _feed_examples(digest: "hashlib._Hash", examples: Iterable[Example]) -> int:
    count = 0
    for example in examples:
        # Length-prefixed UTF-8: unambiguous, and cheaper than a JSON encoding per example.
        text_input = example.text_input.encode("utf-8", "surrogatepass")
        output = example.output.encode("utf-8", "surrogatepass")
        digest.update(b"%d:%b%d:%b" % (len(text_input), text_input, len(output), output))
        count += 1
    return count


def tuned_model_id(name: str, fingerprint: str) -> str:
    return f"{name}-{fingerprint[:FINGERPRINT_PREFIX_LENGTH]}"


def identify(job: Job) -> Identity:
    """Read the job's examples (checking each) and return its identity."""
    digest = hashlib.sha256(_header(job))
    count = _feed_examples(digest, iter_examples(job.training_data))
    fingerprint = digest.hexdigest()
    return Identity(fingerprint, tuned_model_id(job.name, fingerprint), count)
