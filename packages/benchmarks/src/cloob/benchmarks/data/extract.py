"""Unpack zip / tar(.gz) archives strictly inside a target folder.

Every member is checked before anything is written: absolute paths, `..` components, symlinks,
hard links, device/FIFO entries and a path that is both a file and a folder are refused (an archive
from a mirror is untrusted input). Damaged members (bad CRC, truncated data) end in a UsageError.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from cloob.common.cli import UsageError


class UnsafeArchive(UsageError):
    """The archive tries to write outside its target or holds links/devices."""


def _check_name(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or name.startswith(("/", "\\")) or (path.parts and ":" in path.parts[0]):
        raise UnsafeArchive(f"{archive.name}: refusing absolute path {name!r}")
    if ".." in path.parts:
        raise UnsafeArchive(f"{archive.name}: refusing path outside the target {name!r}")
    return path


class DamagedArchive(UsageError):
    """The archive's bytes are not what its index promises."""


# What zipfile/tarfile raise for damaged bytes (bad CRC, truncated or garbled data).
_DAMAGE = (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError)


def _check_tree(archive: Path, names: Iterable[tuple[str, bool]]) -> None:
    """Refuse a path that is a file in one member and a folder in another (`a.png`, `a.png/x`)."""
    files: set[PurePosixPath] = set()
    folders: set[PurePosixPath] = set()
    for name, is_dir in names:
        path = _check_name(archive, name)
        (folders if is_dir else files).add(path)
        folders.update(path.parents)
    clash = files & folders
    if clash:
        raise UnsafeArchive(f"{archive.name}: {str(min(clash))!r} is both a file and a folder")


def extract(archive: str | Path, target: str | Path) -> Path:
    """Extract `archive` (.zip, .tar, .tar.gz, .tgz) into `target` (created); returns `target`."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            _extract_zip(archive, target)
        elif tarfile.is_tarfile(archive):
            _extract_tar(archive, target)
        else:
            raise UsageError(f"{archive}: neither a zip nor a tar archive")
    except _DAMAGE as err:
        raise DamagedArchive(f"{archive.name}: damaged archive ({err})") from None
    return target


def _extract_zip(archive: Path, target: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_name(archive, info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no unix type recorded → a plain file
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchive(
                    f"{archive.name}: refusing link or special file {info.filename!r}"
                )
        _check_tree(archive, ((info.filename, info.is_dir()) for info in members))
        for info in members:
            out = target.joinpath(*_check_name(archive, info.filename).parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)  # empty class folders matter (Birdsnap)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def _extract_tar(archive: Path, target: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for member in members:
            _check_name(archive, member.name)
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchive(
                    f"{archive.name}: refusing link or special file {member.name!r}"
                )
        _check_tree(archive, ((member.name, member.isdir()) for member in members))
        # The stdlib "data" filter re-checks the same rules as a second line of defence.
        tf.extractall(target, members=members, filter="data")
