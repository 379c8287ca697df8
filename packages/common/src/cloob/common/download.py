"""Resumable HTTP(S) downloads with a progress bar.

Bytes go to `<target>.part`; an interrupted download continues from there with a Range request
(a server that ignores Range sends the whole body again and we start over). Only a finished,
size-checked file is renamed onto `target`.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from cloob.common.cli import UsageError
from cloob.common.progress import progress_bar

USER_AGENT = "cloob-toolkit/0.1 (+https://github.com/ml-jku/cloob)"


class DownloadError(UsageError):
    """The URL could not be fetched completely (after retries)."""


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def download(
    url: str,
    target: str | os.PathLike[str],
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    chunk: int = 1 << 20,
) -> Path:
    """Fetch `url` into `target`, resuming a previous `.part`; returns `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch_into(url, part, timeout, progress, chunk)
            os.replace(part, target)
            return target
        except urllib.error.HTTPError as err:
            if err.code in (401, 403, 404, 410):  # retrying will not help
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            last = err
        except (urllib.error.URLError, OSError, _ShortRead) as err:
            last = err
        if attempt < retries:
            time.sleep(min(2.0**attempt * 0.2, 5.0))
    reason = getattr(last, "reason", None) or last
    raise DownloadError(f"could not download {url}: {reason}")


class _ShortRead(Exception):
    pass


def _fetch_into(url: str, part: Path, timeout: float, progress: bool, chunk: int) -> None:
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part is already the whole file
            return
        raise
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored Range: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        label = url.rsplit("/", 1)[-1][:40]
        with (
            open(part, "ab" if have else "wb") as out,
            progress_bar(progress, label, total, done=have, unit="bytes") as bar,
        ):
            while block := resp.read(chunk):
                out.write(block)
                bar(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _ShortRead(f"got {size} of {total} bytes")
