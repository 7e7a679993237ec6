"""Data-parallel training (DistributedDataParallel, 2 CPU processes over gloo on loopback).

* Adam+CM keeps its critical buffer in lock step across processes: every rank sees the same
  all-reduced gradient, so parameters, priorities, counters and all per-tensor state stay bitwise equal.
* 2 ranks with half batches give the weights of one process training on the full batch.
* `sam_step` perturbs each rank with its own (not all-reduced) gradient and steps with the
  all-reduced gradient taken at the perturbed points.

Workers are module-level functions (spawn pickles them by name); each writes its results with
`torch.save` to the test's tmp_path, and a failing worker fails the test with its traceback.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import cmopt

WORLD = 2
HALF = 12  # samples per rank and step; the single-process run trains on 2 * HALF
IN, HIDDEN, OUT = 8, 16, 3
DTYPE = torch.float64
DEADLINE_S = 50.0
ADAM_CM = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, capacity=4, decay=0.95)
# decay 0.95: over 20 steps some candidates replace the lowest entry and some are rejected, so the
# admission decision (the one data-dependent branch) is exercised both ways on every rank.


# ---- shared by the workers and the test process ---------------------------------------------------


def make_model() -> nn.Module:
    torch.manual_seed(0)  # the same initial weights on every rank
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, OUT)).to(DTYPE)


def batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s half batch for `step`: different on every rank and step, reproducible anywhere."""
    gen = torch.Generator().manual_seed(1000 * (rank + 1) + step)
    x = torch.randn(HALF, IN, generator=gen, dtype=DTYPE)
    y = torch.randint(0, OUT, (HALF,), generator=gen)
    return x, y


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)  # mean over the batch


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (AttributeError, OSError):
        return None
    return next((n for n in names if n.startswith("lo")), None)


def _init(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    iface = _loopback_interface()
    if iface is not None:
        os.environ["GLOO_SOCKET_IFNAME"] = iface  # keep gloo's own connections on loopback too
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
        timeout=timedelta(seconds=30),
    )


def _cpu_clone(x):
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def _snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    """Parameters, group buffer fields and per-tensor state, keyed by parameter name."""
    names = {p: n for n, p in model.named_parameters()}
    buffers = opt.critical_buffers
    groups = [
        {"critical_priorities": _cpu_clone(b.priorities), "critical_steps": _cpu_clone(b.steps),
         "critical_admissions": _cpu_clone(b.admissions)}
        for b in buffers
    ]
    state = {names[p]: {k: _cpu_clone(v) for k, v in s.items()} for p, s in opt.state.items()}
    for group, buffer in zip(opt.param_groups, buffers):  # each tensor's entries and running sum beside its state
        for position, p in enumerate(group["params"]):
            state[names[p]].update(critical_momenta=_cpu_clone(buffer.rows[position]),
                                   critical_sum=_cpu_clone(buffer.sums[position]))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return dict(params=params, groups=groups, state=state)


