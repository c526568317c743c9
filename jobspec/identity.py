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

from .data import Example, Tally, example_record, held_out, iter_examples, record_rank
from .errors import ConfigErrors
from .spec import FORMAT_VERSION, Job, examples_problems

FINGERPRINT_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class Identity:
    fingerprint: str  # full hex SHA-256
    tuned_model_id: str
    example_count: int
    held_out: int = 0  # how many examples its validation_split holds out (data.held_out)


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


def _feed_examples(digest: "hashlib._Hash", examples: Iterable[Example],
                   ranks: list[bytes] | None = None) -> int:
    """Hash ``examples`` into ``digest``; with ``ranks``, also collect each one's rank in a
    validation split (data.record_rank), from the same bytes."""
    count = 0
    for example in examples:
        record = example_record(example)
        digest.update(record)
        if ranks is not None:
            ranks.append(record_rank(record))
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
    ranks: list[bytes] | None = [] if job.validation_split is not None else None
    trained, validated = Tally(), Tally()
    count = _feed_examples(digest, iter_examples(job.training_data, trained), ranks)
    if job.validation_data is not None:
        # After a separator no example can produce: a length prefix is digits.
        digest.update(b"\nvalidation\n")
        _feed_examples(digest, iter_examples(job.validation_data, validated))
    problems = examples_problems(job, trained, validated)
    if problems:  # what validate says of these examples, plan and apply say too
        raise ConfigErrors(problems)
    fingerprint = digest.hexdigest()
    held = (len(held_out(ranks, job.validation_split))
            if ranks is not None and job.validation_split is not None else 0)
    return Identity(fingerprint, tuned_model_id(job.name, fingerprint), count, held)
