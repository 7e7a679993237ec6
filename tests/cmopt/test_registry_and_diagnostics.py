"""The name registry, the no-weight-decay grouping, and the diagnostics a runner logs."""

from __future__ import annotations

import pytest
import torch

from cmopt import OPTIMIZER_NAMES, SAM, SGDCM, AdamCG, AdamCM, create_optimizer
from cmopt.diagnostics import critical_buffer_stats, optimizer_state_bytes


def test_every_name_builds_the_right_class():
    expected = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
                "adam_cg": AdamCG, "adam_cm": AdamCM, "sgd_cm": SGDCM}
    assert set(OPTIMIZER_NAMES) == set(expected) | {f"sam_{n}" for n in expected}
    for name, cls in expected.items():
        p = [torch.nn.Parameter(torch.ones(2))]
        assert type(create_optimizer(name, p, lr=0.1)) is cls
        sam = create_optimizer(f"sam_{name}", p, lr=0.1, rho=0.2, adaptive=True)
        assert type(sam) is SAM and type(sam.base_optimizer) is cls
        assert sam.param_groups[0]["rho"] == 0.2 and sam.param_groups[0]["adaptive"] is True


def test_hyperparameters_reach_the_optimizer():
    opt = create_optimizer("adam_cm", [torch.nn.Parameter(torch.ones(2))], lr=0.3, capacity=7, decay=0.5)
    group = opt.param_groups[0]
    assert (group["lr"], group["capacity"], group["decay"]) == (0.3, 7, 0.5)


def test_biases_and_norm_weights_go_without_weight_decay():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                                torch.nn.LayerNorm(4 * 6 * 6), torch.nn.Linear(144, 2, bias=False))
    opt = create_optimizer("adamw", model, lr=0.1, weight_decay=0.05, no_decay_bias_and_norm=True)
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and free["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[4].weight)}
    assert {id(p) for p in free["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias),
                                                 id(model[3].weight), id(model[3].bias)}
    with pytest.raises(ValueError, match="needs the model"):
        create_optimizer("adamw", model.parameters(), no_decay_bias_and_norm=True)


class TiedLanguageModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(5, 4)
        self.hidden = torch.nn.Linear(4, 4)
        self.norm = torch.nn.LayerNorm(4)
        self.decoder = torch.nn.Linear(4, 5, bias=False)
        self.decoder.weight = self.embedding.weight  # tied: the output layer shares the embedding


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_embeddings_tied_or_not_go_without_weight_decay_in_every_optimizer(name):
    # With zero gradients only weight decay moves a parameter: the decayed group moves, the other does not.
    torch.manual_seed(0)
    model = TiedLanguageModel()
    opt = create_optimizer(name, model, lr=0.1, weight_decay=0.5, no_decay_bias_and_norm=True)
    groups = opt.param_groups
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]
    assert {id(p) for p in groups[0]["params"]} == {id(model.hidden.weight)}
    assert {id(p) for p in groups[1]["params"]} == {id(model.embedding.weight), id(model.hidden.bias),
                                                      id(model.norm.weight), id(model.norm.bias)}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    if isinstance(opt, SAM):
        opt.first_step(zero_grad=False)
        opt.second_step()
    else:
        opt.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"hidden.weight"}


def step_once(opt, params):
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()


@pytest.mark.parametrize("cls,capacity,extra", [(AdamCM, 5, 3), (AdamCG, 10, 3), (SGDCM, 5, 2), (AdamCM, 0, 2)])
def test_state_bytes_are_capacity_plus_moments_times_parameter_bytes(cls, capacity, extra):
    params = [torch.nn.Parameter(torch.zeros(s)) for s in [(64, 3, 3, 3), (64,), (10, 64)]]
    opt = cls(params, capacity=capacity)
    step_once(opt, params)
    param_bytes = sum(p.numel() * 4 for p in params)
    # (C + 3): m, v, C stored momenta and their running sum; SGD+CM: buffer instead of m, v.
    assert optimizer_state_bytes(opt) == (capacity + extra) * param_bytes


def test_the_capturable_path_counts_its_scratch_entry():
    # The device-decision buffer keeps one scratch entry per tensor (its compiled store needs no temporary).
    params = [torch.nn.Parameter(torch.zeros(s)) for s in [(64, 3, 3, 3), (64,), (10, 64)]]
    opt = AdamCM(params, capacity=5, capturable=True)
    step_once(opt, params)
    # m, v, the running sum, C entries and the scratch one; plus each tensor's step counter, a 4-byte tensor here.
    assert optimizer_state_bytes(opt) == (5 + 1 + 3) * sum(p.numel() * 4 for p in params) + 4 * len(params)


def test_bfloat16_buffer_halves_the_buffer_share():
    params = [torch.nn.Parameter(torch.zeros(100, 10))]
    opt = AdamCM(params, capacity=5, buffer_dtype=torch.bfloat16)
    step_once(opt, params)
    param_bytes = 100 * 10 * 4
    assert optimizer_state_bytes(opt) == 2 * param_bytes + (5 + 1) * param_bytes // 2


def test_admission_rate_and_mean_priority_on_a_hand_made_sequence():
    """C=2, no decay, gradient norms 1, 2, 0.5, 3, 1.5: append, append, reject, replace 1, reject."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = AdamCM([p], capacity=2, decay=1.0)
    for norm in [1.0, 2.0, 0.5, 3.0, 1.5]:
        p.grad = torch.tensor([norm])
        opt.step()
    stats = critical_buffer_stats(opt)
    assert stats["buffer_attempts"] == 5 and stats["buffer_admissions"] == 3
    assert stats["buffer_admission_rate"] == pytest.approx(0.6)
    assert stats["buffer_mean_priority"] == pytest.approx(2.5)
    # Adam+CM stores momenta (m stays 0 on the first step, β1 = 0.9): entry 0 was replaced at step 4.
    m2 = 0.1 * 2.0
    m4 = 0.9 * (0.9 * m2 + 0.1 * 0.5) + 0.1 * 3.0
    buffer = opt.critical_buffers[0]
    assert buffer.rows[0].flatten().tolist() == pytest.approx([m4, m2], rel=1e-6)
    assert buffer.priorities.tolist() == pytest.approx([3.0, 2.0])


def test_sam_reports_its_base_buffer_once():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = create_optimizer("sam_adam_cm", [p], lr=0.1)
    for _ in range(4):
        p.grad = torch.ones(3)
        opt.first_step(zero_grad=False)
        opt.second_step()
    assert critical_buffer_stats(opt)["buffer_attempts"] == 4
    assert critical_buffer_stats(torch.optim.Adam([p])) == {}
