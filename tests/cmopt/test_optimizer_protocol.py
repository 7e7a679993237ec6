"""The critical-buffer optimizers behave as torch.optim.Optimizer: closures, schedulers, added groups."""

from __future__ import annotations

import pytest
import torch

from cmopt import SGDCM, AdamCG, AdamCM

CLASSES = [AdamCM, AdamCG, SGDCM]


@pytest.mark.parametrize("cls", CLASSES)
def test_closure_is_called_with_grad_enabled_and_its_loss_returned(cls):
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    opt = cls([p], lr=0.1)

    def closure():
        assert torch.is_grad_enabled()
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        assert opt.step(closure).item() == pytest.approx(5.0)
    assert opt.critical_buffers[0].steps == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_scheduler_lr_reaches_the_update(cls):
    """After a scheduler sets lr to 0 every later step leaves the weights (no weight decay) in place."""
    p = torch.nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = cls([p], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1.0 if epoch < 3 else 0.0)
    for _ in range(3):
        p.grad = torch.tensor([0.5, 0.25])
        opt.step()
        sched.step()
    frozen = p.detach().clone()
    assert not torch.equal(frozen, torch.tensor([1.0, -1.0]))
    for _ in range(3):
        p.grad = torch.tensor([0.5, 0.25])
        opt.step()
    assert torch.equal(p.detach(), frozen)


@pytest.mark.parametrize("cls", CLASSES)
def test_added_group_gets_its_own_buffer_and_hyperparameters(cls):
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))
    opt = cls([a], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    opt.add_param_group({"params": [b], "capacity": 2, "decay": 0.5})
    for _ in range(4):
        a.grad, b.grad = torch.ones(2), torch.ones(3)
        opt.step()
    first, second = opt.critical_buffers
    assert first.steps == 5 and second.steps == 4
    assert len(second.priorities) == 2 and second.sums[0].shape == (3,)
    assert "critical_priorities" not in repr(opt) and "tensor" not in repr(opt)  # hyperparameters only
