"""Figures 1-5 as PNG, drawn from the experiments' JSON results alone (every plotted number is in the JSON)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure  # figures without pyplot: no backend or global state to manage

from experiments.toy import optimizer_label
from experiments.toy.functions import GOLDSTEIN_PRICE_MINIMA, flat_sharp
from experiments.toy.search import LANDSCAPES

# Hollow markers keep overlapping lines visible.
MARKERS = {"adam": "o", "adam_cg": "s", "adam_cm": "^", "sam_adam": "v", "sam_adam_cm": "D"}
COLORS = {"adam": "tab:blue", "adam_cg": "tab:orange", "adam_cm": "tab:green", "sam_adam": "tab:purple",
          "sam_adam_cm": "tab:red", "heavy_ball": "tab:blue", "sgd_cm": "tab:green", "adam_cm_debiased": "tab:olive"}
DPI = 110


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})  # no version stamp: reruns give the same bytes


def _contour(ax, problem: str, low: tuple[float, float], high: tuple[float, float], log: bool):
    """Filled contours of the problem's loss (log10 of it if `log`); returns them for a colour bar."""
    x = np.linspace(low[0], high[0], 300)
    y = np.linspace(low[1], high[1], 300)
    grid = torch.tensor(np.stack(np.meshgrid(x, y), axis=-1))
    values = LANDSCAPES[problem].loss(grid).numpy()
    shown = np.log10(values) if log else values
    filled = ax.contourf(x, y, shown, levels=30, cmap="Greys_r", alpha=0.75)
    ax.contour(x, y, shown, levels=15, colors="white", linewidths=0.3, alpha=0.6)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_aspect("equal")
    return filled


def _trajectories(result: dict[str, Any], optimizer: str, seed: int | None = None) -> list[dict[str, Any]]:
    return [t for t in result["trajectories"] if t["optimizer"] == optimizer and (seed is None or t["seed"] == seed)]


def figure_goldstein_price(result: dict[str, Any], path: Path) -> None:
    settings = result["settings"]
    optimizers = settings["optimizers"]
    fig = Figure(figsize=(3.6 * len(optimizers), 4.2), layout="constrained")
    axes = fig.subplots(1, len(optimizers), sharey=True, squeeze=False)
    starts = [tuple(s) for s in settings["figure_starts"]]
    start_colors = colormaps["tab10"](np.arange(len(starts)))
    for ax, optimizer in zip(axes[0], optimizers):
        filled = _contour(ax, "goldstein_price", (-2, -2), (2, 2), log=True)
        for trajectory in _trajectories(result, optimizer):
            points = np.array(trajectory["points"])
            color = start_colors[starts.index(tuple(trajectory["start"]))]
            ax.plot(points[:, 0], points[:, 1], "-", color=color, linewidth=1.2)
            ax.plot(*points[0], "o", color=color, markersize=5)
            ax.plot(*points[-1], "s", color=color, markeredgecolor="black", markersize=6)
        minima = np.array(GOLDSTEIN_PRICE_MINIMA)
        ax.plot(*minima[0], "*", color="gold", markeredgecolor="black", markersize=14, label="global minimum")
        ax.plot(minima[1:, 0], minima[1:, 1], "x", color="red", markersize=7, label="local minima")
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
        ax.set_title(optimizer_label(optimizer))
    axes[0][-1].plot([], [], "ko", markersize=5, label="start")
    axes[0][-1].plot([], [], "ks", markersize=6, label="end (a colour per start)")
    fig.legend(*axes[0][-1].get_legend_handles_labels(), loc="outside lower center", ncols=4)
    fig.colorbar(filled, ax=axes[0].tolist(), label="log10 loss", shrink=0.8)
    fig.suptitle(f"Figure 1. Goldstein-Price: each optimizer's trajectories from {len(starts)} starts "
                 f"(lr={settings['lr']}, {settings['steps']} steps, same for all)")
    _save(fig, path)


