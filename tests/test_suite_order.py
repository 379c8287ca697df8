"""How the suite spreads over xdist's workers (tests/conftest.py): the long files are handed out
first, and each worker's processes get their share of the cores."""

from __future__ import annotations

from pathlib import Path

import conftest
import pytest

TESTS = Path(__file__).parent


@pytest.mark.parametrize("name", conftest.LONGEST_FIRST)
def test_every_file_named_longest_first_exists(name):
    assert (TESTS / name).is_file(), f"{name} in LONGEST_FIRST is not a test file"


def test_the_long_files_come_first_and_the_rest_keep_their_order():
    class Item:  # what the ordering reads of a collected test
        def __init__(self, rel: str):
            self.path = TESTS / rel

    names = ["common/test_text.py", conftest.LONGEST_FIRST[1], "a/test_b.py"]
    names += [conftest.LONGEST_FIRST[0], "common/test_text.py"]
    items = [Item(n) for n in names]
    conftest.pytest_collection_modifyitems(items)  # type: ignore[arg-type]
    assert [i.path.relative_to(TESTS).as_posix() for i in items] == [
        conftest.LONGEST_FIRST[0],
        conftest.LONGEST_FIRST[1],
        "common/test_text.py",
        "a/test_b.py",
        "common/test_text.py",
    ]


@pytest.mark.parametrize(
    "env, cores, threads",
    [
        ({"PYTEST_XDIST_WORKER_COUNT": "2"}, 2, "1"),
        ({"PYTEST_XDIST_WORKER_COUNT": "2"}, 8, "4"),
        ({"PYTEST_XDIST_WORKER_COUNT": "4"}, 2, "1"),
        ({"PYTEST_XDIST_WORKER_COUNT": "2", "OMP_NUM_THREADS": "3"}, 2, "3"),  # the user's
        ({}, 2, None),  # -n 0: one process, all the cores
    ],
)
def test_each_worker_gets_its_share_of_the_cores(env, cores, threads):
    conftest.share_the_cores(env, cores)
    assert env.get("OMP_NUM_THREADS") == threads
