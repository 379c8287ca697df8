"""The CLOOB paper's eight zero-shot datasets: where they come from and how folders become labels."""

from __future__ import annotations

from dataclasses import dataclass

from cloob.common.cli import UsageError

CLOOB_ZIPS = "https://ml.jku.at/research/CLOOB/downloads/zeroshot_datasets"
IMAGENETV2_URL = ("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                  "imagenetv2-matched-frequency.tar.gz")

# Label rules, named so results can say which one produced the labels.
BY_INDEX = "index"  # numeric folders → int(name) (0- or 1-based, checked); else sorted names
BY_INT = "int(folder)"  # ImageNet V2: the folder name *is* the ImageNet class index
BY_WNID = "sorted-wnid"  # ImageNet val: the standard order is the sorted wnids


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # registry key and folder name under --root
    title: str  # as the paper's tables write it
    n_classes: int
    url: str | None  # None: prepared from user-supplied files (ImageNet)
    label_rule: str
    headline: str  # the metric to quote: CLOOB reports top-1 everywhere, CLIP mean-per-class on Flowers
    metadata: str  # where class names/templates come from: "cloob" (zeroshot_data.py) or "open_clip"
    metadata_key: str = ""  # variable prefix in zeroshot_data.py / section in CLIP's prompts.md
    clip_section: str = ""

    @property
    def archive(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None


def _zip(name: str, title: str, n: int, section: str, headline: str = "acc1") -> DatasetSpec:
    return DatasetSpec(name, title, n, f"{CLOOB_ZIPS}/{name}.zip", BY_INDEX, headline, "cloob",
                       name, section)


DATASETS: dict[str, DatasetSpec] = {d.name: d for d in [
    _zip("birdsnap", "Birdsnap", 500, "Birdsnap"),
    _zip("country211", "Country211", 211, "Country211"),
    _zip("flowers102", "Flowers102", 102, "Flowers102"),
    _zip("gtsrb", "GTSRB", 43, "GTSRB"),
    _zip("stanford_cars", "Stanford Cars", 196, "StanfordCars"),
    _zip("ucf101", "UCF101", 101, "UCF101"),
    DatasetSpec("imagenet", "ImageNet", 1000, None, BY_WNID, "acc1", "open_clip"),
    DatasetSpec("imagenetv2", "ImageNet V2", 1000, IMAGENETV2_URL, BY_INT, "acc1", "open_clip"),
]}


def get(name: str) -> DatasetSpec:
    key = name.lower().replace("-", "_").replace(" ", "_")
    key = {"cars": "stanford_cars", "stanfordcars": "stanford_cars", "flowers": "flowers102",
           "imagenet_v2": "imagenetv2", "imagenet2": "imagenetv2"}.get(key, key)
    if key not in DATASETS:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return DATASETS[key]


def select(names: list[str] | None) -> list[DatasetSpec]:
    """`None`, `[]` or `["all"]` → all eight; names may also be comma-separated."""
    flat = [n for item in names or [] for n in item.split(",") if n.strip()]
    if not flat or flat == ["all"]:
        return list(DATASETS.values())
    return [get(n.strip()) for n in flat]


def fetch_command(spec: DatasetSpec, root: str) -> str:
    """The command that makes `spec` present under `root` (for 'missing dataset' messages)."""
    if spec.name == "imagenet":
        return f"benchmarks fetch imagenet --root {root} --imagenet PATH"
    return f"benchmarks fetch {spec.name} --root {root}"
