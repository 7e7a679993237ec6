"""LR on plateau: the lr is cut by `factor` after more than `patience` evaluations without a better metric,
never below min_lr_ratio x the base lr, and the schedule's memory survives a state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from experiments.engine.schedule import build_scheduler


def optimizer(lr=1.0):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


@pytest.mark.parametrize("patience, expected", [
    # metrics 5, 4, 4.5, 4.6, 3, 3.5 (lower is better)
    (0, [1, 1, 0.25, 0.0625, 0.0625, 0.015625]),
    (1, [1, 1, 1, 0.25, 0.25, 0.25]),
])
def test_the_lr_is_cut_after_evaluations_without_improvement(patience, expected):
    opt = optimizer()
    schedule = build_scheduler(opt, 100, "plateau", select=("val_ppl", "min"), factor=0.25, patience=patience)
    seen = []
    for metric in (5, 4, 4.5, 4.6, 3, 3.5):
        opt.step()
        schedule.step()
        schedule.observe(metric)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == expected


def test_min_lr_ratio_floors_the_cuts_and_state_round_trips():
    opt = optimizer(lr=2.0)
    schedule = build_scheduler(opt, 100, "plateau", select=("acc", "max"), factor=0.1, min_lr_ratio=0.05)
    for metric in (0.5, 0.4, 0.3, 0.2):  # higher is better: three evaluations without improvement
        schedule.step()
        schedule.observe(metric)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.05)
    again = build_scheduler(optimizer(lr=2.0), 100, "plateau", select=("acc", "max"), factor=0.1, min_lr_ratio=0.05)
    again.load_state_dict(schedule.state_dict())
    assert (again.scale, again.best, again.bad_evaluations) == (schedule.scale, schedule.best, schedule.bad_evaluations)


def test_plateau_needs_a_runner_that_selects_on_a_metric():
    with pytest.raises(ValueError, match=r"scheduler=plateau follows a validation metric"):
        build_scheduler(optimizer(), 100, "plateau", select=None)
