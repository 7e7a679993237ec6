"""Image datasets read back from tiny files in the real formats, missing-files errors, synthetic data."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from PIL import Image

from experiments.data.images import IMAGE_DATASET_NAMES, DatasetNotFoundError, build_image_datasets

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def write_cifar10(folder, rng):
    """The cifar-10-batches-py layout: pickled dicts with uint8 rows of 3072 (RRR..GGG..BBB) and labels."""
    folder.mkdir(parents=True)
    batches = {}
    for file_name, count in [*((f"data_batch_{i}", 2) for i in range(1, 6)), ("test_batch", 3)]:
        batch = {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                 "labels": rng.integers(0, 10, count).tolist()}
        (folder / file_name).write_bytes(pickle.dumps(batch))
        batches[file_name] = batch
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return batches


def skip_md5(monkeypatch):
    """torchvision checks each file's md5 against the real CIFAR-10's; hand-written files cannot match it."""
    cifar = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cifar, "train_list", [[name, None] for name, _ in cifar.train_list])
    monkeypatch.setattr(cifar, "test_list", [[name, None] for name, _ in cifar.test_list])
    monkeypatch.setattr(cifar, "meta", {**cifar.meta, "md5": None})


def test_cifar10_files_read_back_normalised(tmp_path, monkeypatch):
    batches = write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(0))
    skip_md5(monkeypatch)
    data = build_image_datasets("cifar10", root=str(tmp_path), augment=False)
    assert (len(data.train), len(data.test), data.num_classes, data.image_shape) == (10, 3, 10, (3, 32, 32))
    for split, file_name, row in [(data.train, "data_batch_3", 1), (data.test, "test_batch", 2)]:
        index = 2 * (int(file_name[-1]) - 1) + row if split is data.train else row
        image, label = split[index]
        raw = batches[file_name]["data"][row].reshape(3, 32, 32) / 255.0
        expected = (raw - np.array(CIFAR10_MEAN)[:, None, None]) / np.array(CIFAR10_STD)[:, None, None]
        assert label == batches[file_name]["labels"][row]
        torch.testing.assert_close(image, torch.tensor(expected, dtype=torch.float32), atol=1e-5, rtol=0)


def test_cifar10_augmentation_crops_and_flips_the_train_split_only(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(1))
    skip_md5(monkeypatch)
    plain = build_image_datasets("cifar10", root=str(tmp_path), augment=False)
    augmented = build_image_datasets("cifar10", root=str(tmp_path), augment=True)
    torch.manual_seed(0)
    draws = [augmented.train[0][0] for _ in range(8)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(d, plain.train[0][0]) for d in draws)
    torch.testing.assert_close(augmented.test[0][0], plain.test[0][0], atol=0, rtol=0)


@pytest.mark.parametrize("name,folder,files", [
    ("cifar10", "cifar-10-batches-py", ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]),
    ("cifar100", "cifar-100-python", ["train", "test", "meta"]),
])
def test_missing_cifar_names_the_layout_and_the_download_flag(tmp_path, name, folder, files):
    with pytest.raises(DatasetNotFoundError) as caught:
        build_image_datasets(name, root=str(tmp_path / "nowhere"))
    message = str(caught.value)
    assert str(tmp_path / "nowhere" / folder) in message
    assert all(f in message for f in files)
    assert "dataset.download=true" in message


def test_cifar_files_failing_the_checksum_are_reported(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", np.random.default_rng(2))
    with pytest.raises(DatasetNotFoundError, match="all files present, but torchvision rejected them"):
        build_image_datasets("cifar10", root=str(tmp_path))


COLOURS = {"cat": (200, 30, 90), "dog": (10, 250, 128)}


def write_image_folders(root, splits=("train", "val"), classes=("cat", "dog")):
    for split in splits:
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (48, 40), COLOURS[name]).save(root / split / name / f"{i}.png")


def test_imagenet_folders_read_back(tmp_path):
    write_image_folders(tmp_path)
    data = build_image_datasets("imagenet", root=str(tmp_path), image_size=32)
    assert (len(data.train), len(data.test), data.num_classes, data.image_shape) == (4, 4, 2, (3, 32, 32))
    for index, (name, label) in enumerate([("cat", 0), ("cat", 0), ("dog", 1), ("dog", 1)]):
        image, got_label = data.test[index]
        # A plain-coloured picture stays plain under resize and crop, so every pixel is the normalised colour.
        expected = [(c / 255 - m) / s for c, m, s in zip(COLOURS[name], IMAGENET_MEAN, IMAGENET_STD)]
        assert got_label == label
        plain = torch.tensor(expected).view(3, 1, 1).expand(3, 32, 32)
        torch.testing.assert_close(image, plain, atol=1e-5, rtol=0)
        assert data.train[index][0].shape == (3, 32, 32)


def test_missing_imagenet_names_the_root_and_the_class_folder_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as caught:
        build_image_datasets("imagenet", root=str(tmp_path / "imagenet"))
    message = str(caught.value)
    assert str(tmp_path / "imagenet" / "train") in message
    assert "train/<class>/" in message and "val/<class>/" in message


def test_flat_imagenet_val_folder_is_reported(tmp_path):
    write_image_folders(tmp_path, splits=("train",))
    (tmp_path / "val").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.png")
    with pytest.raises(DatasetNotFoundError, match="sorted into class folders"):
        build_image_datasets("imagenet", root=str(tmp_path))


def test_imagenet_train_and_val_with_different_classes_are_reported(tmp_path):
    write_image_folders(tmp_path, splits=("train",))
    write_image_folders(tmp_path, splits=("val",), classes=("cat",))
    with pytest.raises(DatasetNotFoundError, match=r"only in train: \['dog'\]"):
        build_image_datasets("imagenet", root=str(tmp_path))


def test_imagenet_download_is_refused(tmp_path):
    with pytest.raises(ValueError, match="dataset.download=false"):
        build_image_datasets("imagenet", root=str(tmp_path), download=True)


def test_synthetic_is_deterministic_given_its_seed():
    first = build_image_datasets("synthetic", train_size=20, test_size=10, seed=3)
    again = build_image_datasets("synthetic", train_size=20, test_size=10, seed=3)
    other = build_image_datasets("synthetic", train_size=20, test_size=10, seed=4)
    assert (len(first.train), len(first.test), first.num_classes) == (20, 10, 10)
    assert first.image_shape == (3, 32, 32)
    for index in (0, 7, 19):
        torch.testing.assert_close(first.train[index][0], again.train[index][0], atol=0, rtol=0)
        assert first.train[index][1] == again.train[index][1]
        assert not torch.equal(first.train[index][0], other.train[index][0])
    assert not torch.equal(first.train[0][0], first.test[0][0])


def stack(split):
    images, labels = zip(*(split[i] for i in range(len(split))))
    return torch.stack(images).flatten(1), torch.tensor(labels)


def test_synthetic_classes_are_learnable_and_not_given_away():
    data = build_image_datasets("synthetic", num_classes=5, train_size=500, test_size=200, image_size=16)
    assert data.image_shape == (3, 16, 16)
    train_x, train_y = stack(data.train)
    test_x, test_y = stack(data.test)
    assert set(train_y.tolist()) == set(range(5))
    # Nearest class mean of the training images, a classifier that knows nothing of how the data was made.
    centroids = torch.stack([train_x[train_y == c].mean(0) for c in range(5)])
    accuracy = (torch.cdist(test_x, centroids).argmin(1) == test_y).float().mean().item()
    assert accuracy > 0.9
    # The noise is as large as the signal, so single pixels say little: one pixel's nearest mean is weak.
    pixel_accuracy = ((test_x[:, :1] - centroids[None, :, 0]).abs().argmin(1) == test_y).float().mean().item()
    assert pixel_accuracy < 0.6


def test_unknown_dataset_and_option_are_refused():
    with pytest.raises(ValueError, match="Unknown dataset 'mnist'.*" + ", ".join(IMAGE_DATASET_NAMES)):
        build_image_datasets("mnist")
    with pytest.raises(ValueError, match="'synthetic' does not take option\\(s\\) batch_size.*num_classes"):
        build_image_datasets("synthetic", batch_size=128)


CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def test_every_dataset_config_reaches_its_builder(tmp_path):
    # The image and language-modelling runners each have a dataset group: each file reaches its runner's builder.
    from experiments.data.text import TEXT_DATASET_NAMES, build_text_corpus

    groups = {"image_classification": IMAGE_DATASET_NAMES, "language_modeling": TEXT_DATASET_NAMES}
    for runner, names in groups.items():
        assert {path.stem for path in (CONFIGS / runner / "dataset").glob("*.yaml")} == set(names)
    files = {path.stem: OmegaConf.load(path) for path in CONFIGS.glob("*/dataset/*.yaml")}
    for stem, config in files.items():
        # The primary config supplies data_dir; no files are there, so a clear error ends it.
        resolved = OmegaConf.merge({"data_dir": str(tmp_path)}, {"dataset": config}).dataset
        assert resolved.name == stem
        build = build_image_datasets if stem in IMAGE_DATASET_NAMES else build_text_corpus
        if stem == "synthetic":
            assert build(**resolved).image_shape == (3, 32, 32)
        elif stem == "synthetic_lm":
            assert build(**resolved).vocab_size == 50
        else:
            with pytest.raises(DatasetNotFoundError, match=str(tmp_path / stem)):
                build(**resolved)


def test_the_validation_split_is_a_class_balanced_seeded_holdout_of_train_without_augmentation(tmp_path, monkeypatch):
    # 10 train images in the CIFAR files; hold out 5: about half of each class, never the test images.
    rng = np.random.default_rng(3)
    write_cifar10(tmp_path / "cifar-10-batches-py", rng)
    skip_md5(monkeypatch)
    whole = build_image_datasets("cifar10", root=str(tmp_path), augment=False)
    data = build_image_datasets("cifar10", root=str(tmp_path), augment=True, val_size=5, val_seed=7)
    labels = np.array([whole.train[i][1] for i in range(len(whole.train))])
    kept, held = data.train.indices, data.val.indices
    assert sorted([*kept, *held]) == list(range(10)) and not set(kept) & set(held)
    assert len(held) == 5  # exactly dataset.val_size
    for c in np.unique(labels):  # each class's share 5 * n_c / 10, rounded down or (largest remainders) up
        assert abs((labels[held] == c).sum() - (labels == c).sum() / 2) < 1
    for k, index in enumerate(held):  # not augmented: the plain image, every time
        torch.testing.assert_close(data.val[k][0], whole.train[index][0], atol=0, rtol=0)
    again = build_image_datasets("cifar10", root=str(tmp_path), val_size=5, val_seed=7)
    assert list(again.val.indices) == list(held)  # the same split on every run of a sweep
    with pytest.raises(ValueError, match=r"dataset.val_size=10 must be an integer from 0"):
        build_image_datasets("cifar10", root=str(tmp_path), val_size=10)


def test_val_size_holds_out_exactly_that_many_items_in_class_shares():
    from experiments.data.splits import balanced_holdout_of_size

    labels = np.array([0] * 5 + [1] * 3 + [2] * 2)  # shares of 5: 2.5, 1.5, 1.0 -> 2, 1, 1 and one left over
    kept, held = balanced_holdout_of_size(labels, 5, np.random.default_rng(0))
    assert [int((labels[held] == c).sum()) for c in (0, 1, 2)] == [3, 1, 1]  # the tie 0.5/0.5 goes to class 0
    assert sorted([*kept, *held]) == list(range(10))
    # The synthetic set with dataset.val_size=128 (the README's Optuna command): 128 held out, not 131.
    data = build_image_datasets("synthetic", val_size=128)
    labels = np.array([data.train.dataset[i][1] for i in range(len(data.train.dataset))])
    held = np.asarray(data.val.indices)
    assert len(held) == 128 and len(data.train) == len(labels) - 128
    counts = np.bincount(labels)
    assert all(abs((labels[held] == c).sum() - 128 * counts[c] / len(labels)) < 1 for c in range(len(counts)))
