"""A job's identity: the fingerprint of what determines its trained weights, and its model id.

The fingerprint is SHA-256 over a canonical byte form of the format version, the base model, the
resolved hyperparameters and the training examples in order (after field mapping), and, only
when the job gives them, its validation split, early stopping and validation examples (which
do not change the weights without early stopping, but do change what the run measures).
Anything that does not change the weights or the run (display name, description, eval prompts,
YAML layout, the examples' file format) is left out, so editing it never causes retraining.
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
    # Only when given, so that every fingerprint made before they existed stays the same.
    if job.validation_split is not None:
        header["validation_split"] = job.validation_split
    if job.early_stopping is not None:
        header["early_stopping"] = {"patience": job.early_stopping}
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


def examples_digest(examples: Iterable[Example]) -> str:
    """SHA-256 of examples alone, in order, in the fingerprint's canonical form: what a count of
    their tokens depends on besides the tokenizer (plans key the counts they keep by it)."""
    digest = hashlib.sha256(b"examples\n")
    _feed_examples(digest, examples)
    return digest.hexdigest()


def tuned_model_id(name: str, fingerprint: str) -> str:
    return f"{name}-{fingerprint[:FINGERPRINT_PREFIX_LENGTH]}"


def identify(job: Job) -> Identity:
    """Read the job's examples (checking each) and return its identity."""
    digest = hashlib.sha256(_header(job))
    count = _feed_examples(digest, iter_examples(job.training_data))
    if job.validation_data is not None:
        # After a separator no example can produce: a length prefix is digits.
        digest.update(b"\nvalidation\n")
        _feed_examples(digest, iter_examples(job.validation_data))
    fingerprint = digest.hexdigest()
    return Identity(fingerprint, tuned_model_id(job.name, fingerprint), count)
