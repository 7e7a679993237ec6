"""trainer.strategy=fsdp (FSDP2) against trainer.strategy=ddp, both on 2 gloo processes, in the image and
language-modelling runners, each runner's runs in one torchrun launch.

* adam, adam_cm and sam_adam_cm: the same metrics and final weights. SAM perturbs as under DDP: each
  process its own full weights with its own gradient (cmopt.sam_step; the perturbations themselves are
  compared with DDP's in tests/cmopt/test_sharded.py).
* Image runner only, SGD without momentum: gradient clipping by the global norm over the shards (the
  weights travel at most steps x lr x trainer.grad_clip, and as under ddp), the top Hessian eigenvalue at
  the end (measured on the gathered model) and best_model.pt (a plain state dict that loads into the
  model) as under ddp; a loss that becomes non-finite stops both processes with the same message and
  keeps the last good checkpoint.
"""

from __future__ import annotations

import re

import pytest
import torch

from experiments.engine import checkpoint
from experiments.engine.checkpoint import seed_everything
from experiments.language_modeling import build_task as build_lm_task
from tests.experiments.image_runner_helpers import compose_config, compose_runner_config, metrics_lines, summary
from tests.experiments.test_image_classification_ddp import OVERRIDES, initial_model, run_two_processes
from tests.experiments.test_language_modeling_runner import TINY

OPTIMIZERS = ("adam", "adam_cm", "sam_adam_cm")
# Both strategies average the two processes' gradients (reduce-scatter, all-reduce) and clip by the same
# global norm, so they differ by float32 rounding at most. Measured gaps (rank 0's final weights): 0 (bitwise)
# for adam, adam_cm and sam_adam_cm in the image runner and for adam_cm and sam_adam_cm in the LM runner,
# 3e-8 for adam in the LM runner, 7e-9 for clipped SGD; the weights move by 3e-3 to 4e-1.
ATOL = 1e-6

# SGD without momentum or weight decay: each step moves the weights by lr x the clipped gradient, whose global
# norm is at most CLIP, so the run travels at most STEPS x LR x CLIP (unclipped, its gradients' norms are ~1).
LR, CLIP = 0.1, 0.05
# 65 validation items in global batches of 32: the first process evaluates 33 (3 batches of 16), the second
# 32 (2 batches): under fsdp every pass is collective, so the second must keep up (it hung before).
CLIPPED = ("optimizer=sgd", f"optimizer.lr={LR}", "optimizer.momentum=0.0", f"trainer.grad_clip={CLIP}",
           "dataset.val_size=65", "trainer.eval_batch_size=32", "trainer.eval_interval=2", "trainer.flatness_at_end=true")
# lr 1e9: the loss overflows within a few steps; a checkpoint every step, so one good one is kept.
DIVERGING = ("optimizer=sgd", "optimizer.lr=1e9", "optimizer.momentum=0.0", "trainer.checkpoint_interval=1",
             "trainer.log_interval=3")


def launch(tmp_path, runs: dict[str, tuple[str, ...]], common: tuple[str, ...], **kwargs) -> dict[str, int]:
    """All `runs` (name -> overrides) in one 2-process launch; each name's index in the worker's numbering."""
    args = []
    for name, overrides in runs.items():
        args += [*(["--"] if args else []), *common, *overrides]  # the run's own settings last: they win
    run_two_processes(tmp_path, *args, **kwargs)
    return {name: i for i, name in enumerate(runs)}


def run_dir(tmp_path, i: int):
    return tmp_path / f"run{'' if i == 0 else i}"


def rank0(tmp_path, i: int) -> dict:
    return torch.load(tmp_path / f"rank0{'' if i == 0 else f'_{i}'}.pt", weights_only=True)


def pairs(optimizers) -> dict[str, tuple[str, ...]]:
    return {f"{strategy} {name}": (f"optimizer={name}", f"trainer.strategy={strategy}")
            for name in optimizers for strategy in ("fsdp", "ddp")}


def assert_close(fsdp: dict, ddp: dict, initial: dict, atol: float, what: str) -> None:
    moved = max(float((ddp[k] - initial[k]).abs().max()) for k in ddp)
    gap = max(float((ddp[k] - fsdp[k]).abs().max()) for k in ddp)
    print(f"{what}: moved {moved:.2e}, gap {gap:.2e}")
    assert moved > 50 * atol and gap < atol, f"{what}: moved {moved:.2e}, gap {gap:.2e}"


def assert_same_metrics(fsdp_dir, ddp_dir, atol: float) -> None:
    for a, b in zip(metrics_lines(fsdp_dir), metrics_lines(ddp_dir), strict=True):
        assert a.keys() == b.keys()
        for key, value in b.items():
            if isinstance(value, float) and not key.endswith(("_per_s", "time_s")) and key != "optimizer_state_bytes":
                assert a[key] == pytest.approx(value, rel=1e-5, abs=10 * atol), key


