"""Opening s3:// shards in webdataset through our fsspec client, registered on first use.

webdataset opens s3:// shards through `cloob.common.storage.open_stream`: streamed, never copied
to disk, with the credentials everything else uses (its `pipe:aws s3 cp` route would need the aws
CLI, and hides a failed download as a short shard). The opener is registered when a remote shard
is about to be opened (in the main process and in each DataLoader worker), never at import: a run
on local or synthetic data does not touch the object-store code at all."""

from __future__ import annotations

from cloob.common import storage


def use_remote_opener(url: str) -> None:
    """Before webdataset opens `url`: if it is remote, make sure webdataset opens it through us."""
    if not storage.is_remote(url):
        return
    from webdataset.gopen import gopen_schemes

    for scheme in storage.REMOTE_SCHEMES:
        gopen_schemes.setdefault(scheme, storage.open_stream)
