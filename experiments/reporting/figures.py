"""The figures of a definition's results, from its selected rows (select.select): curves over training,
learning-rate sensitivity, ablations, and the online runs' accuracy-matrix heat-maps. Each returns the
README line that shows it."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from experiments.reporting.select import metric_format


def series(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [(line["step"], line[metric]) for line in lines if metric in line]


def new_figure(title: str, xlabel: str, ylabel: str):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    return figure, axes


def _label(row: dict) -> str:
    """'optimizer (model, other settings of the row)': a definition may hold several models."""
    _, model, optimizer = row["group"][:3]
    details = [str(model), *(f"{k.split('.')[-1]}={v}" for k, v in row["fixed"].items())]
    return f"{optimizer} ({', '.join(details)})"


def _axis(metric: str) -> tuple[float, str]:
    """(scale, axis label) of a metric as its table shows it: a fraction in % where the table has %."""
    shown_as = metric_format(metric)
    return shown_as.scale, shown_as.header


def _values(row: dict) -> str:
    return ", ".join(str(v) for v in row["best"]["values"].values())


def draw_curves(rows: list[dict], metric: str, path: Path, title: str) -> str:
    """The metric against steps for each row's selected setting: mean over seeds, band from the lowest to
    the highest seed (it stays positive on a log axis, where mean ± std may not)."""
    scale, label = _axis(metric)
    figure, axes = new_figure(title, "step", label)
    if "ppl" in metric:
        axes.set_yscale("log")  # perplexity falls by orders of magnitude early on
    for row in rows:
        if row["best"] is None:
            continue
        runs = [series(r["run_dir"], metric) for r in row["best"]["finished"]]
        steps = sorted(set.intersection(*(set(s for s, _ in run) for run in runs))) if runs else []
        if not steps:
            continue
        values = [[scale * dict(run)[s] for run in runs] for s in steps]
        line, = axes.plot(steps, [statistics.mean(v) for v in values], label=f"{_label(row)}, lr {_values(row)}")
        axes.fill_between(steps, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                          alpha=0.2)
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return (f"![{metric} over training]({path.name}): mean over seeds of each selected setting, band from the "
            "lowest to the highest seed.")


def draw_lr_sensitivity(rows: list[dict], path: Path, title: str) -> str:
    """Validation and test metric against lr for every optimizer (every lr, no selection)."""
    kind = rows[0]["kind"]
    test = kind.report[0]
    (scale, _), (test_scale, test_label) = _axis(kind.validation), _axis(test)
    figure, axes = new_figure(title, "learning rate", f"{kind.validation} (dashed) and {test_label} (solid)")
    axes.set_xscale("log")
    for row in rows:
        points = []
        for c in row["candidates"]:
            lr = c["values"].get("optimizer.lr")
            vals = [scale * r["summary"][kind.validation] for r in c["finished"]]
            tests = [test_scale * r["summary"][test] for r in c["finished"] if test in r["summary"]]
            if lr is not None and vals and tests:
                points.append((float(lr), statistics.mean(vals), statistics.mean(tests)))
        points.sort()
        if points:
            line, = axes.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=_label(row))
            axes.plot([p[0] for p in points], [p[1] for p in points], linestyle="--", color=line.get_color())
    axes.legend(fontsize=7)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return f"![learning-rate sensitivity]({path.name}): every lr, mean over seeds (no selection)."


def draw_ablation(rows: list[dict], key: str, path: Path, title: str) -> str:
    kind = rows[0]["kind"]
    test = kind.report[0]
    scale, label = _axis(test)
    figure, axes = new_figure(title, key, f"{label} at the lr chosen on validation")
    points = []
    for row in rows:
        if row["best"] is None or key not in row["fixed"]:
            continue
        tests = [scale * r["summary"][test] for r in row["best"]["finished"] if test in r["summary"]]
        if tests:
            points.append((float(row["fixed"][key]), statistics.mean(tests),
                           statistics.stdev(tests) if len(tests) > 1 else 0.0))
    points.sort()
    axes.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                  capsize=3)
    figure.savefig(path, dpi=120, bbox_inches="tight")
    return f"![ablation of {key}]({path.name}): mean ± std over seeds."


def copy_accuracy_matrices(rows: list[dict], out: Path) -> list[str]:
    """The online runner's accuracy-matrix heat-map of each selected setting's first seed."""
    notes = []
    for row in rows:
        if row["best"] is None:
            continue
        first = min(row["best"]["finished"], key=lambda r: r["seed"], default=None)
        if first is not None and (first["run_dir"] / "accuracy_matrix.png").is_file():
            name = f"accuracy_matrix_{row['group'][2]}.png"
            shutil.copy(first["run_dir"] / "accuracy_matrix.png", out / name)
            notes.append(f"![test accuracy matrix, {row['group'][2]}]({name})")
    return notes
