"""The update size and distance the engine logs (experiments/engine/movement.py), against a replay by hand.

Plain SGD (no momentum, no weight decay) on one full batch: θ_{t+1} = θ_t − lr_t ∇L(θ_t), so the logged
step's ||Δθ|| is lr_t ||∇L(θ_{t-1})|| and ||Δθ||/lr its gradient norm; the replay runs in float64.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from experiments.engine import Task, train
from tests.experiments.engine.test_engine_loop import blobs, classification
from tests.experiments.image_runner_helpers import compose_config, metrics_lines


def sgd_task() -> tuple[Task, TensorDataset]:
    torch.manual_seed(0)
    data = blobs(16, 0)
    return Task(model=nn.Linear(4, 3), train_data=data, eval_data={}, forward=classification), data


def test_the_logged_update_is_lr_times_the_gradient_norm_and_the_distance_adds_them_up(tmp_path):
    task, data = sgd_task()
    initial = [p.detach().double().clone() for p in task.model.parameters()]
    # 7 steps on one batch of all 16 items, a cosine schedule (the lr changes every step), lines at 3, 6, 7.
    cfg = compose_config("optimizer=sgd", "optimizer.lr=0.5", "optimizer.momentum=0.0", "trainer.batch_size=16",
                         "trainer.max_steps=7", "trainer.log_interval=3", "trainer.flatness_at_end=false",
                         "scheduler=cosine")
    train(cfg, lambda _: task, tmp_path)
    lines = [x for x in metrics_lines(tmp_path) if "update_size" in x]
    assert [x["step"] for x in lines] == [3, 6, 7]

    weight, bias = (p.clone().requires_grad_() for p in initial)
    x, y = data.tensors
    by_hand = {}
    for step in range(1, 8):
        lr = 0.5 * 0.5 * (1 + math.cos(math.pi * (step - 1) / 7))  # cosine to 0 just after the last step
        loss = nn.functional.cross_entropy(x.double() @ weight.T + bias, y)
        grads = torch.autograd.grad(loss, (weight, bias))
        with torch.no_grad():
            weight -= lr * grads[0]
            bias -= lr * grads[1]
            gradient_norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
            distance = math.sqrt(float((weight - initial[0]).pow(2).sum() + (bias - initial[1]).pow(2).sum()))
        by_hand[step] = (lr * gradient_norm, gradient_norm, distance, lr)
    for line in lines:
        update, per_lr, distance, lr = by_hand[line["step"]]
        assert line["lr"] == pytest.approx(lr, rel=1e-6)
        assert line["update_size"] == pytest.approx(update, rel=1e-5)
        assert line["update_size_per_lr"] == pytest.approx(per_lr, rel=1e-5)
        assert line["distance_travelled"] == pytest.approx(distance, rel=1e-5)
    assert lines[0]["distance_travelled"] > lines[0]["update_size"] > 0  # three steps, not one


def test_sam_logs_the_size_of_its_whole_step(tmp_path):
    # SAM perturbs and restores the weights inside its step: the logged update is θ after minus θ before.
    task, _ = sgd_task()
    cfg = compose_config("optimizer=sam_adam", "optimizer.lr=0.01", "trainer.batch_size=16", "trainer.max_steps=1",
                         "trainer.log_interval=1", "trainer.flatness_at_end=false")
    result = train(cfg, lambda _: task, tmp_path)
    [line] = [x for x in metrics_lines(tmp_path) if "update_size" in x]
    # Adam's first step moves every weight by lr (|m̂/√v̂| = 1): ||Δθ|| = lr √(15 weights) to float32 rounding.
    assert line["update_size"] == pytest.approx(0.01 * math.sqrt(15), rel=1e-4)
    assert line["update_size_per_lr"] == pytest.approx(math.sqrt(15), rel=1e-4)
    assert line["distance_travelled"] == pytest.approx(line["update_size"], rel=1e-9)
    assert result.summary["update_size"] == line["update_size"]
