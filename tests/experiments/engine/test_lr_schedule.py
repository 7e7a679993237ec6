"""Learning-rate schedules against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from experiments.engine.schedule import build_scheduler, lr_factor


def test_cosine_after_linear_warmup():
    factors = [lr_factor(s, name="cosine", total_steps=10, warmup_steps=2) for s in range(10)]
    # Warm-up 1/2, 2/2; then 0.5 (1 + cos(pi (s - 2) / 8)).
    expected = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert factors == pytest.approx(expected, abs=1e-12)
    assert factors[6] == pytest.approx(0.5)
    assert lr_factor(9, name="cosine", total_steps=10, min_lr_ratio=0.1) == pytest.approx(
        0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.9)))


def test_step_and_constant():
    step = [lr_factor(s, name="step", total_steps=8, milestones=[0.5, 0.75], gamma=0.1) for s in range(8)]
    assert step == pytest.approx([1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])
    assert [lr_factor(s, name="constant", total_steps=5, warmup_steps=4) for s in range(6)] == [
        0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_the_scheduler_sets_each_steps_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.4)
    scheduler = build_scheduler(optimizer, 4, "cosine", warmup_steps=1)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Warm-up 1/1, then cos(pi k/3) steps: 0.4 x (1, 0.75, 0.25).
    assert lrs == pytest.approx([0.4, 0.4, 0.3, 0.1])


def test_unknown_names_and_options_are_refused_with_the_valid_ones():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Unknown scheduler 'linear'. Valid names: cosine, step, constant"):
        build_scheduler(optimizer, 10, "linear")
    with pytest.raises(ValueError, match=r"'cosine' does not take option\(s\) warmup. It takes: warmup_steps, min_lr_ratio\."):
        build_scheduler(optimizer, 10, "cosine", warmup=3)
