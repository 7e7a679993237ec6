"""Resuming: save after 20 steps, load into a fresh optimizer and model, run 20 more, and land on the
uninterrupted run's weights exactly, for every registry name."""

from __future__ import annotations

import io

import pytest
import torch

from cmopt import OPTIMIZER_NAMES, AdamCM, create_optimizer

HYPERPARAMETERS = {"sgd": dict(momentum=0.9), "sgd_cm": dict(momentum=0.9)}


def hyperparameters(name: str) -> dict:
    base = name.removeprefix("sam_")
    return {"lr": 0.01, **HYPERPARAMETERS.get(base, {}), **({"rho": 0.05} if name.startswith("sam_") else {})}


def make_model(dtype=torch.float64) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2)).to(dtype)


def batch(step: int, dtype):
    g = torch.Generator().manual_seed(1000 + step)
    x, y = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randn(32, 2, generator=g, dtype=torch.float64)
    return x.to(dtype), y.to(dtype)


def train(model, opt, steps: range) -> None:
    dtype = next(model.parameters()).dtype
    for step in steps:
        x, y = batch(step, dtype)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            return loss

        closure()
        opt.step(closure) if hasattr(opt, "first_step") else opt.step()


def save_and_load(opt) -> dict:
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def copy_of(model, dtype=torch.float64):
    fresh = make_model(dtype)
    fresh.load_state_dict({k: v.to(dtype) for k, v in model.state_dict().items()})
    return fresh


def uninterrupted_and_resumed(name: str, resume_dtype=torch.float64):
    """40 steps straight, and 20 steps + save + load into a fresh model and optimizer + 20 steps."""
    straight = make_model()
    train(straight, create_optimizer(name, straight, **hyperparameters(name)), range(40))

    first = make_model()
    opt_first = create_optimizer(name, first, **hyperparameters(name))
    train(first, opt_first, range(20))
    resumed = copy_of(first, resume_dtype)
    opt_resumed = create_optimizer(name, resumed, **hyperparameters(name))
    opt_resumed.load_state_dict(save_and_load(opt_first))
    loaded = [dict(s) for s in getattr(opt_resumed, "base_optimizer", opt_resumed).state.values()]
    train(resumed, opt_resumed, range(20, 40))
    return straight, resumed, loaded


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_resume_continues_bit_for_bit(name):
    straight, resumed, _ = uninterrupted_and_resumed(name)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("name", ["adam_cm", "adam_cg", "sgd_cm", "sam_adam_cm"])
def test_state_loads_onto_a_float32_copy_of_a_float64_model(name):
    straight, resumed, loaded = uninterrupted_and_resumed(name, torch.float32)
    for state in loaded:
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert value.dtype == torch.float32, key
    for p, q in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(q.double(), p, rtol=1e-4, atol=1e-5)


def test_state_dict_is_plain_tensors_and_numbers():
    model = make_model()
    opt = AdamCM(model.parameters(), buffer_dtype=torch.bfloat16)
    train(model, opt, range(3))
    allowed = (torch.Tensor, int, float, bool, str, type(None), torch.dtype)

    def leaves(value):
        if isinstance(value, dict):
            for v in value.values():
                yield from leaves(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                yield from leaves(v)
        else:
            yield value

    assert all(isinstance(leaf, allowed) for leaf in leaves(opt.state_dict()))
    restored = AdamCM(copy_of(model).parameters(), buffer_dtype=torch.bfloat16)
    restored.load_state_dict(save_and_load(opt))
    (buffer,) = restored.critical_buffers
    assert all(rows.dtype == torch.bfloat16 for rows in buffer.rows.values())


def test_capturable_state_resumes_in_the_default_path_and_back():
    a = make_model()
    opt_a = AdamCM(a.parameters(), capturable=True, lr=0.01)
    train(a, opt_a, range(10))
    b = copy_of(a)
    opt_b = AdamCM(b.parameters(), lr=0.01)
    opt_b.load_state_dict(save_and_load(opt_a))
    assert isinstance(opt_b.critical_buffers[0].steps, int)
    train(a, opt_a, range(10, 20))
    train(b, opt_b, range(10, 20))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)


def test_loading_a_state_of_another_capacity_is_refused():
    model = make_model()
    opt = AdamCM(model.parameters(), capacity=5)
    train(model, opt, range(2))
    other = AdamCM(model.parameters(), capacity=3)
    with pytest.raises(ValueError, match=r"capacity=5.*capacity=3"):
        other.load_state_dict(opt.state_dict())


def test_loading_a_plain_adam_state_is_refused():
    model = make_model()
    adam = torch.optim.Adam(model.parameters())
    train(model, adam, range(2))
    with pytest.raises(ValueError, match="no 'capacity'"):
        AdamCM(model.parameters()).load_state_dict(adam.state_dict())


def test_sam_state_dict_holds_the_base_optimizer_state():
    model = make_model()
    opt = create_optimizer("sam_adam_cm", model, lr=0.01)
    train(model, opt, range(3))
    state = opt.state_dict()
    assert state["param_groups"][0]["rho"] == 0.05
    assert {"exp_avg", "exp_avg_sq"} <= set(state["state"][0])
    # The buffer rides in the layout every torch checkpointing tool carries: rows in each tensor's state,
    # priorities and counters in its group.
    assert {"critical_momenta", "critical_sum"} <= set(state["state"][0])
    assert state["state"][0]["critical_momenta"].shape == (5, *model[0].weight.shape)
    assert {"critical_priorities", "critical_steps", "critical_admissions"} <= set(state["param_groups"][0])


def test_loaded_state_follows_the_parameters_device():
    """A CPU state loaded into an optimizer whose parameters live elsewhere (here: meta) moves there."""
    model = make_model()
    opt = AdamCM(model.parameters())
    train(model, opt, range(3))
    elsewhere = make_model().to("meta")
    moved = AdamCM(elsewhere.parameters())
    moved.load_state_dict(save_and_load(opt))
    assert moved.critical_buffers[0].priorities.device.type == "meta"
    assert all(rows.device.type == "meta" for rows in moved.critical_buffers[0].rows.values())
    for state in moved.state.values():
        assert all(v.device.type == "meta" for v in state.values() if isinstance(v, torch.Tensor))
