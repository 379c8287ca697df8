"""The shard-folder contract between dataprep (writes it) and its readers (trainer, benchmarks).

A dataprep output folder `DIR` holds webdataset tars in `DIR/shards/` and `sizes.json` (tar name →
sample count) both in `DIR` and next to the shards (where OpenCLIP looks). Readers also take a plain
folder of tars. Each sample's image is under one of IMAGE_EXTS, its caption under `txt`. Defined
here, not in dataprep, so the trainer and benchmarks read the layout without installing dataprep's
download stack. `DIR` is a local folder or an object-store prefix (`cloob.common.storage`'s
RemotePath has the pathlib subset used here).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from cloob.common.storage import RemotePath

    Folder = Path | RemotePath

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # a sample's image key, in the order readers try them
SHARDS = "shards"  # DIR/shards/*.tar
SIZES = "sizes.json"  # tar name → samples, in DIR and in DIR/shards


def shard_folder(root: Folder) -> Folder:
    """Where the tars of `root` are: `root/shards` for a dataprep folder, else `root` itself."""
    return root / SHARDS if (root / SHARDS).is_dir() else root


@overload
def shard_files(root: Path) -> list[Path]: ...
@overload
def shard_files(root: RemotePath) -> list[RemotePath]: ...
@overload
def shard_files(root: Folder) -> list[Folder]: ...
def shard_files(
    root: Folder,
) -> list[Any]:  # list[Any]: the overloads above say which kind comes back
    """The tars of a dataprep folder (`root/shards/*.tar`) or of a plain folder of tars, sorted."""
    return _tars(root / SHARDS) or _tars(root)


def _tars(folder: Folder) -> list[Folder]:
    return sorted(folder.glob("*.tar"), key=str)  # by name: RemotePaths have no order of their own
