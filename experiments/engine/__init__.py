"""The training engine every runner shares: a runner builds a Task, `train` does the rest.

    result = train(cfg, build_task, run_dir)   # resumes from run_dir/checkpoint/ when it exists
"""

from experiments.engine.finite import NonFiniteLossError
from experiments.engine.loop import TrainResult, exit_on_user_error, train
from experiments.engine.sweep import run_in_hydra, selected_value
from experiments.engine.task import Task

__all__ = ["NonFiniteLossError", "Task", "TrainResult", "exit_on_user_error", "run_in_hydra", "selected_value",
           "train"]
