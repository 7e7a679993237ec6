"""What torch.optim users rely on beyond the arithmetic: a tensor learning rate, complex parameters,
copies and pickles, and state-dict hooks (each found failing by running PyTorch's own generic
optimizer tests against these optimizers; the checks here are written for this project)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import cmopt
from cmopt import SGDCM, AdamCG, AdamCM

CLASSES = [AdamCM, AdamCG, SGDCM]
PATHS = [dict(foreach=False), dict(foreach=True), dict(capturable=True), dict(capturable=True, foreach=True)]


def train_one(cls, lr, steps=6, **kwargs):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4))
    opt = cls([p], lr=lr, capacity=2, **kwargs)  # capacity 2: the buffer fills, then decides
    for s in range(steps):
        p.grad = torch.sin(torch.arange(4.0) + s) * (1 + s % 3)
        opt.step()
    return p.detach()


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("lr", [torch.tensor(0.01), torch.tensor([0.01]), torch.tensor([[0.01]])])
def test_a_one_element_tensor_lr_steps_exactly_as_the_float(cls, path, lr):
    assert torch.equal(train_one(cls, lr, **path), train_one(cls, 0.01, **path))


def test_a_tensor_lr_with_more_than_one_element_is_refused():
    with pytest.raises(ValueError, match="lr must be a scalar"):
        AdamCM([torch.nn.Parameter(torch.zeros(2))], lr=torch.tensor([0.1, 0.2]))


def train_complex(cls, as_complex: bool, **kwargs):
    """The same numbers as a complex parameter or as its real view (what torch.optim does with complex)."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, dtype=torch.complex64, generator=gen)
    p = torch.nn.Parameter(z.clone() if as_complex else torch.view_as_real(z).clone())
    opt = cls([p], lr=0.1, **kwargs)
    for _ in range(6):
        g = torch.randn(4, dtype=torch.complex64, generator=gen)
        p.grad = g if as_complex else torch.view_as_real(g).clone()
        opt.step()
    return torch.view_as_real(p.detach()) if as_complex else p.detach()


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("path", PATHS)
def test_complex_parameters_step_as_their_real_view(cls, path):
    assert torch.equal(train_complex(cls, True, capacity=2, **path), train_complex(cls, False, capacity=2, **path))


@pytest.mark.parametrize("ours,theirs,extra", [(AdamCM, torch.optim.AdamW, dict(weight_decay=0.0)),
                                               (AdamCG, torch.optim.Adam, {}), (SGDCM, torch.optim.SGD, dict(momentum=0.9))])
def test_complex_parameters_with_capacity_zero_are_torchs_optimizer(ours, theirs, extra):
    torch.testing.assert_close(train_complex(ours, True, capacity=0), train_complex(theirs, True, **extra))


def sam_and_closure():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = cmopt.create_optimizer("sam_adam_cm", model, lr=1e-2, capacity=2)
    x = torch.randn(8, 3)

    def closure():
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    return model, opt, closure


def sam_steps(model, opt, closure, n):
    for _ in range(n):
        opt.zero_grad()
        closure()
        opt.step(closure)
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda x: pickle.loads(pickle.dumps(x))])
def test_a_copied_or_pickled_sam_steps_like_the_original(duplicate):
    model, opt, closure = sam_and_closure()
    sam_steps(model, opt, closure, 3)
    model2, opt2 = duplicate((model, opt))
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(5))

    def make(m):
        def c():
            loss = m(x).pow(2).mean()
            loss.backward()
            return loss
        return c

    assert opt2.param_groups is opt2.base_optimizer.param_groups
    original, copied = sam_steps(model, opt, make(model), 4), sam_steps(model2, opt2, make(model2), 4)
    assert all(torch.equal(a, b) for a, b in zip(original, copied))


@pytest.mark.parametrize("name", ["adam_cm", "sam_adam_cm"])
def test_state_dict_hooks_run_and_see_the_critical_buffer(name):
    model, _, closure = sam_and_closure()
    opt = cmopt.create_optimizer(name, model, lr=1e-2, capacity=2)
    for _ in range(3):
        opt.zero_grad()
        closure()
        opt.step(closure) if name.startswith("sam_") else opt.step()
    seen = []
    opt.register_state_dict_pre_hook(lambda o: seen.append("save pre"))
    opt.register_state_dict_post_hook(
        lambda o, sd: seen.append(("save post", "critical_momenta" in sd["state"][0])))
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load pre"))
    base = getattr(opt, "base_optimizer", opt)
    opt.register_load_state_dict_post_hook(
        lambda o: seen.append(("load post", int(base.critical_buffers[0].steps), base.state[model.weight]["step"])))
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert seen == ["save pre", ("save post", True), "load pre", ("load post", 3, 3)]
