"""The critical buffer on its own, both implementations, against the plain reference buffer:
admission (append while filling, replace the first lowest only if strictly higher), decay, the
mean read before insertion, tensors that miss steps, counters, and its state dict."""

from __future__ import annotations

import io

import pytest
import torch

from types import SimpleNamespace

from cmopt import _sharding
from cmopt.buffer import (ADMISSIONS, PRIORITIES, SLOTS, STEPS, SUM, DeviceBuffer, HostBuffer, init_group_state,
                          init_tensor_state)
from tests.cmopt.reference import ReferenceBuffer, priority

SHAPES = [(3, 2), (4,), (2, 2)]
KEY = "critical_momenta"


def has_gradient(step: int, i: int) -> bool:
    """Tensor 1 misses every third step; tensor 2 joins at step 4."""
    return (i != 1 or step % 3 != 2) and (i != 2 or step >= 4)


def new_group(kind, capacity, decay, buffer_dtype=None):
    group = dict(capacity=capacity, decay=decay, capturable=kind is DeviceBuffer, buffer_dtype=buffer_dtype)
    init_group_state(group, torch.device("cpu"))
    return group


def view(group, states):
    """What the tests read: the group's counters and each tensor's rows and sum (tensors that joined)."""
    held = {i: s for i, s in enumerate(states) if KEY in s}
    return SimpleNamespace(steps=group[STEPS], admissions=group[ADMISSIONS], priorities=group[PRIORITIES],
                           rows={i: s[KEY] for i, s in held.items()}, sums={i: s[SUM] for i, s in held.items()})


def one_step(kind, group, states, at, grads, candidates, foreach, ones=None):
    """One step of the buffer over the tensors `at`: returns x + mean(B) for each x in `ones` (before the
    insertion), then inserts the candidates and closes the step."""
    s = torch.stack(_sharding.norms(grads, foreach)).sum()
    chosen = [states[i] for i in at]
    buffer = kind(group, [c[KEY] for c in chosen], [c[SUM] for c in chosen], s, foreach,
                  [c[SLOTS] for c in chosen] if kind is DeviceBuffer else None)
    means = buffer.add_mean(ones) if ones is not None else None
    buffer.insert(candidates)
    buffer.close()
    return s, means


def drive(kind, capacity, decay, steps, *, ties=False, foreach=True, buffer_dtype=None, check_every_step=True):
    """Feed the same candidates to `kind` and to the reference; compare before and after each insertion."""
    gen = torch.Generator().manual_seed(7)
    params = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    group, states = new_group(kind, capacity, decay, buffer_dtype), [{} for _ in SHAPES]
    ref = ReferenceBuffer(capacity, decay)
    for step in range(steps):
        at = [i for i in range(len(SHAPES)) if ties or has_gradient(step, i)]
        scale = 1.0 if ties else float(torch.rand((), generator=gen, dtype=torch.float64)) * 3
        grads = [scale * torch.ones(SHAPES[i], dtype=torch.float64) if ties
                 else scale * torch.randn(SHAPES[i], generator=gen, dtype=torch.float64) for i in at]
        candidates = [torch.randn(SHAPES[i], generator=gen, dtype=torch.float64) for i in at]
        for i in at:
            init_tensor_state(states[i], KEY, params[i], group, _sharding.rows_like)
        zeros = [torch.zeros(SHAPES[i], dtype=torch.float64) for i in at]
        s, means = one_step(kind, group, states, at, grads, candidates, foreach, ones=zeros)
        assert float(s) == pytest.approx(priority(grads), rel=1e-12)
        if check_every_step:
            for i, mean in zip(at, means):
                torch.testing.assert_close(mean, ref.mean(i, params[i]), rtol=1e-12, atol=1e-12)
        ref.insert(float(s), dict(zip(at, candidates)))
        held = ref.priorities()
        assert int(group[STEPS]) == step + 1
        torch.testing.assert_close(group[PRIORITIES][: len(held)].tolist(), held, rtol=1e-12, atol=0)
    return view(group, states), ref, params


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
def test_state_moves_between_implementations(saved_by, loaded_by):
    """The buffer's state (group counters, each tensor's rows and sum) taken by the other kind continues
    exactly: the same insertions as the kind that saved it."""
    gen = torch.Generator().manual_seed(3)
    params = [torch.zeros(s, dtype=torch.float64) for s in SHAPES]
    group, states = new_group(saved_by, 3, 0.7), [{} for _ in SHAPES]
    for i in range(len(SHAPES)):
        init_tensor_state(states[i], KEY, params[i], group, _sharding.rows_like)
    feed = [([torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES],
             [torch.randn(s, generator=gen, dtype=torch.float64) for s in SHAPES]) for _ in range(20)]
    for grads, candidates in feed[:12]:
        one_step(saved_by, group, states, range(len(SHAPES)), grads, candidates, True)
    data = io.BytesIO()
    torch.save({"group": group, "states": [{k: v for k, v in s.items() if k != SLOTS} for s in states]}, data)
    data.seek(0)
    saved = torch.load(data, weights_only=True)
    other, other_states = dict(saved["group"], capturable=loaded_by is DeviceBuffer), saved["states"]
    init_group_state(other, torch.device("cpu"))
    for i in range(len(SHAPES)):
        init_tensor_state(other_states[i], KEY, params[i], other, _sharding.rows_like)
    assert isinstance(other[STEPS], int) == (loaded_by is HostBuffer) and int(other[STEPS]) == 12
    for grads, candidates in feed[12:]:
        one_step(saved_by, group, states, range(len(SHAPES)), grads, candidates, True)
        one_step(loaded_by, other, other_states, range(len(SHAPES)), grads, candidates, True)
    assert int(other[ADMISSIONS]) == int(group[ADMISSIONS]) and torch.equal(other[PRIORITIES], group[PRIORITIES])
    for mine, theirs in zip(states, other_states):
        assert torch.equal(mine[KEY], theirs[KEY]) and torch.equal(mine[SUM], theirs[SUM])
