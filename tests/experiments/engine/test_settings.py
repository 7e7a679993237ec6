"""Every engine setting checked before it trains, the run's length, what the log says, and the one list of
config keys that change no result. Tasks are tiny linear models; the configs are the real ones (smoke)."""

from __future__ import annotations

import logging
import re

import pytest
import torch
from torch import nn

from experiments.engine import Task, checkpoint, exit_on_user_error, train
from experiments.options import BOOKKEEPING_KEYS, PLACEMENT_KEYS, UserError
from tests.experiments.engine.test_engine_loop import SMALL, blobs, classification, dropout_task
from tests.experiments.image_runner_helpers import compose_config, metrics_lines

QUIET = ("trainer.flatness_at_end=false", "trainer.checkpoint_interval=null")


def linear_task(cfg, train_size: int = 40) -> Task:
    return Task(model=nn.Linear(4, 3), train_data=blobs(train_size, 0), eval_data={"test": blobs(30, 3)},
                forward=classification)


@pytest.mark.parametrize("overrides, message", [
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1 is not valid: it must be null (no clipping) or a finite number > 0. "
                               "Set it to one, e.g. trainer.grad_clip=1.0"),
    (["trainer.grad_clip=0"], "trainer.grad_clip=0 is not valid"),
    (["trainer.grad_clip=inf"], "trainer.grad_clip=inf is not valid"),  # no clipping is null, not infinity
    (["trainer.max_steps=-5"], "trainer.max_steps=-5 is not valid: it must be null (epochs decide) or an integer >= 1"),
    (["trainer.max_steps=2.5"], "trainer.max_steps=2.5 is not valid"),
    (["trainer.epochs=0"], "trainer.epochs=0 is not valid: it must be an integer >= 1"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is not valid: it must be an integer >= 1. "
                               "Set it to one, e.g. trainer.batch_size=1"),
    (["trainer.eval_batch_size=0"], "trainer.eval_batch_size=0 is not valid: it must be null (trainer.batch_size)"),
    (["trainer.num_workers=-1"], "trainer.num_workers=-1 is not valid: it must be an integer >= 0"),
    (["trainer.log_interval=0"], "trainer.log_interval=0 is not valid"),
    (["trainer.eval_interval=-1"], "trainer.eval_interval=-1 is not valid"),
    (["trainer.checkpoint_interval=0"], "trainer.checkpoint_interval=0 is not valid: it must be null (only at the end)"),
    (["trainer.flatness_interval=-2"], "trainer.flatness_interval=-2 is not valid"),
    (["trainer.flatness_batch_size=0"], "trainer.flatness_batch_size=0 is not valid"),
    (["trainer.flatness_max_iter=0"], "trainer.flatness_max_iter=0 is not valid"),
    (["trainer.hessian_trace_samples=-1"], "trainer.hessian_trace_samples=-1 is not valid"),
    (["trainer.precision=fp16"], "trainer.precision=fp16 is not valid: it must be one of bf16, fp32"),
    (["trainer.compile=yes"], "trainer.compile=yes is not valid: it must be one of none, optimizer, model, both"),
    (["trainer.shuffle=maybe"], "trainer.shuffle=maybe is not valid: it must be true or false"),
    (["+trainer.max_step=5"], "trainer.max_step is not a setting of the engine. Its settings: device,"),
    (["trainer.grad_clip=inf"], "trainer.grad_clip=inf is not valid"),
    (["seed=abc"], "seed=abc is not valid: it must be an integer. Set it to one, e.g. seed=0"),
    (["optimizer.lr=-1e-3"], "optimizer.lr=-0.001 is not valid: it must be a finite number > 0. "
                             "Set it to one, e.g. optimizer.lr=0.001."),
    (["optimizer.lr=0"], "optimizer.lr=0 is not valid: it must be a finite number > 0"),  # a run that cannot learn
    (["optimizer.lr=abc"], "optimizer.lr=abc is not valid: it must be a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan is not valid: it must be a finite number > 0"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is not valid: it must be a finite number > 0"),
    (["optimizer.lr=true"], "optimizer.lr=true is not valid"),
    (["optimizer.decay=1.5"], "optimizer.decay=1.5 is not valid: it must be a number in [0, 1]. "
                              "Set it to one, e.g. optimizer.decay=0.7."),
    (["optimizer.capacity=-1"], "optimizer.capacity=-1 is not valid: it must be an integer >= 0. "
                                "Set it to one, e.g. optimizer.capacity=5."),
    (["optimizer.capacity=2.5"], "optimizer.capacity=2.5 is not valid"),
    (["optimizer.weight_decay=-0.1"], "optimizer.weight_decay=-0.1 is not valid: it must be a finite number >= 0"),
    (["optimizer.eps=0"], "optimizer.eps=0 is not valid: it must be a finite number > 0"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] is not valid: it must be a pair [beta1, beta2] "
                                    "of numbers in [0, 1). Set it to one, e.g. optimizer.betas=[0.9,0.999]."),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is not valid"),
    (["optimizer=sgd", "optimizer.momentum=1.2"], "optimizer.momentum=1.2 is not valid: it must be a number in [0, 1)"),
    (["optimizer=sgd", "optimizer.dampening=-1"], "optimizer.dampening=-1 is not valid: it must be a number in [0, 1]"),
    (["optimizer=sam_adam_cm", "optimizer.rho=-0.05"], "optimizer.rho=-0.05 is not valid: it must be a finite number >= 0"),
    (["+optimizer.foo=1"], "Optimizer 'adam_cm' does not take option(s) foo. It takes: lr, betas, eps, weight_decay, "
                           "capacity, decay, priority, variant, buffer_dtype, foreach, capturable, no_decay_bias_and_norm. "
                           "If you did "
                           "not set it, an experiment file written for another optimizer did: choose that "
                           "experiment's optimizer, or drop it with ~optimizer.foo."),
    (["optimizer=sam_adam_cm", "optimizer.adaptive=yes"], "optimizer.adaptive=yes is not valid: it must be true or false"),
    (["scheduler=step", "scheduler.milestones=[60,120,160]"],
     "scheduler.milestones=[60, 120, 160] is not valid: it must be a list of increasing fractions of the run's "
     "steps in (0, 1], not epochs"),
    (["scheduler=step", "scheduler.milestones=[0.75,0.5]"], "scheduler.milestones=[0.75, 0.5] is not valid"),
    (["scheduler=step", "scheduler.gamma=-1"], "scheduler.gamma=-1 is not valid: it must be a number in (0, 1]"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0 is not valid"),
    (["scheduler.min_lr_ratio=5"], "scheduler.min_lr_ratio=5 is not valid: it must be a number in [0, 1]"),
    (["scheduler.warmup_steps=-1"], "scheduler.warmup_steps=-1 is not valid: it must be an integer >= 0"),
    (["scheduler.warmup_steps=2.5"], "scheduler.warmup_steps=2.5 is not valid"),
    (["scheduler=cosine", "+scheduler.gamma=0.5"],
     "Scheduler 'cosine' does not take option(s) gamma. It takes: warmup_steps, min_lr_ratio. If you did not set "
     "it, an experiment file written for another scheduler did"),
    (["scheduler=constant", "+scheduler.min_lr_ratio=0.1"], "Scheduler 'constant' does not take option(s) min_lr_ratio"),
    (["scheduler=plateau", "scheduler.factor=1"], "scheduler.factor=1 is not valid: it must be a number in (0, 1)"),
    (["scheduler=plateau", "scheduler.patience=-1"], "scheduler.patience=-1 is not valid"),
])
def test_a_bad_value_is_refused_with_its_range_and_a_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        train(compose_config(*overrides), linear_task, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before training


def test_values_at_the_edges_of_their_ranges_train(tmp_path):
    train(compose_config("scheduler=step", "scheduler.milestones=[1.0]", "scheduler.gamma=1", "trainer.grad_clip=1e-3",
                         "trainer.eval_batch_size=1", "trainer.flatness_interval=0", "trainer.max_steps=2", *QUIET),
          linear_task, tmp_path / "step")
    train(compose_config("scheduler.min_lr_ratio=1", "scheduler.warmup_steps=0", "trainer.max_steps=2", *QUIET,
                         "optimizer.lr=1e-12", "optimizer.capacity=0", "optimizer.decay=1.0", "optimizer.weight_decay=0"),
          linear_task, tmp_path / "cosine")


def test_dataset_options_an_experiment_set_for_another_dataset_say_so():
    done = _run_cli("experiment=synthetic", "dataset=cifar10")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert ("If you did not set them, an experiment file written for another dataset did: choose that experiment's "
            "dataset, or drop them with ~dataset.test_size ~dataset.train_size.") in done.stderr


def _run_cli(*args):
    from tests.experiments.image_runner_helpers import run_cli
    return run_cli(*args, "runs_dir=/nonexistent")


# ---- the run's length -----------------------------------------------------------------------------------


def test_max_steps_decides_a_one_stage_runs_length_and_epochs_extend(tmp_path, caplog):
    # 40 items in batches of 8: 5 steps an epoch. One epoch asked, 12 steps: three epochs, the last cut.
    cfg = compose_config("trainer.batch_size=8", "trainer.epochs=1", "trainer.max_steps=12", "trainer.log_interval=1",
                         "trainer.eval_interval=null", *QUIET)
    with caplog.at_level(logging.INFO, logger="experiments.engine.loop"):
        result = train(cfg, linear_task, tmp_path)
    assert result.summary["steps"] == 12
    lines = metrics_lines(tmp_path)
    assert [line["step"] for line in lines] == list(range(1, 13))
    assert [(line["step"], line["epoch"]) for line in lines if "test_acc" in line] == [(5, 1), (10, 2), (12, 3)]  # from 1
    assert "Training 12 steps (trainer.max_steps=12 decides: 3 epoch(s) of 5 steps, trainer.epochs=1 extended)" in caplog.text


def test_max_steps_only_caps_a_run_of_several_stages(tmp_path, caplog):
    # Stages of 40 and 24 items in batches of 8, two epochs each: 10 + 6 steps, whatever max_steps above that says.
    with caplog.at_level(logging.INFO, logger="experiments.engine.loop"):
        long = train(compose_config(*SMALL, "trainer.max_steps=100", *QUIET), dropout_task, tmp_path / "long")
    assert long.summary["steps"] == 16
    assert "trainer.max_steps=100 only caps a run of several stages" in caplog.text
    short = train(compose_config(*SMALL, "trainer.max_steps=13", *QUIET), dropout_task, tmp_path / "short")
    assert short.summary["steps"] == 13


# ---- what the log and summary.json say ------------------------------------------------------------------------


def test_each_evaluation_and_the_end_are_one_log_line(tmp_path, caplog):
    cfg = compose_config("trainer.batch_size=8", "trainer.max_steps=10", "trainer.log_interval=5",
                         "trainer.eval_interval=5", *QUIET)
    with caplog.at_level(logging.INFO, logger="experiments.engine.loop"):
        result = train(cfg, linear_task, tmp_path)
    lines = [r.getMessage() for r in caplog.records]
    evaluations = [x for x in lines if x.startswith("step ")]
    accuracy = [line["test_acc"] for line in metrics_lines(tmp_path) if "test_acc" in line]
    assert evaluations[0].startswith("step 5/10 (epoch 1/2): train_loss=") and f"test_acc={accuracy[0]:.4g}" in evaluations[0]
    assert evaluations[1].startswith("step 10/10 (epoch 2/2): ") and len(evaluations) == 2
    assert lines[-1].startswith(f"Finished 10 steps in {tmp_path}: test_loss=")
    assert f"test_acc={result.summary['test_acc']:.4g}" in lines[-1] and result.summary["warnings"] == []
    with caplog.at_level(logging.INFO, logger="experiments.engine.loop"):
        train(cfg, linear_task, tmp_path)  # again: already finished, and it says with what
    assert f"already finished (10 steps): test_loss=" in caplog.records[-1].getMessage()


def test_a_final_training_loss_above_the_first_is_a_warning(tmp_path, caplog):
    def rising(model, batch):  # the loss grows by 1 a step, as a diverging run's does
        loss, count, stats = classification(model, batch)
        steps.append(1)
        return loss + len(steps), count, stats

    steps = []
    task = Task(model=nn.Linear(4, 3), train_data=blobs(40, 0), eval_data={}, forward=rising)
    with caplog.at_level(logging.WARNING, logger="experiments.engine.loop"):
        result = train(compose_config("trainer.batch_size=8", "trainer.max_steps=6", *QUIET), lambda _: task, tmp_path)
    assert result.summary["status"] == "finished"
    [warning] = result.summary["warnings"]
    assert re.match(r"The final training loss \([\d.]+\) is above the first step's \([\d.]+\): the run diverged", warning)
    assert "(now 0.001), e.g. to a tenth: optimizer.lr=0.0001," in warning and warning in caplog.text  # smoke: lr 1e-3


def test_a_user_error_is_one_line_on_the_console_and_in_the_log_file(tmp_path, capsys):
    handler = logging.FileHandler(tmp_path / "run.log")  # as Hydra's job logging adds one
    logging.getLogger().addHandler(handler)
    try:
        with pytest.raises(SystemExit) as stopped, exit_on_user_error():
            raise UserError("trainer.grad_clip=-1 is not valid")
        with pytest.raises(KeyboardInterrupt), exit_on_user_error():
            raise KeyboardInterrupt("killed")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert stopped.value.code == 1
    console = capsys.readouterr()
    assert console.err.count("trainer.grad_clip=-1") == 1 and "trainer.grad_clip" not in console.out
    assert (tmp_path / "run.log").read_text().splitlines() == [
        "Error: trainer.grad_clip=-1 is not valid", "Stopped by KeyboardInterrupt: killed"]


# ---- resuming ---------------------------------------------------------------------------------------------------


def test_a_finished_run_reopened_with_another_process_count_says_it_finished(tmp_path, caplog):
    cfg = compose_config(*SMALL)
    first = train(cfg, dropout_task, tmp_path)
    saved = torch.load(checkpoint.trainer_path(tmp_path), weights_only=True)
    saved["per_process"] = saved["per_process"] * 2  # as a 2-process run leaves it
    torch.save(saved, checkpoint.trainer_path(tmp_path))
    with caplog.at_level(logging.INFO, logger="experiments.engine.loop"):
        again = train(cfg, dropout_task, tmp_path)
    assert again.summary == first.summary and "already finished" in caplog.text
    saved["state"]["progress"]["finished"] = False  # unfinished: continuing exactly needs the same count
    torch.save(saved, checkpoint.trainer_path(tmp_path))
    with pytest.raises(ValueError, match=r"trained by 2 process\(es\); resume it with the same number \(now 1\)"):
        train(cfg, dropout_task, tmp_path)


def test_a_changed_log_interval_blocks_a_resume_but_not_a_table(tmp_path):
    train(compose_config(*SMALL), dropout_task, tmp_path)
    with pytest.raises(ValueError, match=r"trainer.log_interval: 3 in the folder, 2 now"):
        train(compose_config(*SMALL, "trainer.log_interval=2"), dropout_task, tmp_path)
    assert "trainer.log_interval" in BOOKKEEPING_KEYS and "trainer.log_interval" not in PLACEMENT_KEYS


# ---- the one list of keys that change no result ----------------------------------------------------------------------


# ---- trainer.compile ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # about 20 s on a CPU, most of it compiling the optimizer step
def test_a_compiled_run_matches_the_eager_run_and_saves_the_plain_model(tmp_path):
    common = ("trainer.batch_size=8", "trainer.max_steps=12", "trainer.log_interval=4", "trainer.checkpoint_interval=5",
              "trainer.grad_clip=1.0", "trainer.flatness_at_end=false")
    eager = train(compose_config(*common), linear_task, tmp_path / "eager")
    compiled = train(compose_config(*common, "trainer.compile=both"), linear_task, tmp_path / "compiled")
    # Measured: the weights differ by at most 3e-7 after 12 AdamCM steps (float32, CPU).
    for a, b in zip(eager.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    saved = checkpoint.read(tmp_path / "compiled")
    assert list(saved["model"]) == list(eager.model.state_dict())  # no _orig_mod. prefix


# ---- what counts as a user error --------------------------------------------------------------------------------


def test_only_user_errors_become_one_message_and_a_bug_keeps_its_traceback(capsys):
    """A check's UserError (a subclass of ValueError) is one message and exit 1; a ValueError raised from
    inside torch or our code is a bug and goes on with its traceback."""
    from experiments.options import UserError

    with pytest.raises(SystemExit) as stopped, exit_on_user_error():
        raise UserError("trainer.epochs=0 is not valid")
    assert stopped.value.code == 1 and capsys.readouterr().err.startswith("Error: trainer.epochs=0 is not valid")
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"), exit_on_user_error():
        torch.nn.Linear(3, 2)(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="not a user error"), exit_on_user_error():
        raise ValueError("not a user error")
