"""Bad input: one test per case of docs/optimizers.md; each message names the argument and its range."""

from __future__ import annotations

import pytest
import torch

from cmopt import SAM, SGDCM, AdamCG, AdamCM, create_optimizer

CLASSES = [AdamCM, AdamCG, SGDCM]


def params():
    return [torch.nn.Parameter(torch.ones(3))]


@pytest.mark.parametrize("cls", CLASSES)
def test_negative_lr(cls):
    with pytest.raises(ValueError, match=r"lr must be >= 0, got -0.1"):
        cls(params(), lr=-0.1)


@pytest.mark.parametrize("cls", [AdamCM, AdamCG])
def test_negative_eps(cls):
    with pytest.raises(ValueError, match=r"eps must be >= 0, got -1e-08"):
        cls(params(), eps=-1e-8)


@pytest.mark.parametrize("cls", CLASSES)
def test_negative_weight_decay(cls):
    with pytest.raises(ValueError, match=r"weight_decay must be >= 0, got -0.01"):
        cls(params(), weight_decay=-0.01)


@pytest.mark.parametrize("cls", [AdamCM, AdamCG])
@pytest.mark.parametrize("betas,bad", [((1.0, 0.999), r"betas\[0\]"), ((0.9, -0.1), r"betas\[1\]"), ((0.9,), "pair")])
def test_betas_outside_unit_interval(cls, betas, bad):
    with pytest.raises(ValueError, match=rf"{bad}.*\[0, 1\)"):
        cls(params(), betas=betas)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_decay_outside_unit_interval(cls, decay):
    with pytest.raises(ValueError, match=rf"decay must lie in \[0, 1\], got {decay}"):
        cls(params(), decay=decay)


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("capacity", [-1, 2.5, True, "5"])
def test_capacity_not_a_non_negative_integer(cls, capacity):
    with pytest.raises(ValueError, match=r"capacity must be a non-negative integer"):
        cls(params(), capacity=capacity)


def test_capacity_checked_in_added_groups():
    opt = AdamCM(params())
    with pytest.raises(ValueError, match="capacity"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "capacity": -2})


def test_buffer_dtype_must_be_floating():
    with pytest.raises(ValueError, match="buffer_dtype must be None .* torch.bfloat16"):
        AdamCM(params(), buffer_dtype=torch.int8)


def test_negative_rho():
    with pytest.raises(ValueError, match=r"rho must be >= 0, got -0.05"):
        SAM(params(), AdamCM, rho=-0.05)


def test_negative_momentum():
    with pytest.raises(ValueError, match=r"momentum must be >= 0"):
        SGDCM(params(), momentum=-0.9)


@pytest.mark.parametrize("cls", CLASSES)
def test_sparse_gradient(cls):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = cls(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradient.*sparse=False"):
        opt.step()


def test_sam_step_without_closure():
    opt = SAM(params(), AdamCM)
    with pytest.raises(ValueError, match="SAM.step needs a closure"):
        opt.step()


def test_unknown_optimizer_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown optimizer 'adam_xx'. Valid names: sgd, adam, adamw, adam_cg, adam_cm"):
        create_optimizer("adam_xx", params())


def test_unknown_hyperparameter_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"'adam' does not take capacity. It takes: lr, betas"):
        create_optimizer("adam", params(), capacity=5)
