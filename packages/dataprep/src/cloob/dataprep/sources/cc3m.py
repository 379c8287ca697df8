"""Conceptual Captions 3M: the TSV exactly as Google publishes it (`caption<TAB>url`, no header).

img2dataset wants a header; instead of asking users to edit a 500 MB file we parse it ourselves and
write a parquet list whose source_id is the TSV row number (0-based), so every shard sample can be
traced back to its line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from cloob.common.cli import UsageError
from cloob.dataprep.config import SourceSpec
from cloob.dataprep.layout import Layout
from cloob.dataprep.sources import Source, identity, local_input, numbered, write_list


def cc3m_source(tsv: str, root: Path) -> Source:
    """`dataprep fetch cc3m --tsv TSV` into the dataset folder `root` (a URL downloads there)."""

    def build(target: Path) -> str:
        n = build_cc3m_list(local_input(tsv, Layout(root).sources, "CC3M TSV"), target)
        return f"CC3M list: {n} rows"

    return Source(SourceSpec("cc3m", {"tsv": identity(tsv)}), build)


def read_cc3m(tsv: Path) -> Iterator[pa.RecordBatch]:
    """Batches of (caption, url) in file order; bad structure raises UsageError with the reason."""
    reader = _open(tsv)
    first = True
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except (pa.ArrowException, OSError, UnicodeDecodeError) as err:  # OSError: bad .gz/.bz2
            raise _not_cc3m(tsv, err) from None
        if first and batch.num_rows:
            _check_first_row(tsv, batch)
            first = False
        yield batch


def build_cc3m_list(tsv: Path, target: Path) -> int:
    return write_list(numbered(read_cc3m(tsv), "url", "caption"), target, f"CC3M TSV {tsv}")


def _open(tsv: Path) -> pacsv.CSVStreamingReader:
    try:
        return pacsv.open_csv(
            tsv,  # .gz/.bz2 are decompressed by pyarrow from the file name
            read_options=pacsv.ReadOptions(column_names=["caption", "url"], block_size=8 << 20),
            # Captions contain quotes; the format has no quoting at all.
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pacsv.ConvertOptions(
                column_types={"caption": pa.string(), "url": pa.string()}
            ),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as err:  # OSError: bad .gz/.bz2
        raise _not_cc3m(tsv, err) from None


def _check_first_row(tsv: Path, batch: pa.RecordBatch) -> None:
    caption, url = batch.column("caption")[0].as_py(), batch.column("url")[0].as_py()
    if url and url.startswith(("http://", "https://")):
        return
    if caption and caption.startswith(("http://", "https://")) or caption == "url":
        raise UsageError(
            f"{tsv}: columns look like url<TAB>caption (CC12M layout?); "
            "CC3M is caption<TAB>url without a header"
        )
    raise UsageError(f"{tsv}: not a CC3M TSV: row 1 has no http(s) URL in column 2")


def _not_cc3m(tsv: Path, err: Exception) -> UsageError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if "Empty CSV file" in reason:
        return UsageError(f"{tsv}: the CC3M TSV has no rows")
    return UsageError(f"{tsv}: not a CC3M TSV (caption<TAB>url, no header): {reason}")
