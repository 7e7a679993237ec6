"""Image classification (CIFAR-10/100, ImageNet, synthetic) with any cmopt optimizer.

    python -m experiments.image_classification experiment=smoke   # synthetic data, seconds on a CPU
    python -m experiments.image_classification dataset=cifar100 model=resnet34 optimizer=adam_cm
    python -m experiments.image_classification -m optimizer=adam,adam_cg,adam_cm seed=0,1,2
    torchrun --nproc_per_node=8 -m experiments.image_classification experiment=imagenet_efficientnet_b0

Running the same command again resumes the run from its folder's checkpoint; the folder follows from
the config (configs/image_classification/image_classification.yaml).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.data.images import build_image_datasets
from experiments.engine import Task, TrainResult, run_in_hydra, train
from experiments.engine.launcher import check_launcher
from experiments.models import shard_units
from experiments.models.images import build_image_model
from experiments.options import UserError


def classification_forward(model: nn.Module, batch) -> tuple[torch.Tensor, int, dict[str, torch.Tensor]]:
    """Mean cross-entropy, the batch size, and the number of correct predictions ("acc" once divided)."""
    images, labels = batch
    logits = model(images)
    correct = (logits.argmax(dim=1) == labels).sum()
    return nn.functional.cross_entropy(logits.float(), labels), len(labels), {"acc": correct}


def build_task(cfg: DictConfig) -> Task:
    data = build_image_datasets(**cfg.dataset)
    model = build_image_model(**cfg.model, num_classes=data.num_classes)
    if data.val is None:
        if cfg.get("optimized_metric"):  # a search would train every trial for nothing
            raise UserError(f"optimized_metric={cfg.optimized_metric} is measured on a validation split, and "
                             "dataset.val_size=0 holds none out. Set e.g. dataset.val_size=5000 (CIFAR) or "
                             "dataset.val_size=512 (synthetic).")
        return Task(model=model, shard_units=shard_units(model), train_data=data.train, eval_data={"test": data.test},
                    forward=classification_forward, items="images")
    # With a validation split (dataset.val_size), summary.json reports every metric at the evaluation with
    # the best select.metric (final_* at the end), and that model is kept as best_model.pt.
    return Task(model=model, shard_units=shard_units(model), train_data=data.train, eval_data={"val": data.val, "test": data.test},
                forward=classification_forward, select=(cfg.select.metric, cfg.select.mode), items="images")


def run(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    return train(cfg, build_task, run_dir)


@hydra.main(config_path="../configs/image_classification", config_name="image_classification", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_in_hydra(cfg, run)


if __name__ == "__main__":
    check_launcher(sys.argv[1:])
    main()
