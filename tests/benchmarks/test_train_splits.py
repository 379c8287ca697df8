"""`benchmarks fetch --linear-probe` / `--train-dir` from a loopback mirror in the official
layouts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.fetch import ChecksumMismatch, FetchConfig, read_checksums
from cloob.benchmarks.data.probe_data import registry_probe
from cloob.benchmarks.data.train_splits import fetch_probe_splits
from support.benchmark_data import (
    BIRD_COUNTS,
    BIRDS,
    FLOWERS,
    class_tree,
    cloob_zip,
    sha256,
    standin_clip_prompts,
    standin_cloob_metadata,
    write_tiny_checkpoint,
    write_tree,
)
from support.probe_data import country211_tgz, flowers_files, gtsrb_zips

COUNTRIES = ["Andorra", "United Arab Emirates", "Afghanistan", "Antigua and Barbuda"]
CODES = ["AD", "AE", "AF", "AG"]  # sorted ISO codes = CLIP's class order
SIGNS = [
    "red and white circle 20 kph speed limit",
    "red and white circle 30 kph speed limit",
    "stop",
]
FLOWER_LABELS = [1, 2, 3, 4] * 5  # image i (1-based) has label FLOWER_LABELS[i - 1]
FLOWER_SPLITS = {
    "trnid": list(range(1, 9)),
    "valid": list(range(9, 13)),
    "tstid": list(range(13, 21)),
}
GTSRB_TEST = [0, 1, 2, 2, 1, 0, 2]
ARCHIVES = (
    "country211.tgz",
    "102flowers.tgz",
    "imagelabels.mat",
    "setid.mat",
    "GTSRB-Training_fixed.zip",
    "GTSRB_Final_Test_Images.zip",
    "GTSRB_Final_Test_GT.zip",
)


@pytest.fixture
def probe_mirror(http_server, http_root, tmp_path):
    lists = {
        "country211": (COUNTRIES, ["a photo i took in {}."]),
        "flowers102": (FLOWERS, ["a photo of a {}."]),
        "gtsrb": (SIGNS, ["a zoomed in photo of a '{}' traffic sign."]),
        "birdsnap": (BIRDS, ["a photo of a {}."]),
    }
    (http_root / "zeroshot_data.py").write_text(standin_cloob_metadata(lists))
    (http_root / "prompts.md").write_text(standin_clip_prompts({"Country211": lists["country211"]}))
    country211_tgz(http_root / "country211.tgz", CODES, {"train": 3, "valid": 1, "test": 2})
    flowers_files(http_root, FLOWER_LABELS, FLOWER_SPLITS)
    gtsrb_zips(http_root, [4, 3, 5], GTSRB_TEST)
    cloob_zip(http_root / "birdsnap.zip", "birdsnap", BIRD_COUNTS, seed=2)
    checksums = tmp_path / "checksums.sha256"
    checksums.write_text(
        "".join(
            f"{sha256(http_root / n)}  {n}\n" for n in ("zeroshot_data.py", "prompts.md", *ARCHIVES)
        )
    )
    http_server.checksums = checksums
    return http_server


def _labels(task) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for path, label in task.samples:
        out.setdefault(Path(path).name, set()).add(label)
    return out


def test_fetch_official_splits_then_probe(cli, probe_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps the listing at 80 columns otherwise
    root = tmp_path / "bench"
    code, _, err = cli(
        "fetch",
        "country211",
        "flowers102",
        "gtsrb",
        "--linear-probe",
        "--root",
        root,
        "--base-url",
        probe_mirror.base_url,
        "--checksums",
        probe_mirror.checksums,
        "--no-progress",
    )
    assert code == 0, err
    assert (
        "country211 (linear probe): fetched, 24 images" in err
        and "gtsrb (linear probe): fetched, 19" in err
    )

    country = registry_probe(registry.get("country211"), root)
    assert (len(country.train.samples), len(country.val.samples), len(country.test.samples)) == (
        12,
        4,
        8,
    )
    assert country.train.label_rule == "sorted folder names" and country.n_classes == 4
    assert {Path(p).parent.name: lab for p, lab in country.test.samples} == {
        c: i for i, c in enumerate(CODES)
    }

    flowers = registry_probe(registry.get("flowers102"), root)
    assert (len(flowers.train.samples), len(flowers.val.samples), len(flowers.test.samples)) == (
        8,
        4,
        8,
    )
    for task in (
        flowers.train,
        flowers.val,
        flowers.test,
    ):  # image_i carries imagelabels.mat's label - 1
        for path, label in task.samples:
            assert label == FLOWER_LABELS[int(Path(path).stem.split("_")[1]) - 1] - 1

    gtsrb = registry_probe(registry.get("gtsrb"), root)
    assert (
        gtsrb.val is None
        and len(gtsrb.train.samples) == 12
        and gtsrb.train.label_rule == "int(folder)"
    )
    assert {f"{i:05d}.ppm": {lab} for i, lab in enumerate(GTSRB_TEST)} == _labels(gtsrb.test)
    source = json.loads((root / "gtsrb-probe" / "SOURCE.json").read_text())
    assert source["files"]["GTSRB_Final_Test_GT.zip"]["sha256"] == sha256(
        probe_mirror.root / "GTSRB_Final_Test_GT.zip"
    )
    assert not list((root / ".downloads").glob("*")) and not list(root.glob(".tmp-*"))

    code, listing, _ = cli("list", "--root", root)
    assert code == 0 and "yes (official train/val/test, 24 images)" in listing
    assert "local folder needed (--train-dir)" in listing and "from imagenet" in listing

    hits = probe_mirror.hits("country211.tgz")
    code, _, err = cli("fetch", "country211", "--linear-probe", "--root", root, "--no-progress")
    assert code == 0 and "present" in err and probe_mirror.hits("country211.tgz") == hits

    ckpt = tmp_path / "m.pt"
    write_tiny_checkpoint(ckpt, 3, method=None)
    code, _, err = cli(
        "linear-probe",
        "--ckpt",
        ckpt,
        "--datasets",
        "all",
        "--root",
        root,
        "--out",
        tmp_path / "o",
        "--workers",
        "0",
        "--no-progress",
    )
    assert code == 0, err
    records = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert [(r["dataset"], r["n_train"], r["n_val"], r["n_images"]) for r in records] == [
        ("country211", 12, 4, 8),
        ("flowers102", 8, 4, 8),
        ("gtsrb", 9, 3, 7),
    ]
    assert "the dataset's validation split" in records[0]["protocol"]
    assert "carved from train" in records[2]["protocol"]


def test_published_md5_catches_other_bytes(probe_mirror, tmp_path):
    checksums = read_checksums(probe_mirror.checksums)
    del checksums["setid.mat"]  # no override: the published md5 must refuse the stand-in
    cfg = FetchConfig(tmp_path, probe_mirror.base_url, checksums, progress=False)
    with pytest.raises(ChecksumMismatch, match="setid.mat.*md5 .* expected the published a5357ecc"):
        fetch_probe_splits(registry.get("flowers102"), cfg)
    assert not (tmp_path / "flowers102-probe").exists()


def test_interrupted_archive_resumes(probe_mirror, tmp_path):
    probe_mirror.fault("country211.tgz", "cut", keep_bytes=3000, times=1)
    cfg = FetchConfig(
        tmp_path, probe_mirror.base_url, read_checksums(probe_mirror.checksums), progress=False
    )
    assert fetch_probe_splits(registry.get("country211"), cfg).n_images == 24
    assert ("/country211.tgz", "bytes=3000-") in probe_mirror.range_requests


def test_local_train_folders(cli, probe_mirror, tmp_path):
    root = tmp_path / "bench"
    code, _, err = cli("fetch", "birdsnap", "--linear-probe", "--root", root, "--no-progress")
    assert code == 2 and "no downloadable train split" in err and "--train-dir PATH" in err
    write_tree(tmp_path / "birds-train", class_tree({f"{i:03d}": 1 for i in range(12)}, seed=4))
    code, _, err = cli(
        "fetch",
        "birdsnap",
        "--root",
        root,
        "--train-dir",
        tmp_path / "birds-train",
        "--no-progress",
    )
    assert code == 2 and "first run: benchmarks fetch birdsnap" in err
    code, _, err = cli(
        "fetch",
        "birdsnap",
        "--root",
        root,
        "--base-url",
        probe_mirror.base_url,
        "--checksums",
        probe_mirror.checksums,
        "--no-progress",
    )
    assert code == 0, err
    code, _, err = cli(
        "fetch",
        "birdsnap",
        "--root",
        root,
        "--train-dir",
        tmp_path / "birds-train",
        "--no-progress",
    )
    assert code == 0 and "12 images" in err, err
    birds = registry_probe(registry.get("birdsnap"), root)
    assert birds.test.root == root / "birdsnap" / "birdsnap" / "test" and birds.val is None
    assert {Path(p).parent.name: lab for p, lab in birds.train.samples} == {
        f"{i:03d}": i for i in range(12)
    }

    wnids = sorted(f"n{10_000_000 + 7 * i:08d}" for i in range(1000))
    for w in wnids:
        (tmp_path / "in-train" / w).mkdir(parents=True)
        (tmp_path / "in-val" / "val" / w).mkdir(parents=True)
    write_tree(tmp_path / "in-train", class_tree({wnids[0]: 2, wnids[5]: 1}))
    write_tree(tmp_path / "in-val" / "val", class_tree({wnids[0]: 1}))
    assert cli("fetch", "imagenet", "--root", root, "--imagenet", tmp_path / "in-val")[0] == 0
    code, _, err = cli(
        "fetch", "imagenet", "--root", root, "--train-dir", tmp_path / "in-train", "--no-progress"
    )
    assert code == 0 and "3 images" in err, err
    imagenet = registry_probe(registry.get("imagenet"), root)
    assert imagenet.train.label_rule == "sorted wnid folders" and len(imagenet.test.samples) == 1
    assert imagenet.train.name == "imagenet:train"  # ImageNet V2 probes share these cached features
    assert {Path(p).parent.name: lab for p, lab in imagenet.train.samples} == {
        wnids[0]: 0,
        wnids[5]: 5,
    }
    code, _, err = cli(
        "linear-probe", "--ckpt", tmp_path / "none.pt", "--datasets", "imagenetv2", "--root", root
    )
    assert (
        code == 2 and "ImageNet V2 is not prepared" in err
    )  # train split found; the test split is missing
