"""Tiny files in the real formats of the continual-learning datasets, for the loader tests.

Each writer returns what it wrote, so a test can compare an item against the raw pixels and labels.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

NOTMNIST_LETTERS = "ABCDEFGHIJ"


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST ships it: magic (0, 0, uint8 type 0x08, ndim), big-endian sizes, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist_like(folder: Path, class_name: str, rng: np.random.Generator, train: int = 30,
                     test: int = 10):
    """torchvision's raw layout <folder>/<MNIST|FashionMNIST>/raw/{train,t10k}-{images,labels}-idx?-ubyte."""
    raw = folder / class_name / "raw"
    raw.mkdir(parents=True)
    written = {}
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        labels = np.arange(count) % 10  # every class present
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        written[prefix] = (images, labels)
    return written


def write_cifar10(folder: Path, rng: np.random.Generator, per_batch: int = 6, test: int = 10):
    """cifar-10-batches-py: pickled dicts with uint8 rows of 3072 (RRR..GGG..BBB) and labels."""
    folder = folder / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written, row = {}, 0
    for file_name, count in [*((f"data_batch_{i}", per_batch) for i in range(1, 6)), ("test_batch", test)]:
        # labels cycle through the classes across the training batches, so every class has 3 items
        is_test = file_name == "test_batch"
        labels = list(range(count)) if is_test else (np.arange(row, row + count) % 10).tolist()
        row += count
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8), "labels": labels}
        (folder / file_name).write_bytes(pickle.dumps(batch))
        written[file_name] = batch
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return written


def write_svhn(folder: Path, rng: np.random.Generator, train: int = 20, test: int = 10):
    """{train,test}_32x32.mat: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 stored as 10."""
    from scipy.io import savemat

    folder.mkdir(parents=True)
    written = {}
    for split, count in (("train", train), ("test", test)):
        images = rng.integers(0, 256, (32, 32, 3, count), dtype=np.uint8)
        digits = np.arange(count) % 10
        savemat(folder / f"{split}_32x32.mat", {"X": images, "y": np.where(digits == 0, 10, digits)[:, None]})
        written[split] = (images, digits)
    return written


def write_notmnist_folder(folder: Path, rng: np.random.Generator, per_letter: int = 10,
                          corrupt: tuple[str, ...] = ("C/broken.png",)):
    """notMNIST_small/<letter>/*.png, 28x28 grayscale, plus unreadable files like those in the archive."""
    written = {}
    for letter in NOTMNIST_LETTERS:
        (folder / letter).mkdir(parents=True)
        for i in range(per_letter):
            pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / letter / f"{letter}{i:03d}.png")
            written[f"{letter}/{letter}{i:03d}.png"] = pixels
    for name in corrupt:
        (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)  # a PNG signature, then junk
    return written


def write_notmnist_parquet(folder: Path, rng: np.random.Generator, per_letter: int = 10):
    """A Hub-style parquet copy: train-/test- files with an image column and a ClassLabel label (A..J)."""
    import datasets

    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=list(NOTMNIST_LETTERS))})
    folder.mkdir(parents=True)
    written = []
    for split, count in (("train", per_letter), ("test", 2)):
        images = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(10 * count)]
        labels = [i % 10 for i in range(10 * count)]
        data = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in images], "label": labels},
                                          features=features)
        data.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
        written += list(zip(images, labels))
    return written


def tiny_wnids(count: int = 200) -> list[str]:
    return [f"n{i:08d}" for i in range(count)]


def colour_of(label: int) -> tuple[int, int, int]:
    """Class k's plain colour: red and green bands of 16 hold k's two base-16 digits (robust to JPEG)."""
    return (16 * (label // 16) + 8, 16 * (label % 16) + 8, 128)


def write_tiny_imagenet(root: Path, train_per_class: int = 2, val_per_class: int = 1) -> list[str]:
    """tiny-imagenet-200: wnids.txt (unsorted, as shipped), train/<wnid>/images/*.JPEG, val/images/*.JPEG and
    val/val_annotations.txt. Class k (by sorted wnid) is painted colour_of(k): a test reads it off a pixel."""
    wnids = tiny_wnids()
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")
    (root / "val" / "images").mkdir(parents=True)
    annotations = []
    for k, wnid in enumerate(wnids):
        images = root / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(train_per_class):
            Image.new("RGB", (64, 64), colour_of(k)).save(images / f"{wnid}_{i}.JPEG", quality=100)
        for i in range(val_per_class):
            file = f"val_{k * val_per_class + i}.JPEG"
            Image.new("RGB", (64, 64), colour_of(k)).save(root / "val" / "images" / file, quality=100)
            annotations.append(f"{file}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return wnids


def write_tiny_imagenet_parquet(folder: Path, train_per_class: int = 1):
    """The Hub copy's layout: data/train-*.parquet and data/valid-*.parquet, label a ClassLabel of wnids
    listed in the Hub's own (here reversed) order."""
    import datasets

    names = list(reversed(tiny_wnids()))
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    (folder / "data").mkdir(parents=True)
    for split, count in (("train", train_per_class), ("valid", 1)):
        labels = [hub for hub in range(200) for _ in range(count)]
        # sorted-wnid class k = hub label 199 - k; colour by sorted class, so the test can check renumbering
        images = [Image.new("RGB", (64, 64), colour_of(199 - hub)) for hub in labels]
        datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(
            str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return names


def write_image_folder(root: Path, classes: int = 6, train_per_class: int = 4, test_per_class: int = 2,
                       test_folder: str = "val") -> list[str]:
    """An ImageFolder tree root/{train,<test_folder>}/<class>/*.png of plain-colour images, class k painted
    colour_of(k) (k by sorted class name), in sizes other than 32x32 so that the reader must resize."""
    names = [f"class_{chr(ord('a') + k)}" for k in range(classes)]
    for split, count in (("train", train_per_class), (test_folder, test_per_class)):
        for k, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                size = (20 + 4 * i, 12 + 8 * k)  # (width, height): every image another shape
                Image.new("RGB", size, colour_of(k)).save(root / split / name / f"{i}.png")
    return names
