"""Fetching from a loopback mirror: layouts, label rules, resume, checksums, unsafe archives."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from cloob.benchmarks.data import registry
from cloob.benchmarks.data.datasets import registry_task
from cloob.benchmarks.data.extract import UnsafeArchive, extract
from cloob.benchmarks.data.fetch import (
    ChecksumMismatch,
    FetchConfig,
    fetch_dataset,
    prepare_imagenet,
    read_checksums,
)
from cloob.common.cli import UsageError
from support.benchmark_data import BIRD_COUNTS, BIRDS, FLOWERS, class_tree, cloob_zip, write_tree


def config(mirror, root: Path, **kw) -> FetchConfig:
    return FetchConfig(root, mirror.url, read_checksums(mirror.checksums), progress=False, **kw)


def labels_by_folder(task) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for path, label in task.samples:
        out.setdefault(Path(path).parent.name, set()).add(label)
    return out


def test_birdsnap_keeps_empty_folders_in_the_label_space(mirror, tmp_path):
    result = fetch_dataset(registry.get("birdsnap"), config(mirror, tmp_path / "root"))
    assert result.status == "fetched"
    source = json.loads((result.path / "SOURCE.json").read_text())
    assert source["images"] == "birdsnap/test" and source["n_class_folders"] == 12
    assert source["empty_class_folders"] == ["003", "007"]
    assert source["label_rule"] == "int(folder)"
    assert source["sha256"] and source["size"] == (mirror.root / "birdsnap.zip").stat().st_size
    task = registry_task(registry.get("birdsnap"), tmp_path / "root")
    assert task.classnames == BIRDS  # CLOOB's species-id order, not CLIP's alphabetical one
    # every folder keeps its own index: no shift after the empty 003 and 007
    assert labels_by_folder(task) == {f: {int(f)} for f, n in BIRD_COUNTS.items() if n}
    assert len(task.samples) == sum(BIRD_COUNTS.values())
    assert source["metadata"]["classnames_match_clip_order"] is False


def test_flowers_named_folders_and_present_on_second_run(mirror, tmp_path):
    cfg = config(mirror, tmp_path)
    fetch_dataset(registry.get("flowers102"), cfg)
    task = registry_task(registry.get("flowers102"), tmp_path / "flowers102")
    assert task.label_rule == "folder name = class name"
    assert labels_by_folder(task) == {name: {i} for i, name in enumerate(FLOWERS)}
    assert task.templates == ["a photo of a {}, a type of flower."]
    hits = mirror.server.hits("flowers102.zip")
    again = fetch_dataset(registry.get("flowers102"), cfg)
    assert again.status == "present" and again.n_images == 8
    assert mirror.server.hits("flowers102.zip") == hits  # verified on disk, not downloaded again
    assert (
        not list(tmp_path.glob(".tmp-*"))
        and not (tmp_path / ".downloads" / "flowers102.zip").exists()
    )


def test_imagenetv2_labels_are_int_folder(mirror, tmp_path):
    fetch_dataset(registry.get("imagenetv2"), config(mirror, tmp_path))
    task = registry_task(registry.get("imagenetv2"), tmp_path / "imagenetv2")
    assert task.label_rule == "int(folder)" and task.n_classes == 1000 and len(task.templates) == 80
    assert labels_by_folder(task) == {f: {int(f)} for f in ("0", "1", "2", "10", "100", "999")}


def test_imagenet_val_folder_uses_sorted_wnids(tmp_path):
    wnids = sorted(f"n{10_000_000 + 7 * i:08d}" for i in range(1000))
    val = tmp_path / "user" / "val"
    for w in wnids:
        (val / w).mkdir(parents=True)
    write_tree(val, class_tree({wnids[0]: 1, wnids[1]: 1, wnids[999]: 2}))
    result = prepare_imagenet(tmp_path / "user", FetchConfig(tmp_path / "root", progress=False))
    assert result.n_images == 4
    task = registry_task(registry.get("imagenet"), tmp_path / "root")
    assert labels_by_folder(task) == {wnids[0]: {0}, wnids[1]: {1}, wnids[999]: {999}}
    assert (
        task.classnames[0] == "tench" and task.classnames[999] == "toilet paper"
    )  # open_clip's CLIP names


def test_interrupted_download_resumes_with_range(mirror, tmp_path):
    mirror.server.fault("flowers102.zip", "cut", keep_bytes=2000, times=1)
    result = fetch_dataset(registry.get("flowers102"), config(mirror, tmp_path))
    assert result.n_images == 8
    assert ("/flowers102.zip", "bytes=2000-") in mirror.server.range_requests


def test_checksum_mismatch_keeps_previous_copy(mirror, tmp_path):
    cfg = config(mirror, tmp_path)
    fetch_dataset(registry.get("flowers102"), cfg)
    before = (tmp_path / "flowers102" / "SOURCE.json").read_text()
    cloob_zip(
        mirror.root / "flowers102.zip", "flowers102", {n: 3 for n in FLOWERS}, seed=9
    )  # host changed
    cfg.force = True
    with pytest.raises(
        ChecksumMismatch,
        match="checksum mismatch for flowers102.zip.*previous copy .*flowers102 is kept",
    ):
        fetch_dataset(registry.get("flowers102"), cfg)
    assert (tmp_path / "flowers102" / "SOURCE.json").read_text() == before
    assert len(registry_task(registry.get("flowers102"), tmp_path).samples) == 8


def test_metadata_standins_need_their_checksums(mirror, tmp_path):
    cfg = FetchConfig(tmp_path, mirror.url, {}, progress=False)  # pinned real checksums only
    with pytest.raises(ChecksumMismatch, match=r"zeroshot_data.py|prompts.md.*--checksums"):
        fetch_dataset(registry.get("flowers102"), cfg)
    assert not (tmp_path / "flowers102").exists()


def _zip_with(path: Path, name: str, *, symlink: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/test/a/img.png", b"x")
        info = zipfile.ZipInfo(name)
        if symlink:
            info.external_attr = 0o120777 << 16
        zf.writestr(info, b"/etc/passwd" if symlink else b"owned")
    return path


@pytest.mark.parametrize("member", ["../../evil.txt", "/abs/evil.txt", "ok/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, member):
    archive = _zip_with(tmp_path / "slip.zip", member)
    with pytest.raises(UnsafeArchive):
        extract(archive, tmp_path / "out" / "inner")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()
    assert not list((tmp_path / "out" / "inner").rglob("*.png"))  # nothing extracted at all


def test_links_and_devices_are_refused(tmp_path):
    with pytest.raises(UnsafeArchive, match="link"):
        extract(_zip_with(tmp_path / "link.zip", "ok/test/a/link", symlink=True), tmp_path / "o1")
    for kind in (tarfile.SYMTYPE, tarfile.CHRTYPE, tarfile.LNKTYPE):
        buf = tmp_path / f"t{kind!r}.tar.gz"
        with tarfile.open(buf, "w:gz") as tf:
            info = tarfile.TarInfo("data/x")
            info.type, info.linkname = kind, "/etc/passwd"
            tf.addfile(info, io.BytesIO(b""))
        with pytest.raises(UnsafeArchive):
            extract(buf, tmp_path / "o2")


def test_mirror_from_environment_and_unknown_names(monkeypatch, mirror, tmp_path):
    monkeypatch.setenv("CLOOB_BENCHMARKS_MIRROR", mirror.url)
    monkeypatch.setenv("CLOOB_BENCHMARKS_CHECKSUMS", str(mirror.checksums))
    cfg = FetchConfig(tmp_path, checksums=read_checksums(None), progress=False)
    assert fetch_dataset(registry.get("flowers"), cfg).n_images == 8
    with pytest.raises(UsageError, match="unknown dataset 'mnist'"):
        registry.get("mnist")


def test_missing_dataset_names_the_fetch_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="benchmarks fetch gtsrb --root"):
        registry_task(registry.get("gtsrb"), tmp_path / "gtsrb")


def test_zeroshot_eval_on_fetched_and_raw_folders(mirror, tmp_path):
    """The trainer's entry point accepts registry names and the raw ImageNet V2 folder."""
    import open_clip

    from cloob.benchmarks.tasks.zeroshot.evaluate import zeroshot_eval
    from support.benchmark_data import tiny_model, tiny_preprocess

    cfg = config(mirror, tmp_path)
    fetch_dataset(registry.get("flowers102"), cfg)
    fetch_dataset(registry.get("imagenetv2"), cfg)
    model, pp, tok = tiny_model(), tiny_preprocess(), open_clip.get_tokenizer("ViT-B-32")
    flowers = zeroshot_eval(model, pp, tok, "flowers102", tmp_path)  # ROOT or ROOT/flowers102
    assert (flowers["n_images"], flowers["n_classes"]) == (8, 4)
    one = tmp_path / "one.txt"
    one.write_text("a photo of a {}.\n")  # 1 template instead of 80 keeps the text pass small
    v2 = zeroshot_eval(
        model,
        pp,
        tok,
        "imagenetv2",
        tmp_path / "imagenetv2" / "imagenetv2-matched-frequency-format-val",
        templates_file=one,
    )
    assert (v2["n_images"], v2["n_classes"], v2["label_rule"]) == (7, 1000, "int(folder)")
