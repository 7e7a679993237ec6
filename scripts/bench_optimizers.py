"""Step time of AdamCM, AdamCG and SGDCM, eager and compiled (cmopt.compile_optimizer), relative to
torch.optim.Adam eager (foreach; on CUDA fused) and compiled, plus compile time and state size.

Parameters have the shapes of a ResNet-18 (about 11.2M, 62 tensors). Every optimizer steps once per
round in a rotating order (interleaved, so drift in machine load hits all alike); we report the median
over the timed rounds, and the ratios are of those medians, all from the same run. "compile s" is the
wall time of the first two compiled calls (each traces and compiles a graph: state creation, then the
steady step), with torch.compile's on-disk caches in a fresh temporary folder, so from cold (pass
--warm-cache to use the usual cache folder instead). On CUDA one captured AdamCM step also runs under
`torch.cuda.set_sync_debug_mode("error")` (any host synchronisation raises).

    python scripts/bench_optimizers.py [--steps 60] [--warmup 8] [--device cpu|cuda] [--out results/bench]
"""

from __future__ import annotations

import argparse
import pathlib
import platform
import shutil
import os
import statistics
import tempfile
import time

import torch
import torchvision

import cmopt
from cmopt import SGDCM, AdamCG, AdamCM


def candidates(device: torch.device) -> dict[str, callable]:
    adam = dict(fused=True) if device.type == "cuda" else dict(foreach=True)
    return {
        "torch Adam": lambda p: torch.optim.Adam(p, lr=1e-3, **adam),
        "AdamCM C=5": lambda p: AdamCM(p, lr=1e-3, weight_decay=0.01),
        "AdamCG C=10": lambda p: AdamCG(p, lr=1e-3),
        "SGDCM C=5": lambda p: SGDCM(p, lr=1e-2, momentum=0.9),
    }


def resnet18_shapes() -> list[torch.Size]:
    return [p.shape for p in torchvision.models.resnet18(num_classes=10).parameters()]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def captured_step_without_sync(shapes, device) -> str:
    """One compiled capturable AdamCM step with host synchronisation forbidden."""
    params = [torch.nn.Parameter(torch.randn(s, device=device)) for s in shapes]
    opt = cmopt.compile_optimizer(AdamCM(params, lr=1e-3))
    for _ in range(3):  # compile outside the checked step
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize(device)
    return "a compiled AdamCM step ran under torch.cuda.set_sync_debug_mode('error'): no host synchronisation"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per optimizer (median over them)")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first (compiles, fills the buffers)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=pathlib.Path, help="also write the table and the machine to OUT/README.md")
    parser.add_argument("--warm-cache", action="store_true",
                        help="compile with torch.compile's usual on-disk caches (default: a fresh, empty folder)")
    args = parser.parse_args()
    cold_cache = None
    if not args.warm_cache:  # read by inductor when it first compiles, so set before any compile
        cold_cache = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_optimizers_inductor_")
    device = torch.device(args.device)
    torch.manual_seed(0)
    shapes = resnet18_shapes()
    grads = [[torch.randn(s, device=device) for s in shapes] for _ in range(4)]
    n_params = sum(s.numel() for s in shapes)

    runs = {}  # (name, mode) -> params, optimizer, step times
    for name, build in candidates(device).items():
        for mode in ("eager", "compiled"):
            params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.05) for s in shapes]
            opt = build(params)
            runs[name, mode] = (params, cmopt.compile_optimizer(opt) if mode == "compiled" else opt, [])

    keys = list(runs)
    for i in range(args.warmup + args.steps):
        order = keys[i % len(keys):] + keys[: i % len(keys)]
        for key in order:
            params, opt, times = runs[key]
            for p, g in zip(params, grads[i % len(grads)]):
                p.grad = g
            synchronize(device)
            start = time.perf_counter()
            opt.step()
            synchronize(device)
            times.append(time.perf_counter() - start)

    def median(key):
        return statistics.median(runs[key][2][args.warmup:])

    eager_adam, compiled_adam = median(("torch Adam", "eager")), median(("torch Adam", "compiled"))
    adam_name = "Adam(fused=True)" if device.type == "cuda" else "Adam(foreach=True)"
    lines = [
        f"device: {device} ({cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}",
        f"parameters: {n_params / 1e6:.2f}M ({len(shapes)} tensors, ResNet-18 shapes); median of {args.steps} "
        f"interleaved steps after {args.warmup} warm-up steps; compile s: first two compiled calls, "
        f"{'warm' if args.warm_cache else 'cold'} compile cache",
        f"reference: torch.optim.{adam_name}, eager {eager_adam * 1e3:.1f} ms, compiled {compiled_adam * 1e3:.1f} ms",
        "",
        f"{'optimizer':14s} {'mode':9s} {'step ms':>8s} {'/ eager Adam':>13s} {'/ compiled Adam':>16s} "
        f"{'compile s':>10s} {'state/params':>13s}",
    ]
    for (name, mode), (params, opt, times) in runs.items():
        m = median((name, mode))
        compile_s = ""
        if mode == "compiled":
            compile_s = f"{sum(times[:2]):.1f}"  # the two calls that compiled, from cold
        state = cmopt.optimizer_state_bytes(opt) / (4 * n_params)
        lines.append(f"{name:14s} {mode:9s} {m * 1e3:8.2f} {m / eager_adam:13.2f} {m / compiled_adam:16.2f} "
                     f"{compile_s:>10s} {state:13.2f}")
    if device.type == "cuda":
        lines += ["", captured_step_without_sync(shapes, device)]
    table = "\n".join(lines)
    if cold_cache is not None:
        shutil.rmtree(cold_cache, ignore_errors=True)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        command = "python scripts/bench_optimizers.py " + " ".join(
            f"--{k.replace('_', '-')}" if v is True else f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items() if v is not None and v is not False)
        (args.out / "README.md").write_text(
            "# Optimizer step time\n\n"
            f"Written by `{command}` (see the script's docstring for the method).\n\n"
            f"Machine: {cpu_model()}, {torch.get_num_threads()} threads, {platform.system()} "
            f"{platform.machine()}, Python {platform.python_version()}, torch {torch.__version__}.\n\n"
            f"```\n{table}\n```\n"
        )


if __name__ == "__main__":
    main()
