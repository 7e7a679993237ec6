"""Continual-learning benchmarks: a sequence of tasks, each with its own train / val / test splits.

    benchmark = build_benchmark("five_datasets", root="data", download=True)
    task = benchmark.tasks[1]                 # MNIST, with the default order
    image, label, task_id = task.train[0]     # normalised 3x32x32 float, global label in task.classes, 1

Labels are global: task t of five_datasets has classes 10t..10t+9, a TinyImageNet task the next
`classes_per_task` classes of a seeded class order. Each task's val split is a seeded, class-balanced
hold-out of its training set (for choosing hyperparameters; the test split is never used for that).
There is no augmentation: an online learner sees each training image once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from experiments.data.images import CIFAR_MEAN_STD, DatasetNotFoundError, cifar_layout_message
from experiments.data.splits import balanced_holdout, labels_of
from experiments.options import check_options

log = logging.getLogger(__name__)

CONTINUAL_BENCHMARK_NAMES = ("five_datasets", "tiny_imagenet", "synthetic_tasks")
FIVE_DATASET_NAMES = ("cifar10", "mnist", "svhn", "notmnist", "fashion_mnist")  # the default task order
COMMON_ARGUMENTS = ("name", "root", "download", "seed", "val_fraction")

# Per-channel mean and std of each training set as widely quoted. notMNIST has no such figures: its
# [0, 1] pixels are mapped to [-1, 1].
MEAN_STD = {
    "cifar10": CIFAR_MEAN_STD["cifar10"],
    "mnist": ((0.1307,), (0.3081,)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "notmnist": ((0.5,), (0.5,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
}
NOTMNIST_LETTERS = "ABCDEFGHIJ"
NOTMNIST_TEST_FRACTION = 0.1
NOTMNIST_SPLIT_SEED = 0  # fixed, so every run is tested on the same notMNIST images
NOTMNIST_HUB = "anubhavmaity/notMNIST"  # a parquet copy on the Hugging Face Hub (columns image, label)
NOTMNIST_URL = "http://yaroslavvb.com/upload/notMNIST/notMNIST_small.tar.gz"
TINY_IMAGENET_CLASSES = 200
TINY_IMAGENET_HUB = "zh-plus/tiny-imagenet"  # parquet copy: splits train and valid, columns image, label
TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclass(frozen=True)
class ContinualTask:
    name: str
    classes: tuple[int, ...]  # global label ids this task's items carry
    train: Dataset  # items (float C x H x W, normalised; int global label; int task id)
    val: Dataset  # a seeded, class-balanced hold-out of the training set
    test: Dataset


@dataclass(frozen=True)
class Benchmark:
    tasks: tuple[ContinualTask, ...]  # in training order; task t's items carry task id t
    num_classes: int  # size of the label space shared by all tasks (one logit each)
    image_shape: tuple[int, int, int]  # (C, H, W)

    @property
    def task_names(self) -> list[str]:
        return [task.name for task in self.tasks]

    @property
    def task_classes(self) -> list[tuple[int, ...]]:
        return [task.classes for task in self.tasks]


def build_benchmark(name: str, root: str = "data", *, download: bool = False, seed: int = 0,
                    val_fraction: float = 0.1, **options) -> Benchmark:
    """The benchmark called `name` (one of CONTINUAL_BENCHMARK_NAMES) as a sequence of tasks.

    `root` is the benchmark's folder (see each builder for its layout). `download=True` fetches what the
    network allows. `seed` draws what is random about the benchmark (class or task order, val hold-outs,
    synthetic images); `val_fraction` of each task's training set is held out as its val split.
    `options` are the benchmark's own: see its builder below.
    """
    if name not in BUILDERS:
        raise ValueError(f"Unknown benchmark {name!r}. Valid names: {', '.join(CONTINUAL_BENCHMARK_NAMES)}.")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"benchmark.val_fraction={val_fraction} must be in [0, 1): the fraction of each "
                         "task's training set held out for validation.")
    builder = BUILDERS[name]
    check_options("Benchmark", name, builder, options, given_apart=COMMON_ARGUMENTS,
                  common=COMMON_ARGUMENTS[1:])
    return builder(Path(root), download, seed, val_fraction, **options)


# ---- Tasks from labelled datasets --------------------------------------------------------------------

class LabelledImages(Dataset):
    """Items (transform(image), label), `load(index)` giving the PIL image; `labels` known up front."""

    def __init__(self, load: Callable[[int], Image.Image], labels: Sequence[int], transform: Callable):
        self.load, self.labels, self.transform = load, np.asarray(labels, dtype=np.int64), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.load(index)), int(self.labels[index])


class TaskSplit(Dataset):
    """The items `indices` of `base` as (image, global label, task id); `global_label[local]` maps labels."""

    def __init__(self, base: Dataset, indices: Sequence[int], global_label: Sequence[int], task_id: int):
        self.base, self.indices, self.task_id = base, np.asarray(indices, dtype=np.int64), task_id
        self.global_label = np.asarray(global_label, dtype=np.int64)
        self.labels = self.global_label[labels_of(base)[self.indices]]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, _ = self.base[int(self.indices[index])]
        return image, int(self.labels[index]), self.task_id


def make_task(name: str, task_id: int, local_classes: Sequence[int], global_label: Sequence[int],
              train: Dataset, test: Dataset, seed: int, val_fraction: float) -> ContinualTask:
    """The task made of the items of `train` / `test` whose (local) label is in `local_classes`."""
    train_items = np.flatnonzero(np.isin(labels_of(train), local_classes))
    test_items = np.flatnonzero(np.isin(labels_of(test), local_classes))
    rng = np.random.default_rng([seed, task_id])
    kept, held = balanced_holdout(labels_of(train)[train_items], val_fraction, rng)
    classes = tuple(sorted(int(global_label[c]) for c in local_classes))
    return ContinualTask(name, classes, TaskSplit(train, train_items[kept], global_label, task_id),
                         TaskSplit(train, train_items[held], global_label, task_id),
                         TaskSplit(test, test_items, global_label, task_id))


def to_tensor(name: str, size: int) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> normalised 3 x size x size: grayscale repeated to 3 channels, 28x28 padded to 32x32."""
    mean, std = MEAN_STD[name]
    grayscale = len(mean) == 1
    steps = [transforms.Pad((size - 28) // 2)] if grayscale and size > 28 else []
    steps += [transforms.Grayscale(3)] if grayscale else []
    steps += [transforms.ToTensor(), transforms.Normalize(mean * 3 if grayscale else mean,
                                                          std * 3 if grayscale else std)]
    return transforms.Compose(steps)


# ---- 5-dataset -------------------------------------------------------------------------------------

def five_datasets(root: Path, download: bool, seed: int, val_fraction: float,
                  order: Sequence[str] = FIVE_DATASET_NAMES, shuffle_order: bool = False) -> Benchmark:
    """CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST: one 10-class task each, every image 3x32x32.

    Expected under `root` (torchvision's layouts; download=true fetches all but notMNIST's folder):
      cifar10/cifar-10-batches-py/...   mnist/MNIST/raw/*-ubyte   svhn/{train,test}_32x32.mat
      notMNIST_small/{A..J}/*.png (or notmnist/**/*.parquet)      fashion_mnist/FashionMNIST/raw/*-ubyte
    `order` lists the datasets in training order; `shuffle_order=true` shuffles it with `seed`.
    Task t's labels are 10t + the dataset's own label.
    """
    order = list(order)
    unknown = [d for d in order if d not in FIVE_DATASET_NAMES]
    if unknown or len(set(order)) != len(order) or not order:
        raise ValueError(f"benchmark.order={order} must name distinct datasets among "
                         f"{', '.join(FIVE_DATASET_NAMES)}"
                         + (f"; unknown: {', '.join(unknown)}." if unknown else "."))
    if shuffle_order:
        order = [order[i] for i in np.random.default_rng([seed, 1]).permutation(len(order))]
    splits, missing = {}, []
    for dataset_name in order:
        try:
            splits[dataset_name] = FIVE_DATASET_LOADERS[dataset_name](root, download)
        except DatasetNotFoundError as error:
            missing.append(str(error))
    if missing:
        raise DatasetNotFoundError(f"5-dataset: {len(missing)} of its datasets not found under {root}.\n"
                                   + "\n".join(f"- {m}" for m in missing))
    tasks = [make_task(dataset_name, t, range(10), [10 * t + c for c in range(10)], *splits[dataset_name],
                       seed, val_fraction) for t, dataset_name in enumerate(order)]
    return Benchmark(tuple(tasks), 10 * len(order), (3, 32, 32))


def cifar10_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / "cifar10", to_tensor("cifar10", 32)
    try:
        return tuple(torchvision.datasets.CIFAR10(folder, train=train, transform=transform,
                                                  download=download and train) for train in (True, False))
    except (OSError, RuntimeError) as error:
        raise DatasetNotFoundError(cifar_layout_message("cifar10", folder, download, error)) from error


def mnist_like_splits(name: str, dataset_class: type, root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / name, to_tensor(name, 32)
    try:
        return tuple(dataset_class(folder, train=train, transform=transform, download=download and train)
                     for train in (True, False))
    except (OSError, RuntimeError) as error:
        raw = folder / dataset_class.__name__ / "raw"
        files = [file.removesuffix(".gz") for file, _ in dataset_class.resources]
        raise DatasetNotFoundError(
            f"{name} not found in {raw} ({error}). Expected {', '.join(files)} (the idx files, "
            f"unzipped) in {raw}. Set benchmark.download=true to fetch them with torchvision when online, "
            f"or fetch them from {dataset_class.mirrors[0]}.") from error


def svhn_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    folder, transform = root / "svhn", to_tensor("svhn", 32)
    try:
        splits = tuple(torchvision.datasets.SVHN(folder, split=split, transform=transform, download=download)
                       for split in ("train", "test"))
    except (OSError, RuntimeError) as error:
        raise DatasetNotFoundError(
            f"svhn not found in {folder} ({error}). Expected train_32x32.mat and test_32x32.mat (the "
            f"cropped-digits format) in {folder}. Set benchmark.download=true to fetch them with torchvision "
            f"when online, or fetch them from http://ufldl.stanford.edu/housenumbers/.") from error
    except ModuleNotFoundError as error:  # torchvision reads .mat files with scipy, an optional dependency
        raise ModuleNotFoundError(f"SVHN's .mat files are read with scipy, which is not installed "
                                  f"({error}): pip install scipy.") from error
    return splits


def notmnist_splits(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    """notMNIST_small's letter folders (unreadable PNGs skipped and counted), else a parquet copy; a fixed,
    seeded 10% of its images is the test split."""
    folder, parquet_folder = root / "notMNIST_small", root / "notmnist"
    if folder.is_dir():
        pixels, labels = read_notmnist_folder(folder)
    elif sorted(parquet_folder.rglob("*.parquet")) or download:
        pixels, labels = read_notmnist_parquet(parquet_folder, download)
    else:
        raise DatasetNotFoundError(
            f"notmnist not found: neither {folder} nor parquet files under {parquet_folder}. Expected "
            f"{folder}/A/*.png ... {folder}/J/*.png (unpack {NOTMNIST_URL} into {root}), or a parquet copy "
            f"(columns image, label) under {parquet_folder}, which benchmark.download=true fetches from "
            f"the Hugging Face Hub ({NOTMNIST_HUB}) when online.")
    train, test = balanced_holdout(labels, NOTMNIST_TEST_FRACTION, np.random.default_rng(NOTMNIST_SPLIT_SEED))
    transform = to_tensor("notmnist", 32)
    return tuple(LabelledImages(lambda i, split=pixels[items]: Image.fromarray(split[i]), labels[items],
                                transform) for items in (train, test))


def read_notmnist_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    pixels, labels, skipped, total = [], [], 0, 0
    for label, letter in enumerate(NOTMNIST_LETTERS):
        for path in sorted((folder / letter).glob("*.png")):
            total += 1
            try:
                with Image.open(path) as image:
                    pixels.append(np.asarray(as_28x28_gray(image)))
                labels.append(label)
            except (OSError, SyntaxError, ValueError):  # the archive holds a few truncated or empty PNGs
                skipped += 1
    if not labels:
        raise DatasetNotFoundError(f"notmnist: no readable PNG in {folder}/A..J ({total} files tried). "
                                   f"Expected {folder}/A/*.png ... {folder}/J/*.png from {NOTMNIST_URL}.")
    log.warning("notMNIST: skipped %d unreadable image(s) of %d in %s", skipped, total, folder)
    return np.stack(pixels), np.asarray(labels)


def read_notmnist_parquet(folder: Path, download: bool) -> tuple[np.ndarray, np.ndarray]:
    hub = read_parquet(folder, download, NOTMNIST_HUB)
    records = [record for split in hub.values() for record in split]
    names = next(iter(hub.values())).features["label"]
    letters = getattr(names, "names", None)  # a ClassLabel's names map ids to letters when present
    labels = [NOTMNIST_LETTERS.index(letters[r["label"]]) if letters else int(r["label"]) for r in records]
    return np.stack([np.asarray(as_28x28_gray(r["image"])) for r in records]), np.asarray(labels)


def read_parquet(folder: Path, download: bool, hub_name: str) -> dict:
    """{split: datasets.Dataset} from the parquet files under `folder` (split = file-name prefix before '-'),
    or, with none there and download=True, from the Hugging Face Hub into `folder`."""
    import datasets  # heavy; only these paths need it

    files = sorted(folder.rglob("*.parquet"))
    if files:
        splits: dict[str, list[str]] = {}
        for path in files:
            splits.setdefault(path.name.split("-")[0].split(".")[0], []).append(str(path))
        return {split: datasets.Dataset.from_parquet(paths, cache_dir=str(folder / ".cache"))
                for split, paths in splits.items()}
    try:
        return dict(datasets.load_dataset(hub_name, cache_dir=str(folder)))
    except Exception as error:  # the hub client raises many kinds (connection, not found, offline mode)
        raise DatasetNotFoundError(f"No parquet files under {folder}, and fetching {hub_name} from the "
                                   f"Hugging Face Hub failed ({type(error).__name__}: {error}). Without "
                                   f"network, copy its parquet files into {folder}.") from error


def as_28x28_gray(image: Image.Image) -> Image.Image:
    image = image.convert("L")
    return image if image.size == (28, 28) else image.resize((28, 28), Image.BILINEAR)


FIVE_DATASET_LOADERS = {
    "cifar10": cifar10_splits,
    "mnist": partial(mnist_like_splits, "mnist", torchvision.datasets.MNIST),
    "svhn": svhn_splits,
    "notmnist": notmnist_splits,
    "fashion_mnist": partial(mnist_like_splits, "fashion_mnist", torchvision.datasets.FashionMNIST),
}


# ---- TinyImageNet ----------------------------------------------------------------------------------

def tiny_imagenet(root: Path, download: bool, seed: int, val_fraction: float,
                  classes_per_task: int = 20) -> Benchmark:
    """TinyImageNet's 200 classes in tasks of `classes_per_task` disjoint classes, in an order drawn from
    `seed`; 3x64x64 images; the official val images are the test split.

    Expected in `root`: the official tiny-imagenet-200 folder (wnids.txt, train/<wnid>/images/*.JPEG,
    val/images/*.JPEG with val/val_annotations.txt), or its parquet copy (train-*.parquet,
    valid-*.parquet) anywhere under root, which download=true fetches from the Hugging Face Hub.
    Classes are numbered by sorted wnid; global label = the class's position in the drawn order.
    """
    if classes_per_task < 1 or TINY_IMAGENET_CLASSES % classes_per_task:
        divisors = [d for d in range(1, TINY_IMAGENET_CLASSES + 1) if TINY_IMAGENET_CLASSES % d == 0]
        raise ValueError(f"benchmark.classes_per_task={classes_per_task} must divide TinyImageNet's "
                         f"{TINY_IMAGENET_CLASSES} classes into equal tasks: one of {divisors}.")
    if (root / "wnids.txt").is_file():
        train, test = read_tiny_imagenet_folder(root)
    elif sorted(root.rglob("*.parquet")) or download:
        train, test = read_tiny_imagenet_parquet(root, download)
    else:
        raise DatasetNotFoundError(
            f"tiny_imagenet not found in {root}: no wnids.txt and no parquet files. Expected the official "
            f"layout {root}/wnids.txt, {root}/train/<wnid>/images/*.JPEG, {root}/val/images/*.JPEG and "
            f"{root}/val/val_annotations.txt (unzip {TINY_IMAGENET_URL} and point benchmark.root at its "
            f"tiny-imagenet-200 folder), or its parquet copy under {root}, which benchmark.download=true "
            f"fetches from the Hugging Face Hub ({TINY_IMAGENET_HUB}) when online.")
    order = np.random.default_rng([seed, 2]).permutation(TINY_IMAGENET_CLASSES)
    global_label = np.argsort(order)  # class order[g] gets global label g
    tasks = [make_task(f"tiny_imagenet_{t}", t, order[t * classes_per_task:(t + 1) * classes_per_task],
                       global_label, train, test, seed, val_fraction)
             for t in range(TINY_IMAGENET_CLASSES // classes_per_task)]
    return Benchmark(tuple(tasks), TINY_IMAGENET_CLASSES, (3, 64, 64))


def read_tiny_imagenet_folder(root: Path) -> tuple[Dataset, Dataset]:
    wnids = sorted(line.strip() for line in (root / "wnids.txt").read_text().splitlines() if line.strip())
    if len(wnids) != TINY_IMAGENET_CLASSES:
        raise DatasetNotFoundError(f"{root / 'wnids.txt'} lists {len(wnids)} classes, not TinyImageNet's "
                                   f"{TINY_IMAGENET_CLASSES}: is {root} the tiny-imagenet-200 folder?")
    train_paths, train_labels = [], []
    for label, wnid in enumerate(wnids):
        paths = sorted((root / "train" / wnid / "images").glob("*.JPEG"))
        if not paths:
            raise DatasetNotFoundError(f"tiny_imagenet: no images in {root / 'train' / wnid / 'images'} "
                                       f"(expected train/<wnid>/images/*.JPEG for every wnid in wnids.txt).")
        train_paths += paths
        train_labels += [label] * len(paths)
    annotations = root / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise DatasetNotFoundError(f"tiny_imagenet: {annotations} not found (expected val/images/*.JPEG and "
                                   f"val/val_annotations.txt, one '<file>\\t<wnid>\\t...' line per image).")
    index = {wnid: label for label, wnid in enumerate(wnids)}
    val = [line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip()]
    unknown = sorted({wnid for _, wnid in val} - set(index))
    if unknown:
        raise DatasetNotFoundError(f"{annotations} names wnids missing from wnids.txt: {unknown[:5]}.")
    val_paths = [root / "val" / "images" / file for file, _ in val]
    transform = to_tensor("tiny_imagenet", 64)
    return (LabelledImages(lambda i: open_rgb(train_paths[i]), train_labels, transform),
            LabelledImages(lambda i: open_rgb(val_paths[i]), [index[w] for _, w in val], transform))


def read_tiny_imagenet_parquet(root: Path, download: bool) -> tuple[Dataset, Dataset]:
    hub = read_parquet(root, download, TINY_IMAGENET_HUB)
    test_split = next((s for s in ("valid", "val", "test") if s in hub), None)
    if "train" not in hub or test_split is None:
        raise DatasetNotFoundError(f"tiny_imagenet parquet files under {root} give splits {sorted(hub)}; "
                                   "expected train-*.parquet and valid-*.parquet.")
    names = getattr(hub["train"].features["label"], "names", None)
    # Hub copies number classes by their own wnid list; renumber by sorted wnid as the folder layout does.
    renumber = np.argsort(np.argsort(names)) if names else np.arange(TINY_IMAGENET_CLASSES)
    transform = to_tensor("tiny_imagenet", 64)

    def split(hf) -> LabelledImages:
        labels = renumber[list(hf["label"])]
        return LabelledImages(lambda i: fit_64(hf[i]["image"].convert("RGB")), labels, transform)

    return split(hub["train"]), split(hub[test_split])


def open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:  # a few TinyImageNet images are grayscale
        return fit_64(image.convert("RGB"))


def fit_64(image: Image.Image) -> Image.Image:
    return image if image.size == (64, 64) else image.resize((64, 64), Image.BILINEAR)


# ---- Synthetic tasks -------------------------------------------------------------------------------

class TemplateImages(Dataset):
    """Item i: template[label] + offset + Gaussian noise drawn from (seed, i), the same every time."""

    def __init__(self, templates: torch.Tensor, template_of: torch.Tensor, labels: torch.Tensor,
                 offset: torch.Tensor, noise_std: float, seed: tuple[int, ...]):
        self.templates, self.template_of, self.labels = templates, template_of, labels.numpy()
        self.offset, self.noise_std, self.seed = offset, noise_std, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        label = int(self.labels[index])
        rng = np.random.default_rng([*self.seed, index])
        noise = torch.from_numpy(rng.standard_normal(self.offset.shape, dtype=np.float32))
        return self.templates[self.template_of[label]] + self.offset + self.noise_std * noise, label


def synthetic_tasks(root: Path, download: bool, seed: int, val_fraction: float, num_tasks: int = 5,
                    classes_per_task: int = 2, train_size: int = 200, test_size: int = 100,
                    image_size: int = 32, noise_std: float = 1.0, task_offset_std: float = 1.0) -> Benchmark:
    """Generated tasks whose labels conflict, so a network trained on them in sequence forgets.

    Every task shows the same `classes_per_task` class templates (smooth colour patterns) and shares the
    label ids 0..classes_per_task-1; each task relabels every template relative to the task before it,
    so what one task teaches the next contradicts. A task-specific offset pattern
    (`task_offset_std`) tells the tasks apart, so a learner that remembers could solve them all.
    Nothing is read from `root` or downloaded; everything follows from `seed`.
    """
    generator = torch.Generator().manual_seed(seed)

    def smooth(count: int) -> torch.Tensor:  # upsampled from 4x4, so convolutions with pooling see it
        coarse = torch.randn(count, 3, 4, 4, generator=generator)
        return torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear",
                                               align_corners=False)

    templates, offsets = smooth(classes_per_task), task_offset_std * smooth(num_tasks)
    template_of = [torch.arange(classes_per_task)]
    for _ in range(1, num_tasks):  # a new template for every label: a random derangement of the last
        shift = torch.randperm(classes_per_task, generator=generator)
        while classes_per_task > 1 and (shift == torch.arange(classes_per_task)).any():
            shift = torch.randperm(classes_per_task, generator=generator)
        template_of.append(template_of[-1][shift])
    tasks = []
    for t in range(num_tasks):
        train_labels, test_labels = (torch.randint(classes_per_task, (n,), generator=generator)
                                     for n in (train_size, test_size))
        train = TemplateImages(templates, template_of[t], train_labels, offsets[t], noise_std, (seed, t, 0))
        test = TemplateImages(templates, template_of[t], test_labels, offsets[t], noise_std, (seed, t, 1))
        tasks.append(make_task(f"synthetic_{t}", t, range(classes_per_task), range(classes_per_task), train,
                               test, seed, val_fraction))
    return Benchmark(tuple(tasks), classes_per_task, (3, image_size, image_size))


BUILDERS = {
    "five_datasets": five_datasets, "tiny_imagenet": tiny_imagenet, "synthetic_tasks": synthetic_tasks,
}
