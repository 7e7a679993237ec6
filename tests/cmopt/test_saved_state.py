"""State dicts saved by earlier versions of cmopt still load with `weights_only=True` and continue
exactly as an uninterrupted run.

Two earlier layouts, each written at its version by `write_fixtures` below: `v0_1_0_*` (cmopt 0.1.0:
priorities and counters in the param groups, each tensor's entries in its own state) and
`critical_buffers_*` (0.1.0 after the buffer became one object per group: a top-level
`critical_buffers` list). Two parameter groups, float64, capacity 3 (full after 6 steps), for the
default and capturable paths.
"""

from __future__ import annotations

import pathlib

import pytest
import torch

from cmopt import SGDCM, AdamCG, AdamCM

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CLASSES = {"adam_cm": AdamCM, "adam_cg": AdamCG, "sgd_cm": SGDCM}
SAVED_AFTER = 6
SHAPES = [[(3, 2), (2,)], [(4,)]]


def build(kind: str, capturable: bool):
    gen = torch.Generator().manual_seed(0)
    params = [[torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_(True) for s in g] for g in SHAPES]
    extra = dict(momentum=0.9) if kind == "sgd_cm" else {}
    groups = [{"params": params[0], "lr": 0.05, "weight_decay": 0.01, **extra},
              {"params": params[1], "lr": 0.02, "decay": 0.9}]
    return params, CLASSES[kind](groups, capacity=3, capturable=capturable, foreach=True)


def set_gradients(params, step: int) -> None:
    """g = 0.5·p + seeded noise; the second group's tensor has no gradient on step 4."""
    gen = torch.Generator().manual_seed(100 + step)
    for gi, group in enumerate(params):
        for p in group:
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            p.grad = None if (gi, step) == (1, 4) else 0.5 * p.detach() + noise


def train(params, opt, steps: range) -> None:
    for step in steps:
        set_gradients(params, step)
        opt.step()


def fixture_path(kind: str, capturable: bool, layout: str) -> pathlib.Path:
    return FIXTURES / f"{layout}_{kind}{'_capturable' if capturable else ''}.pt"


LAYOUTS = ("v0_1_0", "critical_buffers")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("capturable", [False, True])
@pytest.mark.parametrize("kind", list(CLASSES))
def test_state_saved_by_an_earlier_version_loads_and_continues(kind, capturable, layout):
    saved = torch.load(fixture_path(kind, capturable, layout), weights_only=True)
    straight, opt_straight = build(kind, capturable)
    train(straight, opt_straight, range(SAVED_AFTER))
    for p, q in zip(sum(straight, []), saved["params"]):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=1e-14)  # the same arithmetic then and now
    train(straight, opt_straight, range(SAVED_AFTER, 20))

    resumed, opt_resumed = build(kind, capturable)
    with torch.no_grad():
        for p, q in zip(sum(resumed, []), saved["params"]):
            p.copy_(q)
    opt_resumed.load_state_dict(saved["optimizer"])
    train(resumed, opt_resumed, range(SAVED_AFTER, 20))
    for p, q in zip(sum(straight, []), sum(resumed, [])):
        torch.testing.assert_close(q, p, rtol=0, atol=1e-14)


def write_fixtures(layout: str) -> None:
    """Run at the version whose layout is `layout` (the saved files are that version's record)."""
    FIXTURES.mkdir(exist_ok=True)
    for kind in CLASSES:
        for capturable in (False, True):
            params, opt = build(kind, capturable)
            train(params, opt, range(SAVED_AFTER))
            flat = [p.detach().clone() for p in sum(params, [])]
            torch.save({"params": flat, "optimizer": opt.state_dict()}, fixture_path(kind, capturable, layout))


if __name__ == "__main__":
    import sys

    write_fixtures(sys.argv[1])
