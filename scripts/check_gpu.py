"""The GPU check (`make check-gpu`): one table of what only a GPU can measure, in a few minutes.

1. The optimizer step on ResNet-18's parameter shapes and on a ~100M-parameter stack of Linear layers:
   AdamCM eager (foreach), compiled (cmopt.compile_optimizer) and capturable under a CUDA graph,
   against torch.optim.Adam(fused=True) and compiled Adam; median of interleaved steps.
2. One compiled AdamCM step under torch.cuda.set_sync_debug_mode("error") (a host sync raises).
3. 200 steps of each runner's synthetic experiment (and the transformer's) in bf16 with
   trainer.strategy=ddp and fsdp (one process): throughput and peak memory (torch.cuda.max_memory_allocated)
   per optimizer.
4. Whole training steps of GPT-2 small (124M, 8 windows of 1024 tokens) in bf16: scripts/bench_training.py
   --model transformer, adam_cm / adam and sam_adam_cm / sam_adam, interleaved, median.

On a machine without a CUDA GPU it prints one line and exits 0. With --out DIR the table also goes to
DIR/gpu.md with the machine named.

    python scripts/check_gpu.py [--steps 30] [--train-steps 200] [--out results/bench]
"""

from __future__ import annotations

import argparse
import pathlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

REPO = pathlib.Path(__file__).resolve().parents[1]


def no_gpu_line() -> str | None:
    if torch.cuda.is_available():
        return None
    return "check-gpu: no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure, skipped."


def shapes(model: str) -> list[torch.Size]:
    if model == "resnet18":
        import torchvision

        return [p.shape for p in torchvision.models.resnet18(num_classes=10).parameters()]
    return [torch.Size((2048, 4096)), torch.Size((2048,))] * 12  # 12 Linear(4096, 2048): 100.7M


def step_rows(model: str, steps: int) -> list[str]:
    import cmopt

    device = torch.device("cuda")
    torch.manual_seed(0)
    sizes = shapes(model)
    grads = [torch.randn(s, device=device) for s in sizes]

    def params():
        return [torch.nn.Parameter(torch.randn(s, device=device) * 0.05) for s in sizes]

    def graphed(build):
        """The step captured once in a CUDA graph, then replayed (the gradients are static tensors)."""
        ps = params()
        for p, g in zip(ps, grads):
            p.grad = g
        opt = build(ps)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # state created and warm before capture
                opt.step()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step()
        return graph.replay

    candidates = {
        "torch Adam fused": lambda: (torch.optim.Adam(_with(params(), grads), lr=1e-3, fused=True).step),
        "torch Adam compiled": lambda: (cmopt.compile_optimizer(
            torch.optim.Adam(_with(params(), grads), lr=1e-3, foreach=True)).step),
        "AdamCM eager": lambda: (cmopt.AdamCM(_with(params(), grads), lr=1e-3, foreach=True).step),
        "AdamCM compiled": lambda: (cmopt.compile_optimizer(cmopt.AdamCM(_with(params(), grads), lr=1e-3)).step),
        "AdamCM CUDA graph": lambda: graphed(lambda ps: cmopt.AdamCM(ps, lr=1e-3, capturable=True, foreach=True)),
    }
    steppers, times, failures = {}, {}, {}
    for name, make in candidates.items():
        try:
            steppers[name] = make()
            for _ in range(3):  # compiles, fills the buffer
                steppers[name]()
            times[name] = []
        except Exception as error:  # noqa: BLE001  (reported in the table; the other rows still run)
            failures[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:80]}"
    for _ in range(steps):
        for name, step in steppers.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    fused = statistics.median(times["torch Adam fused"]) if "torch Adam fused" in times else None
    compiled = statistics.median(times["torch Adam compiled"]) if "torch Adam compiled" in times else None
    rows = []
    for name in candidates:
        if name in failures:
            rows.append(f"{model:<10} {name:<20} failed: {failures[name]}")
            continue
        m = statistics.median(times[name])
        rows.append(f"{model:<10} {name:<20} {m * 1e3:9.3f} {m / fused if fused else float('nan'):9.2f} "
                    f"{m / compiled if compiled else float('nan'):12.2f}")
    return rows


