"""trainer.weight_averaging (experiments/engine/averaging.py) against replays by hand: the EMA and the SWA
mean of full-batch SGD's weights in float64, BatchNorm statistics recomputed for SWA's mean, evaluation and
best_model.pt on the averaged weights, an exact resume, every optimizer name, and the refused values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import cmopt
from experiments.engine import Task, checkpoint, train
from experiments.engine.averaging import Averaging
from experiments.options import UserError
from tests.experiments.engine.test_engine_loop import SMALL, blobs, classification, dropout_task
from tests.experiments.image_runner_helpers import (
    assert_same_training_state, compose_config, metrics_lines, without_timings)

LR, STEPS = 0.5, 8
SGD = ("optimizer=sgd", f"optimizer.lr={LR}", "optimizer.momentum=0.0", "trainer.batch_size=16",
       f"trainer.max_steps={STEPS}", "trainer.log_interval=4", "trainer.flatness_at_end=false", "scheduler=constant")


def linear_task() -> tuple[Task, TensorDataset, TensorDataset]:
    torch.manual_seed(0)
    train_data, test_data = blobs(16, 0), blobs(12, 5)
    task = Task(model=nn.Linear(4, 3), train_data=train_data, eval_data={"test": test_data}, forward=classification,
                select=("test_loss", "min"))
    return task, train_data, test_data


def sgd_replay(initial: list[torch.Tensor], data: TensorDataset) -> list[list[torch.Tensor]]:
    """θ_1 ... θ_STEPS of full-batch SGD at LR in float64."""
    weight, bias = (p.detach().double().clone().requires_grad_() for p in initial)
    x, y = data.tensors
    trajectory = []
    for _ in range(STEPS):
        grads = torch.autograd.grad(nn.functional.cross_entropy(x.double() @ weight.T + bias, y), (weight, bias))
        with torch.no_grad():
            weight -= LR * grads[0]
            bias -= LR * grads[1]
        trajectory.append([weight.detach().clone(), bias.detach().clone()])
    return trajectory


def test_ema_weights_equal_a_float64_ema_of_the_trajectory_and_are_what_is_evaluated(tmp_path):
    task, train_data, test_data = linear_task()
    trajectory = sgd_replay(list(task.model.parameters()), train_data)
    decay = 0.8
    emas = [[t.clone() for t in trajectory[0]]]  # the first step copies θ_1
    for weights in trajectory[1:]:
        emas.append([decay * e + (1 - decay) * w for e, w in zip(emas[-1], weights)])
    ema = emas[-1]
    result = train(compose_config(*SGD, "trainer.weight_averaging=ema", f"trainer.ema_decay={decay}",
                                  "trainer.eval_interval=1"), lambda _: task, tmp_path)

    averaged = checkpoint.read(tmp_path)["averaged"]
    assert int(averaged["n_averaged"]) == STEPS
    for name, expected in zip(("weight", "bias"), ema):
        assert torch.allclose(averaged[f"module.{name}"].double(), expected, rtol=0, atol=1e-5)
    # The trained weights are θ_8, far from the EMA (so the checks above tell the two apart).
    assert float((result.model.weight.detach().double() - trajectory[-1][0]).abs().max()) < 1e-5
    assert float((ema[0] - trajectory[-1][0]).abs().max()) > 1e-2
    # Every evaluation (one a step) is the EMA's of that step, and so is best_model.pt.
    x, y = test_data.tensors
    evaluations = [line for line in metrics_lines(tmp_path) if "test_loss" in line]
    assert [line["step"] for line in evaluations] == list(range(1, STEPS + 1))
    for line in evaluations:
        weight, bias = emas[line["step"] - 1]
        assert line["test_loss"] == pytest.approx(float(nn.functional.cross_entropy(x.double() @ weight.T + bias, y)),
                                                  rel=1e-5)
    best = torch.load(tmp_path / checkpoint.BEST_MODEL_NAME, weights_only=True)
    assert torch.allclose(best["weight"].double(), emas[result.summary["best_step"] - 1][0], rtol=0, atol=1e-5)
    # One copy of the 15 float32 weights, beside the optimizer's state.
    assert result.summary["averaging_state_bytes"] == 15 * 4


def test_swa_is_the_mean_after_swa_start_with_batchnorm_statistics_recomputed(tmp_path):
    torch.manual_seed(0)
    train_data = blobs(16, 0)
    model = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))
    task = Task(model=model, train_data=train_data, eval_data={"test": blobs(12, 5)}, forward=classification)
    trajectory = []

    def forward(m, batch):  # records the weights of every step (those the next training pass sees)
        if m.training and m is model:
            trajectory.append([p.detach().clone() for p in m.parameters()])
        return classification(m, batch)

    task.forward = forward
    # swa_start 0.5 of 8 steps: the mean of θ_5 ... θ_8. Evaluation batches of 4 over the 16 training items.
    result = train(compose_config(*SGD, "optimizer.lr=0.1", "trainer.weight_averaging=swa", "trainer.swa_start=0.5",
                                  "trainer.eval_batch_size=4"), lambda _: task, tmp_path)
    trajectory = trajectory[1:] + [[p.detach().clone() for p in result.model.parameters()]]  # θ_1 ... θ_8
    assert len(trajectory) == STEPS
    mean = [torch.stack([w[i].double() for w in trajectory[4:]]).mean(0) for i in range(len(trajectory[0]))]

    averaged = checkpoint.read(tmp_path)["averaged"]
    assert int(averaged["n_averaged"]) == 4
    names = [n for n, _ in model.named_parameters()]
    for name, expected in zip(names, mean):
        assert torch.allclose(averaged[f"module.{name}"].double(), expected, rtol=0, atol=1e-6), name
    # BatchNorm's running mean: the mean over the training set of its input under the averaged first layer.
    x = train_data.tensors[0].double()
    expected_mean = (x @ mean[0].T + mean[1]).mean(0)
    assert torch.allclose(averaged["module.1.running_mean"].double(), expected_mean, rtol=0, atol=1e-5)
    trained_mean = result.model[1].running_mean.double()
    assert float((trained_mean - expected_mean).abs().max()) > 1e-3  # the trained model's differ


@pytest.mark.parametrize("kind", ["ema", "swa"])
def test_an_interrupted_run_with_averaging_resumes_bit_for_bit(tmp_path, kind):
    cfg = compose_config(*SMALL, f"trainer.weight_averaging={kind}", "trainer.swa_start=0.3", "trainer.ema_decay=0.9")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, lambda c: dropout_task(c, fail_at_step=16), tmp_path / "resumed")
    assert int(checkpoint.read(tmp_path / "resumed")["averaged"]["n_averaged"]) > 0  # saved mid-average
    resumed = train(cfg, dropout_task, tmp_path / "resumed")
    uninterrupted = train(cfg, dropout_task, tmp_path / "uninterrupted")

    assert_same_training_state(tmp_path / "resumed", tmp_path / "uninterrupted")
    a, b = checkpoint.read(tmp_path / "resumed")["averaged"], checkpoint.read(tmp_path / "uninterrupted")["averaged"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert without_timings(resumed.summary) == without_timings(uninterrupted.summary)
    assert [without_timings(x) for x in metrics_lines(tmp_path / "resumed")] == \
        [without_timings(x) for x in metrics_lines(tmp_path / "uninterrupted")]


@pytest.mark.parametrize("name", cmopt.OPTIMIZER_NAMES)
def test_every_optimizer_trains_with_an_ema(tmp_path, name):
    task, _, _ = linear_task()
    result = train(compose_config(f"optimizer={name}", "optimizer.lr=0.01", "trainer.batch_size=4",
                                  "trainer.max_steps=6", "trainer.log_interval=3", "trainer.flatness_at_end=false",
                                  "trainer.weight_averaging=ema", "trainer.ema_decay=0.5"), lambda _: task, tmp_path)
    averaged = checkpoint.read(tmp_path)["averaged"]
    assert int(averaged["n_averaged"]) == 6
    assert not torch.equal(averaged["module.weight"], result.model.weight.detach())
    assert result.summary["averaging_state_bytes"] == 60


@pytest.mark.parametrize("override, message", [
    ("trainer.ema_decay=1.5", r"trainer.ema_decay=1.5 .*in \(0, 1\)"),
    ("trainer.swa_start=1", r"trainer.swa_start=1 .*\[0, 1\)"),
    ("trainer.weight_averaging=polyak", r"trainer.weight_averaging='?polyak'? .*none, ema, swa"),
])
def test_a_bad_averaging_setting_is_one_clear_error(tmp_path, override, message):
    task, _, _ = linear_task()
    with pytest.raises(UserError, match=message):
        train(compose_config(*SGD, "trainer.weight_averaging=ema", override), lambda _: task, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


def test_averaging_under_fsdp_is_refused_with_the_fix(tmp_path):
    task, _, _ = linear_task()
    cfg = compose_config(*SGD, "trainer.weight_averaging=ema")
    with pytest.raises(UserError, match="trainer.strategy=ddp only .now fsdp.; use trainer.strategy=ddp"):
        Averaging(task.model, cfg.trainer, STEPS, "fsdp", measurements=None)


@pytest.mark.slow
def test_swa_with_batchnorm_on_two_processes_evaluates_one_averaged_model(tmp_path):
    # ResNet-18 has BatchNorm: every process recomputes the statistics over the whole training set, so all
    # hold the same averaged model, and the evaluation summed over their slices is that model's evaluation
    # in one process (were the statistics per process, each slice would be evaluated by another model).
    from experiments.engine import strategy
    from experiments.engine.distributed import Placement
    from experiments.engine.evaluation import Measurements
    from experiments.image_classification import build_task
    from tests.experiments.test_image_classification_ddp import OVERRIDES, run_two_processes

    overrides = ("optimizer=adam", "model=resnet18", "~model.width", "dataset.train_size=128", "dataset.test_size=64", *OVERRIDES,
                 "trainer.weight_averaging=swa", "trainer.swa_start=0.5", "trainer.eval_batch_size=32")
    run_two_processes(tmp_path / "ddp", *overrides)
    saved = checkpoint.read(tmp_path / "ddp" / "run")["averaged"]
    cfg = compose_config(*overrides)
    task = build_task(cfg)
    task.model.load_state_dict({k[len("module."):]: v for k, v in saved.items() if k.startswith("module.")})
    placement = Placement(torch.device("cpu"))
    measured = Measurements(task, cfg.trainer, placement, strategy.build("ddp", placement), cfg.seed, None)
    expected = measured.evaluate(task.model)
    [last] = [line for line in metrics_lines(tmp_path / "ddp" / "run") if "test_loss" in line][-1:]
    assert int(saved["n_averaged"]) > 0 and any(k.endswith("running_mean") for k in saved)
    assert last["test_loss"] == pytest.approx(expected["test_loss"], rel=1e-5)
    assert last["test_acc"] == pytest.approx(expected["test_acc"], abs=1e-9)
