"""Pinned-metadata parsers (stand-ins shaped like the real files) and each folder → label rule."""

from __future__ import annotations

import io
import tarfile

import pytest

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.metadata import imagenet_templates, parse_clip_prompts, parse_cloob
from cloob.benchmarks.data.registry import label_map
from cloob.common.cli import UsageError
from support.benchmark_data import standin_clip_prompts, standin_cloob_metadata

CLOOB_SOURCE = """
birdsnap_classnames = [
    "Coopers Hawk", "Northern Goshawk",
]

gtsrb_classnames = ['stop', "red and white circle 20 kph speed limit"]

birdsnap_templates = [
    lambda c: f'a photo of a {c}, a type of bird.',
]

gtsrb_templates = [
    lambda c: f'a zoomed in photo of a "{c}" traffic sign.',
    lambda c: f'a centered photo of a "{c}" traffic sign.',
]

import os  # never executed: parsing must not run anything
os.system("echo pwned")
"""


def test_cloob_zeroshot_data_is_parsed_not_executed(capfd):
    lists = parse_cloob(CLOOB_SOURCE)
    assert lists["birdsnap"].classnames == ["Coopers Hawk", "Northern Goshawk"]
    assert lists["gtsrb"].templates == [
        'a zoomed in photo of a "{}" traffic sign.',
        'a centered photo of a "{}" traffic sign.',
    ]
    assert "pwned" not in capfd.readouterr().out


def test_lambda_templates_with_other_expressions_are_refused():
    with pytest.raises(UsageError, match="unsupported template"):
        parse_cloob("x_classnames = ['a']\nx_templates = [lambda c: f'{c.upper()}']\n")


def test_standin_generators_round_trip():
    lists = {"flowers102": (["rose", "colt's foot"], ["a photo of a {}, a type of flower."])}
    assert (
        parse_cloob(standin_cloob_metadata(lists))["flowers102"].templates == lists["flowers102"][1]
    )
    clip = parse_clip_prompts(
        standin_clip_prompts(
            {"Flowers102": lists["flowers102"], "GTSRB": (["stop"], ['a "{}" sign.'])}
        )
    )
    assert clip["Flowers102"].classnames == ["rose", "colt's foot"]
    assert clip["GTSRB"].templates == ['a "{}" sign.']


def test_imagenet_templates_from_open_clip():
    templates = imagenet_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."


@pytest.mark.parametrize(
    "folders, names, expected, rule",
    [
        (
            ["000", "001", "003"],
            ["a", "b", "c", "d"],
            {"000": 0, "001": 1, "003": 3},
            "int(folder)",
        ),
        (["001", "002", "003"], ["a", "b", "c"], {"001": 0, "002": 1, "003": 2}, "int(folder) - 1"),
        (
            ["002", "004"],
            ["a", "b", "c", "d"],
            {"002": 1, "004": 3},
            "int(folder) - 1",
        ),  # 4 = n → 1-based
        (
            ["Sweet_Pea", "rose"],
            ["rose", "sweet pea"],
            {"Sweet_Pea": 1, "rose": 0},
            "folder name = class name",
        ),
        (["b", "a", "c"], ["x", "y", "z"], {"a": 0, "b": 1, "c": 2}, "sorted folder names"),
    ],
)
def test_index_rule(folders, names, expected, rule):
    assert label_map(registry.BY_INDEX, sorted(folders), names) == (expected, rule)


def test_index_rule_refuses_ambiguous_or_short():
    with pytest.raises(UsageError, match="0- or 1-based"):
        label_map(registry.BY_INDEX, ["002", "003"], ["a", "b", "c", "d"])
    with pytest.raises(UsageError, match="cannot map by sorted order"):
        label_map(registry.BY_INDEX, ["x", "y"], ["a", "b", "c"])


def test_imagenetv2_int_rule_is_not_string_sorted():
    folders = sorted(["0", "1", "10", "100", "2"])  # what plain ImageFolder would index 0..4
    mapping, _ = label_map(registry.BY_INT, folders, ["c"] * 1000)
    assert mapping == {"0": 0, "1": 1, "10": 10, "100": 100, "2": 2}
    with pytest.raises(UsageError, match="outside"):
        label_map(registry.BY_INT, ["1000"], ["c"] * 1000)


def test_imagenet_wnid_rule():
    wnids = [f"n{i:08d}" for i in range(1000)]
    mapping, rule = label_map(registry.BY_WNID, wnids, ["c"] * 1000)
    assert mapping["n00000999"] == 999 and rule == "sorted wnid folders"
    with pytest.raises(UsageError, match="1000 wnid folders"):
        label_map(registry.BY_WNID, wnids[:10], ["c"] * 1000)


def test_imagenet_from_raw_tar_and_devkit(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    import numpy as np

    from cloob.benchmarks.data import registry as reg
    from cloob.benchmarks.data.datasets import registry_task
    from cloob.benchmarks.data.fetch import FetchConfig, prepare_imagenet
    from support.benchmark_data import png_bytes

    # IDs 1..1000 are the leaves, deliberately NOT in wnid order (as in the real meta.mat)
    wnids = [f"n{(i * 7919) % 100000:08d}" for i in range(1000)]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    synsets = np.array(
        [(i + 1, w, 0) for i, w in enumerate(wnids)] + [(1001, "n99999999", 5)], dtype=dtype
    )
    buf = io.BytesIO()
    scipy_io.savemat(buf, {"synsets": synsets})
    truth = "17\n3\n1000\n"  # image 1 → ID 17, image 2 → ID 3, image 3 → ID 1000
    with tarfile.open(tmp_path / "ILSVRC2012_devkit_t12.tar.gz", "w:gz") as tf:
        for name, data in (
            ("data/meta.mat", buf.getvalue()),
            ("data/ILSVRC2012_validation_ground_truth.txt", truth.encode()),
        ):
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with tarfile.open(tmp_path / "ILSVRC2012_img_val.tar", "w") as tf:
        for i in range(1, 4):
            data = png_bytes(i)
            info = tarfile.TarInfo(f"ILSVRC2012_val_{i:08d}.JPEG")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    result = prepare_imagenet(
        tmp_path / "ILSVRC2012_img_val.tar", FetchConfig(tmp_path / "root", progress=False)
    )
    assert result.n_images == 3
    task = registry_task(reg.get("imagenet"), tmp_path / "root")
    order = sorted(wnids)
    got = {path.rsplit("/", 2)[-2]: label for path, label in task.samples}
    assert got == {
        wnids[16]: order.index(wnids[16]),
        wnids[2]: order.index(wnids[2]),
        wnids[999]: order.index(wnids[999]),
    }
