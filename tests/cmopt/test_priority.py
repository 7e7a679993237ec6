"""The priority rule (`priority=`): each rule of each optimizer against the float64 reference for 100
steps; the random rule draws from the step count alone (no generator touched, the same draw on every
process, resumed exactly); the capturable path and the host-read budget hold for every rule; bad values
are refused with the valid ones."""

from __future__ import annotations

import io

import pytest
import torch

from cmopt import SGDCM, AdamCG, AdamCM
from cmopt.buffer import PRIORITY_RULES, counter_hash
from tests.cmopt.reference import drawn_priority
from tests.cmopt.test_exactness import CLASSES, run_against_reference
from tests.cmopt.test_sync_and_capture import CountHostReads, train

RULES = [r for r in PRIORITY_RULES if r != "grad_norm"]  # grad_norm: tests/cmopt/test_exactness.py


@pytest.mark.parametrize("kind", list(CLASSES))
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("foreach", [True, False])
def test_each_rule_follows_reference_for_100_steps(kind, rule, foreach):
    opt = run_against_reference(kind, 3, 0.7, 0.05, foreach, priority=rule)
    for buffer in opt.critical_buffers:
        assert buffer.steps == 100
        if rule == "fifo":  # every candidate is admitted
            assert buffer.admissions == 100
        else:  # the buffer filled and kept admitting (a momentum's norm changes slowly and λ = 0.7 decays
            assert buffer.admissions > 3  # the held ones: candidate_norm can admit every candidate here)


def test_fifo_keeps_the_most_recent_entries_even_when_every_priority_decays_to_zero():
    """decay=0 makes every held priority 0: a priority-based FIFO would replace entry 0 each time."""
    run_against_reference("sgd_cm", capacity=3, decay=0.0, weight_decay=0.0, foreach=True, steps=30, priority="fifo")
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = SGDCM([p], lr=0.0, momentum=0.0, capacity=3, decay=0.0, priority="fifo")
    for value in range(1, 8):
        p.grad = torch.full((1,), float(value), dtype=torch.float64)
        opt.step()
    (buffer,) = opt.critical_buffers
    assert sorted(buffer.rows[0].flatten().tolist()) == [5.0, 6.0, 7.0]  # the last three gradients


def test_adam_cm_candidate_norm_ranks_by_the_momentum_not_the_gradient():
    """One tensor, C = 1, no decay; a large gradient against the momentum leaves a small momentum, so
    the two rules disagree on it."""
    results = {}
    for rule in ("grad_norm", "candidate_norm"):
        p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = AdamCM([p], lr=0.0, betas=(0.5, 0.999), capacity=1, decay=1.0, priority=rule)
        for g in (1.0, 1.0, -1.5, 0.5):  # momenta (from step 2): 1.0, -0.25, 0.125
            p.grad = torch.tensor([g], dtype=torch.float64)
            opt.step()
        (buffer,) = opt.critical_buffers
        results[rule] = (buffer.rows[0].item(), buffer.priorities[0].item())
    # grad_norm: |1| stores g = 1; |1| (not > 1); |-1.5| admits m = -0.5; |0.5| does not.
    assert results["grad_norm"] == (-0.5, 1.5)
    # candidate_norm: the first step's candidate is g itself (1.0), then |m| = 0.5, 0.5, 0.0: none admitted.
    assert results["candidate_norm"] == (1.0, 1.0)


def test_random_draws_are_the_documented_hash_of_the_step_count():
    counts = [0, 1, 2, 7, 1000, 2**31 - 1]
    expected = [drawn_priority(n) for n in counts]
    assert [counter_hash(n) / 2**32 for n in counts] == expected
    as_tensor = counter_hash(torch.tensor(counts, dtype=torch.int64)).double() / 2**32  # the capturable path's
    assert as_tensor.tolist() == expected
    draws = [drawn_priority(n) for n in range(2000)]
    assert all(0 <= d < 1 for d in draws) and len(set(draws)) == 2000
    assert abs(sum(draws) / 2000 - 0.5) < 0.02  # roughly uniform


