"""torchrun --nproc_per_node=2 (gloo, CPU) against one process, on the small CNN (no BatchNorm, no dropout).

* adam_cm: two processes with half batches end with the weights of one process on the full batch.
* sam_adam_cm: each process perturbs with its own half batch's gradient (SAM's first pass runs under
  no_sync), then the second-pass gradients are averaged. The reference below computes exactly that
  in one process, written out by hand; it is not the engine's computation.
* Both processes end with identical weights and optimizer state.

shuffle=False, so step k's global batch is items [k B, (k+1) B) and DistributedSampler gives
rank r the items k B + r, k B + r + 2, ... of it.
"""

from __future__ import annotations

import re
import subprocess
import sys

import torch
from torch import nn

import cmopt
from experiments.engine import checkpoint
from experiments.data.images import build_image_datasets
from experiments.image_classification import run
from experiments.models.images import build_image_model
from tests.experiments.image_runner_helpers import REPO, compose_config

STEPS, BATCH = 6, 32
OVERRIDES = ("trainer.shuffle=false", f"trainer.max_steps={STEPS}", f"trainer.batch_size={BATCH}",
             "scheduler=constant", "trainer.log_interval=3", "trainer.checkpoint_interval=4", "optimizer.lr=3e-3",
             "trainer.flatness_at_end=false")


def run_two_processes(tmp_path, *overrides: str, runner: str = "experiments.image_classification",
                      config: tuple[str, ...] = ("image_classification", "experiment=smoke")) -> dict[int, dict]:
    """torchrun --nproc_per_node=2 of tests/experiments/ddp_worker.py; each process's final state."""
    config_name, *fixed = config
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests" / "experiments" / "ddp_worker.py"), runner, config_name, str(tmp_path), *fixed,
         *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {r: torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)}


def assert_ranks_identical(states: dict[int, dict]) -> None:
    for part in ("model", "optimizer"):
        flat = [torch.nn.utils.parameters_to_vector(_tensors(states[r][part])) for r in (0, 1)]
        assert torch.equal(flat[0], flat[1]), f"{part} differs between the processes"


def _tensors(tree) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree.double().flatten()]
    items = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else []
    return [t for item in items for t in _tensors(item)]


# float32 rounding (DDP averages as a/2 + b/2), amplified by Adam where the second moment is near zero:
# measured 4e-7 for adam, 8e-6 for adam_cm (its buffer mean enters the second moment too) and 9e-5 for
# sam_adam_cm, while the weights move by ~1e-1 and a global-batch SAM perturbation lands ~1e-1 away.
ADAM_CM_ATOL, SAM_ATOL = 5e-5, 5e-4


def assert_close_weights(model_state: dict, reference: nn.Module, initial: dict, atol: float) -> None:
    moved = max(float((value - initial[name]).abs().max()) for name, value in reference.state_dict().items())
    assert moved > 50 * atol  # so the tolerance cannot hide a wrong computation
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model_state[name], value, rtol=0, atol=atol)


def initial_model(cfg):
    data = build_image_datasets(**cfg.dataset)
    torch.manual_seed(cfg.seed)  # what the engine does before building the model
    return build_image_model(**cfg.model, num_classes=data.num_classes), data


def test_adam_cm_on_two_processes_matches_one_process_on_the_global_batch(tmp_path):
    states = run_two_processes(tmp_path / "ddp", "optimizer=adam_cm", *OVERRIDES)
    assert_ranks_identical(states)
    cfg = compose_config("optimizer=adam_cm", *OVERRIDES)
    initial = {k: v.clone() for k, v in initial_model(cfg)[0].state_dict().items()}
    single = run(cfg, tmp_path / "single")
    assert_close_weights(states[0]["model"], single.model, initial, ADAM_CM_ATOL)


def test_sam_adam_cm_on_two_processes_matches_per_process_perturbations(tmp_path):
    cfg = compose_config("optimizer=sam_adam_cm", *OVERRIDES)
    states = run_two_processes(tmp_path / "ddp", "optimizer=sam_adam_cm", *OVERRIDES)
    assert_ranks_identical(states)

    model, data = initial_model(cfg)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    params = list(model.parameters())
    hp = cfg.optimizer
    base = cmopt.AdamCM(params, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay,
                        capacity=hp.capacity, decay=hp.decay)

    def gradient(x, y) -> list[torch.Tensor]:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        return [p.grad.clone() for p in params]

    for step in range(STEPS):
        second_pass = []
        for rank in (0, 1):
            items = [data.train[i] for i in range(step * BATCH + rank, (step + 1) * BATCH, 2)]
            x, y = torch.stack([im for im, _ in items]), torch.tensor([label for _, label in items])
            g = gradient(x, y)
            norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, gi in zip(params, g):
                    p.add_(hp.rho * gi / norm)  # w + e, e = rho g / ||g|| from this half batch alone
            second_pass.append(gradient(x, y))
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for p, g0, g1 in zip(params, *second_pass):
            p.grad = (g0 + g1) / 2  # DDP averages the second-pass gradients
        base.step()

    assert_close_weights(states[0]["model"], model, initial, SAM_ATOL)


def test_a_missing_dataset_stops_every_process_with_the_message_instead_of_hanging(tmp_path):
    # The first process builds the data first and the other waits at a barrier. The first must release it
    # even when its build fails: otherwise the other never gets to say what is wrong (torchrun kills it;
    # without torchrun, e.g. under srun, it would wait at the barrier until the job's time limit).
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "experiments.image_classification", "dataset=cifar10", "model=small_cnn", "logger=none",
         "trainer.device=cpu", f"data_dir={tmp_path / 'empty'}",
         f"runs_dir={tmp_path / 'runs'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.count("cifar-10-batches-py") >= 2, done.stderr[-3000:]  # both processes say where


def test_a_nonfinite_loss_stops_both_processes_with_one_message_and_saves_nothing_bad(tmp_path):
    # Finiteness is checked on all processes together (at log lines and before checkpoints), so both
    # processes stop with the same message; neither waits forever in an all-reduce the other never joins.
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
         "experiments.image_classification", "experiment=smoke", "optimizer=sgd", "optimizer.lr=1e9",
         "trainer.log_interval=3", "trainer.checkpoint_interval=2", "trainer.flatness_at_end=false",
         f"runs_dir={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    # Each process prints its message on stderr; a progress bar's carriage returns may share its line.
    messages = re.findall(r"Error: ((?:The training loss is|A weight became) [^\n]*)", done.stderr)
    assert len(messages) == 2 and messages[0] == messages[1], done.stderr[-3000:]
    for saved in tmp_path.rglob("trainer.pt"):  # whatever was saved is a good state
        state = checkpoint.read(saved.parent.parent)
        assert all(torch.isfinite(v).all() for v in state["model"].values())
