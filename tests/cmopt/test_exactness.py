"""Each critical-buffer optimizer against the plain float64 reference of docs/optimizers.md, and
capacity 0 against torch's own optimizers."""

from __future__ import annotations

import itertools

import pytest
import torch

from cmopt import SGDCM, AdamCG, AdamCM
from tests.cmopt.reference import ReferenceGroup

SHAPES = [[(4, 3), (3,), (2, 2, 3)], [(5,), (3, 2)]]
CLASSES = {"adam_cm": AdamCM, "adam_cg": AdamCG, "sgd_cm": SGDCM}


def group_hyperparameters(kind: str, capacity: int, decay: float, weight_decay: float, **options) -> list[dict]:
    """Two groups with different hyperparameters; the second overrides lr, decay and weight decay.
    `options` (e.g. priority=...) go to both."""
    first = dict(lr=0.05, capacity=capacity, decay=decay, weight_decay=weight_decay, **options)
    second = dict(lr=0.02, capacity=capacity, decay=min(1.0, decay + 0.2), weight_decay=weight_decay / 2, **options)
    if kind == "sgd_cm":
        extra = [dict(momentum=0.9, dampening=0.0), dict(momentum=0.5, dampening=0.3)]
    else:
        extra = [dict(betas=(0.9, 0.999), eps=1e-8), dict(betas=(0.8, 0.99), eps=1e-6)]
    return [{**first, **extra[0]}, {**second, **extra[1]}]


def gradient_pattern(step: int, group: int, index: int) -> bool:
    """Whether a tensor has a gradient: one skips every third step, one only starts at step 7."""
    if (group, index) == (0, 1):
        return step % 3 != 1
    if (group, index) == (1, 0):
        return step >= 7
    return True


def make_gradients(step: int, params: list[list[torch.Tensor]], generator) -> list[list[torch.Tensor | None]]:
    """g = 0.5·p + noise, so trajectories feed back into gradients; None per `gradient_pattern`."""
    grads = []
    for gi, group in enumerate(params):
        row = []
        for ti, p in enumerate(group):
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            row.append(0.5 * p.detach() + noise if gradient_pattern(step, gi, ti) else None)
        grads.append(row)
    return grads


def initial_params(seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g, dtype=torch.float64) for s in shapes] for shapes in SHAPES]


def run_against_reference(kind, capacity, decay, weight_decay, foreach, steps=100, **options):
    hps = group_hyperparameters(kind, capacity, decay, weight_decay, **options)
    start = initial_params()
    ours = [[p.clone().requires_grad_(True) for p in group] for group in start]
    ref = [ReferenceGroup(kind, [p.clone() for p in group], **hp) for group, hp in zip(start, hps)]
    opt = CLASSES[kind]([{"params": g, **hp} for g, hp in zip(ours, hps)], foreach=foreach, **options)
    gen_ours, gen_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for step in range(steps):
        for group, grads in zip(ours, make_gradients(step, ours, gen_ours)):
            for p, g in zip(group, grads):
                p.grad = g
        opt.step()
        for rg, grads in zip(ref, make_gradients(step, [r.params for r in ref], gen_ref)):
            rg.step(grads)
        for group, rg in zip(ours, ref):
            for p, q in zip(group, rg.params):
                torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-12, msg=f"step {step}")
    for buffer, rg in zip(opt.critical_buffers, ref):
        if capacity > 0:  # (FIFO: cmopt writes entry (attempts mod C), the reference keeps them oldest first)
            held, ours_held = rg.priorities(), buffer.priorities[: len(rg.priorities())].tolist()
            if options.get("priority") == "fifo":
                held, ours_held = sorted(held), sorted(ours_held)
            torch.testing.assert_close(ours_held, held, rtol=1e-12, atol=0)
        else:
            assert buffer is None
    return opt


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("capacity,decay,weight_decay", [
    (1, 0.7, 0.0), (3, 0.0, 0.0), (3, 1.0, 0.05), (5, 0.7, 0.05), (5, 0.5, 0.0), (8, 0.9, 0.1), (0, 0.7, 0.05),
])
@pytest.mark.parametrize("foreach", [True, False])
def test_follows_reference_for_100_steps(kind, capacity, decay, weight_decay, foreach):
    opt = run_against_reference(kind, capacity, decay, weight_decay, foreach)
    if capacity > 0:  # every step was an insertion attempt, and the buffer filled
        assert all(b.steps == 100 and b.admissions >= capacity for b in opt.critical_buffers)


