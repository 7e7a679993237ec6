"""The online-learning runner end to end on the embedded synthetic tasks (and tiny TinyImageNet files).

* The accuracy matrix's last row and the baseline equal the final and the untrained model evaluated by
  hand on every task; an earlier row equals a run stopped after that task, evaluated by hand; the
  metrics equal the formulas of the README written out on the matrix.
* The online accuracy is the same whatever the log interval, and is the mean of per-step accuracies.
* Plain SGD forgets on synthetic_tasks (F > 0.2) while learning each task, the last one included.
* task_incremental masks other tasks' classes, class_incremental does not (hand evaluation of each).
* Every registry optimizer trains through the runner; W&B offline holds the per-task accuracies.
* Bad settings are one message (exit 1 on the command line); each experiment file composes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cmopt
from experiments.data.continual import DatasetNotFoundError, build_benchmark
from experiments.engine.checkpoint import seed_everything
from experiments.online_learning import HEATMAP_NAME, build_task, run
from tests.experiments.continual_files import write_image_folder, write_tiny_imagenet
from tests.experiments.image_runner_helpers import compose_runner_config, metrics_lines, run_cli
from tests.experiments.test_image_classification_wandb import wandb_history

RUNNER = "experiments.online_learning"
# 5 tasks of 2 classes, 90 training images each (100 less the 10% val hold-out): 9 steps of 10 per task.
TINY = ("experiment=synthetic_tasks", "benchmark.train_size=100", "benchmark.test_size=50",
        "trainer.flatness_at_end=false")


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Small matrices on 2 shared cores: one thread is several times faster (subprocesses too)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(*overrides: str):
    return compose_runner_config("online_learning", *TINY, *overrides)


def accuracies_by_hand(model: torch.nn.Module, benchmark, masked: bool) -> list[float]:
    """Each task's test accuracy, the whole split in one batch; masked: argmax over the task's classes."""
    model.eval()
    accuracies = []
    with torch.no_grad():
        for task in benchmark.tasks:
            images, labels, _ = zip(*(task.test[i] for i in range(len(task.test))))
            logits = model(torch.stack(images))
            if masked:
                outside = torch.ones(benchmark.num_classes, dtype=torch.bool)
                outside[list(task.classes)] = False
                logits[:, outside] = float("-inf")
            accuracies.append((logits.argmax(1) == torch.tensor(labels)).double().mean().item())
    return accuracies


def untrained_model(cfg) -> torch.nn.Module:
    seed_everything(cfg.seed)  # what the engine does before building the task
    return build_task(cfg).model


def metrics_by_hand(R: list[list[float]], b: list[float]) -> dict[str, float]:
    R, b, T = np.array(R), np.array(b), len(R)
    return {
        "average_accuracy": R[T - 1].mean(),
        "forgetting": (R[:T - 1, :T - 1].max(axis=0) - R[T - 1, :T - 1]).mean(),
        "backward_transfer": (R[T - 1, :T - 1] - np.diag(R)[:T - 1]).mean(),
        "forward_transfer": np.mean([R[j - 1, j] - b[j] for j in range(1, T)]),
        "learning_accuracy": np.diag(R).mean(),
    }


def test_accuracy_matrix_rows_baseline_and_metrics_against_hand_evaluations(tmp_path):
    cfg = config()
    result = run(cfg, tmp_path / "full")
    summary = result.summary
    benchmark = build_benchmark(**cfg.benchmark)
    R, b = summary["accuracy_matrix"], summary["baseline_accuracy"]
    assert summary["task_names"] == [f"synthetic_{t}" for t in range(5)] and summary["tasks_trained"] == 5
    assert np.array(R).shape == (5, 5)
    assert R[-1] == pytest.approx(accuracies_by_hand(result.model, benchmark, masked=True), abs=1e-12)
    assert b == pytest.approx(accuracies_by_hand(untrained_model(cfg), benchmark, masked=True), abs=1e-12)
    for name, value in metrics_by_hand(R, b).items():
        assert summary[name] == pytest.approx(value, abs=1e-12), name
    # The val matrix is built the same way from each task's hold-out.
    assert np.array(summary["val_accuracy_matrix"]).shape == (5, 5)
    assert summary["val_average_accuracy"] == pytest.approx(np.mean(summary["val_accuracy_matrix"][-1]))

    # Row 2 (after the second task) is what a run stopped there holds, evaluated by hand.
    two_tasks = sum(len(task.train) // cfg.trainer.batch_size for task in benchmark.tasks[:2])
    partial = run(config(f"trainer.max_steps={two_tasks}"), tmp_path / "partial")
    assert partial.summary["tasks_trained"] == 2
    assert R[1] == pytest.approx(accuracies_by_hand(partial.model, benchmark, masked=True), abs=1e-12)
    assert partial.summary["accuracy_matrix"] == R[:2]
    square = [row[:2] for row in R[:2]]
    assert partial.summary["forgetting"] == pytest.approx(metrics_by_hand(square, b)["forgetting"], abs=1e-12)

    with Image.open(tmp_path / "full" / HEATMAP_NAME) as image:
        assert image.format == "PNG" and image.width > 200
    assert not (tmp_path / "partial" / HEATMAP_NAME).exists()  # no square 5 x 5 matrix to draw
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["accuracy_matrix"] == R


def test_online_accuracy_is_exact_whatever_the_log_interval(tmp_path):
    every_step = run(config("trainer.log_interval=1"), tmp_path / "every").summary
    sparse = run(config("trainer.log_interval=7"), tmp_path / "sparse").summary
    per_step = [line["train_acc"] for line in metrics_lines(tmp_path / "every") if "train_acc" in line]
    assert len(per_step) == every_step["steps"]
    assert every_step["online_accuracy"] == pytest.approx(np.mean(per_step), abs=1e-12)
    assert sparse["online_accuracy"] == every_step["online_accuracy"]


def test_plain_sgd_forgets_on_synthetic_tasks_while_learning_each_task(tmp_path):
    # The experiment's own benchmark size (18 steps per task).
    cfg = compose_runner_config("online_learning", "experiment=synthetic_tasks", "optimizer=sgd",
                                "optimizer.lr=0.05", "optimizer.momentum=0", "trainer.flatness_at_end=false")
    summary = run(cfg, tmp_path).summary
    R = np.array(summary["accuracy_matrix"])
    assert summary["forgetting"] > 0.2 and summary["backward_transfer"] < -0.2
    assert np.diag(R).min() > 0.9 and R[-1, -1] > 0.9  # each task learnt in its one pass, the last one too
    assert 0.5 < summary["online_accuracy"] < 1


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200"
    write_tiny_imagenet(root, train_per_class=1)
    return root


@pytest.mark.parametrize("scenario", ["task_incremental", "class_incremental"])
def test_task_incremental_masks_other_tasks_classes_and_class_incremental_does_not(tmp_path, tiny_imagenet,
                                                                                   scenario):
    cfg = compose_runner_config(
        "online_learning", "experiment=synthetic_tasks", "benchmark=tiny_imagenet", "~benchmark.image_size",
        f"benchmark.root={tiny_imagenet}",
        "benchmark.classes_per_task=100", "benchmark.val_fraction=0", "model.hidden_sizes=[16]",
        f"scenario={scenario}", "trainer.flatness_at_end=false", "trainer.log_interval=5")
    result = run(cfg, tmp_path)
    benchmark = build_benchmark(**cfg.benchmark)
    masked = scenario == "task_incremental"
    R = result.summary["accuracy_matrix"]
    assert R[-1] == pytest.approx(accuracies_by_hand(result.model, benchmark, masked), abs=1e-12)
    assert "val_accuracy_matrix" not in result.summary  # val_fraction=0: no val splits
    # The other scenario's evaluation of the same model differs: the mask matters on disjoint classes.
    assert R[-1] != pytest.approx(accuracies_by_hand(result.model, benchmark, not masked), abs=1e-12)


def test_an_image_folder_trains_as_tasks_with_the_same_hold_outs_and_metrics(tmp_path):
    write_image_folder(tmp_path / "images", classes=4, train_per_class=10, test_per_class=3)
    cfg = compose_runner_config(
        "online_learning", "experiment=synthetic_tasks", "benchmark=image_folder",
        f"benchmark.root={tmp_path / 'images'}", "benchmark.image_size=8", "benchmark.val_fraction=0.2",
        "model.hidden_sizes=[16]", "trainer.batch_size=4", "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path / "run")
    benchmark = build_benchmark(**cfg.benchmark)
    summary = result.summary
    assert summary["task_names"] == ["image_folder_0", "image_folder_1"] and summary["tasks_trained"] == 2
    assert [len(task.val) for task in benchmark.tasks] == [4, 4]  # 2 of each class's 10 training images
    R = summary["accuracy_matrix"]
    assert R[-1] == pytest.approx(accuracies_by_hand(result.model, benchmark, masked=True), abs=1e-12)
    for name, value in metrics_by_hand(R, summary["baseline_accuracy"]).items():
        assert summary[name] == pytest.approx(value, abs=1e-12), name
    assert np.array(summary["val_accuracy_matrix"]).shape == (2, 2)
    assert (tmp_path / "run" / HEATMAP_NAME).is_file()


@pytest.mark.parametrize("name", cmopt.OPTIMIZER_NAMES)
def test_every_registry_optimizer_trains_through_the_runner(tmp_path, name):
    result = run(config(f"optimizer={name}", "optimizer.lr=0.01", "benchmark.train_size=40",
                        "benchmark.test_size=20"), tmp_path)
    summary = result.summary
    assert summary["status"] == "finished" and summary["steps"] == 15 and summary["tasks_trained"] == 5
    assert 0 <= summary["average_accuracy"] <= 1 and summary["forgetting"] is not None


def test_wandb_offline_holds_the_per_task_accuracies(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(config("logger=wandb"), tmp_path)
    run_id = (tmp_path / "wandb_id.txt").read_text().strip()
    [offline] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    history = wandb_history(offline / f"run-{run_id}.wandb")
    logged = {(h["_step"], k): v for h in history for k, v in h.items()}
    evaluations = [line for line in metrics_lines(tmp_path) if "t0_test_acc" in line]
    assert len(evaluations) == 6  # the untrained model, then after each of the 5 tasks
    for line in evaluations:
        for j in range(5):
            for key in (f"t{j}_test_acc", f"t{j}_val_acc"):
                assert logged[(line["step"], key)] == line[key]


@pytest.mark.parametrize("overrides, error, message", [
    (("benchmark.name=mnist_split",), ValueError,
     r"Unknown benchmark 'mnist_split'. Valid names: five_datasets"),
    (("benchmark=tiny_imagenet", "benchmark.classes_per_task=30"), ValueError,
     r"classes_per_task=30 must divide TinyImageNet's 200 classes"),
    (("benchmark=five_datasets", "benchmark.order=[cifar10,kmnist]"), ValueError,
     r"benchmark.order=\['cifar10', 'kmnist'\] must name distinct datasets.*unknown: kmnist"),
    (("benchmark=five_datasets",), DatasetNotFoundError, r"5-dataset: 5 of its datasets not found"),
    (("benchmark=tiny_imagenet",), DatasetNotFoundError, r"tiny_imagenet not found in .*wnids.txt"),
    (("benchmark=image_folder",), DatasetNotFoundError, r"image_folder: .*empty/image_folder has no split "
                                                         r"folders.*train/<class>/\*.png"),
    (("scenario=domain_incremental",), ValueError,
     r"scenario='domain_incremental'; valid: task_incremental, class_incremental"),
    (("+model.depth=3",), ValueError, r"Model 'mlp' does not take option\(s\) depth"),
    (("+benchmark.colours=3",), ValueError, r"Benchmark 'synthetic_tasks' does not take option\(s\) colours"),
])
def test_bad_settings_are_refused_with_the_value_named(tmp_path, overrides, error, message):
    base = TINY if not overrides[0].startswith("benchmark=") else ("logger=none",)
    cfg = compose_runner_config("online_learning", *base, f"data_dir={tmp_path / 'empty'}", *overrides)
    with pytest.raises(error, match=message):
        run(cfg, tmp_path / "run")


def test_on_the_command_line_a_bad_setting_is_one_message_and_exit_1(tmp_path):
    done = run_cli("benchmark=tiny_imagenet", "benchmark.classes_per_task=30", "logger=none",
                   f"runs_dir={tmp_path / 'runs'}", runner=RUNNER)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: benchmark.classes_per_task=30 must divide")
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 2  # the message and the HYDRA_FULL_ERROR hint
    # An unknown benchmark option is Hydra's own one message, naming the valid options.
    done = run_cli("benchmark=mnist_split", f"runs_dir={tmp_path / 'runs'}", runner=RUNNER)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Could not find 'benchmark/mnist_split'" in done.stderr and "synthetic_tasks" in done.stderr


def test_help_lists_the_runners_own_groups():
    done = run_cli("--help", runner=RUNNER)
    assert done.returncode == 0
    assert "python -m experiments.online_learning: online (continual) learning" in done.stdout
    assert "benchmark: five_datasets, image_folder, synthetic_tasks, tiny_imagenet" in done.stdout
    assert "dataset:" not in done.stdout  # the other runners' groups are not listed


@pytest.mark.parametrize("experiment, benchmark, model, tasks_option", [
    ("online_five_datasets", "five_datasets", "reduced_resnet18", ("order", 5)),
    ("online_tiny_imagenet", "tiny_imagenet", "reduced_resnet18", ("classes_per_task", 20)),
    ("synthetic_tasks", "synthetic_tasks", "mlp", ("num_tasks", 5)),
])
def test_each_experiment_file_composes_with_any_optimizer(experiment, benchmark, model, tasks_option):
    cfg = compose_runner_config("online_learning", f"experiment={experiment}", "optimizer=sam_adam_cm")
    key, value = tasks_option
    assert (cfg.benchmark.name, cfg.model.name, cfg.experiment_name) == (benchmark, model, experiment)
    option = cfg.benchmark[key]
    assert (len(option) if key == "order" else option) == value
    assert (cfg.trainer.epochs, cfg.trainer.batch_size, cfg.trainer.eval_at_start) == (1, 10, True)
    assert cfg.scenario == "task_incremental" and cfg.optimizer.name == "sam_adam_cm"
