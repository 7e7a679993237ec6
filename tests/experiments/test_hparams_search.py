"""hparams_search=...: an Optuna (TPE) search through Hydra's sweeper, on the validation metric the runner
returns, never on test: its best value is the best trial's best_val_acc, its best parameters that trial's."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.experiments.image_runner_helpers import REPO, compose_runner_config, run_cli


def test_an_optuna_search_maximises_validation_accuracy(tmp_path):
    done = run_cli("-m", "hparams_search=image_adam_cm", "experiment=smoke", "dataset.val_size=64",
                   "trainer.max_steps=4", "trainer.flatness_at_end=false", "hydra.sweeper.n_trials=3",
                   f"runs_dir={tmp_path}", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = tmp_path / "smoke" / "multirun"
    trials = [json.loads(p.read_text()) | {"config": OmegaConf.load(p.parent / "config.yaml")}
              for p in sweep.glob("*/summary.json")]
    assert len(trials) == 3
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    best_value = max(t["best_val_acc"] for t in trials)
    assert result.best_value == best_value
    assert result.best_params["optimizer.lr"] in {t["config"].optimizer.lr for t in trials
                                                   if t["best_val_acc"] == best_value}
    assert all(t["config"].optimizer.name == "adam_cm" for t in trials)


@pytest.mark.parametrize("runner, search, direction", [
    ("image_classification", "image_adam_cm", "maximize"), ("language_modeling", "lm_adam_cm", "minimize"),
    ("online_learning", "online_adam_cm", "maximize"),
])
def test_each_runner_has_a_search_in_the_direction_of_its_validation_metric(runner, search, direction):
    with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
        cfg = compose(runner, overrides=[f"hparams_search={search}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction
    assert set(cfg.hydra.sweeper.params) == {"optimizer.lr", "optimizer.decay", "optimizer.capacity"}
    assert compose_runner_config(runner, f"hparams_search={search}").optimizer.name == "adam_cm"
