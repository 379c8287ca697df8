"""cloob.common.storage against a real S3 API on loopback (moto): paths, atomic puts, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloob.common import storage
from cloob.common.cli import UsageError
from support.s3 import S3Server


def test_local_paths_stay_paths(tmp_path: Path) -> None:
    assert storage.location(tmp_path / "x") == tmp_path / "x"
    assert not storage.is_remote(tmp_path)
    storage.check_access(tmp_path)  # nothing to check
    with pytest.raises(UsageError, match="unsupported storage"):
        storage.location("gs://bucket/x")


def test_remote_path_reads_lists_and_writes_whole_objects(s3: S3Server, tmp_path: Path) -> None:
    root = storage.location(s3.url("data"))
    storage.write_json(root / "a.json", {"n": 1})
    (root / "sub" / "b.bin").write_bytes(b"\x00" * 10)
    local = tmp_path / "c.txt"
    local.write_text("hello")
    storage.put_file(local, root / "c.txt")
    assert sorted(p.name for p in root.iterdir()) == ["a.json", "c.txt", "sub"]
    assert (root / "sub").is_dir() and (root / "c.txt").is_file()
    assert (root / "c.txt").read_text() == "hello" and (root / "sub/b.bin").stat().st_size == 10
    with storage.local_copy(root / "a.json") as copy:
        assert copy.read_text().strip().startswith("{")
    (root / "c.txt").unlink()
    (root / "c.txt").unlink(missing_ok=True)
    assert not (root / "c.txt").exists()
    storage.rmtree(root)
    assert s3.list_keys() == []


def test_storage_options_reach_child_processes(s3: S3Server, monkeypatch) -> None:
    import fsspec.config

    monkeypatch.setattr(fsspec.config, "conf", {})
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    storage.configure(f'{{"endpoint_url": "{s3.endpoint}"}}')
    assert s3.endpoint in __import__("os").environ["FSSPEC_S3"]
    storage.check_access(s3.url("x"))
    with pytest.raises(UsageError, match="not JSON"):
        storage.configure("{endpoint")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing bucket", "bucket does not exist"),
        ("wrong secret", "access denied"),
        ("unknown key", "access denied"),
        ("unreachable endpoint", "cannot be reached"),
    ],
)
def test_unusable_store_is_one_clear_error(
    s3: S3Server, monkeypatch, case: str, message: str
) -> None:
    url = s3.url("x")
    if case == "missing bucket":
        url = "s3://no-such-bucket/x"
    elif case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    elif case == "unknown key":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOSUCHKEY")
    else:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(UsageError, match=message) as err:
        storage.check_access(url)
    assert s3.secret not in str(err.value)
