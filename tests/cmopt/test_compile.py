"""`compile_optimizer`: the compiled step is the eager step (same numbers), traced as one graph with
no break, compiled twice (state creation, then the steady step) however the buffer fills, with a
capacity-0 group beside a buffered one, and with a scheduler changing lr every step."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from cmopt import SAM, SGDCM, AdamCG, AdamCM, compile_optimizer

CLASSES = {"adam_cm": AdamCM, "adam_cg": AdamCG, "sgd_cm": SGDCM}


@pytest.fixture(autouse=True)
def reset_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def build(kind: str, dtype, *, sam: bool = False, **overrides):
    """Two groups with different hyperparameters: capacity 3 (fills over the first 3 steps) and 0."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, dtype=dtype)) for s in [(4, 3), (3,), (2, 2)]]
    extra = dict(momentum=0.9) if kind == "sgd_cm" else dict(betas=(0.8, 0.99))
    groups = [{"params": params[:2], "weight_decay": 0.01},
              {"params": params[2:], "lr": 0.003, "capacity": 0, "decay": 0.5, **extra}]
    kwargs = dict(lr=0.01, capacity=3, decay=0.9, **overrides)
    opt = SAM(groups, CLASSES[kind], rho=0.05, **kwargs) if sam else CLASSES[kind](groups, **kwargs)
    return params, opt


def train(params, opt, steps: int, schedule: bool = True) -> None:
    """g = 0.5·p + seeded noise, with lr multiplied by a new factor every step."""
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 1 / (1 + 0.1 * epoch)) if schedule else None
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        noise = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]

        def closure():
            for p, n in zip(params, noise):
                p.grad = 0.5 * p.detach() + n

        closure()
        opt.step(closure) if isinstance(opt, SAM) else opt.step()
        if sched is not None:
            sched.step()


@pytest.mark.parametrize("sam", [False, True])
@pytest.mark.parametrize("kind", list(CLASSES))
def test_traced_once_per_state_shape_without_breaks_and_equal_to_eager(kind, sam):
    counter = CompileCounter()
    params, opt = build(kind, torch.float64, sam=sam)
    compile_optimizer(opt, backend=counter)  # graphs run as traced, in eager kernels
    train(params, opt, 30)
    eager_params, eager_opt = build(kind, torch.float64, sam=sam)  # the default (host-decision) path
    train(eager_params, eager_opt, 30)
    assert counter.frame_count == 2  # first step (state made), then every later step, lr changing or not
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    for p, q in zip(params, eager_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    base = getattr(opt, "base_optimizer", opt)
    assert int(base.critical_buffers[0].steps) == 30 and base.critical_buffers[1] is None


def test_a_loaded_default_path_state_is_converted():
    params, opt = build("adam_cm", torch.float64)
    train(params, opt, 5, schedule=False)
    assert isinstance(opt.critical_buffers[0].steps, int)
    compile_optimizer(opt, backend=CompileCounter())
    assert opt.param_groups[0]["capturable"] and isinstance(opt.critical_buffers[0].steps, torch.Tensor)
    train(params, opt, 5, schedule=False)
    assert int(opt.critical_buffers[0].steps) == 10


# Measured largest gaps after 12 float32 steps, compiled vs the eager default path (whose own gap to the
# eager capturable path is 2.8e-6 for AdamCM): 2.0e-6 (AdamCM, relative 7.5e-6), 7.2e-7 (AdamCG), 6e-8 (SGDCM).
@pytest.mark.parametrize("kind", list(CLASSES))
def test_inductor_step_matches_the_eager_step_in_float32(kind):
    params, opt = build(kind, torch.float32)
    compile_optimizer(opt)
    train(params, opt, 12)
    eager_params, eager_opt = build(kind, torch.float32)
    train(eager_params, eager_opt, 12)
    for p, q in zip(params, eager_params):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_each_compiled_optimizer_traces_its_own_step():
    """Several optimizers compiled in one process with one backend: each one's step is traced (none
    runs eagerly on a cache entry another one left, as when all shared one code object)."""
    counter = CompileCounter()  # one backend for all, as with the default "inductor"
    torch_params = [torch.nn.Parameter(torch.randn(3, 2)) for _ in range(2)]
    runs = [(torch_params, compile_optimizer(torch.optim.Adam(torch_params, lr=0.01), backend=counter))]
    for kind in CLASSES:
        params, opt = build(kind, torch.float32)
        runs.append((params, compile_optimizer(opt, backend=counter)))
    frames = []
    for params, opt in runs:
        before = counter.frame_count
        train(params, opt, 3, schedule=False)
        frames.append(counter.frame_count - before)
    assert frames[0] >= 1 and frames[1:] == [2, 2, 2], frames


@pytest.mark.parametrize("options", [dict(priority="candidate_norm"), dict(priority="random"),
                                     dict(priority="fifo"), dict(variant="debiased")])
def test_priority_rules_and_the_variant_trace_without_breaks_and_equal_eager(options):
    torch._dynamo.utils.counters.clear()  # dynamo's counters outlive reset(): count this test's breaks only
    counter = CompileCounter()
    params, opt = build("adam_cm", torch.float64, **options)
    compile_optimizer(opt, backend=counter)
    train(params, opt, 30)
    eager_params, eager_opt = build("adam_cm", torch.float64, **options)
    train(eager_params, eager_opt, 30)
    assert counter.frame_count == 2
    assert dict(torch._dynamo.utils.counters["graph_break"]) == {}
    for p, q in zip(params, eager_params):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
    assert int(opt.critical_buffers[0].admissions) == eager_opt.critical_buffers[0].admissions


@pytest.mark.slow  # an inductor compilation: ~30-60 s on the CPU
def test_inductor_computes_the_random_draw_as_the_host_does():
    """The hash's int64 products and shifts, compiled by inductor, give the Python-int draws."""
    params, opt = build("adam_cm", torch.float32, priority="random")
    compile_optimizer(opt)
    train(params, opt, 8)
    eager_params, eager_opt = build("adam_cm", torch.float32, priority="random")
    train(eager_params, eager_opt, 8)
    assert torch.equal(opt.critical_buffers[0].priorities, eager_opt.critical_buffers[0].priorities)
