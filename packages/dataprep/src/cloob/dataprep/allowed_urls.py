"""Which url-list rows may be downloaded: http and https only.

img2dataset fetches with urllib, which also opens `file:`, `data:` and `ftp:` URLs: a shared url
list could copy files of the download node into a published dataset. Rows with any other scheme
are never handed to img2dataset; they are recorded as failed with `REFUSED_MESSAGE`.
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

# Exactly what urllib would treat as http(s): the scheme is case-insensitive, and nothing may come
# before it (urllib strips whitespace and `<URL:...>` wrappers, which could hide another scheme).
_PATTERN = r"^[hH][tT][tT][pP][sS]?://"
_FETCHABLE = re.compile(_PATTERN)
REFUSED_STATUS = "failed_to_download"
REFUSED_MESSAGE = "refused: only http:// and https:// URLs are downloaded"


def is_fetchable(url: str | None) -> bool:
    return url is not None and _FETCHABLE.match(url) is not None


def fetchable_mask(urls: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """True where a row may be downloaded (the vectorised twin of `is_fetchable`)."""
    return pc.fill_null(pc.match_substring_regex(urls, _PATTERN), False)
