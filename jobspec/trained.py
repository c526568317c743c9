"""The examples a job trains on, for plans: its training data less a validation split, with the
count and digest of the pass that checked them. A plan walks them again (the backend counts their
tokens, the longest is found): that pass keeps them when they are few (as many characters as its
caller allows), so that those walks read memory, not the file; a larger data set (hundreds of
MB) is never held whole, and is read again when walked. The split is the one identify drew
(``Identity.split``), never drawn again: that would be one more pass over the file."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import overload

from . import data
from .data import Example
from .identity import Identity, examples_digest
from .spec import Job


class TrainedExamples(Sequence[Example]):
    """The examples a job trains on, as a sequence: the examples themselves when ``held``, else
    read from the data file again each time it is walked, and an example is found by its index
    the same way (``at`` finds several in one pass). Its length and digest come from the pass
    that checked them."""

    def __init__(self, stream: Callable[[], Iterator[Example]], count: int, digest: str,
                 held: list[Example] | None = None) -> None:
        self._stream = stream
        self.count = count
        self.digest = digest
        self._held = held

    @property
    def held_characters(self) -> int:
        """The characters of example text this holds in memory (0: it reads the file)."""
        return sum(map(_characters, self._held)) if self._held is not None else 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Example]:
        return iter(self._held) if self._held is not None else self._stream()

    @overload
    def __getitem__(self, index: int) -> Example: ...
    @overload
    def __getitem__(self, index: slice) -> list[Example]: ...

    def __getitem__(self, index: int | slice) -> Example | list[Example]:
        if isinstance(index, slice):
            return list(itertools.islice(self, *index.indices(self.count)))
        index = index + self.count if index < 0 else index
        if not 0 <= index < self.count:
            raise IndexError(index)
        return self.at([index])[index]

    def at(self, indices: Iterable[int]) -> dict[int, Example]:
        """The examples at ``indices`` (those in range), in one pass."""
        wanted = {i for i in indices if 0 <= i < self.count}
        found: dict[int, Example] = {}
        if wanted:
            for index, example in enumerate(self):
                if index in wanted:
                    found[index] = example
                    if len(found) == len(wanted):
                        break
        return found


def _characters(example: Example) -> int:
    return len(example.text_input) + len(example.output)


def trained_examples(job: Job, identity: Identity, *, hold: int = 0) -> TrainedExamples:
    """The examples the job trains on: its training data, less the training side of the
    validation split identify drew (``identity.split``); read once here, for their count and
    digest, and kept in memory when their text is at most ``hold`` characters."""
    def all_examples() -> Iterator[Example]:
        return data.iter_examples(job.training_data)

    stream: Callable[[], Iterator[Example]] = all_examples
    if identity.split is not None:
        stream, _ = identity.split.sides(all_examples)

    count, characters = 0, 0
    held: list[Example] | None = [] if hold > 0 else None

    def counted() -> Iterator[Example]:
        nonlocal count, characters, held
        for example in stream():
            count += 1
            if held is not None:
                characters += _characters(example)
                if characters <= hold:
                    held.append(example)
                else:
                    held = None  # too many to keep: walked, they are read again
            yield example

    digest = examples_digest(counted())
    return TrainedExamples(stream, count, digest, held)
