"""The engine on hand-built tasks: evaluation arithmetic, NaN stops, resumption across stages, restarts.

Tasks here are tiny linear models on TensorDatasets, so each check runs in a fraction of a second;
the configs are the real ones (experiment=smoke) with small overrides.
"""

from __future__ import annotations

import json

import pytest
import torch

from experiments.engine import checkpoint
from torch import nn
from torch.utils.data import TensorDataset

from experiments.engine import NonFiniteLossError, Task, train
from tests.experiments.image_runner_helpers import (
    assert_same_training_state, compose_config, metrics_lines, summary, without_timings)


def classification(model, batch):
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits, y), len(y), {"acc": (logits.argmax(1) == y).sum()}


def blobs(n: int, seed: int) -> TensorDataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=gen)
    x = torch.randn(n, 4, generator=gen) + nn.functional.one_hot(y, 4).float() * 2
    return TensorDataset(x, y)


def dropout_task(cfg, fail_at_step: int | None = None) -> Task:
    """Two stages (continual-learning style) and a model with dropout, so resuming must restore the RNG."""
    calls = {"n": 0}

    def forward(model, batch):
        if model.training:
            calls["n"] += 1
            if calls["n"] == fail_at_step:
                raise KeyboardInterrupt("simulated kill")
        return classification(model, batch)

    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return Task(model=model, train_data=[blobs(40, 1), blobs(24, 2)], eval_data={"test": blobs(30, 3)},
                forward=forward)


SMALL = ("trainer.batch_size=8", "trainer.epochs=2", "trainer.max_steps=null", "trainer.log_interval=3",
         "trainer.eval_interval=5", "trainer.checkpoint_interval=4", "trainer.flatness_interval=7",
         "trainer.flatness_batch_size=16", "optimizer.lr=0.01")


def test_evaluation_divides_the_summed_statistics_by_the_item_count(tmp_path):
    # A fixed model (lr 0) whose logits are the inputs: accuracy and loss follow from the data by hand.
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0], [5.0, 4.0], [0.0, 2.0], [1.0, 0.5], [0.2, 0.1]])
    y = torch.tensor([0, 0, 1, 1, 1, 0, 1])
    correct_by_hand = 4  # items 0, 2, 4, 5 have the larger logit at their label
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    task = Task(model=model, train_data=TensorDataset(x, y), eval_data={"test": TensorDataset(x, y)},
                forward=classification, derive=lambda m: {"error": 1 - m["acc"]})
    # lr 1e-30: the weights stay the identity to float32 precision (lr 0 is refused as a run that cannot learn).
    cfg = compose_config("optimizer=sgd", "optimizer.lr=1e-30", "optimizer.momentum=0.0", "trainer.batch_size=3",
                         "trainer.flatness_at_end=false")
    result = train(cfg, lambda _: task, tmp_path)

    expected_loss = float(nn.functional.cross_entropy(x, y))  # the mean over all 7 items, batches of 3, 3, 1
    assert result.summary["test_acc"] == pytest.approx(correct_by_hand / 7, abs=1e-12)
    assert result.summary["test_error"] == pytest.approx(1 - correct_by_hand / 7, abs=1e-12)
    assert result.summary["test_loss"] == pytest.approx(expected_loss, rel=1e-6)
    assert result.summary["top_hessian_eigenvalue"] is None  # not measured


def test_a_nonfinite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    def forward(model, batch):
        loss, count, stats = classification(model, batch)
        calls.append(1)
        return (loss * float("nan") if len(calls) == 7 else loss), count, stats

    calls = []
    task = Task(model=nn.Linear(4, 3), train_data=blobs(64, 0), eval_data={}, forward=forward)
    cfg = compose_config("trainer.batch_size=4", "trainer.log_interval=2", "trainer.checkpoint_interval=3",
                         "trainer.eval_interval=100", "trainer.flatness_at_end=false")
    with pytest.raises(NonFiniteLossError, match=r"nan at step 7 .*optimizer.lr.*grad_clip.*checkpoint \(step 6\)"):
        train(cfg, lambda _: task, tmp_path)

    saved = checkpoint.read(tmp_path)
    assert saved["progress"]["step"] == 6 and not saved["progress"]["finished"]
    assert [line["step"] for line in metrics_lines(tmp_path)] == [2, 4, 6]
    assert not (tmp_path / "summary.json").exists()


