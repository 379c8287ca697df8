"""Training data, by concern:

- `sources`: what `--train-data` / `--val-data` point at (folders, brace patterns, '::' joins, s3);
- `stream`: the webdataset shard stream with exact resume (`ShardStream`), on our own
  `shuffle` buffer; `position`: where an epoch stands (`Position`);
- `mapstyle`: CSV and synthetic map-style data; `samples`: decoding and per-sample seeds;
- `loaders`: building the train and validation loaders; `remote`: the s3 opener, registered lazily.

Importing this package has no side effects.
"""

from cloob.trainer.data.loaders import TrainData, build_train_data, build_val_loader
from cloob.trainer.data.mapstyle import CsvCaptions, IndexedBatches, SyntheticScenes
from cloob.trainer.data.position import Position
from cloob.trainer.data.samples import decode_sample, derive_seed, seeded_transform
from cloob.trainer.data.sources import Source, read_sizes, resolve_source
from cloob.trainer.data.stream import ShardStream

__all__ = [
    "CsvCaptions",
    "IndexedBatches",
    "Position",
    "ShardStream",
    "Source",
    "SyntheticScenes",
    "TrainData",
    "build_train_data",
    "build_val_loader",
    "decode_sample",
    "derive_seed",
    "read_sizes",
    "resolve_source",
    "seeded_transform",
]