def _with(ps, grads):
    for p, g in zip(ps, grads):
        p.grad = g
    return ps


def sync_free_line() -> str:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_optimizers import captured_step_without_sync

    try:
        return captured_step_without_sync(shapes("resnet18"), torch.device("cuda"))
    except Exception as error:  # noqa: BLE001
        return f"a compiled AdamCM step under set_sync_debug_mode('error') FAILED: {type(error).__name__}: {error}"


RUNNERS = {  # label: (runner, its fixed overrides)
    "image_classification": ("image_classification", ("experiment=synthetic",)),
    "language_modeling": ("language_modeling", ("experiment=synthetic_lm",)),
    "lm transformer": ("language_modeling", ("experiment=synthetic_transformer",)),
    "online_learning": ("online_learning", ("experiment=synthetic_tasks",)),
}
OPTIMIZERS = ("adam", "adam_cm", "sam_adam_cm")


def training_rows(train_steps: int) -> list[str]:
    import importlib

    from hydra import compose, initialize_config_dir

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (runner, fixed) in RUNNERS.items():
            module = importlib.import_module(f"experiments.{runner}")
            for strategy in ("ddp", "fsdp"):
                for name in OPTIMIZERS:
                    overrides = [*fixed, f"optimizer={name}", f"trainer.strategy={strategy}", "trainer.device=cuda",
                                 "trainer.precision=bf16", f"trainer.max_steps={train_steps}", "logger=none",
                                 "trainer.flatness_at_end=false", "trainer.checkpoint_interval=null"]
                    try:
                        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
                            cfg = compose(runner, overrides=overrides)
                        torch.cuda.reset_peak_memory_stats()
                        summary = module.run(cfg, pathlib.Path(tmp) / f"{label}_{strategy}_{name}").summary
                        rate = next(v for k, v in summary.items() if k.endswith("_per_s"))
                        unit = next(k for k in summary if k.endswith("_per_s"))
                        peak = torch.cuda.max_memory_allocated() / 2**20
                        rows.append(f"{label:<21} {strategy:<5} {name:<12} {rate:12.0f} {unit:<14} {peak:9.1f}")
                    except Exception as error:  # noqa: BLE001
                        rows.append(f"{label:<21} {strategy:<5} {name:<12} failed: {type(error).__name__}: "
                                    f"{str(error).splitlines()[0][:80]}")
    return rows


def transformer_step_lines(steps: int) -> list[str]:
    """scripts/bench_training.py --model transformer (GPT-2 small on a GPU), its table as printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_training.py"), "--model", "transformer",
                           "--optimizers", "adam,adam_cm,sam_adam,sam_adam_cm", "--steps", str(steps)],
                          cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return [f"bench_training.py --model transformer FAILED: {(done.stderr.strip().splitlines() or ['?'])[-1][:160]}"]
    return done.stdout.strip().splitlines()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps (median)")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps of each synthetic run")
    parser.add_argument("--out", type=pathlib.Path, help="also write the table to OUT/gpu.md")
    args = parser.parse_args()
    skipped = no_gpu_line()
    if skipped:
        print(skipped)
        return 0
    started = time.perf_counter()
    lines = [f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}", "",
             f"{'model':<10} {'optimizer step':<20} {'ms':>9} {'/ fused':>9} {'/ compiled':>12}"]
    for model in ("resnet18", "linear100m"):
        lines += step_rows(model, args.steps)
    lines += ["", sync_free_line(), "",
              f"{'runner':<21} {'strat':<5} {'optimizer':<12} {'throughput':>12} {'unit':<14} {'peak MiB':>9}"]
    lines += training_rows(args.train_steps)
    lines += ["", *transformer_step_lines(args.steps)]
    lines += ["", f"total {time.perf_counter() - started:.0f} s"]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu.md").write_text(f"# GPU check\n\nWritten by `python scripts/check_gpu.py "
                                         f"{' '.join(sys.argv[1:])}` (`make check-gpu`).\n\n```\n{table}\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
