"""What the air-gapped GPU node's `python3` (3.12) must hold, and what travels to it as wheels.

The node this check is built for has a Python 3.12 with torch (CUDA) and the common scientific
stack installed system-wide — its image, `IMAGE` below — and no package index. One list for the
three places that need it: `bench/gpu/gpu_wheels.py` downloads `CARRIED` on a connected machine,
`tests/support/gpu_image.py` builds a look-alike of the image from `IMAGE_PACKAGES` (those of the
image's packages that the GPU check's path imports), and `tests/test_gpu_image_imports.py` checks
that nothing else is imported. bench/gpu/README.md says how to run the check.
"""

from __future__ import annotations

# Distributions the node's python3 holds, with the import names they provide.
IMAGE: dict[str, tuple[str, ...]] = {
    "torch": ("torch", "torchgen", "functorch"),
    "torchvision": ("torchvision",),
    "triton": ("triton",),
    "numpy": ("numpy",),
    "pillow": ("PIL",),
    "pandas": ("pandas",),
    "pyarrow": ("pyarrow",),
    "matplotlib": ("matplotlib", "mpl_toolkits"),
    "seaborn": ("seaborn",),
    "tensorboard": ("tensorboard",),
    "typer": ("typer",),
    "click": ("click",),
    "rich": ("rich",),
    "tqdm": ("tqdm",),
    "regex": ("regex",),
    "requests": ("requests",),
    "pyyaml": ("yaml",),
    "psutil": ("psutil",),
    "fsspec": ("fsspec",),
    "huggingface-hub": ("huggingface_hub",),
    "safetensors": ("safetensors",),
    "timm": ("timm",),
    "transformers": ("transformers",),
    "tokenizers": ("tokenizers",),
    "sentencepiece": ("sentencepiece",),
    "scikit-learn": ("sklearn",),
    "scipy": ("scipy",),
    "opencv-python-headless": ("cv2",),
    "scikit-image": ("skimage",),
    "pytest": ("pytest",),
}

# The image's packages that the check's path imports: the simulated image holds these (at the
# lock's versions, with their own dependencies, as the image holds them).
IMAGE_PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "pillow",
    "pandas",
    "pyarrow",
    "matplotlib",
    "tensorboard",
    "typer",
    "rich",
    "tqdm",
    "regex",
    "pyyaml",
    "fsspec",
    "huggingface-hub",
    "safetensors",
    "timm",
    "transformers",
)

# Not in the image, needed by the path: carried as cp312 manylinux x86-64 wheels (`.whl/`), pinned
# to the versions of uv.lock. duckdb is only for the README's first command: building the demo
# writes its DuckDB manifest (cloob.dataprep.manifest); bench/gpu/README.md says why it travels.
CARRIED: dict[str, tuple[str, ...]] = {
    "open-clip-torch": ("open_clip", "open_clip_train"),
    "webdataset": ("webdataset", "wids"),
    "braceexpand": ("braceexpand",),
    "ftfy": ("ftfy",),
    "wcwidth": ("wcwidth",),
    "duckdb": ("duckdb",),
}

# Our own packages, put on PYTHONPATH from the working tree (packages/*/src).
OURS = ("cloob",)

WHEEL_DIR = ".whl"
# A guard, not a limit of the node: the check needs a few small wheels, so a set larger than this
# means a dependency slipped onto the path.
WHEEL_BUDGET_MIB = 30
