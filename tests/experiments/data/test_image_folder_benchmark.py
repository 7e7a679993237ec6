"""benchmark=image_folder on a tiny tree of PNGs the test writes: tasks, class order, hold-outs, messages."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.data.continual import DatasetNotFoundError, build_benchmark
from tests.experiments.continual_files import colour_of, write_image_folder

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root)  # 6 classes, 4 train and 2 val images each
    return root


def folder_class(image: torch.Tensor) -> int:
    """The sorted class folder an image was painted for: colour_of(k) holds k in its red and green bands."""
    pixel = image[:2, 5, 5] * torch.tensor(IMAGENET_STD[:2]) + torch.tensor(IMAGENET_MEAN[:2])
    red, green = (pixel * 255).round().tolist()
    return 16 * int(red // 16) + int(green // 16)


def items(split):
    return [split[i] for i in range(len(split))]


def test_classes_are_split_into_tasks_in_a_seeded_order_and_keep_one_label_everywhere(tree):
    benchmark = build_benchmark("image_folder", root=str(tree), classes_per_task=2, val_fraction=0.5, seed=3)
    assert (len(benchmark.tasks), benchmark.num_classes, benchmark.image_shape) == (3, 6, (3, 32, 32))
    assert benchmark.task_names == ["image_folder_0", "image_folder_1", "image_folder_2"]
    label_of_folder = {}
    for t, task in enumerate(benchmark.tasks):
        assert task.classes == (2 * t, 2 * t + 1)
        # 4 training images a class, half held out: 2 train and 2 val a class; 2 test a class
        assert (len(task.train), len(task.val), len(task.test)) == (4, 4, 4)
        for image, label, task_id in items(task.train) + items(task.val) + items(task.test):
            assert image.shape == (3, 32, 32) and task_id == t and label in task.classes
            assert label_of_folder.setdefault(folder_class(image), label) == label
    assert sorted(label_of_folder) == list(range(6)) and sorted(label_of_folder.values()) == list(range(6))
    orders = [tuple(sorted(label_of_folder, key=label_of_folder.get))]
    for seed in (3, 4, 5):
        again = build_benchmark("image_folder", root=str(tree), classes_per_task=2, seed=seed)
        labelled = {label: folder_class(image) for task in again.tasks for image, label, _ in items(task.test)}
        orders.append(tuple(labelled[g] for g in range(6)))
    assert orders[0] == orders[1] and len(set(orders)) > 1  # the same seed, the same order; others differ


def test_val_is_a_seeded_class_balanced_hold_out_disjoint_from_train(tree):
    first, same, other = (build_benchmark("image_folder", root=str(tree), classes_per_task=3, val_fraction=0.25,
                                          seed=s).tasks[0] for s in (0, 0, 1))
    assert np.bincount(first.val.labels - min(first.classes)).tolist() == [1, 1, 1]  # a quarter of 4 a class
    assert not set(first.train.indices) & set(first.val.indices)
    assert list(first.val.indices) == list(same.val.indices)
    assert (sorted(first.val.indices), first.classes) != (sorted(other.val.indices), other.classes)
    without = build_benchmark("image_folder", root=str(tree), classes_per_task=3, val_fraction=0).tasks[0]
    assert (len(without.train), len(without.val)) == (12, 0)


def test_images_are_resized_and_normalised_and_test_folder_is_read_without_val(tmp_path):
    write_image_folder(tmp_path, classes=2, train_per_class=1, test_per_class=3, test_folder="test")
    benchmark = build_benchmark("image_folder", root=str(tmp_path), classes_per_task=2, image_size=16,
                                val_fraction=0)
    task = benchmark.tasks[0]
    assert benchmark.image_shape == (3, 16, 16) and (len(task.train), len(task.test)) == (2, 6)
    image, _, _ = task.test[0]
    colour = torch.tensor(colour_of(folder_class(image)), dtype=torch.float32) / 255
    expected = ((colour - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))[:, None, None]
    torch.testing.assert_close(image, expected.expand(3, 16, 16), atol=1e-5, rtol=0)  # a plain colour stays


def test_a_missing_folder_names_it_and_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        build_benchmark("image_folder", root=str(tmp_path / "mine"))
    message = str(caught.value)
    for expected in [str(tmp_path / "mine"), "train/<class>/*.png", "val/<class>/*", "test/<class>/*",
                     "benchmark.root"]:
        assert expected in message
    (tmp_path / "only_train" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="has only train split folder"):
        build_benchmark("image_folder", root=str(tmp_path / "only_train"))


def test_class_folders_must_match_and_hold_images(tmp_path):
    write_image_folder(tmp_path / "tree", classes=2)
    (tmp_path / "tree" / "val" / "class_b").rename(tmp_path / "tree" / "val" / "class_z")
    with pytest.raises(DatasetNotFoundError, match=r"only in train: \['class_b'\], only in val: \['class_z'\]"):
        build_benchmark("image_folder", root=str(tmp_path / "tree"))
    for split in ("train", "val"):
        (tmp_path / "empty" / split / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"no images found in .*empty/train"):
        build_benchmark("image_folder", root=str(tmp_path / "empty"))


def test_classes_per_task_must_divide_the_classes(tree):
    with pytest.raises(ValueError, match=r"benchmark.classes_per_task=4 must divide the .* folder's 6 classes "
                                         r"into equal tasks: one of \[1, 2, 3, 6\], e.g. "
                                         r"benchmark.classes_per_task=1\."):
        build_benchmark("image_folder", root=str(tree), classes_per_task=4)
    for bad in (0, 7, True, 1.5):
        with pytest.raises(ValueError, match=f"classes_per_task={bad} must divide"):
            build_benchmark("image_folder", root=str(tree), classes_per_task=bad)


def test_one_class_is_too_few(tmp_path):
    write_image_folder(tmp_path, classes=1)
    with pytest.raises(ValueError, match=r"holds 1 class folder\(s\) \(class_a\); a task needs at least 2"):
        build_benchmark("image_folder", root=str(tmp_path), classes_per_task=1)


def test_download_and_image_size_are_refused_with_the_fix(tree):
    with pytest.raises(ValueError, match="downloads nothing: set benchmark.download=false"):
        build_benchmark("image_folder", root=str(tree), download=True)
    with pytest.raises(ValueError, match=r"image_size=4 must be an integer >= 8.*benchmark.image_size=32"):
        build_benchmark("image_folder", root=str(tree), image_size=4)
