"""The engine's settings (configs/common/trainer/default.yaml), the optimizer's hyperparameters
(configs/common/optimizer/) and the run's seed: one table each of their valid values.

`check_settings(cfg)` runs before anything else, so a bad value ends in one message naming it, its
valid values and a fix, instead of a traceback or a run that trains quietly on nonsense.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.engine.averaging import KINDS as AVERAGING_KINDS
from experiments.engine.strategy import STRATEGIES
from experiments.options import UserError, Valid, boolean, check_values, integer, number, one_of, shown

PRECISIONS = ("bf16", "fp32")
COMPILE_MODES = ("none", "optimizer", "model", "both")
STRATEGY_NAMES = tuple(STRATEGIES)

TRAINER_SETTINGS = {
    "device": Valid(lambda v: v is None or isinstance(v, str), "null (cuda when present, else cpu) or a device "
                    "such as cpu, cuda, cuda:1", "cpu"),
    "deterministic_gpu": boolean(),
    "precision": one_of(*PRECISIONS),
    "compile": one_of(*COMPILE_MODES),
    "strategy": one_of(*STRATEGY_NAMES),
    "resume_any_world_size": boolean(),
    "epochs": integer(1),
    "max_steps": integer(1, null="epochs decide"),
    "batch_size": integer(1),
    "eval_batch_size": integer(1, null="trainer.batch_size"),
    "num_workers": integer(0),
    "shuffle": boolean(),
    "grad_clip": number(0, low_open=True, example=1.0, null="no clipping"),
    "log_interval": integer(1),
    "eval_interval": integer(1, null="at the end of every epoch"),
    "eval_at_start": boolean(),
    "checkpoint_interval": integer(1, null="only at the end"),
    "flatness_interval": integer(0, null="none during training"),
    "flatness_at_end": boolean(),
    "flatness_batch_size": integer(1),
    "flatness_max_iter": integer(1),
    "hessian_trace_samples": integer(0),
    "hessian_top_k": integer(1),
    "sharpness_rho": number(0, low_open=True, example=0.05, null="not measured"),
    "sharpness_ascent_steps": integer(1),
    "sharpness_samples": integer(1),
    "weight_averaging": one_of(*AVERAGING_KINDS),
    "ema_decay": number(0, 1, low_open=True, high_open=True, example=0.999),
    "swa_start": number(0, 1, high_open=True, example=0.75),
}

# The values cmopt.create_optimizer would take but that cannot train (lr=0), checked here so that the message
# names the config key (optimizer.lr) and a fix; keys not listed are left to cmopt's own checks.
OPTIMIZER_SETTINGS = {
    "lr": number(0, low_open=True, example=1e-3),
    "weight_decay": number(0, example=0.0),
    "eps": number(0, low_open=True, example=1e-8),
    "betas": Valid(lambda v: isinstance(v, (list, tuple)) and len(v) == 2
                   and all(number(0, 1, high_open=True, example=0.9).test(b) for b in v),
                   "a pair [beta1, beta2] of numbers in [0, 1)", "[0.9,0.999]"),
    "momentum": number(0, 1, high_open=True, example=0.9),
    "dampening": number(0, 1, example=0.0),
    "capacity": integer(0, example=5),
    "decay": number(0, 1, example=0.7),
    "rho": number(0, example=0.05),
    "adaptive": boolean(),
    "no_decay_bias_and_norm": boolean(),
}


def check_settings(cfg: DictConfig) -> None:
    """Raise ValueError for an unknown trainer setting or the first value outside its valid set."""
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UserError(f"seed={shown(seed)} is not valid: it must be an integer. Set it to one, e.g. seed=0.")
    trainer: dict[str, Any] = dict(cfg.trainer)
    unknown = sorted(set(trainer) - set(TRAINER_SETTINGS))
    if unknown:
        raise UserError(f"trainer.{unknown[0]} is not a setting of the engine. Its settings: "
                         f"{', '.join(TRAINER_SETTINGS)} (configs/common/trainer/default.yaml); remove it with "
                         f"~trainer.{unknown[0]} or correct its name.")
    check_values("trainer", TRAINER_SETTINGS, trainer)
    check_values("optimizer", OPTIMIZER_SETTINGS, OmegaConf.to_container(cfg.optimizer, resolve=True))
