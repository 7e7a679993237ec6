"""Checkpoints through torch.distributed.checkpoint: what resumes where.

* A single-file checkpoint.pt written by the engine before it used DCP (a saved fixture: a run SIGKILLed
  after its step-3 checkpoint) resumes and ends where an uninterrupted run ends: bit for bit on the machine
  that wrote the fixture, to float32 rounding on another CPU (its first 3 steps were computed by that
  machine's kernels; measured 1.5e-8 on a second machine, while the weights move 1.6e-2 after step 3).
* A save killed half way leaves the previous complete checkpoint, which resumes exactly.
* A run killed on 2 processes continues on 1 (and one killed on 1 continues on 2) only when asked
  (trainer.resume_any_world_size=true); with shuffle off every global batch is the same items for any
  process count, so the continued run ends where the uninterrupted one does, to float32 rounding.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from experiments.engine import checkpoint
from experiments.image_classification import run
from tests.experiments.image_runner_helpers import REPO, compose_config, metrics_lines

FIXTURE = Path(__file__).parents[1] / "fixtures" / "legacy_run"
# The fixture's command (at the commit before DCP checkpoints), as overrides of experiment=smoke.
LEGACY = ("optimizer=adam", "model.width=4", "trainer.max_steps=40", "trainer.checkpoint_interval=3",
          "trainer.log_interval=2", "trainer.flatness_at_end=false", "trainer.shuffle=true", "run_name=legacy")


def test_a_single_file_checkpoint_of_an_earlier_version_resumes_where_an_uninterrupted_run_ends(tmp_path):
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(FIXTURE, resumed_dir)
    assert torch.load(resumed_dir / "checkpoint.pt", weights_only=True)["progress"]["step"] == 3
    cfg = compose_config(*LEGACY)
    saved = torch.load(resumed_dir / "checkpoint.pt", weights_only=True)["model"]
    resumed = run(cfg, resumed_dir).model.state_dict()
    straight = run(cfg, tmp_path / "straight").model.state_dict()
    moved = max(float((resumed[k] - saved[k]).abs().max()) for k in saved)
    gap = max(float((resumed[k] - straight[k]).abs().max()) for k in saved)
    assert moved > 1e-3 and gap < 1e-6, f"moved {moved:.2e} after the resume, {gap:.2e} from the uninterrupted run"
    assert metrics_lines(resumed_dir)[-1]["test_acc"] == pytest.approx(
        metrics_lines(tmp_path / "straight")[-1]["test_acc"], abs=1e-6)
    assert (resumed_dir / checkpoint.CHECKPOINT_DIR / checkpoint.TRAINER_FILE).exists()  # now saved with DCP


SHORT = ("optimizer=adam_cm", "trainer.max_steps=8", "trainer.checkpoint_interval=2", "trainer.log_interval=2",
         "trainer.flatness_at_end=false")


def test_a_save_killed_half_way_resumes_from_the_previous_complete_checkpoint(tmp_path):
    cfg = compose_config(*SHORT)
    straight = run(cfg, tmp_path / "straight").model.state_dict()
    # The final save killed between moving the previous checkpoint aside and renaming the new one into
    # place: only checkpoint.old/ (complete) and a half-written checkpoint.tmp/ remain.
    killed = tmp_path / "killed"
    run(cfg, killed)
    final = killed / checkpoint.CHECKPOINT_DIR
    os.replace(final, killed / (checkpoint.CHECKPOINT_DIR + ".old"))
    (killed / (checkpoint.CHECKPOINT_DIR + ".tmp")).mkdir()
    (killed / (checkpoint.CHECKPOINT_DIR + ".tmp") / "__0_0.distcp").write_bytes(b"half")
    assert checkpoint.read(killed)["progress"]["finished"]
    again = run(cfg, killed)  # finished: reopens from checkpoint.old/ and says so
    for (name, p), q in zip(again.model.state_dict().items(), straight.values()):
        assert torch.equal(p, q), name


def start_torchrun(nproc: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                             "-m", "experiments.image_classification", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_after_first_checkpoint(nproc: int, args: list[str], run_dir: Path) -> None:
    process = start_torchrun(nproc, *args)
    started = time.monotonic()
    while not checkpoint.trainer_path(run_dir).exists():
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() - started < 150, "no checkpoint in time"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its workers
    process.wait()
    assert not checkpoint.read(run_dir)["progress"]["finished"]


WORLD = ("experiment=smoke", "optimizer=adam_cm", "trainer.shuffle=false", "trainer.max_steps=30",
         "trainer.batch_size=32", "trainer.checkpoint_interval=3", "trainer.log_interval=3",
         "trainer.flatness_at_end=false", "scheduler=constant", "optimizer.lr=3e-3", "run_name=run")


@pytest.mark.slow
@pytest.mark.parametrize("before,after", [(2, 1), (1, 2)])
def test_a_killed_run_continues_on_another_process_count_when_asked(tmp_path, before, after):
    args = [*WORLD, f"runs_dir={tmp_path}"]
    run_dir = tmp_path / "smoke" / "run"
    kill_after_first_checkpoint(before, args, run_dir)
    saved_step = checkpoint.read(run_dir)["progress"]["step"]
    refused = start_torchrun(after, *args)
    assert refused.wait(timeout=150) != 0 and "trainer.resume_any_world_size=true" in refused.stderr.read()
    done = start_torchrun(after, *args, "trainer.resume_any_world_size=true")
    assert done.wait(timeout=150) == 0, done.stderr.read()[-3000:]
    steps = [line["step"] for line in metrics_lines(run_dir) if "train_loss" in line]
    assert steps == list(range(3, 31, 3)) and saved_step < 30  # continued where it stopped, each line once
    straight = run(compose_config(*WORLD[1:]), tmp_path / "straight").model.state_dict()
    resumed = checkpoint.read(run_dir)["model"]
    gap = max(float((resumed[k] - v).abs().max()) for k, v in straight.items())
    assert gap < 5e-5, gap  # float32 rounding of the gradient average (see test_image_classification_ddp.py)


def test_a_restored_sam_shares_its_groups_with_its_base_optimizer_so_the_schedule_reaches_it(tmp_path):
    import cmopt

    def build():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = cmopt.create_optimizer("sam_adam_cm", model, lr=0.1)
        return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 ** step)

    model, optimizer, schedule = build()
    model(torch.ones(1, 3)).sum().backward()
    optimizer.first_step(zero_grad=True)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.second_step()
    schedule.step()
    checkpoint.save(tmp_path, model, optimizer, {}, is_main=True)
    saved_schedule = schedule.state_dict()
    model, optimizer, schedule = build()
    checkpoint.load_model_and_optimizer(tmp_path, model, optimizer, legacy=None)  # lr 0.05, as saved
    schedule.load_state_dict(saved_schedule)
    schedule.step()  # the lr the base optimizer's next step takes: 0.1 x 0.5^2
    assert optimizer.param_groups is optimizer.base_optimizer.param_groups
    assert optimizer.base_optimizer.param_groups[0]["lr"] == 0.025
