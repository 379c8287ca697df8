"""The shard stream's own shuffle buffer (cloob.trainer.data.shuffle): its order is a function of
the seed alone, which is what exact resume (replay the stream, skip what was trained on) needs."""

from __future__ import annotations

import random

import pytest

from cloob.trainer.data.shuffle import shuffled


def order(n: int, size: int, initial: int, seed: int) -> list[int]:
    return list(shuffled(range(n), size, initial, random.Random(seed)))


@pytest.mark.parametrize(
    ("n", "size", "initial"),
    [(0, 10, 5), (1, 10, 5), (50, 1, 1), (50, 8, 4), (500, 100, 100), (500, 1000, 100)],
)
def test_every_item_exactly_once(n, size, initial):
    assert sorted(order(n, size, initial, seed=1)) == list(range(n))


def test_order_is_determined_by_the_seed():
    assert order(300, 64, 16, seed=5) == order(300, 64, 16, seed=5)
    assert order(300, 64, 16, seed=5) != order(300, 64, 16, seed=6)
    assert order(300, 64, 16, seed=5) != list(range(300))


def test_a_resume_after_k_items_continues_the_same_order():
    """A resumed worker replays its stream and skips the first k items: what follows is exactly
    what the uninterrupted run saw next, for any k (inside the fill phase and after it)."""
    straight = order(400, 100, 20, seed=9)
    for k in (0, 1, 19, 20, 57, 150, 399):
        replay = shuffled(range(400), 100, 20, random.Random(9))
        for _ in range(k):
            next(replay)
        assert list(replay) == straight[k:]


def test_the_buffer_holds_at_most_size_items_and_starts_after_initial():
    """Item i can come out no earlier than when it was read: with buffer `size` the output lags
    the input by at most `size`, and nothing comes out before `initial` items are in."""
    read: list[int] = []

    def source():
        for i in range(200):
            read.append(i)
            yield i

    out = shuffled(source(), 16, 8, random.Random(0))
    first = next(out)
    assert len(read) == 8 and first < 8
    for _ in range(100):
        next(out)
        assert len(read) - 101 <= 16


def test_the_draws_are_webdatasets_draw_for_draw():
    """The rule is the one the trainer used through webdataset (a private helper, now replaced):
    same seed, same order, so runs and checkpoints from before continue identically."""
    filters = pytest.importorskip("webdataset.filters")
    reference = getattr(filters, "_shuffle", None)
    if reference is None:
        pytest.skip("this webdataset has no _shuffle to compare with")
    for n, size, initial, seed in [(300, 100, 100, 3), (57, 8, 4, 4), (1000, 1000, 100, 5)]:
        expected = list(reference(iter(range(n)), size, initial, random.Random(seed)))
        assert order(n, size, initial, seed) == expected
