"""The critical buffer on its own, both implementations, against the plain reference buffer:
admission (append while filling, replace the first lowest only if strictly higher), decay, the
mean read before insertion, tensors that miss steps, counters, and its state dict."""

from __future__ import annotations

import io

import pytest
import torch

from cmopt._ops import Ops
from cmopt.buffer import DeviceBuffer, HostBuffer
from tests.cmopt.reference import ReferenceBuffer, priority

SHAPES = [(3, 2), (4,), (2, 2)]


def has_gradient(step: int, i: int) -> bool:
    """Tensor 1 misses every third step; tensor 2 joins at step 4."""
    return (i != 1 or step % 3 != 2) and (i != 2 or step >= 4)


def drive(kind, capacity, decay, steps, *, ties=False, foreach=True, buffer_dtype=None, check_every_step=True):
    """Feed the same candidates to `kind` and to the reference; compare before and after each insertion."""
    gen = torch.Generator().manual_seed(7)
    ops = Ops(foreach)
    params = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    ours, ref = kind(capacity, torch.float64, torch.device("cpu"), buffer_dtype), ReferenceBuffer(capacity, decay)
    for step in range(steps):
        at = [i for i in range(len(SHAPES)) if ties or has_gradient(step, i)]
        scale = 1.0 if ties else float(torch.rand((), generator=gen, dtype=torch.float64)) * 3
        grads = [scale * torch.ones(SHAPES[i], dtype=torch.float64) if ties
                 else scale * torch.randn(SHAPES[i], generator=gen, dtype=torch.float64) for i in at]
        candidates = [torch.randn(SHAPES[i], generator=gen, dtype=torch.float64) for i in at]
        for i in at:
            ours.track(i, params[i])
        s = ours.priority(grads, foreach)
        assert float(s) == pytest.approx(priority(grads), rel=1e-12)
        means = ours.add_mean(ops, [torch.zeros(SHAPES[i], dtype=torch.float64) for i in at], at)
        if check_every_step:
            for i, mean in zip(at, means):
                torch.testing.assert_close(mean, ref.mean(i, params[i]), rtol=1e-12, atol=1e-12)
        decision = ours.admit(s)
        ours.store(ops, decision, at, candidates)
        ours.commit(s, decision, decay)
        ref.insert(float(s), dict(zip(at, candidates)))
        held = ref.priorities()
        assert int(ours.steps) == step + 1
        torch.testing.assert_close(ours.priorities[: len(held)].tolist(), held, rtol=1e-12, atol=0)
    return ours, ref, params


@pytest.mark.parametrize("kind", [HostBuffer, DeviceBuffer])
@pytest.mark.parametrize("capacity,decay", [(1, 0.7), (3, 0.7), (4, 1.0), (5, 0.95)])
@pytest.mark.parametrize("foreach", [True, False])
def test_follows_the_reference_buffer(kind, capacity, decay, foreach):
    ours, ref, params = drive(kind, capacity, decay, steps=40, foreach=foreach)
    assert len(ref.entries) == capacity and ours.admissions < 40  # filled, and some candidates rejected
    for i, p in enumerate(params):
        for j, entry in enumerate(ref.entries):
            torch.testing.assert_close(ours.rows[i][j], entry.stored.get(i, torch.zeros_like(p)), rtol=0, atol=0)
        torch.testing.assert_close(ours.sums[i], ours.rows[i].sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", [HostBuffer, DeviceBuffer])
def test_ties_replace_the_first_lowest_entry_and_an_equal_priority_is_rejected(kind):
    """Equal gradients on every tensor every step: with decay 1 nothing beats a full buffer; with
    decay 0 every priority is 0 after each step, so each candidate replaces entry 0 (the first lowest)."""
    ours, _, _ = drive(kind, 3, 1.0, steps=10, ties=True)
    assert int(ours.admissions) == 3
    ours, ref, _ = drive(kind, 3, 0.0, steps=10, ties=True)
    assert int(ours.admissions) == 10 and [e.priority for e in ref.entries] == [0.0, 0.0, 0.0]
    for i in ours.rows:  # entry 0 holds the last candidate, entries 1 and 2 the second and third
        for j, entry in enumerate(ref.entries):
            assert torch.equal(ours.rows[i][j], entry.stored[i])


@pytest.mark.parametrize("kind", [HostBuffer, DeviceBuffer])
def test_bfloat16_entries_with_an_exact_running_sum(kind):
    ours, ref, _ = drive(kind, 3, 0.8, steps=25, buffer_dtype=torch.bfloat16, check_every_step=False)
    for i, rows in ours.rows.items():
        assert rows.dtype == torch.bfloat16
        assert torch.equal(ours.sums[i], rows.sum(0, dtype=torch.float64).to(torch.bfloat16))


@pytest.mark.parametrize("saved_by,loaded_by", [(HostBuffer, DeviceBuffer), (DeviceBuffer, HostBuffer)])
def test_state_dict_moves_between_implementations(saved_by, loaded_by):
    ours, _, params = drive(saved_by, 3, 0.7, steps=12)
    data = io.BytesIO()
    torch.save(ours.state_dict(), data)
    data.seek(0)
    other = loaded_by(3, torch.float64, torch.device("cpu"))
    other.load_state_dict(torch.load(data, weights_only=True), params)
    assert int(other.steps) == 12 and int(other.admissions) == int(ours.admissions)
    assert isinstance(other.steps, int) == (loaded_by is HostBuffer)
    assert torch.equal(other.priorities, ours.priorities)
    assert all(torch.equal(other.rows[i], ours.rows[i]) and torch.equal(other.sums[i], ours.sums[i]) for i in ours.rows)
    with pytest.raises(ValueError, match="capacity=3"):
        loaded_by(2, torch.float64, torch.device("cpu")).load_state_dict(ours.state_dict(), params)


def test_capacity_zero_is_no_buffer():
    with pytest.raises(ValueError, match="capacity 0 means no buffer"):
        HostBuffer(0, torch.float32, torch.device("cpu"))