def _random_run(steps, seed_global, state=None):
    torch.manual_seed(seed_global)  # the global generator: must not matter
    model = torch.nn.Linear(4, 3).double()
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel(), dtype=torch.float64).reshape(p.shape) * (i + 1))
    opt = AdamCM(model.parameters(), lr=0.01, capacity=3, priority="random")
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
    gen, global_state = torch.Generator().manual_seed(5), torch.get_rng_state()
    for step in range(steps.stop):
        x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
        if step not in steps:
            continue
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()
    assert torch.equal(torch.get_rng_state(), global_state)  # the steps drew nothing from the global generator
    return model, opt


def test_random_rule_ignores_the_global_generator_and_resumes_exactly():
    model_a, opt_a = _random_run(range(40), seed_global=0)
    model_b, opt_b = _random_run(range(40), seed_global=123)
    (ba,), (bb,) = opt_a.critical_buffers, opt_b.critical_buffers
    assert torch.equal(ba.priorities, bb.priorities) and ba.admissions == bb.admissions
    assert 3 < ba.admissions < 40
    half_model, half_opt = _random_run(range(20), seed_global=1)
    saved = io.BytesIO()
    torch.save({"model": half_model.state_dict(), "opt": half_opt.state_dict()}, saved)
    saved.seek(0)
    state = torch.load(saved, weights_only=True)
    assert all(g["priority"] == "random" for g in state["opt"]["param_groups"])
    resumed_model, resumed_opt = _random_run(range(20, 40), seed_global=7, state=state)
    for p, q in zip(resumed_model.parameters(), model_a.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(resumed_opt.critical_buffers[0].priorities, ba.priorities)


@pytest.mark.parametrize("cls", [AdamCM, AdamCG, SGDCM])
@pytest.mark.parametrize("rule", RULES)
def test_capturable_gives_the_default_numbers_and_never_reads_the_host(cls, rule):
    kwargs = dict(lr=0.01, capacity=3, decay=0.97, weight_decay=0.01, priority=rule)
    m_default, o_default = train(lambda g: cls(g, **kwargs), steps=30)
    m_capture, o_capture = train(lambda g: cls(g, capturable=True, **kwargs), steps=30)
    for p, q in zip(m_default.parameters(), m_capture.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    for bd, bc in zip(o_default.critical_buffers, o_capture.critical_buffers):
        assert bd.admissions == int(bc.admissions)
        torch.testing.assert_close(bd.priorities, bc.priorities, rtol=1e-12, atol=0)
    for opt, most in ((o_default, 0 if rule == "fifo" else len(o_default.param_groups)), (o_capture, 0)):
        opt.zero_grad()
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.ones_like(p)
        with CountHostReads() as mode:
            opt.step()
        assert mode.count <= most, (rule, mode.count)


def test_a_state_saved_before_the_option_resumes_with_the_papers_rule():
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = AdamCM([p], priority="candidate_norm")
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    state = opt.state_dict()
    for group in state["param_groups"]:
        del group["priority"], group["variant"]
    opt.load_state_dict(state)
    assert opt.param_groups[0]["priority"] == "grad_norm" and opt.param_groups[0]["variant"] == "paper"


@pytest.mark.parametrize("cls", [AdamCM, AdamCG, SGDCM])
def test_an_unknown_rule_is_refused_with_the_valid_ones(cls):
    with pytest.raises(ValueError, match=r"priority='momentum' is not one of grad_norm, candidate_norm, random, "
                                         r"fifo .* Pass e.g. priority='grad_norm'"):
        cls([torch.nn.Parameter(torch.ones(2))], priority="momentum")
    opt = cls([torch.nn.Parameter(torch.ones(2))])
    with pytest.raises(ValueError, match=r"priority=3 is not one of"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "priority": 3})
