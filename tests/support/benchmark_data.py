"""Generated stand-ins for the zero-shot benchmarks: tiny models, class folders, archives, metadata.

Everything has the real layout (CLOOB zips, ImageNet V2 tar.gz, CLIP's prompts.md, CLOOB's
zeroshot_data.py) at a size that runs in seconds on a CPU.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import random
import tarfile
import zipfile
from pathlib import Path

import torch
from PIL import Image

from cloob.common import checkpoint as ckpt_format

# Stand-in class lists for the mirror tests.
FLOWERS = ["pink primrose", "sweet pea", "tiger lily", "moon orchid"]
BIRDS = [f"Bird {i}" for i in range(12)]  # species-id order, like CLOOB's list
# folders 003 and 007 are empty, as Birdsnap's 046, 066, … are in the real zip
BIRD_COUNTS = {f"{i:03d}": (0 if i in (3, 7) else 1 + i % 2) for i in range(12)}

TINY_CFG = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 64},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def tiny_cfg() -> dict:
    return copy.deepcopy(TINY_CFG)


def tiny_model(seed: int = 0):
    """A tiny open_clip CLIP (ViT 32 px, width 64, 2+2 layers) with seeded random weights."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**tiny_cfg())
    return model.eval()


def write_tiny_checkpoint(path: Path, seed: int = 0, method: str | None = "clip", **extra) -> Path:
    """A cloob-toolkit/1 checkpoint of `tiny_model(seed)` through the format's own writer;
    `extra` adds reader fields (epoch, step, inv_tau, ...) or overrides one."""
    payload = ckpt_format.ModelCheckpoint(
        format=ckpt_format.FORMAT,  # `write` stamps it too
        state_dict=tiny_model(seed).state_dict(),
        model_name="tiny-vit",
        model_cfg=tiny_cfg(),
    )
    if method is not None:
        payload["method"] = method
    return ckpt_format.write(path, {**payload, **extra})


def write_hub_folder(folder: Path, model_cfg: object = None, seed: int = 0) -> Path:
    """What `trainer export` writes (open_clip's hub layout: open_clip_config.json +
    open_clip_model.safetensors) for `tiny_model(seed)`; `model_cfg` replaces the config's."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    cfg = tiny_cfg() if model_cfg is None else model_cfg
    config = {"model_cfg": cfg, "cloob": {"model_name": "tiny-vit", "method": "clip"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in tiny_model(seed).state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    return folder


def tiny_preprocess(size: int = 32):
    import open_clip

    return open_clip.image_transform(size, is_train=False)


def png_bytes(seed: int, size: int = 40) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):  # some structure so different images embed differently
        x, y = rng.randrange(size), rng.randrange(size)
        img.paste(
            tuple(rng.randrange(256) for _ in range(3)),
            (x, y, min(size, x + 12), min(size, y + 12)),
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_tree(counts: dict[str, int], seed: int = 0) -> dict[str, bytes]:
    """{'<folder>/<file>.png': bytes}; a folder with count 0 appears as an empty folder entry."""
    files: dict[str, bytes] = {}
    k = seed * 100_003
    for folder, n in counts.items():
        if n == 0:
            files[f"{folder}/"] = b""
        for i in range(n):
            k += 1
            files[f"{folder}/img_{i:03d}.png"] = png_bytes(k)
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        target = root / rel
        if rel.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(prefix + rel, data)  # a name ending in "/" is a directory entry
    return path


def write_targz(path: Path, files: dict[str, bytes], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for rel, data in files.items():
            info = tarfile.TarInfo(prefix + rel.rstrip("/"))
            if rel.endswith("/"):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def cloob_zip(path: Path, name: str, counts: dict[str, int], seed: int = 0) -> Path:
    """A zip in the CLOOB layout: `<name>/test/<class folder>/<image>`."""
    return write_zip(path, class_tree(counts, seed), prefix=f"{name}/test/")


def imagenetv2_targz(path: Path, counts: dict[str, int], seed: int = 0) -> Path:
    return write_targz(
        path, class_tree(counts, seed), prefix="imagenetv2-matched-frequency-format-val/"
    )


def standin_cloob_metadata(lists: dict[str, tuple[list[str], list[str]]]) -> str:
    """Python source shaped like CLOOB's zeroshot_data.py: `<key>_classnames` + lambda templates."""
    out = []
    for key, (names, _) in lists.items():
        out.append(f"{key}_classnames = [\n" + "".join(f"    {n!r},\n" for n in names) + "]\n")
    for key, (_, templates) in lists.items():
        body = "".join(f"    lambda c: f{t.replace('{}', '{c}')!r},\n" for t in templates)
        out.append(f"{key}_templates = [\n{body}]\n")
    return "\n".join(out)


def standin_clip_prompts(sections: dict[str, tuple[list[str], list[str]]]) -> str:
    """Markdown shaped like CLIP's data/prompts.md."""
    out = ["# Prompts for Image Classification\n"]
    for title, (names, templates) in sections.items():
        out.append(
            f"## {title}\n\n```bash\nclasses = [\n"
            + "".join(f"    {n!r},\n" for n in names)
            + "]\n\ntemplates = [\n"
            + "".join(f"    {t!r},\n" for t in templates)
            + "]\n```\n\n"
        )
    return "\n".join(out)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
