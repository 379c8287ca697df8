"""Where data lives: local paths and `s3://…` URLs. The only module that knows about object stores.

`location(url)` gives a `pathlib.Path` for a local path and a `RemotePath` (the same small subset
of pathlib: `/`, `name`, `exists`, `is_dir`, `iterdir`, `read_text`, `open`, `unlink`, `stat`)
for an object-store URL, so code that walks a dataset or a run folder works on both unchanged.

Credentials and endpoints come the standard way: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ENDPOINT_URL` (read by botocore itself), or `--storage-options JSON` (`configure`), which
sets fsspec's per-protocol defaults in this process and, through `FSSPEC_S3`, in its children
(img2dataset's workers, DataLoader workers). They are never printed or written anywhere.

Atomic writes: an S3 object appears whole when its upload completes (a single PUT, or a
multipart upload's final call) or not at all, so a put is atomic as it stands; what must not
happen is fsspec's buffered file committing a partial object when an error closes it. So every
write here is built in full first (bytes, or a finished local temp file), then put in one call.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from cloob.common.cli import UsageError
from cloob.common.files import atomic_path
from cloob.common.files import write_json as write_local_json

REMOTE_SCHEMES = ("s3",)  # the object stores we test against; fsspec would take more
_ENV = "FSSPEC_S3"  # fsspec reads per-protocol defaults from FSSPEC_<PROTOCOL> (JSON)


def is_remote(url: str | os.PathLike[str]) -> bool:
    return (
        isinstance(url, RemotePath)
        or str(url).split("://", 1)[0] in REMOTE_SCHEMES
        and "://" in str(url)
    )


def location(url: str | os.PathLike[str]) -> Path | RemotePath:
    """A local `Path`, or a `RemotePath` for `s3://bucket/key`."""
    if isinstance(url, RemotePath):
        return url
    text = str(url)
    if "://" in text and not is_remote(text):
        raise UsageError(
            f"{text}: unsupported storage (local paths and "
            f"{', '.join(s + '://' for s in REMOTE_SCHEMES)} are)"
        )
    if not is_remote(text):
        return Path(text).expanduser()
    if not text.split("://", 1)[1].split("/", 1)[0]:
        raise UsageError(f"{text}: no bucket in the URL (expected s3://BUCKET/PREFIX)")
    return RemotePath(text.rstrip("/"))


# Every object-store call ends in bounded time. botocore gives each request a connect and a read
# timeout and three retries (its "standard" mode retries timeouts, 5xx and throttling with
# backoff); s3fs's own retry loop around botocore (5 rounds by default) is cut to one round, or a
# store that stops answering mid-run costs 5 rounds x 5 attempts x 15 s per call: a hang. Worst
# case for one call: `call_limit_s`, 4 x (5 + 15) s plus backoff. `--storage-options
# '{"config_kwargs": {...}}'`
# overrides any of these.
LIMITS = {
    "connect_timeout": 5,
    "read_timeout": 15,
    "retries": {"max_attempts": 3, "mode": "standard"},
}
S3FS_ROUNDS = 1


def configure(options_json: str | None) -> None:
    """Apply `--storage-options JSON` (s3fs keyword arguments, e.g. `{"endpoint_url": ...}`) over
    our time limits, here and (FSSPEC_S3) in child processes."""
    options = {}
    if options_json:
        try:
            options = json.loads(options_json)
        except ValueError as err:
            raise UsageError(f"--storage-options is not JSON: {err}") from None
        if not isinstance(options, dict):
            raise UsageError("--storage-options must be a JSON object")
        _check_options(options)
    import fsspec.config

    conf = fsspec.config.conf.setdefault("s3", {})
    conf.update(options)
    conf.update(_with_limits(conf))
    os.environ[_ENV] = json.dumps(conf)  # for child processes


def _check_options(options: dict) -> None:
    endpoint = options.get("endpoint_url")
    if endpoint is not None and (
        not isinstance(endpoint, str)
        or urlsplit(endpoint).scheme not in ("http", "https")
        or not urlsplit(endpoint).netloc
    ):
        raise UsageError(
            f"--storage-options: endpoint_url {endpoint!r} is not an http(s) URL "
            "(e.g. http://host:9000)"
        )
    config = options.get("config_kwargs", {})
    if not isinstance(config, dict):
        raise UsageError("--storage-options: config_kwargs must be a JSON object")


def _with_limits(options: dict) -> dict:
    """`options` with LIMITS under any config_kwargs the user gave (theirs win)."""
    return {**options, "config_kwargs": {**LIMITS, **options.get("config_kwargs", {})}}


def limit_s3fs_rounds() -> None:
    """Cut s3fs's retry loop to S3FS_ROUNDS in this process (botocore retries within it). Called
    by processes that write through s3fs without our `_filesystem` (img2dataset's workers)."""
    import s3fs

    s3fs.S3FileSystem.retries = S3FS_ROUNDS


def _filesystem(protocol: str):
    import fsspec
    import fsspec.config

    # Listings must not be cached: other processes (img2dataset's workers, another rank) add and
    # remove objects while we look. One client per process is reused (fsspec's instance cache).
    fs = fsspec.filesystem(
        protocol, use_listings_cache=False, **_with_limits(fsspec.config.conf.get(protocol, {}))
    )
    fs.retries = S3FS_ROUNDS
    return fs


@dataclass(frozen=True)
class RemotePath:
    """An object-store URL with the pathlib subset the toolkit uses."""

    url: str

    @property
    def _fs(self):
        return _filesystem(self.url.split("://", 1)[0])

    @property
    def _key(self) -> str:
        return self.url.split("://", 1)[1]

    @property
    def name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def parent(self) -> RemotePath:
        return RemotePath(self.url.rsplit("/", 1)[0])

    @property
    def bucket(self) -> str:
        return self._key.split("/", 1)[0]

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(f"{self.url}/{name}")

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:  # lets img2dataset, DuckDB, webdataset take it as a string
        return self.url

    def relative_to(self, other: Path | RemotePath) -> str:
        if not isinstance(other, RemotePath):
            raise ValueError(f"{self.url} is not under the local path {other}")
        return self.url[len(other.url) :].lstrip("/")

    def exists(self) -> bool:
        with translated(self.url):
            return self._fs.exists(self._key)

    def is_file(self) -> bool:
        with translated(self.url):
            return self._fs.isfile(self._key)

    def is_dir(self) -> bool:
        with translated(self.url):
            return self._fs.isdir(self._key)

    def iterdir(self) -> Iterator[RemotePath]:
        with translated(self.url):
            try:
                names = self._fs.ls(self._key, detail=False)
            except FileNotFoundError:
                names = []
        return iter([RemotePath(f"{self.url}/{n.rstrip('/').rsplit('/', 1)[-1]}") for n in names])

    def glob(self, pattern: str) -> Iterator[RemotePath]:
        with translated(self.url):
            found = self._fs.glob(f"{self._key}/{pattern}")
        return iter([RemotePath(f"{self.url.split('://')[0]}://{k}") for k in found])

    def stat(self) -> os.stat_result:
        with translated(self.url):
            info = self._fs.info(self._key)
        modified = info.get("LastModified")
        mtime = modified.timestamp() if modified is not None else 0.0
        return os.stat_result((0o644, 0, 0, 1, 0, 0, int(info.get("size", 0)), mtime, mtime, mtime))

    def open(self, mode: str = "rb", **kwargs: Any) -> IO:
        if "r" not in mode:
            raise ValueError("RemotePath.open is for reading; write with storage.put_* (atomic)")
        with translated(self.url):
            return self._fs.open(self._key, mode, **kwargs)

    def read_bytes(self) -> bytes:
        with translated(self.url):
            return self._fs.cat_file(self._key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """One PUT: the object is whole or absent."""
        with translated(self.url):
            self._fs.pipe_file(self._key, data)

    def unlink(self, missing_ok: bool = False) -> None:
        with translated(self.url):
            try:
                self._fs.rm_file(self._key)
            except FileNotFoundError:
                if not missing_ok:
                    raise

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Object stores have no directories: a prefix exists once a key under it does."""

    def rmtree(self) -> None:
        with translated(self.url), contextlib.suppress(FileNotFoundError):
            self._fs.rm(self._key, recursive=True)

    def upload(self, local: Path) -> None:
        """Copy a finished local file here (the object appears when the upload completes)."""
        with translated(self.url):
            self._fs.put_file(str(local), self._key)

    def download(self, local: Path) -> None:
        """Copy this object to `local` (temp file + rename)."""
        with translated(self.url), atomic_path(local) as tmp:
            self._fs.get_file(self._key, str(tmp))


def open_stream(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any) -> IO:
    """A forward-reading stream of `url` (webdataset's gopen signature): large read-ahead blocks,
    so a shard streams in a few requests and never lands on disk."""
    if mode != "rb":
        raise ValueError(f"{url}: shards are only read here")
    remote = location(url)
    if not isinstance(remote, RemotePath):  # registered for object-store schemes only
        raise ValueError(f"{url}: not an object-store URL")
    with translated(str(url)):
        return remote._fs.open(remote._key, "rb", block_size=8 << 20, cache_type="readahead")


# --- writes that are whole or absent, local or remote -----------------------------------------


def write_json(target: Path | RemotePath, obj: Any) -> None:
    if isinstance(target, RemotePath):
        target.write_bytes((json.dumps(obj, indent=2, default=str) + "\n").encode())
    else:
        write_local_json(target, obj)


def put_file(local: Path, target: Path | RemotePath) -> None:
    """Copy a finished local file to `target` atomically (temp + rename, or one upload)."""
    if isinstance(target, RemotePath):
        target.upload(local)
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(local, tmp)


def rmtree(target: Path | RemotePath) -> None:
    if isinstance(target, RemotePath):
        target.rmtree()
    else:
        shutil.rmtree(target, ignore_errors=True)


@contextlib.contextmanager
def local_copy(source: Path | RemotePath) -> Iterator[Path]:
    """A local file with `source`'s bytes (itself when local; a temp download otherwise)."""
    if not isinstance(source, RemotePath):
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="cloob-") as tmp:
        path = Path(tmp) / source.name
        source.download(path)
        yield path


def modified_times(folder: Path | RemotePath) -> dict[str, float]:
    """Name → modification time (epoch seconds) of the files directly in `folder`, in one listing
    (one request for a bucket prefix, however many objects); {} when it does not exist."""
    if isinstance(folder, RemotePath):
        with translated(folder.url):
            try:
                entries = folder._fs.ls(folder._key, detail=True)
            except FileNotFoundError:
                return {}
        return {
            e["name"].rstrip("/").rsplit("/", 1)[-1]: e["LastModified"].timestamp()
            for e in entries
            if e.get("type") == "file" and e.get("LastModified")
        }
    try:
        with os.scandir(folder) as it:
            return {e.name: e.stat().st_mtime for e in it if e.is_file()}
    except (FileNotFoundError, NotADirectoryError):
        return {}


def attach_to_duckdb(con: Any, url: Path | RemotePath) -> None:
    """Let DuckDB's read_parquet open `url`'s store through our fsspec client (its own S3
    support is an extension it would download at run time)."""
    if isinstance(url, RemotePath):
        con.register_filesystem(url._fs)


# --- errors -------------------------------------------------------------------------------------


def check_access(url: str | os.PathLike[str] | RemotePath) -> None:
    """Fail early, in one line, when the bucket of `url` cannot be used: no such bucket, refused
    credentials, an endpoint that does not answer. Local paths pass."""
    target = location(url)
    if not isinstance(target, RemotePath):
        return
    with translated(target.url):
        _one_try_filesystem(target.url.split("://", 1)[0]).ls(target.bucket, detail=False)


def _one_try_filesystem(protocol: str):
    """A client of its own that gives up after one try: a dead endpoint answers in seconds, not
    after the retries. The user's --storage-options (and their timeouts) still apply."""
    import fsspec
    import fsspec.config

    options = _with_limits(fsspec.config.conf.get(protocol, {}))
    options["config_kwargs"]["retries"] = {"max_attempts": 1}
    fs = fsspec.filesystem(protocol, skip_instance_cache=True, use_listings_cache=False, **options)
    fs.retries = 1
    return fs


def listing(folder: RemotePath) -> dict[str, int]:
    """Object name → size under `folder`, asked once (no retries; raises what the store raised).
    For watching a store other processes write to."""
    fs = _one_try_filesystem(folder.url.split("://", 1)[0])
    try:
        found = fs.ls(folder._key, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"].rsplit("/", 1)[-1]: int(e.get("size") or 0) for e in found}


def call_limit_s() -> float:
    """The longest one object-store call may take under the current limits (LIMITS under the
    user's --storage-options): every attempt's connect and read timeouts plus botocore's
    "standard" backoff between attempts (up to 2**i s, at most 20 s), times s3fs's rounds."""
    import fsspec.config

    config = _with_limits(fsspec.config.conf.get("s3", {}))["config_kwargs"]
    retries = config.get("retries") or {}
    # botocore: total_max_attempts counts the first request, max_attempts only the retries.
    attempts = (
        int(retries["total_max_attempts"])
        if "total_max_attempts" in retries
        else int(retries.get("max_attempts", 3)) + 1
    )
    attempts = max(1, attempts)
    per_try = float(config.get("connect_timeout", 60)) + float(config.get("read_timeout", 60))
    backoff = sum(min(2.0**i, 20.0) for i in range(attempts - 1))
    return S3FS_ROUNDS * (attempts * per_try + backoff)


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Turn the object store's failures into UsageError lines that name the URL and the cause
    (never the credentials: botocore's messages do not include the secret)."""
    try:
        yield
    except UsageError:
        raise
    except FileNotFoundError as err:
        if _is_missing_bucket(err):
            raise UsageError(f"{url}: the bucket does not exist") from None
        raise
    except PermissionError as err:
        raise UsageError(
            f"{url}: access denied ({_short(err)}); check AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY or --storage-options"
        ) from None
    except Exception as err:
        if _is_timeout(err):
            raise UsageError(
                f"{url}: the storage endpoint did not answer in time ({_short(err)}); "
                "check that it is up, or raise config_kwargs.read_timeout in "
                "--storage-options"
            ) from None
        if _is_unreachable(err):
            raise UsageError(
                f"{url}: the storage endpoint cannot be reached ({_short(err)}); "
                "check AWS_ENDPOINT_URL or --storage-options"
            ) from None
        if isinstance(err, ValueError) and "Invalid endpoint" in str(err):
            raise UsageError(
                f"{url}: {_short(err)} (the endpoint must be an http(s) URL; check "
                "AWS_ENDPOINT_URL or --storage-options)"
            ) from None
        if _is_no_credentials(err):
            raise UsageError(
                f"{url}: no credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or --storage-options)"
            ) from None
        raise


def _is_missing_bucket(err: BaseException) -> bool:
    return "NoSuchBucket" in repr(err.__cause__) or "bucket does not exist" in str(err)


def _is_unreachable(err: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    return bool(
        names
        & {
            "EndpointConnectionError",
            "ConnectTimeoutError",
            "ConnectionError",
            "ClientConnectorError",
            "ServerDisconnectedError",
            "ConnectionRefusedError",
        }
    )


def _is_timeout(err: BaseException) -> bool:
    names = {type(e).__name__ for e in _chain(err)}
    if names & {"ConnectTimeoutError", "EndpointConnectionError"}:
        return False  # never connected: unreachable, not slow
    return bool(
        names & {"ReadTimeoutError", "FSTimeoutError", "TimeoutError", "ServerTimeoutError"}
    )


def _is_no_credentials(err: BaseException) -> bool:
    return any(type(e).__name__ == "NoCredentialsError" for e in _chain(err))


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while err is not None and seen < 10:
        yield err
        err, seen = err.__cause__ or err.__context__, seen + 1


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__
