"""A validation split: which of a job's training examples it holds out, and how many examples
each side gets. The one place that decides both: identify draws a job's split (and carries it on
its ``Identity``), the backends send its two sides, plans estimate and count steps from its
sizes, so what a plan says is trained is what is trained.

A split is drawn from the examples themselves, never from their order or file format: each
example has a rank, the SHA-256 of its canonical byte form (``identity.example_rank``), and the
split holds out the examples of lowest rank. Equal examples have equal ranks and so go to one
side together: no example is both trained on and measured. Whether a split can be drawn at all
(two different examples at least) is said, with the job file's line, by ``data.split_problem``
on what reading the examples found; a split drawn from examples that cannot give one holds out
nothing.

A drawn split is three numbers and one rank, whatever the size of the data set: its sides are
found by ranking each example again as it streams past (``Split.sides``), never by holding the
examples, or their indices, in memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .data import Example

Stream = Callable[[], Iterator[Example]]  # reads the examples afresh, one at a time
Rank = Callable[[Example], bytes]


def split_count(example_count: int, fraction: float) -> int:
    """How many of ``example_count`` examples a validation split of ``fraction`` aims to hold
    out: the nearest whole number, at least one, and never all of them (0 when there are fewer
    than two examples, which cannot be split). Equal examples are held out or trained on
    together, so a split holds out this many, or as near as they allow (``draw``)."""
    if example_count < 2:
        return 0
    return min(example_count - 1, max(1, round(example_count * fraction)))


@dataclass(frozen=True)
class Split:
    """A validation split as drawn: the sizes of its sides, and the highest rank it holds out
    (every example of that rank or lower is held out, every other is trained on)."""

    fraction: float
    total: int  # examples in the training data, both sides together
    held: int  # of them, held out for validation
    last_held: bytes | None  # None: nothing held out (the examples cannot be split)
    rank: Rank = field(compare=False, repr=False)  # how an example is ranked (identity's)

    @property
    def trained(self) -> int:
        """How many examples the job trains on."""
        return self.total - self.held

    def holds_out(self, example: Example) -> bool:
        return self.last_held is not None and self.rank(example) <= self.last_held

    def sides(self, examples: Stream) -> tuple[Stream, Stream]:
        """(training, validation): each side of ``examples`` as a stream, in their order."""
        def side(held: bool) -> Stream:
            return lambda: (e for e in examples() if self.holds_out(e) == held)
        return side(False), side(True)

    def divide(self, examples: Iterable[Example]) -> tuple[list[Example], list[Example]]:
        """(training, validation) of ``examples`` in lists, each in their order: for a few."""
        training: list[Example] = []
        validation: list[Example] = []
        for example in examples:
            (validation if self.holds_out(example) else training).append(example)
        return training, validation


def draw(ranks: Iterable[bytes], fraction: float, rank: Rank) -> Split:
    """The split of ``fraction`` of the examples whose ranks (by ``rank``) are ``ranks``, in
    any order. Equal examples (equal ranks) form one group, and a group goes to one side whole.
    Groups are held out lowest rank first, as many as bring the count nearest ``split_count``
    (the fewer on a tie), and at least one group stays on each side; with fewer than two
    different examples nothing can be split, and nothing is held out."""
    groups = Counter(ranks)
    total = sum(groups.values())
    if len(groups) < 2:
        return Split(fraction, total, 0, None, rank)
    target = split_count(total, fraction)
    ordered = sorted(groups)
    best, best_distance, count, best_count = 0, None, 0, 0
    for taken, group in enumerate(ordered[:-1]):
        count += groups[group]
        distance = abs(count - target)
        if best_distance is None or distance < best_distance:
            best, best_distance, best_count = taken, distance, count
        if count >= target:  # every further group only moves away from the target
            break
    return Split(fraction, total, best_count, ordered[best], rank)
