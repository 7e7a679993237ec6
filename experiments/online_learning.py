"""Online (continual) learning: a sequence of tasks (5-dataset, TinyImageNet, your images, synthetic), any cmopt optimizer.

    python -m experiments.online_learning                              # 5-dataset, reduced ResNet-18, adam_cm
    python -m experiments.online_learning benchmark=tiny_imagenet benchmark.classes_per_task=20 \
        optimizer=sam_adam_cm
    python -m experiments.online_learning -m optimizer=adam,adam_cg,adam_cm seed=0,1,2,3,4
    python -m experiments.online_learning experiment=synthetic_tasks  # embedded data, seconds on a CPU

Each task is one stage of the engine: its training stream is seen once (trainer.epochs=1) in batches of
10, with no replay. Task-incremental by default: logits outside an item's own task's classes are masked
in training and evaluation; scenario=class_incremental keeps one head and no task id. The untrained model
is evaluated on every task before the first (the baseline b_j), and every task's val and test splits
after each task. summary.json holds the accuracy matrix R (test) and R_val, the metrics of
experiments/continual_metrics.py on both, and the online accuracy (each training batch's accuracy
before its update, over the whole stream); accuracy_matrix.png is R's heat-map.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.continual_metrics import continual_metrics, plot_accuracy_matrix
from experiments.data.continual import build_benchmark
from experiments.engine import Task, TrainResult, run_in_hydra, train
from experiments.engine.launcher import check_launcher
from experiments.models import shard_units
from experiments.models.continual import build_continual_model, mask_logits, task_class_mask
from experiments.options import UserError

SCENARIOS = ("task_incremental", "class_incremental")
HEATMAP_NAME = "accuracy_matrix.png"


def continual_forward(model: nn.Module, batch, class_mask: torch.Tensor | None = None):
    """Mean cross-entropy, the batch size, and the number correct; with `class_mask`, over each item's
    own task's classes only (task-incremental)."""
    images, labels, task_ids = batch
    logits = model(images)
    if class_mask is not None:
        logits = mask_logits(logits, task_ids, class_mask)
    correct = (logits.argmax(dim=1) == labels).sum()
    return nn.functional.cross_entropy(logits.float(), labels), len(labels), {"acc": correct}


def split_name(task: int, split: str) -> str:
    return f"t{task}_{split}"


def build_task(cfg: DictConfig) -> Task:
    if cfg.scenario not in SCENARIOS:
        raise UserError(f"scenario={cfg.scenario!r}; valid: {', '.join(SCENARIOS)} "
                         "(task_incremental masks each task's logits, class_incremental uses one head).")
    if cfg.get("optimized_metric") and cfg.benchmark.val_fraction == 0:  # a search would train for nothing
        raise UserError(f"optimized_metric={cfg.optimized_metric} is measured on each task's validation "
                         "hold-out, and benchmark.val_fraction=0 keeps none. Set e.g. benchmark.val_fraction=0.1.")
    benchmark = build_benchmark(**cfg.benchmark)
    model = build_continual_model(**cfg.model, num_classes=benchmark.num_classes,
                                  image_shape=benchmark.image_shape)
    class_mask = (task_class_mask(benchmark.task_classes, benchmark.num_classes)
                  if cfg.scenario == "task_incremental" else None)
    eval_data = {}
    for j, task in enumerate(benchmark.tasks):
        if len(task.val):  # benchmark.val_fraction=0 leaves no val split
            eval_data[split_name(j, "val")] = task.val
        eval_data[split_name(j, "test")] = task.test
    return Task(model=model, train_data=[task.train for task in benchmark.tasks], eval_data=eval_data,
                forward=partial(continual_forward, class_mask=class_mask), items="images",
                summarize=partial(summarize, task_names=benchmark.task_names),
                shard_units=shard_units(model))


def summarize(lines: list[dict[str, Any]], train_totals: dict[str, float], task_names: list[str]) -> dict[str, Any]:
    """The accuracy matrices, their metrics and the online accuracy, from the evaluation lines and the
    training sums.

    Row i of R is the last evaluation logged in stage i (the one at the end of task i); the baseline is
    the evaluation at step 0. A run cut short by trainer.max_steps has fewer rows than tasks: its metrics
    are those of the square matrix of the tasks it reached (tasks_trained says how many).
    """
    T = len(task_names)
    evaluations = [line for line in lines if split_name(0, "test") + "_acc" in line]
    baseline_line = next((line for line in evaluations if line["step"] == 0), None)
    rows = {}
    for line in evaluations:
        if line["step"] > 0:
            rows[line.get("stage", 0)] = line  # later lines of a stage replace earlier ones
    trained = sorted(rows)
    summary: dict[str, Any] = {"task_names": task_names, "tasks_trained": len(trained),
                               "online_accuracy": online_accuracy(train_totals)}
    for split, prefix in (("test", ""), ("val", "val_")):
        if not trained or split_name(0, split) + "_acc" not in rows[trained[0]]:
            continue
        accuracy = lambda line: [line[split_name(j, split) + "_acc"] for j in range(T)]  # noqa: E731
        R = [accuracy(rows[i]) for i in trained]
        baseline = accuracy(baseline_line) if baseline_line else None
        k = len(R)
        metrics = continual_metrics([row[:k] for row in R], baseline[:k] if baseline else None)
        summary.update({f"{prefix}{name}": value for name, value in metrics.items()})
        summary.update({f"{prefix}accuracy_matrix": R, f"{prefix}baseline_accuracy": baseline})
    return summary


def online_accuracy(train_totals: dict[str, float]) -> float | None:
    """Accuracy on every training batch before its update, over the whole stream: the number correct
    summed over every step and process, divided by the items."""
    return train_totals["acc"] / train_totals["count"] if train_totals.get("count") else None


def run(cfg: DictConfig, run_dir: str | Path) -> TrainResult:
    result = train(cfg, build_task, run_dir)
    summary = result.summary  # None on processes other than the main one
    if summary is not None and summary.get("tasks_trained") == len(summary["task_names"]):
        plot_accuracy_matrix(summary["accuracy_matrix"], summary["task_names"], Path(run_dir) / HEATMAP_NAME)
    return result


@hydra.main(config_path="../configs/online_learning", config_name="online_learning", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return run_in_hydra(cfg, run)


if __name__ == "__main__":
    check_launcher(sys.argv[1:])
    main()
