"""Continual metrics on hand-written accuracy matrices, against values worked out by hand; the heat-map."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from experiments.continual_metrics import continual_metrics, plot_accuracy_matrix

R3 = [[0.9, 0.1, 0.2],
      [0.6, 0.8, 0.3],
      [0.5, 0.7, 0.95]]
B3 = [0.1, 0.05, 0.2]


def test_three_tasks_by_hand():
    metrics = continual_metrics(R3, B3)
    expected = {
        "average_accuracy": (0.5 + 0.7 + 0.95) / 3,  # last row
        "forgetting": ((0.9 - 0.5) + (0.8 - 0.7)) / 2,  # best earlier accuracy minus final, tasks 1 and 2
        "backward_transfer": ((0.5 - 0.9) + (0.7 - 0.8)) / 2,  # final minus just-learned, tasks 1 and 2
        "forward_transfer": ((0.1 - 0.05) + (0.3 - 0.2)) / 2,  # before training task j minus random init
        "learning_accuracy": (0.9 + 0.8 + 0.95) / 3,  # diagonal
    }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-12), key
    assert metrics["forgetting"] == pytest.approx(0.25)
    assert metrics["backward_transfer"] == pytest.approx(-0.25)


def test_forgetting_takes_the_best_of_all_earlier_rows():
    # Task 2 scored 0.7 before it was trained (row 1) and 0.6 right after: Chaudhry's max includes row 1.
    R = [[1.0, 0.7, 0.1],
         [0.8, 0.6, 0.2],
         [0.5, 0.3, 0.9]]
    metrics = continual_metrics(R)
    assert metrics["forgetting"] == pytest.approx(((1.0 - 0.5) + (0.7 - 0.3)) / 2)
    assert metrics["backward_transfer"] == pytest.approx(((0.5 - 1.0) + (0.3 - 0.6)) / 2)
    assert metrics["forward_transfer"] is None  # no random-init accuracies given


def test_no_forgetting_and_numpy_input():
    R = np.array([[0.8, 0.5], [0.9, 0.7]])
    metrics = continual_metrics(R.tolist(), np.array([0.5, 0.5]))
    assert metrics["forgetting"] == pytest.approx(0.8 - 0.9)  # negative: task 1 improved
    assert metrics["backward_transfer"] == pytest.approx(0.1)
    assert metrics["forward_transfer"] == pytest.approx(0.0)
    assert continual_metrics(R)["average_accuracy"] == pytest.approx(0.8)


def test_one_task_leaves_transfer_and_forgetting_undefined():
    assert continual_metrics([[0.7]], [0.1]) == {
        "average_accuracy": 0.7, "forgetting": None, "backward_transfer": None, "forward_transfer": None,
        "learning_accuracy": 0.7,
    }


def test_bad_matrices_are_refused():
    with pytest.raises(ValueError, match=r"square and non-empty.*\[2, 1\]"):
        continual_metrics([[0.1, 0.2], [0.3]])
    with pytest.raises(ValueError, match=r"square"):
        continual_metrics([])
    with pytest.raises(ValueError, match=r"\(1, 0, nan\).*evaluate every task after every task"):
        continual_metrics([[0.1, 0.2], [float("nan"), 0.3]])
    with pytest.raises(ValueError, match=r"\(0, 1, None\)"):
        continual_metrics([[0.1, None], [0.2, 0.3]])
    with pytest.raises(ValueError, match="3 entries; the accuracy matrix has 2 tasks"):
        continual_metrics([[0.1, 0.2], [0.2, 0.3]], [0.1, 0.1, 0.1])


def test_heat_map_png(tmp_path):
    path = plot_accuracy_matrix(R3, ["cifar10", "mnist", "svhn"], tmp_path / "figures" / "matrix.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 200 and image.height > 200
        pixels = np.asarray(image.convert("RGB")).astype(int)
    other = plot_accuracy_matrix([[0.1, 0.1, 0.1]] * 3, ["a", "b", "c"], tmp_path / "other.png")
    with Image.open(other) as image:
        assert np.asarray(image.convert("RGB")).shape != pixels.shape or \
            (np.asarray(image.convert("RGB")).astype(int) != pixels).any()
    with pytest.raises(ValueError, match="2 task names for a 3x3"):
        plot_accuracy_matrix(R3, ["a", "b"], tmp_path / "bad.png")


def test_the_heat_map_says_which_split_it_shows(tmp_path, monkeypatch):
    import experiments.continual_metrics as continual_metrics_module

    drawn = []

    class Recorded(continual_metrics_module.Figure):
        def savefig(self, *args, **kwargs):
            drawn.append(self)
            return super().savefig(*args, **kwargs)

    monkeypatch.setattr(continual_metrics_module, "Figure", Recorded)
    plot_accuracy_matrix(R3, ["cifar10", "mnist", "svhn"], tmp_path / "matrix.png")
    [figure] = drawn
    heat, colorbar = figure.axes
    assert heat.get_title() == "Accuracy matrix R[i, j] on the test split"
    assert colorbar.get_ylabel() == "test accuracy"