def test_image_runner_fsdp_equals_ddp(tmp_path):
    runs = {**pairs(OPTIMIZERS), "fsdp clipped": ("trainer.strategy=fsdp", *CLIPPED),
            "ddp clipped": ("trainer.strategy=ddp", *CLIPPED), "fsdp diverging": ("trainer.strategy=fsdp", *DIVERGING)}
    index = launch(tmp_path, runs, ("experiment=smoke", *OVERRIDES))
    for name in OPTIMIZERS:
        fsdp, ddp = index[f"fsdp {name}"], index[f"ddp {name}"]
        initial = {k: v.clone() for k, v in initial_model(compose_config(f"optimizer={name}", *OVERRIDES))[0]
                   .state_dict().items()}
        assert_close(rank0(tmp_path, fsdp)["model"], rank0(tmp_path, ddp)["model"], initial, ATOL, name)
        assert_same_metrics(run_dir(tmp_path, fsdp), run_dir(tmp_path, ddp), ATOL)

    fsdp, ddp = index["fsdp clipped"], index["ddp clipped"]
    model, _ = initial_model(compose_config(*CLIPPED, *OVERRIDES))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    final = rank0(tmp_path, fsdp)["model"]
    travelled = torch.cat([(final[k] - initial[k]).flatten() for k in initial]).norm()
    steps = metrics_lines(run_dir(tmp_path, fsdp))[-1]["step"]
    assert 0 < travelled <= steps * LR * CLIP * (1 + 1e-5), f"travelled {travelled:.3e}: not clipped to {CLIP}"
    assert_close(final, rank0(tmp_path, ddp)["model"], initial, ATOL, "sgd clipped")
    assert_same_metrics(run_dir(tmp_path, fsdp), run_dir(tmp_path, ddp), ATOL)
    fsdp_summary, ddp_summary = summary(run_dir(tmp_path, fsdp)), summary(run_dir(tmp_path, ddp))
    assert fsdp_summary["top_hessian_eigenvalue"] == pytest.approx(ddp_summary["top_hessian_eigenvalue"], rel=1e-4)
    assert fsdp_summary["best_step"] == ddp_summary["best_step"]
    best = torch.load(run_dir(tmp_path, fsdp) / checkpoint.BEST_MODEL_NAME, weights_only=True)
    assert all(type(v) is torch.Tensor for v in best.values())  # plain tensors, not DTensor shards
    model.load_state_dict(best)  # strict: the model's own names
    ddp_best = torch.load(run_dir(tmp_path, ddp) / checkpoint.BEST_MODEL_NAME, weights_only=True)
    assert_close(best, ddp_best, initial, ATOL, "best_model.pt")

    diverging = index["fsdp diverging"]
    errors = [torch.load(tmp_path / f"rank{r}_{diverging}.pt", weights_only=True)["error"] for r in (0, 1)]
    assert errors[0] == errors[1], errors
    stopped_at = int(re.search(r"at step (\d+)", errors[0]).group(1))
    kept = int(re.search(r"last good checkpoint \(step (\d+)\)", errors[0]).group(1))
    saved = checkpoint.read(run_dir(tmp_path, diverging))
    assert saved["progress"]["step"] == kept == stopped_at - 1 and not saved["progress"]["finished"]
    assert all(torch.isfinite(v).all() for v in saved["model"].values())
    assert not (run_dir(tmp_path, diverging) / "summary.json").exists()


LM = (*TINY, "trainer.max_steps=8", "trainer.log_interval=4", "trainer.checkpoint_interval=4",
      "trainer.flatness_at_end=false", "optimizer.lr=0.01")


def test_language_model_fsdp_equals_ddp(tmp_path):
    index = launch(tmp_path, pairs(OPTIMIZERS), LM, runner="experiments.language_modeling",
                   config=("language_modeling",))
    for name in OPTIMIZERS:
        fsdp, ddp = index[f"fsdp {name}"], index[f"ddp {name}"]
        cfg = compose_runner_config("language_modeling", f"optimizer={name}", *LM)
        seed_everything(cfg.seed)  # what the engine does before building the task
        initial = build_lm_task(cfg).model.state_dict()
        assert_close(rank0(tmp_path, fsdp)["model"], rank0(tmp_path, ddp)["model"], initial, ATOL, name)
        assert_same_metrics(run_dir(tmp_path, fsdp), run_dir(tmp_path, ddp), ATOL)
        # Each process carried the hidden state of its own columns, under either strategy.
        for saved_fsdp, saved_ddp in zip(rank0(tmp_path, fsdp)["per_process"], rank0(tmp_path, ddp)["per_process"]):
            torch.testing.assert_close(saved_fsdp["carried"], saved_ddp["carried"], rtol=0, atol=ATOL)
