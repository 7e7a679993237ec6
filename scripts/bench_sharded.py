"""Optimizer state per process and step time under FSDP2, for 1, 2 and 4 processes (gloo on a CPU,
NCCL on GPUs with --device cuda).

For each model (ResNet-18's parameter shapes, and a ~100M-parameter stack of Linear layers) and each
process count, every process shards the model with `fully_shard` per layer and on the root, and
steps Adam, AdamCM (float32 and bfloat16 buffer) and AdamCG on the same synthetic gradients,
interleaved, median over the timed rounds. It prints the state bytes this process holds
(`cmopt.optimizer_state_bytes`) per parameter of the whole model, that state in MiB, and the step
time divided by Adam's under the same sharding.

    python scripts/bench_sharded.py [--procs 1,2,4] [--steps 5] [--models resnet18,linear100m] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import socket
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import cmopt

OPTIMIZERS = {
    "torch Adam": lambda p: torch.optim.Adam(p, lr=1e-3, foreach=True),
    "AdamCM C=5": lambda p: cmopt.AdamCM(p, lr=1e-3),
    "AdamCM C=5 bf16": lambda p: cmopt.AdamCM(p, lr=1e-3, buffer_dtype=torch.bfloat16),
    "AdamCG C=10": lambda p: cmopt.AdamCG(p, lr=1e-3),
}


def build(name: str) -> nn.Module:
    if name == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=10)
    if name == "linear100m":
        return nn.Sequential(*[nn.Linear(4096, 2048) for _ in range(12)])  # 12 x 8.39M = 100.7M
    raise SystemExit(f"Unknown model {name!r}: use resnet18 or linear100m.")


def worker(rank: int, world: int, port: int, model_name: str, steps: int, device: str, out: str) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(minutes=10))
    try:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dev = torch.device(device, rank) if device == "cuda" else torch.device("cpu")
        mesh = init_device_mesh(device, (world,))
        rows = []
        model = build(model_name).to(dev)
        total = sum(p.numel() for p in model.parameters())
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                fully_shard(module, mesh=mesh)
        fully_shard(model, mesh=mesh)
        params = list(model.parameters())
        gen = torch.Generator(device=dev).manual_seed(rank)
        for p in params:
            p.grad = torch.distributed.tensor.DTensor.from_local(
                torch.randn(p.to_local().shape, generator=gen, device=dev), p.device_mesh, p.placements,
                run_check=False, shape=p.shape, stride=p.stride())
        optimizers = {}
        times = {name: [] for name in OPTIMIZERS}
        for name, make in OPTIMIZERS.items():
            optimizers[name] = make(params)
            optimizers[name].step()  # state created
        for _ in range(steps):
            for name, opt in optimizers.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                dist.barrier()
                start = time.perf_counter()
                opt.step()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
        for name, opt in optimizers.items():
            state = cmopt.optimizer_state_bytes(opt)
            rows.append((name, state / (4 * total), state / 2**20, statistics.median(times[name])))
        if rank == 0:
            torch.save(dict(total=total, rows=rows), pathlib.Path(out) / f"{model_name}_{world}.pt")
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", default="1,2,4")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--models", default="resnet18,linear100m")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--out", default=None, help="also write the table to DIR/sharded.md")
    args = parser.parse_args()
    import tempfile

    lines = [f"FSDP2 fully_shard per layer and root; {args.device}; median of {args.steps} interleaved steps; "
             f"state bytes held by one process / (4 bytes x the model's parameters); torch {torch.__version__}",
             "", f"{'model':<11} {'procs':>5}  {'optimizer':<16} {'state/param':>11} {'MiB/proc':>9} "
             f"{'step ms':>9} {'/ Adam':>7}"]
    with tempfile.TemporaryDirectory() as tmp:
        for model_name in args.models.split(","):
            for world in (int(w) for w in args.procs.split(",")):
                mp.start_processes(worker, args=(world, free_port(), model_name, args.steps, args.device, tmp),
                                   nprocs=world, start_method="spawn")
                found = torch.load(pathlib.Path(tmp) / f"{model_name}_{world}.pt")
                adam_time = found["rows"][0][3]
                for name, per_param, mib, seconds in found["rows"]:
                    lines.append(f"{model_name:<11} {world:>5}  {name:<16} {per_param:>11.2f} {mib:>9.1f} "
                                 f"{seconds * 1e3:>9.1f} {seconds / adam_time:>7.2f}")
                print("\n".join(lines[-len(found["rows"]):]), flush=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = "python scripts/bench_sharded.py " + " ".join(sys.argv[1:])
        (out / "sharded.md").write_text(f"# Optimizer state under FSDP2\n\nWritten by `{command}`.\n\n```\n{table}\n```\n")


if __name__ == "__main__":
    main()