def test_an_interrupted_two_stage_run_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = compose_config(*SMALL)
    # 40 and 24 items in batches of 8, two epochs each: 10 + 6 steps. The kill comes in step 16, after
    # step 15's metrics line; the last checkpoint (step 12) is mid-way through stage 1's first epoch.
    with pytest.raises(KeyboardInterrupt):
        train(cfg, lambda c: dropout_task(c, fail_at_step=16), tmp_path / "resumed")
    assert checkpoint.read(tmp_path / "resumed")["progress"]["step"] == 12
    assert metrics_lines(tmp_path / "resumed")[-1]["step"] == 15  # to be cut back to step 12 on resume
    resumed = train(cfg, dropout_task, tmp_path / "resumed")
    uninterrupted = train(cfg, dropout_task, tmp_path / "uninterrupted")

    assert_same_training_state(tmp_path / "resumed", tmp_path / "uninterrupted")
    assert without_timings(resumed.summary) == without_timings(uninterrupted.summary)
    lines = metrics_lines(tmp_path / "resumed")
    assert [without_timings(x) for x in lines] == [without_timings(x) for x in metrics_lines(tmp_path / "uninterrupted")]
    # Evaluations at every 5th step and at the end of each stage (steps 10 and 16), with the stage named.
    assert [x["step"] for x in lines if "test_acc" in x] == [5, 10, 15, 16]
    assert [x["stage"] for x in lines if "test_acc" in x] == [1, 1, 2, 2]  # counted from 1
    assert [x["step"] for x in lines if "top_hessian_eigenvalue" in x] == [7, 14, 16]


def test_a_finished_run_started_again_trains_no_further(tmp_path):
    cfg = compose_config(*SMALL)
    first = train(cfg, dropout_task, tmp_path)
    metrics_before = (tmp_path / "metrics.jsonl").read_bytes()
    again = train(cfg, lambda c: dropout_task(c, fail_at_step=1), tmp_path)  # would raise if it trained
    assert again.summary == first.summary == summary(tmp_path)
    assert (tmp_path / "metrics.jsonl").read_bytes() == metrics_before
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))


def test_a_folder_holding_a_run_of_another_config_is_refused(tmp_path):
    train(compose_config(*SMALL), dropout_task, tmp_path)
    with pytest.raises(ValueError, match=r"different config \(optimizer.lr: 0.01 in the folder, 0.02 now\)"):
        train(compose_config(*SMALL, "optimizer.lr=0.02"), dropout_task, tmp_path)
    # Where data lives and how it is loaded may change.
    train(compose_config(*SMALL, "trainer.num_workers=1", "data_dir=elsewhere"), dropout_task, tmp_path)


def test_config_yaml_holds_the_resolved_config(tmp_path):
    train(compose_config(*SMALL, "run_name=x_${seed}"), dropout_task, tmp_path)
    text = (tmp_path / "config.yaml").read_text()
    assert "run_name: x_0" in text and "${" not in text
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "finished"


def scripted_losses_task(losses_by_stage: list[list[float]]) -> Task:
    """Two-feature data in one or more stages whose training losses follow a script (gradients are zero)."""
    script = iter([loss for stage in losses_by_stage for loss in stage])

    def forward(model, batch):
        x, y = batch
        value = next(script) if model.training else 1.0
        return model(x).sum() * 0 + value, len(y), {}

    stages = [blobs(4 * len(stage), i) for i, stage in enumerate(losses_by_stage)]
    return Task(model=nn.Linear(4, 3), train_data=stages if len(stages) > 1 else stages[0],
                eval_data={}, forward=forward)


@pytest.mark.parametrize("losses, warned", [
    ([[1.0, 0.8, 1.2]], True),  # one stage ending above its first loss: diverged
    ([[1.0, 0.8, 0.5]], False),
    ([[1.0, 0.5, 0.2], [3.0, 2.5, 2.0]], False),  # a new task starts higher: compared with its own first loss
    ([[1.0, 0.5, 0.2], [3.0, 2.5, 3.5]], True),
])
def test_a_run_ending_above_the_first_loss_of_its_last_stage_is_flagged(tmp_path, losses, warned):
    cfg = compose_config("trainer.batch_size=4", "trainer.epochs=1", "trainer.max_steps=null",
                         "trainer.log_interval=1", "trainer.flatness_at_end=false", "optimizer=sgd")
    summary_ = train(cfg, lambda _: scripted_losses_task(losses), tmp_path).summary
    assert bool(summary_["warnings"]) == warned
    if warned:
        assert f"({losses[-1][-1]:.4g}) is above" in summary_["warnings"][0]
