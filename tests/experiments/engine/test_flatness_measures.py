"""The flatness measures the engine logs at the end (trainer.hessian_top_k, trainer.sharpness_rho) on a
least-squares problem whose Hessian is known: X = diag(1, 2, 3, 4), L(w) = mean (Xw − y)², H = (2/4) XᵀX =
diag(0.5, 2, 4.5, 8), trained by SGD to its minimum (L = 0, ∇L = 0), where ε-sharpness is ½ρ²λ_max and the
mean increase on the ρ-sphere has expectation ½ρ² tr(H) / 4."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from experiments.engine import Task, train
from experiments.options import UserError
from tests.experiments.image_runner_helpers import compose_config, metrics_lines


def regression(model, batch):
    x, y = batch
    return (model(x).squeeze(1) - y).pow(2).mean(), len(y), {}


def test_eigenvalues_ratio_and_sharpness_match_the_quadratic(tmp_path):
    torch.manual_seed(0)
    x, y = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.randn(4)
    task = Task(model=nn.Linear(4, 1, bias=False), train_data=TensorDataset(x, y), eval_data={}, forward=regression)
    rho = 0.01
    # lr 2 / (λ_min + λ_max): the error shrinks by 7.5 / 8.5 a step, to 1e-8 in 150 steps.
    cfg = compose_config("optimizer=sgd", "optimizer.lr=0.235", "optimizer.momentum=0.0", "trainer.batch_size=4",
                         "trainer.max_steps=150", "trainer.log_interval=50", "scheduler=constant",
                         "trainer.flatness_at_end=true", "trainer.flatness_batch_size=4", "trainer.flatness_max_iter=50",
                         "trainer.hessian_top_k=2", f"trainer.sharpness_rho={rho}", "trainer.sharpness_samples=100")
    summary = train(cfg, lambda _: task, tmp_path).summary
    assert summary["train_loss"] < 1e-10  # at the minimum: the gradient is 0
    assert summary["top_hessian_eigenvalue"] == pytest.approx(8.0, rel=1e-3)
    assert summary["hessian_eigenvalue_k"] == pytest.approx(4.5, rel=1e-4)
    assert summary["hessian_eigenvalue_ratio"] == pytest.approx(8.0 / 4.5, rel=1e-4)
    assert summary["epsilon_sharpness"] == pytest.approx(0.5 * rho**2 * 8.0, rel=1e-2)
    # 100 antithetic pairs: the sample mean's standard deviation is 4.4% of ½ρ²·15/4 (uniform directions in 4-D).
    assert summary["average_sharpness"] == pytest.approx(0.5 * rho**2 * 15 / 4, rel=0.18)
    [line] = [x for x in metrics_lines(tmp_path) if "epsilon_sharpness" in x]
    assert line["step"] == 150


def test_without_them_only_the_top_eigenvalue_is_measured(tmp_path):
    torch.manual_seed(0)
    x, y = torch.diag(torch.tensor([1.0, 2.0, 3.0, 4.0])), torch.randn(4)
    task = Task(model=nn.Linear(4, 1, bias=False), train_data=TensorDataset(x, y), eval_data={}, forward=regression)
    cfg = compose_config("optimizer=sgd", "optimizer.lr=0.2", "optimizer.momentum=0.0", "trainer.batch_size=4",
                         "trainer.max_steps=2", "trainer.flatness_batch_size=4")
    summary = train(cfg, lambda _: task, tmp_path).summary
    assert summary["top_hessian_eigenvalue"] == pytest.approx(8.0, rel=1e-3)
    assert not {"hessian_eigenvalue_k", "epsilon_sharpness", "average_sharpness"} & set(summary)


@pytest.mark.parametrize("override, message", [
    ("trainer.hessian_top_k=0", r"trainer.hessian_top_k=0 .*integer >= 1"),
    ("trainer.sharpness_rho=0", r"trainer.sharpness_rho=0 .*> 0"),
    ("trainer.sharpness_samples=0", r"trainer.sharpness_samples=0 .*integer >= 1"),
])
def test_a_bad_flatness_setting_is_one_clear_error_before_training(tmp_path, override, message):
    x, y = torch.eye(4), torch.zeros(4)
    task = Task(model=nn.Linear(4, 1, bias=False), train_data=TensorDataset(x, y), eval_data={}, forward=regression)
    with pytest.raises(UserError, match=message):
        train(compose_config("optimizer=sgd", "trainer.batch_size=4", "trainer.max_steps=2", override),
              lambda _: task, tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()