def test_priority_ties_replace_the_first_lowest_entry():
    """decay=0 zeroes every priority each step, so every replacement is a tie broken by position."""
    run_against_reference("adam_cm", capacity=3, decay=0.0, weight_decay=0.0, foreach=True, steps=30)


@pytest.mark.parametrize("foreach", [True, False])
@pytest.mark.parametrize("ours,theirs,kwargs", [
    (AdamCM, torch.optim.AdamW, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    (AdamCG, torch.optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)),
    (SGDCM, torch.optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.1)),
    (SGDCM, torch.optim.SGD, dict(lr=0.05, momentum=0.0, weight_decay=0.1)),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_capacity_zero_is_the_base_optimizer_bit_for_bit(ours, theirs, kwargs, foreach, dtype):
    start = [t.to(dtype) for t in initial_params()[0]]
    a = [p.clone().requires_grad_(True) for p in start]
    b = [p.clone().requires_grad_(True) for p in start]
    opt_a = ours(a, capacity=0, foreach=foreach, **kwargs)
    opt_b = theirs(b, foreach=foreach, **kwargs)
    gen = torch.Generator().manual_seed(3)
    for _ in range(50):
        noise = [torch.randn(p.shape, generator=gen, dtype=dtype) for p in start]
        for p, q, n in zip(a, b, noise):
            p.grad, q.grad = 0.5 * p.detach() + n, 0.5 * q.detach() + n
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b):
        assert torch.equal(p, q)


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("buffer_dtype", [None, torch.bfloat16])
def test_foreach_and_per_tensor_paths_agree(kind, buffer_dtype):
    results = []
    for foreach in (True, False):
        params = [p.float().requires_grad_(True) for p in initial_params()[0]]
        opt = CLASSES[kind](params, lr=0.01, foreach=foreach, buffer_dtype=buffer_dtype, weight_decay=0.01)
        gen = torch.Generator().manual_seed(5)
        for step in range(60):
            for p in params:
                p.grad = 0.5 * p.detach() + torch.randn(p.shape, generator=gen)
            opt.step()
        results.append((params, opt))
    (pa, oa), (pb, ob) = results
    for p, q in zip(pa, pb):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    (ba,), (bb,) = oa.critical_buffers, ob.critical_buffers
    assert ba.admissions == bb.admissions
    for i in range(len(pa)):
        assert ba.rows[i].dtype == (buffer_dtype or torch.float32)
        torch.testing.assert_close(ba.rows[i].float(), bb.rows[i].float(), rtol=1e-2, atol=1e-5)


def test_first_adam_cm_step_moves_nothing_and_stores_the_raw_gradient():
    p = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    opt = AdamCM([p], lr=0.1)
    p.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    opt.step()
    assert p.tolist() == [1.0, -2.0]
    (buffer,) = opt.critical_buffers
    assert buffer.rows[0][0].tolist() == [3.0, 4.0] and opt.state[p]["exp_avg"].abs().sum() == 0
    assert buffer.priorities[0].item() == pytest.approx(5.0 * 0.7)


def test_group_without_any_gradient_is_left_alone():
    a = torch.zeros(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = AdamCM([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad = torch.ones(2)
    opt.step()
    assert opt.critical_buffers[1] is None and len(opt.state[b]) == 0
    assert list(itertools.chain(b.tolist())) == [1.0, 1.0]


@pytest.mark.parametrize("capturable", [False, True])
def test_bfloat16_running_sum_does_not_drift(capturable):
    """Kept in bfloat16 and updated in place, the sum drifted by ~27% after 20k steps; it must stay the
    entries' exact sum, rounded once."""
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(2000))
    opt = AdamCM([p], lr=1e-3, buffer_dtype=torch.bfloat16, capturable=capturable)
    for _ in range(300):
        p.grad = torch.randn(2000) * (1 + torch.rand(1)) + 0.3
        opt.step()
    (buffer,) = opt.critical_buffers
    assert torch.equal(buffer.sums[0], buffer.rows[0].sum(0, dtype=torch.float32).to(torch.bfloat16))
