"""Spark's Python daemon for dataprep's executors: `pyspark.daemon` minus two slow imports.

Every Python worker Spark forks from this daemon unpickles img2dataset's downloader, and importing
img2dataset pulls in torch (through webdataset, 5+ s, never used for writing tars) and wandb
(~2 s, never enabled). Hiding both here, before the fork, spares each worker that, as download.py
does for the driver. Used (spark.python.daemon.module) only when executors run this interpreter.
"""

import sys
import types

sys.modules.setdefault("torch", None)  # type: ignore[arg-type]  # → ModuleNotFoundError
sys.modules.setdefault("wandb", types.ModuleType("wandb"))

from pyspark.daemon import manager  # noqa: E402

if __name__ == "__main__":
    manager()
