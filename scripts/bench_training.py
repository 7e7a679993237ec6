"""Time of a whole training step (forward, backward, optimizer step, zero_grad) per optimizer, as a ratio.

CIFAR ResNet-18 on synthetic CIFAR batches, (--model lstm) Zaremba's medium 2 x 650 LSTM language
model over a 10,000-word vocabulary on a synthetic window of 35 x 20 tokens, or (--model transformer)
GPT-2 small (124M: 12 blocks of 768, GPT-2's 50,257 tokens) on 8 windows of 1024 random tokens; on a CPU
a reduced one by default (4 blocks of 256, 2 windows of 128; --full for GPT-2 small). Each optimizer trains its own copy of the same model; every
round steps each optimizer once, in alternating order (interleaved, so drift in machine load hits all
alike), and we report the median over the timed rounds. Each optimizer with critical momenta or gradients
is divided by its plain counterpart (adam_cm / adam, sam_adam_cm / sam_adam) when that is in the list.

    python scripts/bench_training.py [--model resnet18|lstm|transformer] [--optimizers adam,adam_cm,sam_adam,sam_adam_cm]
                                     [--steps 10] [--batch-size 128] [--device cpu|cuda] [--precision bf16|fp32]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
from torch.nn.functional import cross_entropy

import cmopt
from experiments.data.images import build_image_datasets
from experiments.models.images import build_image_model
from experiments.models.language import build_language_model

VOCAB, BPTT = 10_000, 35  # Penn Treebank's vocabulary; the classic window
GPT2_VOCAB = 50_257
# (n_layer, n_embd, n_head, block_size, batch): GPT-2 small, and what a CPU times in seconds.
TRANSFORMER_SIZES = {"gpt2_small": (12, 768, 12, 1024, 8), "reduced": (4, 256, 4, 128, 2)}


def synthetic_batch(batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    data = build_image_datasets("synthetic", train_size=batch_size, test_size=1).train
    images, labels = zip(*(data[i] for i in range(batch_size)))
    return torch.stack(images).to(device), torch.tensor(labels).to(device)


def workload(model_name: str, batch_size: int, device: torch.device, size: str = "gpt2_small"):
    """(build a model, the fixed batch, loss(model, batch), what one batch holds, their unit)."""
    if model_name == "transformer":
        n_layer, n_embd, n_head, block_size, default_batch = TRANSFORMER_SIZES[size]
        batch_size = batch_size or default_batch
        tokens = torch.randint(0, GPT2_VOCAB, (batch_size, block_size + 1), generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(device)

        def loss(model, batch):
            return cross_entropy(model(batch[:, :-1]).float().reshape(-1, GPT2_VOCAB), batch[:, 1:].reshape(-1))

        return (lambda: build_language_model("transformer", GPT2_VOCAB, n_layer=n_layer, n_head=n_head,
                                             n_embd=n_embd, block_size=block_size),
                tokens, loss, block_size * batch_size, "tokens")
    if model_name == "lstm":
        tokens = torch.randint(0, VOCAB, (BPTT + 1, batch_size), generator=torch.Generator().manual_seed(0))
        tokens = tokens.to(device)

        def loss(model, batch):
            logits, _ = model(batch[:-1], model.initial_hidden(batch.shape[1]))
            return cross_entropy(logits.float().reshape(-1, VOCAB), batch[1:].reshape(-1))

        return (lambda: build_language_model("lstm", VOCAB, emsize=650, nhid=650, layers=2, dropout=0.5),
                tokens, loss, BPTT * batch_size, "tokens")
    images, labels = synthetic_batch(batch_size, device)
    return (lambda: build_image_model("resnet18", num_classes=10), (images, labels),
            lambda model, batch: cross_entropy(model(batch[0]), batch[1]), batch_size, "images")


def counterpart(name: str) -> str:
    """The same optimizer without the critical buffer: adam_cm -> adam, sam_adam_cg -> sam_adam."""
    return name.removesuffix("_cm").removesuffix("_cg")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--optimizers", default="adam,adam_cm",
                        help="comma-separated cmopt names, e.g. adam,adam_cm,sam_adam,sam_adam_cm")
    parser.add_argument("--steps", type=int, default=10, help="timed rounds (median over them)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--model", choices=("resnet18", "lstm", "transformer"), default="resnet18")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: 128 images, 20 LSTM columns, or 8 transformer windows (2 reduced)")
    parser.add_argument("--full", action="store_true",
                        help="--model transformer: GPT-2 small also on a CPU (the default there is the reduced size)")
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default=None,
                        help="bf16 autocast (CUDA only; the default there) or fp32 (the default on the CPU)")
    args = parser.parse_args()
    names = args.optimizers.split(",")
    unknown = [n for n in names if n not in cmopt.OPTIMIZER_NAMES]
    if unknown:
        parser.error(f"unknown optimizer(s) {', '.join(unknown)}; "
                     f"choose from {', '.join(cmopt.OPTIMIZER_NAMES)}")
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    if precision == "bf16" and device.type != "cuda":
        parser.error("--precision bf16 needs --device cuda (training uses bf16 autocast on GPUs only)")
    bf16 = precision == "bf16"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    batch_size = args.batch_size or {"lstm": 20, "resnet18": 128}.get(args.model)
    size = "gpt2_small" if device.type == "cuda" or args.full else "reduced"
    build, batch, loss, items, unit = workload(args.model, batch_size, device, size)
    runs = {}
    for name in names:
        torch.manual_seed(0)
        model = build().to(device).train()
        runs[name] = (model, cmopt.create_optimizer(name, model, lr=1e-3), [])

    def loss_of(model):
        with autocast:
            return loss(model, batch)

    for i in range(args.warmup + args.steps):
        order = names[i % len(names):] + names[: i % len(names)]
        for name in order:
            model, optimizer, times = runs[name]
            synchronize(device)
            start = time.perf_counter()
            if isinstance(optimizer, cmopt.SAM):
                cmopt.sam_step(optimizer, model, lambda: loss_of(model))
            else:
                loss_of(model).backward()
                optimizer.step()
            optimizer.zero_grad()
            synchronize(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)

    if device.type == "cpu":
        hardware = f"{torch.get_num_threads()} threads"
    else:
        hardware = torch.cuda.get_device_name(device)
    n_layer, n_embd, _, block_size, _ = TRANSFORMER_SIZES[size]
    what = {"lstm": f"2 x 650 LSTM LM, vocabulary {VOCAB}, synthetic window {BPTT} x {batch_size}",
            "transformer": f"transformer LM ({size}: {n_layer} x {n_embd}, vocabulary {GPT2_VOCAB}), "
                           f"{items // block_size} random windows of {block_size}",
            "resnet18": f"CIFAR ResNet-18, synthetic batch {batch_size}"}[args.model]
    print(f"{what}, device {device} ({hardware}), {precision}; "
          f"median of {args.steps} interleaved steps after {args.warmup} warm-up rounds")
    print(f"{'optimizer':16s} {'step ms':>9s} {unit + '/s':>9s}   ratio")
    medians = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    for name, median in medians.items():
        base = counterpart(name)
        ratio = f"{median / medians[base]:.3f} x {base}" if base != name and base in medians else ""
        print(f"{name:16s} {median * 1e3:9.1f} {items / median:9.1f}   {ratio}")


if __name__ == "__main__":
    main()
