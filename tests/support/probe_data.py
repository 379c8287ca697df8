"""Generated stand-ins for linear probing and retrieval: class-structured images, official archive
layouts."""

from __future__ import annotations

import io
import random

from PIL import Image


def class_image(label: int, seed: int, size: int = 32, noise: int = 6) -> bytes:
    """A PNG whose background hue depends on `label`, overlaid with `noise` random patches: a linear
    probe on random-weight features can learn the class, but not perfectly."""
    rng = random.Random(seed)
    hue = ((label * 67) % 256, (label * 151) % 256, (label * 23 + 90) % 256)
    img = Image.new("RGB", (size, size), hue)
    for _ in range(noise):
        x, y, w = rng.randrange(size), rng.randrange(size), rng.randrange(4, size // 2)
        img.paste(
            tuple(rng.randrange(256) for _ in range(3)), (x, y, min(size, x + w), min(size, y + w))
        )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def class_split(
    folders: list[str], per_class: int, seed: int, noise: int = 6, ext: str = "png"
) -> dict[str, bytes]:
    """{'<folder>/<n>.<ext>': bytes} with `per_class` images for each folder (label = its
    position)."""
    files = {}
    for label, folder in enumerate(folders):
        for i in range(per_class):
            files[f"{folder}/{seed:03d}_{i:04d}.{ext}"] = class_image(
                label, seed * 1_000_003 + label * 1000 + i, noise=noise
            )
    return files


# ---------------------------------------------------------------- the official archives' layouts


def jpeg(label: int, seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(class_image(label, seed, size))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def ppm(label: int, seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(class_image(label, seed, size))).save(buf, format="PPM")
    return buf.getvalue()


def country211_tgz(path, codes: list[str], per_split: dict[str, int]) -> None:
    """OpenAI's country211.tgz: `country211/{train,valid,test}/<ISO code>/<n>.jpg`."""
    from support.benchmark_data import write_targz

    files = {}
    for split, n in per_split.items():
        for label, code in enumerate(codes):
            for i in range(n):
                files[f"{split}/{code}/{split}_{label}_{i}.jpg"] = jpeg(
                    label, {"train": 0, "valid": 1, "test": 2}[split] * 1000 + 50 * label + i
                )
    write_targz(path, files, prefix="country211/")


def flowers_files(folder, labels: list[int], splits: dict[str, list[int]]) -> None:
    """VGG's 102flowers.tgz (flat `jpg/image_NNNNN.jpg`), imagelabels.mat, setid.mat (1-based
    ids)."""
    import numpy as np
    from scipy.io import savemat

    from support.benchmark_data import write_targz

    write_targz(
        folder / "102flowers.tgz",
        {f"jpg/image_{i:05d}.jpg": jpeg(lab - 1, 500 + i) for i, lab in enumerate(labels, 1)},
    )
    savemat(folder / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    savemat(
        folder / "setid.mat", {key: np.array([ids], dtype=np.uint16) for key, ids in splits.items()}
    )


def gtsrb_zips(folder, train_counts: list[int], test_labels: list[int]) -> None:
    """The three GTSRB zips: Training/<5-digit class>/*.ppm + GT-<class>.csv; flat
    Final_Test/Images;
    GT-final_test.csv (`;`-separated, with ClassId)."""
    from support.benchmark_data import write_zip

    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n"
    train = {}
    for label, n in enumerate(train_counts):
        rows = []
        for i in range(n):
            name = f"{i // 30:05d}_{i % 30:05d}.ppm"
            train[f"Training/{label:05d}/{name}"] = ppm(label, 900 + 31 * label + i)
            rows.append(f"{name};32;32;1;1;31;31;{label}\n")
        train[f"Training/{label:05d}/GT-{label:05d}.csv"] = (header + "".join(rows)).encode()
    write_zip(folder / "GTSRB-Training_fixed.zip", train, prefix="GTSRB/")
    names = [f"{i:05d}.ppm" for i in range(len(test_labels))]
    images = {
        f"Final_Test/Images/{n}": ppm(lab, 7000 + i)
        for i, (n, lab) in enumerate(zip(names, test_labels, strict=True))
    }
    images["Final_Test/Images/GT-final_test.test.csv"] = (
        header.rsplit(";", 1)[0] + "\n" + "".join(f"{n};32;32;1;1;31;31\n" for n in names)
    ).encode()
    write_zip(folder / "GTSRB_Final_Test_Images.zip", images, prefix="GTSRB/")
    write_zip(
        folder / "GTSRB_Final_Test_GT.zip",
        {
            "GT-final_test.csv": (
                header
                + "".join(
                    f"{n};32;32;1;1;31;31;{lab}\n"
                    for n, lab in zip(names, test_labels, strict=True)
                )
            ).encode()
        },
    )