def figure_ackley_first_steps(result: dict[str, Any], path: Path) -> None:
    settings = result["settings"]
    shown = [o for o in ("adam_cg", "adam_cm") if o in settings["optimizers"]] or settings["optimizers"]
    steps = settings["first_steps"]
    paths = {o: np.array(_trajectories(result, o, seed=0)[0]["points"][: steps + 1]) for o in shown}
    every = np.concatenate(list(paths.values()))
    margin = 0.3
    low, high = every.min(axis=0) - margin, every.max(axis=0) + margin
    fig = Figure(figsize=(8.5, 5.5), layout="constrained")
    ax = fig.subplots()
    filled = _contour(ax, "ackley", tuple(low), tuple(high), log=False)
    label_offsets = [(6, 6), (6, -12)]  # one side per optimizer, so the step numbers do not collide
    for (optimizer, points), offset in zip(paths.items(), label_offsets * len(paths)):
        ax.plot(points[:, 0], points[:, 1], "o-", color=COLORS[optimizer], label=optimizer_label(optimizer),
                markersize=4, linewidth=1.5)
        for step, point in enumerate(points):
            ax.annotate(str(step), point, textcoords="offset points", xytext=offset, fontsize=7,
                        color=COLORS[optimizer], fontweight="bold",
                        bbox=dict(boxstyle="round,pad=0.1", facecolor="white", edgecolor="none", alpha=0.8))
    ax.plot(*every[0], "ko", markersize=7, label="start")
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.legend(loc="best")
    fig.colorbar(filled, ax=ax, label="loss", shrink=0.75)
    ax.set_title(f"Figure 2. Ackley: the first {steps} steps of {' and '.join(map(optimizer_label, shown))}\n"
                 f"from {tuple(settings['figure_starts'][0])} (lr={settings['lr']}, noise seed 0; numbers are steps)")
    _save(fig, path)


def figure_ackley(result: dict[str, Any], path: Path) -> None:
    settings = result["settings"]
    fig = Figure(figsize=(13, 5.5), layout="constrained")
    curves, paths = fig.subplots(1, 2)
    for optimizer in settings["optimizers"]:
        losses = np.array([t["losses"] for t in _trajectories(result, optimizer)])
        mean, std = losses.mean(axis=0), losses.std(axis=0)
        steps = np.arange(len(mean))
        curves.plot(steps, mean, color=COLORS.get(optimizer), label=optimizer_label(optimizer))
        curves.fill_between(steps, mean - std, mean + std, color=COLORS.get(optimizer), alpha=0.15)
    curves.set_xlabel("step")
    curves.set_ylabel(f"training loss (mean ± std over {settings['figure_seeds']} seeds)")
    curves.set_title("loss")
    curves.legend()
    filled = _contour(paths, "ackley", (-3.5, -3.5), (3.5, 3.5), log=False)
    for optimizer in settings["optimizers"]:
        points = np.array(_trajectories(result, optimizer, seed=0)[0]["points"])
        paths.plot(points[:, 0], points[:, 1], "-", color=COLORS.get(optimizer), label=optimizer_label(optimizer),
                   linewidth=1.2)
        paths.plot(*points[-1], "s", color=COLORS.get(optimizer), markeredgecolor="black", markersize=6)
    paths.plot(*settings["figure_starts"][0], "ko", markersize=7, label="start")
    paths.plot(0, 0, "*", color="gold", markeredgecolor="black", markersize=14, label="global minimum")
    paths.set_xlim(-3.5, 3.5)
    paths.set_ylim(-3.5, 3.5)
    paths.legend(loc="lower left", fontsize=8)
    paths.set_title("trajectories of seed 0 (squares: ends)")
    fig.colorbar(filled, ax=paths, label="loss")
    fig.suptitle(f"Figure 4. Ackley from {tuple(settings['figure_starts'][0])}: every optimizer at "
                 f"lr={settings['lr']}, {settings['steps']} steps, gradient noise std {settings['noise']}")
    _save(fig, path)


def figure_quadratic(result: dict[str, Any], path: Path) -> None:
    settings = result["settings"]
    kappas = np.array(result["condition_numbers"])
    fig = Figure(figsize=(13, 5), layout="constrained")
    optimal, sweep = fig.subplots(1, 2)
    optimal.plot(kappas, 1 - np.array(result["heavy_ball_closed_form"]), "k-", linewidth=3, alpha=0.3,
                 label="heavy ball, closed form (√κ-1)/(√κ+1)")
    for method in result["optimal"]:
        label = optimizer_label(method)
        rates = [r["rate"] for r in result["optimal"][method]]
        fixed = [r["rate"] for r in result["fixed_momentum"][method]]
        optimal.plot(kappas, 1 - np.array(rates), "o-", color=COLORS[method], label=f"{label}, best lr and momentum")
        optimal.plot(kappas, 1 - np.array(fixed), "s--", color=COLORS[method],
                     label=f"{label}, best lr at momentum {settings['fixed_momentum']}")
    optimal.set_xscale("log")
    optimal.set_yscale("log")
    optimal.set_xlabel("condition number κ = L/μ")
    optimal.set_ylabel("1 - ρ*  (higher is faster)")
    optimal.set_title("optimal linear rate")
    optimal.legend(fontsize=8)
    styles = ["-", "--", ":"]
    for method, by_lr in result["lr_sweep"].items():
        for style, lr, rates in zip(styles, settings["scaled_lr_sweep"], by_lr):
            sweep.plot(kappas, rates, style, marker="o", markersize=3, color=COLORS[method],
                       label=f"{optimizer_label(method)}, lr = {lr}/L")
    sweep.axhline(1.0, color="black", linewidth=0.8)
    sweep.set_xscale("log")
    sweep.set_xlabel("condition number κ = L/μ")
    sweep.set_ylabel("spectral radius ρ  (ρ ≥ 1: diverges)")
    sweep.set_title(f"fixed learning rates, momentum {settings['fixed_momentum']}")
    sweep.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2)  # below: the curves reach ρ ≈ 1
    fig.suptitle(f"Figure 3. Quadratics: heavy-ball momentum against SGD with critical momenta "
                 f"(C={settings['capacity']}, buffer = the C most recent momenta)")
    _save(fig, path)


