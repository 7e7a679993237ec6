"""Sharded optimizer state, 2 CPU processes over gloo, against one process on the same global batch.

* FSDP2 (`fully_shard` per layer and on the root, DTensor parameters): every registry name steps on
  the shards and ends where the unsharded optimizer ends, buffers and admissions included.
* ZeroRedundancyOptimizer with `priority_group`: AdamCM's priority is summed over the tensors every
  process holds, so ZeRO + AdamCM is AdamCM; its consolidated state dict holds the buffers; without
  `priority_group` it refuses to run a different algorithm.
* `sam_step` on an FSDP2 model perturbs as under DDP: each process its own full weights with its own
  gradient (the two processes' perturbed weights differ), equal to DDP's perturbation, and the base
  optimizer steps from p; SAM and ASAM end where DDP ends.
* torch.distributed.checkpoint: saved by 2 processes, resumed by 2 (bitwise) and by 1 process.

Measured gaps (float64, 50 steps): up to ~1e-15 relative (the order of the reduce-scatter sum), far
inside the tolerance below; the admission counts are equal.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

import cmopt
from tests.cmopt.test_distributed import DEADLINE_S, IN, OUT, WORLD, _init, _run, batch

DTYPE = torch.float64
STEPS = 50
CLOSE = dict(rtol=1e-9, atol=1e-11)
HIDDEN = 15  # odd: the shards of dim 0 are uneven (8 + 7 rows)
SAM_STEPS = 4  # sam_step under FSDP2 against DDP


def hyperparameters(name: str) -> dict:
    base = name.removeprefix("sam_")
    hp = dict(lr=0.05, momentum=0.9) if base.startswith("sgd") else dict(lr=1e-2)
    if base in ("adam_cm", "adam_cg", "sgd_cm"):
        hp.update(capacity=3, decay=0.9)  # fills, then both admits and rejects within 50 steps
    if name.startswith("sam_"):
        hp.update(rho=0.05)
    return hp


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(IN, HIDDEN), nn.Tanh(), nn.Linear(HIDDEN, HIDDEN), nn.Tanh(),
                         nn.Linear(HIDDEN, OUT)).to(DTYPE)


def shard(model: nn.Module) -> nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (WORLD,))
    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def train_steps(model, opt, name: str, steps: range, rank: int | None) -> None:
    """Rank `rank`'s half batches, or (rank None) both halves as one global batch."""
    for step in steps:
        halves = [batch(r, step) for r in ((rank,) if rank is not None else range(WORLD))]
        x, y = torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])

        def closure():
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.zero_grad()
        closure()
        opt.step(closure) if name.startswith("sam_") else opt.step()


def full(t):
    if isinstance(t, torch.Tensor):
        t = t.full_tensor() if hasattr(t, "full_tensor") else t
        return t.detach().clone()
    return t


def snapshot(model: nn.Module, opt) -> dict:
    base = getattr(opt, "base_optimizer", opt)
    names = {p: n for n, p in model.named_parameters()}
    state = {names[p]: {k: full(v) for k, v in s.items() if k not in ("old_p", "critical_slots")}
             for p, s in base.state.items()}
    groups = [{k: full(v) for k, v in g.items() if k.startswith("critical_")} for g in base.param_groups]
    return dict(params={n: full(p) for n, p in model.named_parameters()}, state=state, groups=groups,
                local_bytes=cmopt.optimizer_state_bytes(base))


def assert_matches(ours: dict, reference: dict, close=CLOSE) -> None:
    for n, p in reference["params"].items():
        torch.testing.assert_close(ours["params"][n], p, **close)
    for n, s in reference["state"].items():
        for k, v in s.items():
            if isinstance(v, torch.Tensor) and v.is_floating_point():
                torch.testing.assert_close(ours["state"][n][k], v, **close, msg=f"{n}.{k}")
            else:
                assert int(ours["state"][n][k]) == int(v), f"{n}.{k}"
    for g_ours, g_ref in zip(ours["groups"], reference["groups"], strict=True):
        if not g_ref:  # not a critical-buffer optimizer
            continue
        assert int(g_ours["critical_steps"]) == int(g_ref["critical_steps"])
        assert int(g_ours["critical_admissions"]) == int(g_ref["critical_admissions"])
        torch.testing.assert_close(g_ours["critical_priorities"], g_ref["critical_priorities"], **close)


# ---- FSDP2 ------------------------------------------------------------------------------------------


