"""Continual-learning metrics from the accuracy matrix, and its heat-map.

R[i][j] is the accuracy on task j after training task i (T x T, every task evaluated after every task);
b[j] is the accuracy of the randomly initialised model on task j. In the paper's 1-based notation:

    average accuracy   A   = mean_j R[T, j]
    forgetting         F   = mean_{j<T} (max_{i<T} R[i, j] - R[T, j])      (Chaudhry et al. 2018)
    backward transfer  BWT = mean_{j<T} (R[T, j] - R[j, j])
    forward transfer   FWT = mean_{j>1} (R[j-1, j] - b_j)
    learning accuracy  LA  = mean_j R[j, j]

With one task, F, BWT and FWT are undefined (None); FWT is None too when b is not given.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Matrix = Sequence[Sequence[float]]


def continual_metrics(R: Matrix, baseline: Sequence[float] | None = None) -> dict[str, float | None]:
    """{average_accuracy, forgetting, backward_transfer, forward_transfer, learning_accuracy} of R."""
    T = check_matrix(R)
    if baseline is not None and len(baseline) != T:
        raise ValueError(f"The random-init accuracies have {len(baseline)} entries; the accuracy matrix has "
                         f"{T} tasks. Give one per task.")
    last = T - 1  # 0-based index of the final row / task
    earlier = range(last)
    return {
        "average_accuracy": mean(R[last][j] for j in range(T)),
        "forgetting": mean(max(R[i][j] for i in earlier) - R[last][j] for j in earlier) if T > 1 else None,
        "backward_transfer": mean(R[last][j] - R[j][j] for j in earlier) if T > 1 else None,
        "forward_transfer": (mean(R[j - 1][j] - baseline[j] for j in range(1, T))
                             if T > 1 and baseline is not None else None),
        "learning_accuracy": mean(R[j][j] for j in range(T)),
    }


def check_matrix(R: Matrix) -> int:
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError(f"The accuracy matrix must be square and non-empty, one row per trained task and "
                         f"one column per task; got row lengths {[len(row) for row in R]}.")
    bad = [(i, j, v) for i, row in enumerate(R) for j, v in enumerate(row)
           if not isinstance(v, numbers.Real) or not math.isfinite(v)]
    if bad:
        raise ValueError(f"The accuracy matrix holds non-finite or missing entries at (row, column, value) "
                         f"{bad[:5]}; evaluate every task after every task.")
    return T


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def plot_accuracy_matrix(R: Matrix, task_names: Sequence[str], path: str | Path, split: str = "test") -> Path:
    """A heat-map PNG of R at `path`: rows 'after training', columns 'evaluated on', values in the cells;
    `split` names the split R was measured on."""
    T = check_matrix(R)
    if len(task_names) != T:
        raise ValueError(f"{len(task_names)} task names for a {T}x{T} accuracy matrix; give one per task.")
    figure = Figure(figsize=(1.2 + 0.75 * T, 1.0 + 0.65 * T))
    FigureCanvasAgg(figure)  # the Agg canvas, whatever pyplot's backend
    axes = figure.add_subplot()
    image = axes.imshow(R, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(T):
        for j in range(T):
            axes.text(j, i, f"{R[i][j]:.2f}", ha="center", va="center", fontsize=8,
                      color="black" if R[i][j] > 0.6 else "white")
    axes.set_xticks(range(T), task_names, rotation=45, ha="right")
    axes.set_yticks(range(T), task_names)
    axes.set_xlabel("evaluated on task")
    axes.set_ylabel("after training task")
    axes.set_title(f"Accuracy matrix R[i, j] on the {split} split")
    figure.colorbar(image, ax=axes, label=f"{split} accuracy")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path
