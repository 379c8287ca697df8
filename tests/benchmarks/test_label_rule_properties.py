"""Property-based checks (hypothesis) of the folder → label rules of `label_map`.

Whatever the folders and class names, a rule either refuses with a UsageError or maps every
folder to its own label in 0..n-1; and each rule gives the label it promises."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.registry import label_map
from cloob.common.cli import UsageError

# Few, similar names, so that they collide in the ways that matter: `a b`, `a_b` and `A  b` are one
# class name; `1`, `01` and `001` are one number.
DIGITS = st.builds("{}{}".format, st.sampled_from(["", "0", "00"]), st.integers(0, 4))
WORDS = st.builds(
    "{}{}{}".format,
    st.sampled_from(["a", "A", "b"]),
    st.sampled_from(["", " ", "_", "  "]),
    st.sampled_from(["", "b", "c"]),
)
NAME = st.one_of(DIGITS, WORDS)
FOLDERS = st.one_of(
    *(st.lists(s, min_size=1, max_size=5, unique=True) for s in (DIGITS, WORDS, NAME))
)
RULES = st.sampled_from([registry.BY_INDEX, registry.BY_INT, registry.BY_WNID])


def test_a_rule_refuses_or_gives_every_folder_its_own_label():
    accepted: list[str] = []

    @settings(max_examples=300, deadline=None)
    @given(RULES, FOLDERS, st.lists(NAME, min_size=1, max_size=5))
    @example(registry.BY_INDEX, ["a", "a "], ["a"])  # found by this test: one class, two folders
    @example(registry.BY_INDEX, ["01", "1"], ["a", "b"])
    def refuses_or_maps(rule, folders, classnames):
        try:
            mapping, words = label_map(rule, folders, classnames)
        except UsageError:
            return
        accepted.append(rule)
        assert set(mapping) == set(folders) and words
        assert all(0 <= label < len(classnames) for label in mapping.values())
        assert len(set(mapping.values())) == len(mapping), mapping

    refuses_or_maps()
    # A label_map that refused every input would pass the property vacuously: the inputs must
    # reach the mapping for the rules they can satisfy (no generated folder is a wnid, so
    # BY_WNID only refuses here; its mapping is tested in test_metadata_and_labels.py).
    counts = {rule: accepted.count(rule) for rule in (registry.BY_INDEX, registry.BY_INT)}
    assert min(counts.values()) >= 1, counts


@settings(deadline=None)
@given(
    st.lists(st.text("abcdef", min_size=1, max_size=4), min_size=1, max_size=8, unique=True),
    st.data(),
)
def test_folders_named_after_classes_get_their_index(classnames, data):
    chosen = data.draw(st.lists(st.sampled_from(classnames), min_size=1, unique=True))
    folders = [c.replace(" ", "_") for c in chosen]
    mapping, words = label_map(registry.BY_INDEX, folders, classnames)
    assert words == "folder name = class name"
    assert mapping == {f: classnames.index(c) for f, c in zip(folders, chosen, strict=True)}


@settings(deadline=None)
@given(st.integers(1, 30), st.data())
def test_numeric_folders_count_from_zero_when_zero_is_there(n, data):
    labels = data.draw(st.sets(st.integers(0, n - 1), min_size=1).map(sorted))
    if 0 not in labels and len(labels) != n:
        labels = [0, *labels]
    folders = [str(v) for v in labels]
    for rule in (registry.BY_INDEX, registry.BY_INT):
        mapping, _ = label_map(rule, folders, [f"class {i}" for i in range(n)])
        assert mapping == {f: int(f) for f in folders}


@settings(deadline=None)
@given(st.lists(st.text("xyz", min_size=1, max_size=4), min_size=1, max_size=8, unique=True))
def test_other_folders_follow_sorted_order(folders):
    classnames = [f"class {i}" for i in range(len(folders))]
    mapping, words = label_map(registry.BY_INDEX, folders, classnames)
    assert words == "sorted folder names"
    assert mapping == {f: i for i, f in enumerate(sorted(folders))}