def _fsdp(rank: int, port: int, out_dir: str) -> None:
    """One launch for the FSDP2 tests below: every registry name's run, and sam_step against DDP."""
    _init(rank, port)
    try:
        every = {}
        for name in cmopt.OPTIMIZER_NAMES:
            model = shard(make_model())
            opt = cmopt.create_optimizer(name, model, **hyperparameters(name))
            train_steps(model, opt, name, range(STEPS), rank)
            every[name] = snapshot(model, opt)
        torch.save(dict(every=every, sam_step=_sam_step_fsdp_and_ddp(rank)), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_ranks(tmp_path_factory) -> list[dict]:
    return _run(_fsdp, tmp_path_factory.mktemp("fsdp"), deadline_s=2 * DEADLINE_S)  # two tests' work


def test_fsdp2_every_optimizer_equals_the_unsharded_one_on_the_global_batch(fsdp_ranks):
    ranks = [r["every"] for r in fsdp_ranks]
    for name in cmopt.OPTIMIZER_NAMES:
        model = make_model()
        opt = cmopt.create_optimizer(name, model, **hyperparameters(name))
        train_steps(model, opt, name, range(STEPS), None)
        reference = snapshot(model, opt)
        for r in ranks:
            assert_matches(r[name], reference)
        if reference["groups"] and reference["groups"][0]:
            admissions = int(reference["groups"][0]["critical_admissions"])
            assert 3 < admissions < STEPS, (name, admissions)  # both admissions and rejections happened
        # Each process holds its shard of the state: about half (the uneven rows and step counters aside).
        assert ranks[0][name]["local_bytes"] < 0.6 * reference["local_bytes"], name


def _refusals(rank: int, port: int, out_dir: str) -> None:
    _init(rank, port)
    try:
        messages = []
        for attempt in (lambda m: cmopt.AdamCM(m.parameters(), capturable=True),
                        lambda m: cmopt.compile_optimizer(cmopt.AdamCM(m.parameters()))):
            model = shard(make_model())
            try:
                opt = attempt(model)
                train_steps(model, opt, "adam_cm", range(1), rank)
            except ValueError as error:
                messages.append(str(error))
        torch.save(messages, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_capturable_and_compiled_steps_refuse_sharded_parameters_with_the_alternative(tmp_path):
    for messages in _run(_refusals, tmp_path):
        assert len(messages) == 2
        assert "capturable=True is not supported on sharded (DTensor) parameters" in messages[0]
        assert "Use capturable=False" in messages[0]
        assert "Step it eagerly" in messages[1]


def _sam_step_fsdp_and_ddp(rank: int) -> dict:
    """sam_step on this process's half batches under FSDP2 and DDP, SAM and ASAM: the perturbed full weights
    of every step, whether the base optimizer stepped from p, and the end state."""
    from torch.nn.parallel import DistributedDataParallel

    out = {}
    for adaptive in (False, True):
        for strategy in ("fsdp", "ddp"):
            plain = make_model()
            model = shard(plain) if strategy == "fsdp" else DistributedDataParallel(plain)
            opt = cmopt.create_optimizer("sam_adam_cm", model, adaptive=adaptive, rho=0.05,
                                         **hyperparameters("adam_cm"))
            perturbed, from_p, at_p = [], [], {}

            def weights():  # under fsdp, inside the step: the process's unsharded copies, registered on `plain`
                return {n: full(w) for n, w in plain.named_parameters()}

            # fsdp perturbs the unsharded copies (SAM.perturb), ddp its parameters (first_step).
            moved = "perturb" if strategy == "fsdp" else "first_step"
            original, base_step = getattr(opt, moved), opt.base_optimizer.step

            def record(*args, original=original, perturbed=perturbed, weights=weights, **kwargs):
                original(*args, **kwargs)
                perturbed.append(weights())

            def step_from(*args, base_step=base_step, from_p=from_p, at_p=at_p, weights=weights, **kwargs):
                from_p.append(all(torch.equal(w, at_p[n]) for n, w in weights().items()))
                return base_step(*args, **kwargs)

            setattr(opt, moved, record)
            opt.base_optimizer.step = step_from
            for step in range(SAM_STEPS):
                x, y = batch(rank, step)
                at_p.update(weights())
                cmopt.sam_step(opt, model, lambda: nn.functional.cross_entropy(model(x), y))
            opt.base_optimizer.step = base_step
            out[strategy, adaptive] = dict(perturbed=perturbed, from_p=from_p, end=snapshot(plain, opt.base_optimizer))
    return out


def test_sam_step_on_fsdp2_perturbs_each_process_with_its_own_gradient_as_ddp_does(fsdp_ranks):
    ranks = [r["sam_step"] for r in fsdp_ranks]
    for adaptive in (False, True):
        for r in ranks:
            fsdp, ddp = r["fsdp", adaptive], r["ddp", adaptive]
            assert len(fsdp["perturbed"]) == len(ddp["perturbed"]) == SAM_STEPS
            assert all(ddp["from_p"]) and all(fsdp["from_p"]), "the base optimizer stepped from p + e"
            for step, (a, b) in enumerate(zip(fsdp["perturbed"], ddp["perturbed"])):
                for n in b:
                    torch.testing.assert_close(a[n], b[n], **CLOSE, msg=f"step {step} {n} (adaptive={adaptive})")
            assert_matches(fsdp["end"], ddp["end"])
        # Each process its own gradient: the two processes' perturbed weights differ at every step.
        for a, b in zip(ranks[0]["fsdp", adaptive]["perturbed"], ranks[1]["fsdp", adaptive]["perturbed"]):
            assert all(not torch.equal(a[n], b[n]) for n in a)


# ---- ZeroRedundancyOptimizer ------------------------------------------------------------------------


def zero_groups(model: nn.Module) -> list[dict]:
    # Group 1 holds one tensor, so one process holds none of it and must still take part in its step.
    return [{"params": [p for n, p in model.named_parameters() if n != "4.bias"]},
            {"params": [model[4].bias], "lr": 5e-3}]


def _zero(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    _init(rank, port)
    try:
        model = DistributedDataParallel(make_model())
        try:
            ZeroRedundancyOptimizer(zero_groups(model.module)[0]["params"], optimizer_class=cmopt.AdamCM)
            refused = None
        except ValueError as error:
            refused = str(error)
        adam_cm = functools.partial(cmopt.AdamCM, priority_group=dist.group.WORLD)
        opt = ZeroRedundancyOptimizer(zero_groups(model.module)[0]["params"], optimizer_class=adam_cm,
                                      **hyperparameters("adam_cm"))
        opt.add_param_group(zero_groups(model.module)[1])
        train_steps(model, opt, "adam_cm", range(20), rank)
        opt.consolidate_state_dict(to=0)
        saved = copy.deepcopy(opt.state_dict()) if rank == 0 else None  # it holds live tensors: a copy of now
        train_steps(model, opt, "adam_cm", range(20, 30), rank)
        out = dict(refused=refused, params={n: p.detach().clone() for n, p in model.module.named_parameters()},
                   saved=saved)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_zero_with_priority_group_is_adam_cm_and_its_consolidated_state_resumes(tmp_path):
    r0, r1 = _run(_zero, tmp_path)
    for r in (r0, r1):
        assert "functools.partial(cmopt.AdamCM, priority_group=torch.distributed.group.WORLD)" in r["refused"]
    model = make_model()
    opt = cmopt.AdamCM(zero_groups(model), **hyperparameters("adam_cm"))
    train_steps(model, opt, "adam_cm", range(20), None)
    at_20 = snapshot(model, opt)
    train_steps(model, opt, "adam_cm", range(20, 30), None)
    for r in (r0, r1):
        for n, p in model.named_parameters():
            torch.testing.assert_close(r["params"][n], p.detach(), **CLOSE)
    # The consolidated state holds every tensor's buffer rows and the groups' counters ...
    saved = r0["saved"]
    assert all("critical_momenta" in s for s in saved["state"].values()) and len(saved["state"]) == 6
    assert [int(g["critical_steps"]) for g in saved["param_groups"]] == [20, 20]
    # ... and resumes a plain AdamCM where the sharded one was.
    resumed_model = make_model()
    with torch.no_grad():
        for p, q in zip(resumed_model.parameters(), at_20["params"].values()):
            p.copy_(q)
    resumed = cmopt.AdamCM(zero_groups(resumed_model), **hyperparameters("adam_cm"))
    resumed.load_state_dict(saved)
    train_steps(resumed_model, resumed, "adam_cm", range(20, 30), None)
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        torch.testing.assert_close(p, q, **CLOSE)


# ---- torch.distributed.checkpoint -------------------------------------------------------------------


def checkpointed(opt):
    """What DCP takes: SAM's state is its base optimizer's (DCP's first state_dict steps the optimizer
    without a closure, which SAM refuses)."""
    return getattr(opt, "base_optimizer", opt)


def _dcp(rank: int, port: int, out_dir: str, name: str, resume: bool) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    _init(rank, port)
    try:
        model = shard(make_model())
        opt = cmopt.create_optimizer(name, model, **hyperparameters(name))
        checkpoint = Path(out_dir) / "checkpoint"
        if resume:
            model_state, optim_state = get_state_dict(model, checkpointed(opt))
            state = {"model": model_state, "optim": optim_state}
            dcp.load(state, checkpoint_id=checkpoint)
            set_state_dict(model, checkpointed(opt), model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            train_steps(model, opt, name, range(20), rank)
            model_state, optim_state = get_state_dict(model, checkpointed(opt))
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=checkpoint)
        train_steps(model, opt, name, range(20, 40), rank)
        torch.save(snapshot(model, opt), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["adam_cm", pytest.param("adam_cg", marks=pytest.mark.slow),
                                  pytest.param("sam_sgd_cm", marks=pytest.mark.slow)])
def test_dcp_checkpoint_resumes_on_two_processes_bitwise_and_on_one(tmp_path, name):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    straight = _run(_dcp, tmp_path, name, False)  # saves at step 20, goes on to 40
    resumed = _run(_dcp, tmp_path, name, True)  # loads step 20, goes on to 40
    for a, b in zip(straight, resumed):
        assert_matches(b, a, close=dict(rtol=0, atol=0))
    # One process, the same global batches, from the same checkpoint.
    model = make_model()
    opt = cmopt.create_optimizer(name, model, **hyperparameters(name))
    model_state, optim_state = get_state_dict(model, checkpointed(opt))
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=tmp_path / "checkpoint")
    set_state_dict(model, checkpointed(opt), model_state_dict=state["model"], optim_state_dict=state["optim"])
    assert int(getattr(opt, "base_optimizer", opt).param_groups[0]["critical_steps"]) == 20
    train_steps(model, opt, name, range(20, 40), None)
    assert_matches(snapshot(model, opt), straight[0])


# ---- the priority rules and the debiased variant, sharded ---------------------------------------------

RULE_CASES = [("adam_cm", dict(priority="candidate_norm")), ("adam_cm", dict(priority="random")),
              ("adam_cm", dict(priority="fifo")), ("sgd_cm", dict(priority="candidate_norm")),
              ("adam_cg", dict(priority="candidate_norm")), ("adam_cm", dict(variant="debiased"))]
RULE_STEPS = 25  # the buffer (C = 3) fills, then admits or rejects


def counting_all_reduces(opt, counts: list[int]):
    """Wrap opt.step so that each step appends the number of all-reduces it issued."""
    step = opt.step

    def counted(*args, **kwargs):
        real, calls = dist.all_reduce, []
        dist.all_reduce = lambda *a, **k: (calls.append(1), real(*a, **k))[1]
        try:
            return step(*args, **kwargs)
        finally:
            dist.all_reduce = real
            counts.append(len(calls))

    opt.step = counted
    return opt


def _rules_sharded(rank: int, port: int, out_dir: str) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    _init(rank, port)
    try:
        results = {}
        for i, (name, options) in enumerate(RULE_CASES):
            model = shard(make_model())
            counts = []
            opt = counting_all_reduces(cmopt.create_optimizer(name, model, **hyperparameters(name), **options), counts)
            train_steps(model, opt, name, range(RULE_STEPS), rank)
            results[i] = dict(snapshot(model, opt), all_reduces=counts)
        model = DistributedDataParallel(make_model())
        counts = []
        rule = functools.partial(cmopt.AdamCM, priority_group=dist.group.WORLD, priority="candidate_norm")
        opt = ZeroRedundancyOptimizer(zero_groups(model.module)[0]["params"], optimizer_class=rule,
                                      **hyperparameters("adam_cm"))
        opt.add_param_group(zero_groups(model.module)[1])
        counting_all_reduces(opt.optim, counts)  # the cmopt optimizer's own all-reduces, not ZeRO's broadcasts
        train_steps(model, opt, "adam_cm", range(20), rank)
        results["zero"] = dict(params={n: p.detach().clone() for n, p in model.module.named_parameters()},
                               all_reduces=counts)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # ~25 s, mostly starting the processes
def test_every_priority_rule_and_the_variant_shard_with_one_all_reduce_per_group(tmp_path):
    """FSDP2: each rule equals the unsharded run on the global batch; a norm rule issues one all-reduce
    per group and step (the summed norms), random and fifo none. ZeRO with candidate_norm (one process
    holds none of group 1) equals plain AdamCM, with one all-reduce per group and step."""
    ranks = _run(_rules_sharded, tmp_path)
    for i, (name, options) in enumerate(RULE_CASES):
        model = make_model()
        opt = cmopt.create_optimizer(name, model, **hyperparameters(name), **options)
        train_steps(model, opt, name, range(RULE_STEPS), None)
        reference = snapshot(model, opt)
        measured = options.get("priority", "grad_norm") in ("grad_norm", "candidate_norm")
        for r in ranks:
            assert_matches(r[i], reference)
            assert r[i]["all_reduces"] == [1 if measured else 0] * RULE_STEPS, (name, options)
    model = make_model()
    opt = cmopt.AdamCM(zero_groups(model), priority="candidate_norm", **hyperparameters("adam_cm"))
    train_steps(model, opt, "adam_cm", range(20), None)
    for r in ranks:
        assert r["zero"]["all_reduces"] == [2] * 20  # two groups
        for n, p in model.named_parameters():
            torch.testing.assert_close(r["zero"]["params"][n], p.detach(), **CLOSE)
