"""What a run hands a Hydra sweeper: its runner's select.metric, never test; a missing one is an error under a
search (an hparams_search's optimized_metric), before training where the runner can tell."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.engine import selected_value
from tests.experiments.image_runner_helpers import REPO, compose_runner_config

SUMMARY = {"val_acc": 0.75, "best_val_acc": 0.75, "test_acc": 0.9, "steps": 10}


def test_the_value_is_the_summarys_select_metric_and_absent_only_without_a_search():
    cfg = OmegaConf.create({"select": {"metric": "val_acc", "mode": "max"}})
    assert selected_value(cfg, SUMMARY) == 0.75
    assert selected_value(cfg, None) is None  # a process other than the main one
    assert selected_value(cfg, {"test_acc": 0.9}) is None  # a plain run without a validation split
    searched = OmegaConf.merge(cfg, {"optimized_metric": "val_acc"})
    with pytest.raises(ValueError, match=r"optimized_metric=val_acc is not in this run's summary.json, which "
                                         r"reports steps, test_acc\. .*optimized_metric=val_acc"):
        selected_value(searched, {"test_acc": 0.9, "steps": 10})


@pytest.mark.parametrize("runner, search", [("image_classification", "image_adam_cm"),
                                            ("language_modeling", "lm_adam_cm"),
                                            ("online_learning", "online_adam_cm")])
def test_each_search_optimises_its_runners_select_in_its_direction(runner, search):
    with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
        cfg = compose(runner, overrides=[f"hparams_search={search}"], return_hydra_config=True)
    assert cfg.optimized_metric == cfg.select.metric
    assert cfg.hydra.sweeper.direction == {"max": "maximize", "min": "minimize"}[cfg.select.mode]


@pytest.mark.parametrize("runner, overrides, message", [
    ("image_classification", ("experiment=smoke", "dataset.val_size=0", "hparams_search=image_adam_cm"),
     r"optimized_metric=val_acc is measured on a validation split, and dataset.val_size=0 holds none out\. "
     r"Set e\.g\. dataset.val_size=5000"),
    ("online_learning", ("experiment=synthetic_tasks", "benchmark.val_fraction=0", "hparams_search=online_adam_cm"),
     r"optimized_metric=val_average_accuracy is measured on each task's validation hold-out, and "
     r"benchmark.val_fraction=0 keeps none\. Set e\.g\. benchmark.val_fraction=0.1"),
])
def test_a_search_without_a_validation_split_is_refused_before_training(tmp_path, runner, overrides, message):
    from importlib import import_module

    cfg = compose_runner_config(runner, *overrides)
    with pytest.raises(ValueError, match=message):
        import_module(f"experiments.{runner}").run(cfg, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()