def figure_flat_sharp(result: dict[str, Any], path: Path) -> None:
    settings = result["settings"]
    optimizers = settings["optimizers"]
    sharpness = settings["sharpness"]
    main = [s for s in result["summary"] if s["lr"] == settings["lr"]]
    columns = max(len(optimizers), 2)
    mosaic = [["function"] * (columns // 2) + ["ratio"] * (columns - columns // 2),
              [*optimizers, *["."] * (columns - len(optimizers))]]
    fig = Figure(figsize=(3.3 * columns, 7.5), layout="constrained")
    axes = fig.subplot_mosaic(mosaic)
    landscape = {k: settings[k] for k in ("flat_minimum", "sharp_minimum", "flat_width")}
    x = np.linspace(settings["flat_minimum"] - 1, settings["sharp_minimum"] + 1, 2000)
    shades = colormaps["viridis"](np.linspace(0, 0.9, len(sharpness)))
    for s, shade in zip(sharpness, shades):
        f = flat_sharp(torch.tensor(x).unsqueeze(-1), float(s), **landscape).numpy()
        axes["function"].plot(x, f, color=shade, label=f"sharpness {s:g}")
    for barrier in result["barriers"]:
        axes["function"].axvline(barrier["point"], color="gray", linewidth=0.5, linestyle=":")
    axes["function"].set_xlabel("x")
    axes["function"].set_ylabel("loss")
    axes["function"].set_title("the loss (dotted: basin borders)")
    axes["function"].legend(fontsize=7)
    for summary in main:
        optimizer = summary["optimizer"]
        axes["ratio"].plot(sharpness, summary["escape_ratio_by_sharpness"], "-", marker=MARKERS.get(optimizer, "o"),
                           markerfacecolor="none", color=COLORS.get(optimizer), label=optimizer_label(optimizer))
    axes["ratio"].set_xscale("log", base=2)
    axes["ratio"].set_xlabel("sharpness")
    axes["ratio"].set_ylabel("escape ratio")
    axes["ratio"].set_ylim(-0.05, 1.05)
    axes["ratio"].set_title("escape ratio against sharpness")
    axes["ratio"].legend(fontsize=8)
    offsets = settings["start_offsets"]
    for summary in main:
        ax = axes[summary["optimizer"]]
        grid = np.array(summary["escape_ratio_by_sharpness_and_start"]).T  # rows: start offsets
        image = ax.imshow(grid, origin="lower", cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
        for (row, column), value in np.ndenumerate(grid):
            ax.text(column, row, f"{value:.2f}".rstrip("0").rstrip("."), ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(sharpness)), [f"{s:g}" for s in sharpness])
        ax.set_yticks(range(len(offsets)), [f"{o:g}" for o in offsets])
        ax.set_xlabel("sharpness")
        ax.set_ylabel("start offset (sharp widths)")
        ax.set_title(f"{optimizer_label(summary['optimizer'])}: escaped")
    fig.colorbar(image, ax=[axes[o] for o in optimizers], label=f"fraction of {settings['seeds']} seeds that escaped",
                 shrink=0.8)
    fig.suptitle(f"Figure 5. Escaping the sharp minimum for the flat one (lr={settings['lr']}, "
                 f"{settings['steps']} steps, gradient noise std {settings['noise']})")
    _save(fig, path)


FIGURES: dict[str, dict[str, Callable[[dict[str, Any], Path], None]]] = {
    "goldstein_price": {"figure1_goldstein_price.png": figure_goldstein_price},
    "ackley": {"figure2_ackley_first_steps.png": figure_ackley_first_steps, "figure4_ackley.png": figure_ackley},
    "quadratic": {"figure3_quadratic_rates.png": figure_quadratic},
    "flat_sharp": {"figure5_flat_sharp.png": figure_flat_sharp},
}


def draw_figures(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """Draw the experiment's figures into out_dir; returns their paths."""
    paths = []
    for name, draw in FIGURES[result["experiment"]].items():
        draw(result, out_dir / name)
        paths.append(out_dir / name)
    return paths
