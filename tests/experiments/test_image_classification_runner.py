"""The image-classification runner end to end on synthetic data: every optimizer, learning, bad input.

In-process runs compose the real configs (experiment=smoke: synthetic CIFAR-shaped data, the small
CNN, CPU); the bad-input checks run the CLI as a user would and read its exit code and stderr.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from experiments.engine import checkpoint
from omegaconf import OmegaConf

import cmopt
from experiments.image_classification import build_task, run
from tests.experiments.image_runner_helpers import (
    REPO, compose_config, metrics_lines, run_cli, summary)

CRITICAL = {"adam_cm", "adam_cg", "sgd_cm"}


def test_there_is_one_optimizer_config_per_registry_name():
    configs = {p.stem: OmegaConf.load(p) for p in (REPO / "configs" / "common" / "optimizer").glob("*.yaml")}
    assert set(configs) == set(cmopt.OPTIMIZER_NAMES)
    for stem in configs:
        assert compose_config(f"optimizer={stem}").optimizer.name == stem


@pytest.mark.parametrize("name", cmopt.OPTIMIZER_NAMES)
def test_every_optimizer_trains_through_the_runner(tmp_path, name):
    cfg = compose_config(f"optimizer={name}", "trainer.max_steps=4", "trainer.log_interval=2",
                         "trainer.flatness_max_iter=3")
    torch.manual_seed(cfg.seed)
    initial = build_task(cfg).model.state_dict()
    result = run(cfg, tmp_path)

    assert result.summary["status"] == "finished" and result.summary["steps"] == 4
    assert math.isfinite(result.summary["train_loss"]) and 0 <= result.summary["test_acc"] <= 1
    assert math.isfinite(result.summary["top_hessian_eigenvalue"])
    assert result.summary["optimizer_state_bytes"] > 0
    assert ("buffer_admission_rate" in result.summary) == (name.removeprefix("sam_") in CRITICAL)
    assert any(not torch.equal(initial[k], v) for k, v in result.model.state_dict().items())  # it moved
    assert OmegaConf.load(tmp_path / "config.yaml").optimizer.name == name
    assert [line["step"] for line in metrics_lines(tmp_path) if "train_loss" in line] == [2, 4]


def test_a_longer_synthetic_run_learns_well_above_chance(tmp_path):
    cfg = compose_config("optimizer=adam", "optimizer.lr=3e-3", "trainer.max_steps=100", "trainer.epochs=10",
                         "trainer.eval_interval=50", "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path)
    assert result.summary["test_acc"] > 0.4  # chance is 0.1 (10 classes)
    first, last = [line["train_loss"] for line in metrics_lines(tmp_path) if "train_loss" in line][::9]
    assert last < first


# ---- bad input: one clear message, exit code 1, nothing written is lost -------------------------------


def test_a_missing_dataset_says_where_the_files_belong(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    done = run_cli("dataset=cifar10", f"data_dir={empty}", f"runs_dir={tmp_path / 'runs'}", "logger=none")
    assert done.returncode == 1
    assert f"{empty}/cifar10/cifar-10-batches-py" in done.stderr and "dataset.download=true" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("override, message", [
    ("optimizer.name=adamm", "Unknown optimizer 'adamm'. Valid names: sgd, adam, adamw, adam_cg, adam_cm"),
    ("+optimizer.momentum=0.9", "Optimizer 'adam_cm' does not take option(s) momentum. It takes: lr, betas"),
    ("optimizer.lr=-1", "optimizer.lr=-1 is not valid: it must be a finite number > 0"),
    ("model.name=resnet", "Unknown model 'resnet'. Valid names: resnet18, resnet34"),
    ("trainer.batch_size=100000", "No full batch to train on: trainer.batch_size=100000"),
    ("trainer.precision=fp16", "trainer.precision=fp16 is not valid: it must be one of bf16, fp32"),
    pytest.param("trainer.device=cuda", "trainer.device='cuda:0', but this machine has no usable CUDA GPU",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")),
])
def test_a_bad_value_is_named_with_its_valid_choices(tmp_path, override, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        run(compose_config(override), tmp_path)


@pytest.mark.parametrize("override, listed", [("optimizer=adamm", "sam_adam_cm"), ("model=resnet", "small_cnn")])
def test_an_unknown_group_option_lists_the_available_ones(tmp_path, override, listed):
    done = run_cli("experiment=smoke", override, f"runs_dir={tmp_path}")
    group, name = override.split("=")
    assert done.returncode == 1
    assert f"Could not find '{group}/{name}'" in done.stderr and listed in done.stderr


def test_a_diverging_run_stops_with_the_step_and_a_fix_and_keeps_what_it_wrote(tmp_path):
    done = run_cli("experiment=smoke", "optimizer=sgd", "optimizer.lr=1e6", "trainer.log_interval=1",
                   "trainer.checkpoint_interval=1", f"runs_dir={tmp_path}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    message = done.stderr[done.stderr.index("Error: "):]
    assert ("Lower the learning rate (now 1e+06), e.g. to a tenth: optimizer.lr=100000, or clip gradients "
            "(trainer.grad_clip=1.0)") in message
    bad_step = int(message.split(" at step ")[1].split(" ")[0])
    assert bad_step > 1  # so something was written before it
    run_dir = Path(tmp_path) / "smoke" / "synthetic_small_cnn_sgd_seed0"
    saved = checkpoint.read(run_dir)
    assert saved["progress"]["step"] == bad_step - 1
    assert all(math.isfinite(t.float().sum()) for t in saved["model"].values())
    assert [line["step"] for line in metrics_lines(run_dir)] == list(range(1, bad_step))
    assert not (run_dir / "summary.json").exists()


def test_the_cli_trains_in_the_folder_the_config_names_and_a_second_call_does_nothing(tmp_path):
    done = run_cli("experiment=smoke", "seed=3", f"runs_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "smoke" / "synthetic_small_cnn_adam_cm_seed3"
    assert summary(run_dir)["status"] == "finished" and summary(run_dir)["steps"] == 30
    again = run_cli("experiment=smoke", "seed=3", f"runs_dir={tmp_path}")
    assert again.returncode == 0 and "already finished" in again.stdout + again.stderr


def _file_hashes(folder: Path) -> dict[str, str]:
    import hashlib
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_refused_resume_leaves_the_run_folder_byte_identical(tmp_path):
    done = run_cli("experiment=smoke", "trainer.max_steps=5", f"runs_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    run_dir = tmp_path / "smoke" / "synthetic_small_cnn_adam_cm_seed0"
    # What Hydra would have written, written by the engine once it accepted the run.
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().splitlines() == [
        "- experiment=smoke", "- trainer.max_steps=5", f"- runs_dir={tmp_path}"]
    assert "max_steps: 5" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert "output_dir: " + str(run_dir) in (run_dir / ".hydra" / "hydra.yaml").read_text()
    assert "Finished 5 steps" in (run_dir / "image_classification.log").read_text()
    before = _file_hashes(run_dir)
    assert {"checkpoint/trainer.pt", "checkpoint/.metadata", "metrics.jsonl", "summary.json", "config.yaml",
            "image_classification.log", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml"} <= set(before)
    refused = run_cli("experiment=smoke", "trainer.max_steps=8", f"runs_dir={tmp_path}")
    assert refused.returncode == 1 and "holds a run with a different config" in refused.stderr
    assert _file_hashes(run_dir) == before
    again = run_cli("experiment=smoke", "trainer.max_steps=5", f"runs_dir={tmp_path}")  # nothing to train
    assert again.returncode == 0 and "already finished" in again.stdout
    assert _file_hashes(run_dir) == before


@pytest.mark.parametrize("bad", ["seed=abc", "optimizer.lr=0", "trainer.epochs=0"])
def test_a_rejected_first_command_leaves_no_run_folder(tmp_path, bad):
    done = run_cli("experiment=smoke", bad, f"runs_dir={tmp_path / 'runs'}")
    assert done.returncode == 1 and "is not valid" in done.stderr and "Traceback" not in done.stderr
    assert list((tmp_path / "runs").iterdir()) == []  # runs_dir itself is kept


@pytest.mark.parametrize("experiment, dataset, model", [
    ("cifar10_resnet18", "cifar10", "resnet18"), ("cifar10_resnet34", "cifar10", "resnet34"),
    ("cifar100_resnet18", "cifar100", "resnet18"), ("cifar100_resnet34", "cifar100", "resnet34"),
    ("imagenet_efficientnet_b0", "imagenet", "efficientnet_b0"), ("smoke", "synthetic", "small_cnn"),
    ("synthetic", "synthetic", "small_cnn"),
])
def test_each_paper_experiment_composes_with_any_optimizer(experiment, dataset, model):
    cfg = compose_config(f"experiment={experiment}", "optimizer=sam_adam_cg")
    assert (cfg.dataset.name, cfg.model.name, cfg.experiment_name) == (dataset, model, experiment)
    assert cfg.optimizer.name == "sam_adam_cg" and cfg.optimizer.rho == 0.05


def test_with_a_validation_split_the_summary_reports_test_at_the_best_validation_evaluation(tmp_path):
    cfg = compose_config("dataset.val_size=64", "trainer.max_steps=12", "trainer.eval_interval=4",
                         "trainer.flatness_at_end=false", "optimizer.lr=3e-3")
    result = run(cfg, tmp_path).summary
    evaluations = [line for line in metrics_lines(tmp_path) if "val_acc" in line]
    assert [line["step"] for line in evaluations] == [4, 8, 12]
    best = max(evaluations, key=lambda line: line["val_acc"])  # the first of equals, as the engine keeps
    best = next(line for line in evaluations if line["val_acc"] == best["val_acc"])
    assert (result["best_val_acc"], result["test_acc"], result["best_step"]) == (
        best["val_acc"], best["test_acc"], best["step"])
    assert result["final_test_acc"] == evaluations[-1]["test_acc"]
    assert (tmp_path / "best_model.pt").is_file()
    # The validation split is held out of the 512 training items: exactly dataset.val_size of them.
    task = build_task(cfg)
    assert (len(task.train_data), len(task.eval_data["val"])) == (512 - 64, 64)
