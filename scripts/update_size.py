"""How far each optimizer moves the weights per step, divided by how far Adam moves them, at one lr.

A 2-layer MLP (20 -> 64 -> 10, tanh) on a fixed random classification task, mini-batches of 64 in one
seeded order. Every optimizer starts from the same weights and sees the same batches; at each step we
take the update's size ||theta_t - theta_{t-1}|| (over all weights) and divide it by Adam's at that step
of Adam's own run at --lr. Each optimizer runs at --lr and at a tenth of it. A ratio far above 1 means the optimizer takes much larger steps than Adam at that lr:
Adam+CM adds the mean of its critical momenta to the momentum and builds the second moment from that
sum, so at the lr that suits Adam it starts with much larger steps.

    python scripts/update_size.py [--lr 1e-3] [--optimizers adam_cg,adam_cm,sam_adam,sam_adam_cm] [--steps 200]
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

import cmopt

REPORTED = (1, 2, 5, 10, 50, 100, 200, 500, 1000)


def task(seed: int = 0, items: int = 1024, features: int = 20, classes: int = 10):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(items, features, generator=generator)
    teacher = torch.randn(features, classes, generator=generator)
    return x, (x @ teacher).argmax(dim=1)


def update_sizes(name: str, lr: float, steps: int, batch_size: int = 64) -> list[float]:
    """||theta_t - theta_{t-1}|| for t = 1..steps."""
    x, y = task()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.Tanh(), nn.Linear(64, 10))
    optimizer = cmopt.create_optimizer(name, model, lr=lr)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    sizes = []
    for step in range(steps):
        start = (step * batch_size) % len(x)
        batch = order[start:start + batch_size]

        def loss() -> torch.Tensor:
            return nn.functional.cross_entropy(model(x[batch]), y[batch])

        before = cmopt.weights_copy(model.parameters())  # what the engine logs as update_size, per step
        if isinstance(optimizer, cmopt.SAM):
            cmopt.sam_step(optimizer, model, loss)
        else:
            optimizer.zero_grad()
            loss().backward()
            optimizer.step()
        sizes.append(math.sqrt(float(cmopt.squared_distance(model.parameters(), before))))
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--optimizers", default="adam_cg,adam_cm,sam_adam,sam_adam_cm")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [s for s in REPORTED if s <= args.steps]
    adam = update_sizes("adam", args.lr, args.steps)
    print(f"Update size divided by Adam's at lr={args.lr:g}, by step (2-layer MLP, batches of 64)")
    print(f"{'optimizer':22s}" + "".join(f"{'step ' + str(s):>10s}" for s in steps))
    print(f"{'adam: the size itself':22s}" + "".join(f"{adam[s - 1]:10.2e}" for s in steps))
    for name in args.optimizers.split(","):
        for lr in (args.lr, args.lr / 10):
            sizes = update_sizes(name, lr, args.steps)
            label = f"{name}, lr={lr:g}"
            print(f"{label:22s}" + "".join(f"{sizes[s - 1] / adam[s - 1]:10.2f}" for s in steps))


if __name__ == "__main__":
    main()
