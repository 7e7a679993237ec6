"""Step time and state size of each optimizer, relative to torch.optim.Adam(foreach=True).

Parameters have the shapes of a ResNet-18 (about 11.2M). Every optimizer steps once per round in
a rotating order (interleaved, so drift in machine load hits all alike); we report the median over
the timed rounds. Runs on CUDA as well when present (`--device cuda`).

    python scripts/bench_optimizers.py [--steps 40] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision

import cmopt
from cmopt import SGDCM, AdamCG, AdamCM


def candidates() -> dict[str, callable]:
    return {
        "torch Adam (foreach)": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
        "torch AdamW (foreach)": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01, foreach=True),
        "torch SGD momentum (foreach)": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, foreach=True),
        "AdamCM C=5": lambda p: AdamCM(p, lr=1e-3),
        "AdamCM C=5 foreach=True": lambda p: AdamCM(p, lr=1e-3, foreach=True),
        "AdamCM C=5 foreach=False": lambda p: AdamCM(p, lr=1e-3, foreach=False),
        "AdamCM C=5 bf16 buffer": lambda p: AdamCM(p, lr=1e-3, buffer_dtype=torch.bfloat16),
        "AdamCM C=5 capturable": lambda p: AdamCM(p, lr=1e-3, capturable=True),
        "AdamCG C=10": lambda p: AdamCG(p, lr=1e-3),
        "AdamCG C=10 foreach=True": lambda p: AdamCG(p, lr=1e-3, foreach=True),
        "SGDCM C=5": lambda p: SGDCM(p, lr=1e-2, momentum=0.9),
    }


def resnet18_shapes() -> list[torch.Size]:
    return [p.shape for p in torchvision.models.resnet18(num_classes=10).parameters()]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per optimizer (median over them)")
    parser.add_argument("--warmup", type=int, default=12, help="untimed steps first (fills the buffers)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    shapes = resnet18_shapes()
    grads = [[torch.randn(s, device=device) for s in shapes] for _ in range(4)]
    n_params = sum(s.numel() for s in shapes)
    param_bytes = 4 * n_params

    runs = {}
    for name, build in candidates().items():
        params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.05) for s in shapes]
        runs[name] = (params, build(params), [])

    names = list(runs)
    for i in range(args.warmup + args.steps):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            params, opt, times = runs[name]
            for p, g in zip(params, grads[i % len(grads)]):
                p.grad = g
            synchronize(device)
            start = time.perf_counter()
            opt.step()
            synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)

    base = statistics.median(runs[names[0]][2])
    print(f"device: {device}  ({torch.get_num_threads()} threads)  parameters: {n_params / 1e6:.2f}M "
          f"({len(shapes)} tensors)  median of {args.steps} interleaved steps each")
    print(f"{'optimizer':32s} {'step ms':>9s} {'/ Adam':>8s} {'state / params':>15s}")
    for name, (params, opt, times) in runs.items():
        median = statistics.median(times)
        ratio = cmopt.optimizer_state_bytes(opt) / param_bytes
        print(f"{name:32s} {median * 1e3:9.2f} {median / base:8.2f} {ratio:15.3f}")


if __name__ == "__main__":
    main()
