"""5-dataset: CIFAR-10, MNIST, SVHN, notMNIST, Fashion-MNIST, one 10-class task each, every image 3x32x32."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torchvision

from experiments.data.continual.tasks import Benchmark, make_task
from experiments.data.images import DatasetNotFoundError
from experiments.data.sources.notmnist import notmnist_splits
from experiments.data.sources.torchvision_sets import cifar10_splits, mnist_like_splits, svhn_splits
from experiments.options import UserError

LOADERS = {  # in the default task order
    "cifar10": cifar10_splits,
    "mnist": partial(mnist_like_splits, "mnist", torchvision.datasets.MNIST),
    "svhn": svhn_splits,
    "notmnist": notmnist_splits,
    "fashion_mnist": partial(mnist_like_splits, "fashion_mnist", torchvision.datasets.FashionMNIST),
}
FIVE_DATASET_NAMES = tuple(LOADERS)


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
    unknown = [d for d in order if d not in LOADERS]
    if unknown or len(set(order)) != len(order) or not order:
        raise UserError(f"benchmark.order={order} must name distinct datasets among "
                         f"{', '.join(FIVE_DATASET_NAMES)}"
                         + (f"; unknown: {', '.join(unknown)}." if unknown else "."))
    if shuffle_order:
        order = [order[i] for i in np.random.default_rng([seed, 1]).permutation(len(order))]
    splits, missing = {}, []
    for dataset_name in order:
        try:
            splits[dataset_name] = LOADERS[dataset_name](root, download)
        except DatasetNotFoundError as error:
            missing.append(str(error))
    if missing:
        raise DatasetNotFoundError(f"5-dataset: {len(missing)} of its datasets not found under {root}.\n"
                                   + "\n".join(f"- {m}" for m in missing))
    tasks = [make_task(dataset_name, t, range(10), [10 * t + c for c in range(10)], *splits[dataset_name],
                       seed, val_fraction) for t, dataset_name in enumerate(order)]
    return Benchmark(tuple(tasks), 10 * len(order), (3, 32, 32))
