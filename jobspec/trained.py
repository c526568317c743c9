"""The examples a job trains on, for plans: its training data less a validation split, as a
sequence that holds none of them (a data set of hundreds of MB is read again when walked, never
held whole), with the count and digest of the pass that checked them."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import overload

from . import data
from .data import Example
from .identity import draw_split, examples_digest
from .spec import Job


class TrainedExamples(Sequence[Example]):
    """The examples a job trains on, as a sequence that holds none of them: walking it reads
    the data file again (a data set of hundreds of MB is never held whole), and an example is
    found by its index the same way (``at`` finds several in one pass). Its length and digest
    come from the pass that checked them."""

    def __init__(self, stream: Callable[[], Iterator[Example]], count: int, digest: str) -> None:
        self._stream = stream
        self.count = count
        self.digest = digest

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Example]:
        return self._stream()

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


def trained_examples(job: Job) -> TrainedExamples:
    """The examples the job trains on: its training data, less the training side of its
    validation split (drawn as identify draws it, identity.draw_split: examples that cannot be
    split stay whole, as identify refuses them)."""
    def all_examples() -> Iterator[Example]:
        return data.iter_examples(job.training_data)

    stream: Callable[[], Iterator[Example]] = all_examples
    if job.validation_split is not None:
        stream, _ = draw_split(all_examples(), job.validation_split).sides(all_examples)

    count = 0

    def counted() -> Iterator[Example]:
        nonlocal count
        for example in stream():
            count += 1
            yield example

    digest = examples_digest(counted())
    return TrainedExamples(stream, count, digest)
