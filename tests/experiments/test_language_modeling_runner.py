"""The language-modelling runner end to end on the embedded Markov-chain text (experiment=synthetic_lm).

* It learns: validation perplexity within 10% of the chain's true perplexity (closed form) and far below
  the unigram perplexity of the same text.
* A run killed with SIGKILL mid-epoch resumes bit for bit: model, optimizer, the carried hidden state,
  metrics (adam_cm, and sam_adam_cm whose second pass restarts from the first pass's state).
* Two torchrun processes (gloo) equal one process on the global batch of columns.
* Every registry optimizer trains; W&B offline holds the perplexities; bad settings are one message, exit 1.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra.errors import MissingConfigException

from experiments.engine import checkpoint

import cmopt
from experiments.data.text import DatasetNotFoundError
from experiments.engine.checkpoint import seed_everything
from experiments.language_modeling import build_task, run
from tests.experiments.image_runner_helpers import (
    check_killed_run_resumes_exactly, compose_runner_config, metrics_lines, run_cli)
from tests.experiments.test_image_classification_ddp import assert_ranks_identical, run_two_processes
from tests.experiments.test_image_classification_wandb import wandb_history

RUNNER = "experiments.language_modeling"
# 2,000 training tokens in 10 columns of 200: 10 windows of 20 per epoch.
TINY = ("experiment=synthetic_lm", "scheduler=constant", "dataset.train_tokens=2000", "dataset.eval_tokens=400", "model.nhid=16",
        "model.emsize=8", "trainer.batch_size=10", "trainer.eval_batch_size=4", "trainer.flatness_batch_size=4",
        "trainer.flatness_max_iter=5")


def config(*overrides: str):
    return compose_runner_config("language_modeling", *TINY, *overrides)


def test_a_small_lstm_learns_the_chain_to_near_its_true_perplexity(tmp_path):
    # The experiment's own settings: 40,000 tokens, 1 x 64 LSTM, 200 steps; lr 0.02 with a cosine decay.
    cfg = compose_runner_config("language_modeling", "experiment=synthetic_lm", "optimizer=adam",
                                "trainer.flatness_at_end=false")
    result = run(cfg, tmp_path).summary
    true_ppl, unigram_ppl = result["dataset_true_ppl"], result["dataset_unigram_ppl"]
    assert 2.9 < true_ppl < 3.2 and unigram_ppl > 30  # the chain as documented
    assert result["best_val_ppl"] < 1.10 * true_ppl
    assert result["best_val_ppl"] >= 0.97 * true_ppl  # no model beats the chain by more than sampling noise
    assert result["test_ppl"] < 1.10 * true_ppl


def test_summary_reports_test_perplexity_at_the_best_validation_checkpoint(tmp_path):
    result = run(config("trainer.epochs=3", "optimizer.lr=0.05"), tmp_path).summary
    evaluations = [line for line in metrics_lines(tmp_path) if "val_ppl" in line]
    assert len(evaluations) == 3  # one per epoch
    best = min(evaluations, key=lambda line: line["val_ppl"])
    assert (result["best_val_ppl"], result["test_ppl"], result["best_step"]) == (
        best["val_ppl"], best["test_ppl"], best["step"])
    assert (result["final_val_ppl"], result["final_test_ppl"]) == (evaluations[-1]["val_ppl"],
                                                                   evaluations[-1]["test_ppl"])
    assert result["train_ppl"] == pytest.approx(math.exp(result["train_loss"]), rel=1e-12)
    assert result["tokens_per_s"] > 0
    # The kept model is the best evaluation's: evaluated again, it gives the reported validation perplexity.
    cfg = config("trainer.epochs=3", "optimizer.lr=0.05")
    task = build_task(cfg)
    task.model.load_state_dict(torch.load(tmp_path / "best_model.pt", weights_only=True))
    task.model.eval()
    with torch.no_grad():
        loss_sum, tokens, hidden = 0.0, 0, None
        for batch in task.eval_data["val"].batches(cfg.trainer.eval_batch_size, 0, 1):
            loss, count, _, hidden = task.forward(
                task.model, batch, task.initial_state(batch) if hidden is None else hidden)
            loss_sum, tokens = loss_sum + float(loss) * count, tokens + count
    assert math.exp(loss_sum / tokens) == pytest.approx(result["best_val_ppl"], rel=1e-6)


@pytest.mark.parametrize("name", cmopt.OPTIMIZER_NAMES)
def test_every_registry_optimizer_trains_through_the_runner(tmp_path, name):
    result = run(config(f"optimizer={name}", "trainer.max_steps=3", "trainer.flatness_at_end=false"), tmp_path)
    assert result.summary["status"] == "finished" and result.summary["steps"] == 3
    assert result.summary["val_ppl"] > 1


def check_resume(tmp_path: Path, optimizer: str, *overrides: str) -> None:
    args = lambda runs: [*TINY, f"runs_dir={tmp_path / runs}", f"optimizer={optimizer}", "trainer.epochs=3",
                         "trainer.checkpoint_interval=4", "trainer.log_interval=3", "trainer.flatness_interval=13",
                         "model.dropout=0.2", *overrides]  # dropout: the RNG must be restored too
    folder = Path("synthetic_lm") / f"synthetic_lm_lstm_{optimizer}_seed0"
    a, b, _, saved = check_killed_run_resumes_exactly(tmp_path, args, folder, runner=RUNNER)
    assert saved["progress"]["batch"] != 0, "the kill should land mid-epoch"
    assert saved["per_process"][0]["carried"] is not None  # the hidden state mid-stream is saved
    carried = [checkpoint.read(x)["per_process"][0]["carried"] for x in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*carried))


def test_a_killed_run_resumes_bit_for_bit_with_its_hidden_state(tmp_path):
    check_resume(tmp_path, "adam_cm")


def test_a_killed_sam_run_resumes_bit_for_bit(tmp_path):
    check_resume(tmp_path, "sam_adam_cm")


# float32 rounding of DDP's gradient average (a/2 + b/2), amplified by Adam where the second moment is small:
# measured 6.0e-8 for adam and 5.5e-7 for adam_cm after 8 steps, while the weights move by 8e-2 and 3.7e-1.
DDP_ATOL = 5e-5


@pytest.mark.parametrize("optimizer", ["adam_cm"])
def test_two_processes_equal_one_process_on_the_global_batch(tmp_path, optimizer):
    overrides = (f"optimizer={optimizer}", "trainer.max_steps=8", "trainer.log_interval=4",
                 "trainer.checkpoint_interval=4", "trainer.flatness_at_end=false", "optimizer.lr=0.01")
    states = run_two_processes(tmp_path / "ddp", *TINY, *overrides, runner=RUNNER,
                               config=("language_modeling",))
    assert_ranks_identical(states)
    cfg = config(*overrides)
    seed_everything(cfg.seed)  # what the engine does before building the task
    initial = build_task(cfg).model.state_dict()
    single = run(cfg, tmp_path / "single").model.state_dict()
    moved = max(float((single[name] - initial[name]).abs().max()) for name in single)
    gap = max(float((single[name] - states[0]["model"][name]).abs().max()) for name in single)
    assert moved > 50 * DDP_ATOL and gap < DDP_ATOL, f"moved {moved:.2e}, gap {gap:.2e}"
    # Each process carried the hidden state of its own 5 columns; together they are one process's 10.
    h_single = checkpoint.read(tmp_path / "single")["per_process"][0]["carried"]
    h_split = torch.cat([states[0]["per_process"][r]["carried"][0] for r in (0, 1)], dim=1)  # rank 0 wrote it
    torch.testing.assert_close(h_split, h_single[0], rtol=0, atol=DDP_ATOL)
    # Evaluation shards stay contiguous: the summed perplexity equals the single process's.
    ddp_lines = metrics_lines(tmp_path / "ddp" / "run")
    assert ddp_lines[-1]["val_ppl"] == pytest.approx(metrics_lines(tmp_path / "single")[-1]["val_ppl"], rel=1e-4)


def test_wandb_offline_holds_the_perplexities(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(config("logger=wandb", "trainer.max_steps=10", "trainer.flatness_at_end=false"), tmp_path)
    run_id = (tmp_path / "wandb_id.txt").read_text().strip()
    [offline] = (tmp_path / "wandb").glob(f"offline-run-*-{run_id}")
    logged = {(h["_step"], k): v for h in wandb_history(offline / f"run-{run_id}.wandb") for k, v in h.items()}
    evaluations = [line for line in metrics_lines(tmp_path) if "val_ppl" in line]
    assert evaluations
    for line in evaluations:
        for key in ("val_ppl", "test_ppl", "train_ppl"):
            assert logged[(line["step"], key)] == line[key]


@pytest.mark.parametrize("overrides, error, message", [
    (("bptt=0",), ValueError, r"bptt=0 must be a positive integer"),
    (("trainer.batch_size=1500",), ValueError, r"batch of 1500 columns is too large for the train split of 2000"),
    (("trainer.eval_batch_size=300",), ValueError, r"batch of 300 columns is too large for the valid split"),
    (("model.tied=true", "model.emsize=8", "model.nhid=16"), ValueError, r"model.emsize \(8\) must equal"),
    (("+dataset.vocabulary=9",), ValueError, r"Dataset 'synthetic_lm' does not take option\(s\) vocabulary"),
    (("+model.hidden=9",), ValueError, r"Model 'lstm' does not take option\(s\) hidden"),
    (("dataset.name=cifar10",), ValueError, r"Unknown dataset 'cifar10'. Valid names for language modelling"),
    (("dataset=ptb",), DatasetNotFoundError, r"no ptb.train.txt or train.txt"),
])
def test_bad_settings_are_refused_with_the_value_named(tmp_path, overrides, error, message):
    base = TINY if not overrides[0].startswith("dataset=") else ("experiment=synthetic_lm",)
    cfg = compose_runner_config("language_modeling", *base, f"data_dir={tmp_path / 'empty'}", *overrides)
    with pytest.raises(error, match=message):
        run(cfg, tmp_path / "run")


def test_the_image_runners_datasets_are_not_options_of_this_runner():
    with pytest.raises(MissingConfigException, match=r"Could not find 'dataset/cifar10'"):
        compose_runner_config("language_modeling", "dataset=cifar10")


def test_on_the_command_line_a_bad_setting_is_one_message_and_exit_1(tmp_path):
    done = run_cli("experiment=synthetic_lm", "dataset=ptb", f"data_dir={tmp_path}", f"runs_dir={tmp_path / 'runs'}",
                   runner=RUNNER)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ptb: no ptb.train.txt or train.txt") and "Traceback" not in done.stderr


@pytest.mark.parametrize("experiment, layers, nhid, bptt, batch", [
    ("ptb_lstm_small", 2, 200, 20, 20), ("ptb_lstm_medium", 2, 650, 35, 20), ("ptb_cg_release", 1, 128, 35, 420),
    ("synthetic_lm", 1, 64, 20, 40),
])
def test_each_experiment_file_composes_with_any_optimizer(experiment, layers, nhid, bptt, batch):
    cfg = compose_runner_config("language_modeling", f"experiment={experiment}", "optimizer=sam_adam_cm")
    assert (cfg.model.layers, cfg.model.nhid, cfg.bptt, cfg.trainer.batch_size) == (layers, nhid, bptt, batch)
    assert cfg.optimizer.name == "sam_adam_cm" and cfg.experiment_name == experiment
