"""The shard stream's shuffle buffer: ours, small, and exactly reproducible.

Exact resume replays a worker's stream from the start of the epoch and skips what was already
trained on, so the order this buffer produces must depend on nothing but its input and its seeded
`random.Random`. The rule (the one webdataset's buffer has used, kept draw for draw so runs and
checkpoints from before are continued identically):

- while the buffer is below `size`, each step reads two samples from the input (one otherwise),
  so it fills while already yielding;
- once it holds `initial` samples, each step yields one: index k = rng.randint(0, len - 1), whose
  slot is then filled with the buffer's last sample (O(1) removal);
- at the end of the input, the rest is drained the same way.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def shuffled(items: Iterable[T], size: int, initial: int, rng: random.Random) -> Iterator[T]:
    """`items` in buffered random order (see the module docstring); one `rng.randint` per item."""
    source = iter(items)
    initial = min(initial, size)
    buffer: list[T] = []
    for item in source:
        buffer.append(item)
        if len(buffer) < size:
            buffer.extend(itertools.islice(source, 1))  # a second item, if any is left
        if len(buffer) >= initial:
            yield _take(buffer, rng)
    while buffer:
        yield _take(buffer, rng)


def _take(buffer: list[T], rng: random.Random) -> T:
    k = rng.randint(0, len(buffer) - 1)
    item = buffer[k]
    buffer[k] = buffer[-1]
    buffer.pop()
    return item