def _run(worker, tmp_path: Path, *args, deadline_s: float = DEADLINE_S) -> list[dict]:
    """Run `worker(rank, port, out_dir, *args)` on WORLD spawned processes; return each rank's results."""
    port = _free_port()
    ctx = mp.start_processes(
        worker, args=(port, str(tmp_path), *args), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + deadline_s
    try:
        while not ctx.join(timeout=1.0):  # re-raises a worker's exception with its traceback
            if time.monotonic() > deadline:
                pytest.fail(f"distributed workers did not finish within {deadline_s:.0f} s")
    finally:
        for process in ctx.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


# ---- workers ----------------------------------------------------------------------------------------


def _train_adam_cm(rank: int, port: int, out_dir: str, steps: int) -> None:
    _init(rank, port)
    try:
        model = DistributedDataParallel(make_model())
        opt = cmopt.create_optimizer("adam_cm", model, **ADAM_CM)
        for step in range(steps):
            x, y = batch(rank, step)
            opt.zero_grad()
            loss_fn(model, x, y).backward()
            opt.step()
        torch.save(_snapshot(model.module, opt), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _local_grads(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """This rank's own gradient of its own half-batch loss at the module's current weights (no DDP)."""
    local = copy.deepcopy(module)
    names, params = zip(*local.named_parameters())
    grads = torch.autograd.grad(loss_fn(local, x, y), params)
    return {n: g.detach().clone() for n, g in zip(names, grads)}


def _train_sam(rank: int, port: int, out_dir: str, steps: int) -> None:
    _init(rank, port)
    try:
        model = DistributedDataParallel(make_model())
        opt = cmopt.create_optimizer("sam_adam_cm", model, rho=0.05, **ADAM_CM)
        names = {p: n for n, p in model.module.named_parameters()}
        record = dict(first=[], second=[], local_at_p=[], local_at_perturbed=[])
        current = {}

        def grads_now() -> dict[str, torch.Tensor]:
            return {names[p]: p.grad.detach().clone() for p in model.parameters() if p.grad is not None}

        original_first, original_second = opt.first_step, opt.second_step

        def first_step(zero_grad: bool = False):
            record["first"].append(grads_now())
            return original_first(zero_grad=zero_grad)

        def second_step(zero_grad: bool = False):
            record["second"].append(grads_now())
            x, y = current["batch"]  # the weights are still perturbed here
            record["local_at_perturbed"].append(_local_grads(model.module, x, y))
            return original_second(zero_grad=zero_grad)

        opt.first_step, opt.second_step = first_step, second_step
        for step in range(steps):
            x, y = batch(rank, step)
            current["batch"] = (x, y)
            record["local_at_p"].append(_local_grads(model.module, x, y))
            opt.zero_grad()
            cmopt.sam_step(opt, model, lambda: loss_fn(model, x, y))
        out = _snapshot(model.module, opt.base_optimizer)
        out.update(record)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---- tests -----------------------------------------------------------------------------------------


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert torch.equal(a[key], b[key]), f"{what}[{key!r}] differs between ranks"


def _assert_ranks_identical(r0: dict, r1: dict) -> None:
    _assert_same_tensors(r0["params"], r1["params"], "parameter")
    for g0, g1 in zip(r0["groups"], r1["groups"], strict=True):
        assert torch.equal(g0["critical_priorities"], g1["critical_priorities"])
        assert g0["critical_steps"] == g1["critical_steps"]
        assert g0["critical_admissions"] == g1["critical_admissions"]
    assert r0["state"].keys() == r1["state"].keys() == r0["params"].keys()
    for name in r0["state"]:
        s0, s1 = r0["state"][name], r1["state"][name]
        for key in ("critical_momenta", "critical_sum", "exp_avg", "exp_avg_sq"):
            assert torch.equal(s0[key], s1[key]), f"state[{name!r}][{key!r}] differs between ranks"
        assert s0["step"] == s1["step"]


def test_adam_cm_buffers_stay_identical_across_ranks(tmp_path):
    steps = 20
    r0, r1 = _run(_train_adam_cm, tmp_path, steps)
    _assert_ranks_identical(r0, r1)
    for group in r0["groups"]:
        assert group["critical_steps"] == steps
        # Filled, then entries replaced (> C) and candidates rejected (< steps): both branches taken.
        assert ADAM_CM["capacity"] < group["critical_admissions"] < steps, group["critical_admissions"]
        assert bool((group["critical_priorities"] > 0).all())
    for name, state in r0["state"].items():
        rows = state["critical_momenta"].flatten(start_dim=1)
        assert bool(rows.abs().sum(dim=1).gt(0).all()), f"{name}: an empty buffer row"
        assert state["step"] == steps
    assert not torch.equal(r0["params"]["0.weight"], make_model()[0].weight.detach())  # it trained


def test_two_ranks_with_half_batches_match_one_process_on_the_full_batch(tmp_path):
    steps = 20
    r0, r1 = _run(_train_adam_cm, tmp_path, steps)

    model = make_model()
    opt = cmopt.create_optimizer("adam_cm", model, **ADAM_CM)
    for step in range(steps):
        halves = [batch(rank, step) for rank in range(WORLD)]
        x = torch.cat([h[0] for h in halves])
        y = torch.cat([h[1] for h in halves])
        opt.zero_grad()
        loss_fn(model, x, y).backward()  # mean over 2·HALF = the average of the ranks' means
        opt.step()
    single = _snapshot(model, opt)

    close = dict(rtol=1e-10, atol=1e-12)
    for ddp in (r0, r1):
        for name, p in single["params"].items():
            torch.testing.assert_close(ddp["params"][name], p, **close)
        for gs, gd in zip(single["groups"], ddp["groups"], strict=True):
            assert gs["critical_steps"] == gd["critical_steps"]
            assert gs["critical_admissions"] == gd["critical_admissions"]  # the same admission decisions
            torch.testing.assert_close(gd["critical_priorities"], gs["critical_priorities"], **close)
        for name, state in single["state"].items():
            for key in ("critical_momenta", "critical_sum", "exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(ddp["state"][name][key], state[key], **close)


def test_sam_step_perturbs_locally_and_steps_with_the_all_reduced_gradient(tmp_path):
    steps = 10
    r0, r1 = _run(_train_sam, tmp_path, steps)
    for rank in (r0, r1):
        assert len(rank["first"]) == len(rank["second"]) == steps

    for step in range(steps):
        f0, f1 = r0["first"][step], r1["first"][step]
        assert f0.keys() == f1.keys() == r0["params"].keys()
        # First pass: each rank's own gradient of its own half batch, not all-reduced.
        for name in f0:
            assert not torch.equal(f0[name], f1[name]), f"step {step}: first-pass grad {name!r} was synced"
        for r in (r0, r1):
            for name, g in r["first"][step].items():
                torch.testing.assert_close(g, r["local_at_p"][step][name], rtol=1e-12, atol=1e-15)
        # Second pass: all-reduced, so bitwise the same on both ranks, and the average of the ranks'
        # local gradients taken at their own perturbed weights.
        _assert_same_tensors(r0["second"][step], r1["second"][step], f"step {step} second-pass grad")
        for name, g in r0["second"][step].items():
            mean = (r0["local_at_perturbed"][step][name] + r1["local_at_perturbed"][step][name]) / WORLD
            torch.testing.assert_close(g, mean, rtol=1e-10, atol=1e-13)
            # The perturbations differed, so the ranks' local gradients there differ too.
            assert not torch.equal(r0["local_at_perturbed"][step][name], r1["local_at_perturbed"][step][name])

    _assert_ranks_identical(r0, r1)
    for group in r0["groups"]:
        assert group["critical_admissions"] >= ADAM_CM["capacity"]
