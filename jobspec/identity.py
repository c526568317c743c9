"""A job's identity: the fingerprint of what determines its trained weights, and its model id.

The fingerprint is SHA-256 over a canonical byte form of the format version, the base model, the
resolved hyperparameters and the training examples in order (each a conversation, after field
mapping and the job's system instruction: the same conversations in any form fingerprint
alike), and, only when the job gives them, its validation split, early stopping and validation
examples (which do not change the weights without early stopping, but do change what the run
measures).
Anything that does not change the weights or the run (display name, description, eval prompts,
YAML layout, the examples' file format) is left out, so editing it never causes retraining.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from . import split
from .conversation import MODEL, USER
from .data import Example, Tally, iter_examples, reading_key
from .errors import ConfigError, ConfigErrors
from .spec import DEFAULT_TUNING_MODE, FORMAT_VERSION, Job, examples_problems
from .split import Split

FINGERPRINT_PREFIX_LENGTH = 8


@dataclass(frozen=True)
class Identity:
    fingerprint: str  # full hex SHA-256
    tuned_model_id: str
    example_count: int
    # Its validation_split as drawn (split.py); None when the job asks for none.
    split: Split | None = None

    @property
    def held_out(self) -> int:
        """How many of its training examples its validation split holds out."""
        return self.split.held if self.split is not None else 0

    @property
    def trained_count(self) -> int:
        """How many examples the job trains on: its training data, less its split."""
        return self.split.trained if self.split is not None else self.example_count


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
    # What is trained, so part of the identity; written out as the default (lora), it is the
    # job it was, as an explicit default hyperparameter is.
    if job.tuning_mode_or_default != DEFAULT_TUNING_MODE:
        header["tuning_mode"] = job.tuning_mode_or_default
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# A conversation's record starts with this letter, where a one-turn example's starts with a
# digit (its length prefix): no record of one can be read as the other's, nor run into the next.
_CONVERSATION = b"C"
_ROLES = {(USER, True): b"u", (MODEL, True): b"m", (MODEL, False): b"c"}  # c: context (weight 0)


def example_record(example: Example) -> bytes:
    """One example in its canonical byte form, as the fingerprint hashes it (length-prefixed
    UTF-8, unambiguous): equal examples, and only they, have equal records.

    A one-turn conversation without a system instruction (today's ``{text_input, output}``)
    is ``LEN:INPUTLEN:OUTPUT``, as every example always was, so no fingerprint made before
    conversations changes. Any other is ``C``, then ``s`` LEN:SYSTEM or ``n`` (none), then
    the number of turns and ``:``, then each turn as its role letter (``u`` user, ``m`` model,
    ``c`` a model turn of weight 0) and LEN:TEXT."""
    if example.pair is not None:  # a one-turn conversation
        text_input, output = map(_utf8, example.pair)
        return b"%d:%b%d:%b" % (len(text_input), text_input, len(output), output)
    conversation = example.conversation
    parts = [_CONVERSATION]
    if conversation.system is None:
        parts.append(b"n")
    else:
        system = _utf8(conversation.system)
        parts.append(b"s%d:%b" % (len(system), system))
    parts.append(b"%d:" % len(conversation.turns))
    for turn in conversation.turns:
        text = _utf8(turn.text)
        parts.append(b"%b%d:%b" % (_ROLES[turn.role, turn.trained], len(text), text))
    return b"".join(parts)


def record_rank(record: bytes) -> bytes:
    """Where an example falls in a validation split (split.py): the SHA-256 of its record."""
    return hashlib.sha256(record).digest()


def example_rank(example: Example) -> bytes:
    return record_rank(example_record(example))


def draw_split(examples: Iterable[Example], fraction: float) -> Split:
    """The validation split of ``fraction`` of ``examples`` (split.draw), in one pass that keeps
    32 bytes an example."""
    return split.draw(map(example_rank, examples), fraction, example_rank)


def _feed_examples(digests: Sequence["hashlib._Hash"], examples: Iterable[Example],
                   ranks: list[bytes] | None = None) -> int:
    """Hash ``examples`` into each of ``digests``; with ``ranks``, also collect each one's rank
    in a validation split (``record_rank``), from the same bytes."""
    count = 0
    for example in examples:
        record = example_record(example)
        for digest in digests:
            digest.update(record)
        if ranks is not None:
            ranks.append(record_rank(record))
        count += 1
    return count


def examples_digest(examples: Iterable[Example]) -> str:
    """SHA-256 of examples alone, in order, in the fingerprint's canonical form: what a count of
    their tokens depends on besides the tokenizer (plans key the counts they keep by it)."""
    digest = hashlib.sha256(b"examples\n")
    _feed_examples([digest], examples)
    return digest.hexdigest()


def tuned_model_id(name: str, fingerprint: str) -> str:
    return f"{name}-{fingerprint[:FINGERPRINT_PREFIX_LENGTH]}"


def identify(job: Job) -> Identity:
    """Read the job's examples (checking each) and return its identity."""
    found = _identify_reading_alike([job])[0]
    if isinstance(found, ConfigErrors):
        raise found
    return found


def identify_many(jobs: Sequence[Job]) -> list[Identity]:
    """Each job's identity, as ``identify`` gives it (and the same error, of the first job in
    order that has one); jobs whose examples read alike (the same files, unchanged, read with
    the same fields and limits: ``data.reading_key``) share one read of them, so that a data
    file many jobs name is read once per run, as validate reads it (data.ExampleCounts),
    rather than once per job. Jobs whose shared read fails are read each alone, so that each
    is told of its own file and line."""
    groups: dict[object, list[int]] = {}
    for index, job in enumerate(jobs):
        key = _reading_key(job)
        groups.setdefault(index if key is None else key, []).append(index)
    found: dict[int, Identity | ConfigError] = {}
    for indexes in groups.values():
        try:
            found.update(zip(indexes, _identify_reading_alike([jobs[i] for i in indexes])))
        except ConfigError as exc:
            if len(indexes) == 1:  # read for this job alone: its own messages
                found[indexes[0]] = exc
            # Otherwise each of these jobs is read alone below, for its own messages.
    identities = []
    for index, job in enumerate(jobs):
        identity = found[index] if index in found else identify(job)
        if isinstance(identity, ConfigError):
            raise identity
        identities.append(identity)
    return identities


def _reading_key(job: Job) -> tuple[object, ...] | None:
    """Equal for jobs whose training and validation examples read alike; None for a job whose
    examples can only be read for it alone (written in the job file)."""
    training = reading_key(job.training_data)
    if training is None:
        return None
    if job.validation_data is None:
        return (training, None)
    validation = reading_key(job.validation_data)
    return None if validation is None else (training, validation)


def _identify_reading_alike(jobs: Sequence[Job]) -> list[Identity | ConfigErrors]:
    """The identities of ``jobs``, whose examples read alike (the first job's are read, each
    example hashed into every job's digest), or for each job what validate says of its
    examples; a problem reading them raises. The fingerprint is a job's header (``_header``),
    then its training examples, then, when it has validation data, its validation examples."""
    first = jobs[0]
    digests = [hashlib.sha256(_header(job)) for job in jobs]
    # The split's ranks depend on the examples alone: one list serves every job that asks.
    wanted = any(job.validation_split is not None for job in jobs)
    ranks: list[bytes] | None = [] if wanted else None
    trained, validated = Tally(), Tally()
    count = _feed_examples(digests, iter_examples(first.training_data, trained), ranks)
    if first.validation_data is not None:
        for digest in digests:
            # After a separator no example can produce: a length prefix is digits.
            digest.update(b"\nvalidation\n")
        _feed_examples(digests, iter_examples(first.validation_data, validated))
    found: list[Identity | ConfigErrors] = []
    for job, digest in zip(jobs, digests):
        problems = examples_problems(job, trained, validated)
        if problems:  # what validate says of these examples, plan and apply say too
            found.append(ConfigErrors(problems))
            continue
        fingerprint = digest.hexdigest()
        drawn = (split.draw(ranks, job.validation_split, example_rank)
                 if ranks is not None and job.validation_split is not None else None)
        found.append(Identity(fingerprint, tuned_model_id(job.name, fingerprint), count, drawn))
    return found
