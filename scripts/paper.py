"""The paper's tables and figures, one definition each (configs/paper/<name>.yaml), from launch to results.

    python scripts/paper.py list                           # every result: what it is, its runs, status, compute
    python scripts/paper.py run cifar10 [--launcher local|slurm|print] [--mini]
    python scripts/paper.py collect cifar10 [--mini]       # runs -> results/paper[_mini]/cifar10/
    python scripts/paper.py run all --mini                 # every result at toy scale on embedded data, then collect
    python scripts/paper.py index                          # results/README.md: every result, command, status

A definition's `sweeps` are Hydra multiruns of one runner (every run is also reproducible by its own
command line); runs land in runs/paper[_mini]/<name>/<sweep>/<overrides>. `collect` chooses every tuned
value on validation (scripts/make_tables.py) and draws the definition's figures. `--mini` runs the
definition's `mini` sweeps: the same pipeline at toy scale on embedded data, a check of the pipeline and
never the paper's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import claims  # noqa: E402
import collect_results  # noqa: E402
import make_tables  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFINITIONS = REPO / "configs" / "paper"
KINDS = ("table", "curves", "lr_sensitivity", "ablation", "overhead")
STEP_TIMES = REPO / "results" / "paper" / "step_times.json"  # measured seconds per step, by runner/experiment
OUTPUT = REPO  # where runs/ and results/ go (--root elsewhere, e.g. for a test)
MINI_BANNER = "**Pipeline check at toy scale on embedded data, not the paper's numbers.**"


def definitions() -> dict[str, dict]:
    found = {}
    for path in sorted(DEFINITIONS.glob("*.yaml")):
        definition = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        if definition.get("kind") not in KINDS:
            raise SystemExit(f"error: {path}: kind={definition.get('kind')!r}; valid kinds: {', '.join(KINDS)}.")
        found[path.stem] = definition
    return found


def sweeps(definition: dict, mini: bool) -> list[tuple[str, dict[str, list]]]:
    """(runner, {key: values}) of each multirun; a sweep may name its own runner."""
    source = definition["mini"] if mini else definition
    result = []
    for sweep in source["sweeps"]:
        sweep = dict(sweep)
        runner = sweep.pop("runner", definition.get("runner"))
        result.append((runner, {k: v if isinstance(v, list) else [v] for k, v in sweep.items()}))
    return result


def run_count(definition: dict, mini: bool) -> int:
    return sum(math.prod(len(v) for v in grid.values()) for _, grid in sweeps(definition, mini))


def runs_dir(name: str, mini: bool) -> Path:
    return OUTPUT / "runs" / ("paper_mini" if mini else "paper") / name


def results_dir(name: str, mini: bool) -> Path:
    return OUTPUT / "results" / ("paper_mini" if mini else "paper") / name


def shown(path: Path) -> str:
    """A path relative to the repository when inside it (what results/ files and commands show)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def commands(name: str, definition: dict, mini: bool, launcher: str) -> list[list[str]]:
    """One `python -m experiments.<runner> -m ...` per sweep."""
    result = []
    for index, (runner, grid) in enumerate(sweeps(definition, mini)):
        argv = [sys.executable, "-m", f"experiments.{runner}", "-m",
                f"hydra.sweep.dir={shown(runs_dir(name, mini))}/{index}"]
        if launcher == "slurm":
            argv.append("hydra/launcher=slurm")
        argv += [f"{key}={','.join(_text(v) for v in values)}" for key, values in grid.items()]
        result.append(argv)
    return result


def _text(value) -> str:
    return json.dumps(value).replace(" ", "") if isinstance(value, (list, dict, bool)) else str(value)


def run(name: str, definition: dict, mini: bool, launcher: str) -> None:
    for argv in commands(name, definition, mini, launcher):
        shown = " ".join(argv[1:] if argv[0] == sys.executable else argv)
        if launcher == "print":
            print(f"python {shown}")
            continue
        print(f"[{name}] python {shown}", flush=True)
        done = subprocess.run(argv, cwd=REPO)
        if done.returncode != 0:
            print(f"[{name}] a run of this sweep failed (exit {done.returncode}); the table will say which.",
                  file=sys.stderr)


# ---- collect -----------------------------------------------------------------------------------------

def collect(name: str, definition: dict, mini: bool) -> Path:
    source, out = runs_dir(name, mini), results_dir(name, mini)
    if not source.exists():
        raise SystemExit(f"error: no runs for {name} in {shown(source)}; "
                         f"run `python scripts/paper.py run {name}{' --mini' if mini else ''}` first.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    kind = definition["kind"]
    notes = []
    title = f"Mini, embedded data (not the paper's numbers): {definition['title']}" if mini else definition["title"]
    if kind == "overhead":
        notes.append(write_overhead(source, out))
    else:
        report = definition.get("report", [])
        rows = make_tables.make_tables([source], out, definition.get("tune", []),
                                       report=[report] if isinstance(report, str) else report)
        stated = definition.get("claims", [])
        notes += claims.verdicts(rows, definition.get("mini", {}).get("claims", stated) if mini else stated, mini)
        if kind == "curves":
            notes.append(draw_curves(rows, definition["curve"], out / "curves.png", title))
        if kind == "lr_sensitivity":
            notes.append(draw_lr_sensitivity(rows, out / "lr_sensitivity.png", title))
        if kind == "ablation":
            notes.append(draw_ablation(rows, definition["ablate"], out / "ablation.png", title))
        notes += copy_accuracy_matrices(rows, out)
    # Loaded (and warned about) once already, by make_tables or write_overhead.
    finished = [r for r in (collect_results.load_run(d, warn=False) for d in collect_results.find_runs([source]))
                if r is not None]
    if finished:  # every finished run, one row each
        collect_results.write_csv(finished, collect_results.varying_settings(finished), out / "runs.csv")
    write_result_readme(name, definition, mini, out, notes)
    return out


def series(run_dir: Path, metric: str) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [(line["step"], line[metric]) for line in lines if metric in line]


def _figure(title: str, xlabel: str, ylabel: str):
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
    shown_as = make_tables.metric_format(metric)
    return shown_as.scale, shown_as.header


def draw_curves(rows: list[dict], metric: str, path: Path, title: str) -> str:
    """The metric against steps for each row's selected setting: mean over seeds, band from the lowest to
    the highest seed (it stays positive on a log axis, where mean ± std may not)."""
    scale, label = _axis(metric)
    figure, axes = _figure(title, "step", label)
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


def _values(row: dict) -> str:
    return ", ".join(str(v) for v in row["best"]["values"].values())


def draw_lr_sensitivity(rows: list[dict], path: Path, title: str) -> str:
    """Validation and test metric against lr for every optimizer (every lr, no selection)."""
    kind = rows[0]["kind"]
    test = kind.report[0]
    (scale, _), (test_scale, test_label) = _axis(kind.validation), _axis(test)
    figure, axes = _figure(title, "learning rate", f"{kind.validation} (dashed) and {test_label} (solid)")
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
    figure, axes = _figure(title, key, f"{label} at the lr chosen on validation")
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


def write_overhead(source: Path, out: Path) -> str:
    """Step time and optimizer-state bytes of each optimizer divided by Adam's, per runner and model."""
    runs = [make_tables.load_attempt(d, []) for d in make_tables.attempted_runs([source])]
    by_model = defaultdict(dict)
    for run in runs:
        data, model, optimizer = run["identity"]
        by_model[(data, model)][optimizer] = None if run["failed"] else run["summary"]
    lines = ["| data | model | optimizer | step time / Adam | optimizer state / Adam | step time (ms) |",
             "|---|---|---|---|---|---|"]
    for (data, model), summaries in sorted(by_model.items(), key=lambda kv: str(kv[0])):
        adam = summaries.get("adam")
        for optimizer, s in sorted(summaries.items()):
            if s is None:
                lines.append(f"| {data} | {model} | {optimizer} | failed (no summary.json) | — | — |")
                continue
            time_ratio = f"{s['step_time_s'] / adam['step_time_s']:.2f}" if adam else "—"
            state_ratio = (f"{s['optimizer_state_bytes'] / adam['optimizer_state_bytes']:.2f}"
                           if adam and adam.get("optimizer_state_bytes") else "—")
            lines.append(f"| {data} | {model} | {optimizer} | {time_ratio} | {state_ratio} | "
                         f"{1000 * s['step_time_s']:.1f} |")
    (out / "table.md").write_text(
        "<!-- Generated by scripts/paper.py from the runs under "
        f"{shown(source)}. Do not edit. -->\n\nStep time is the mean of the last logged window "
        "(training step: forward, backward, optimizer step); optimizer state is what the optimizer holds.\n\n"
        + "\n".join(lines) + "\n")
    return "Overhead table above, from short runs on one machine."


def write_result_readme(name: str, definition: dict, mini: bool, out: Path, notes: list[str]) -> None:
    command = f"python scripts/paper.py run {name}{' --mini' if mini else ''} && " \
              f"python scripts/paper.py collect {name}{' --mini' if mini else ''}"
    parts = [f"# {definition['title']}", "", "<!-- Generated by scripts/paper.py collect. Do not edit. -->", ""]
    if mini:
        parts += [MINI_BANNER, ""]
    parts += [f"Command: `{command}`", "", (out / "table.md").read_text().split("-->", 1)[-1].strip(), ""]
    written = [f"{what}: [{name}]({name})" for name, what in (
        ("runs.csv", "every run"), ("selection.csv", "every candidate setting and its validation score"))
        if (out / name).is_file()]
    if written:
        listed = "; ".join(written)
        parts += [n for n in notes if n] + ["", listed[0].upper() + listed[1:] + "."]
    else:
        parts += [n for n in notes if n]
    (out / "README.md").write_text("\n".join(parts).rstrip() + "\n")


# ---- measured step times -----------------------------------------------------------------------------

def measure(names: list[str], device: str, max_batch: int, steps: int) -> Path:
    """Seconds per training step (forward, backward, adam_cm step) of every experiment the definitions'
    full sweeps use, on random inputs of the real shapes, keyed "<runner>/<experiment>"; batches above
    `max_batch` are timed at `max_batch` and scaled linearly."""
    import torch

    import cmopt
    from hydra import compose, initialize_config_dir

    measured = step_times()
    wanted = sorted({(runner, experiment) for name in names for runner, grid in sweeps(definitions()[name], False)
                     for experiment in grid["experiment"]})
    for runner, experiment in wanted:
        name = f"{runner}/{experiment}"
        with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
            cfg = compose(runner, overrides=[f"experiment={experiment}"])
        model, batch, loss_fn = _model_and_batch(runner, cfg, min(cfg.trainer.batch_size, max_batch), device)
        optimizer = cmopt.create_optimizer("adam_cm", model, lr=1e-4)
        times = []
        for _ in range(steps + 1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            started = time.perf_counter()
            loss_fn(model, batch).backward()
            optimizer.step()
            optimizer.zero_grad()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        scale = cfg.trainer.batch_size / min(cfg.trainer.batch_size, max_batch)
        label = f"{device} ({torch.cuda.get_device_name() if device.startswith('cuda') else _cpu_name()})"
        measured.setdefault(name, {})[label] = statistics.median(times[1:]) * scale
        print(f"{name}: {measured[name][label]:.3g} s/step on {label}", flush=True)
    STEP_TIMES.parent.mkdir(parents=True, exist_ok=True)
    STEP_TIMES.write_text(json.dumps(measured, indent=1, sort_keys=True) + "\n")
    return STEP_TIMES


def _cpu_name() -> str:
    import os

    names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
             if line.startswith("model name")] if Path("/proc/cpuinfo").is_file() else ["CPU"]
    return f"{names[0] if names else 'CPU'}, {os.cpu_count()} cores"


def _model_and_batch(runner: str, cfg, batch_size: int, device: str):
    import torch
    from torch.nn.functional import cross_entropy

    if runner == "language_modeling":
        from experiments.models.language import build_language_model

        vocab = 10_000  # Penn Treebank's
        model = build_language_model(**cfg.model, vocab_size=vocab).to(device)
        tokens = torch.randint(0, vocab, (cfg.bptt + 1, batch_size), device=device)

        def loss(m, b):
            logits, _ = m(b[:-1], m.initial_hidden(batch_size))
            return cross_entropy(logits.reshape(-1, vocab), b[1:].reshape(-1))

        return model, tokens, loss
    if runner == "online_learning":
        from experiments.models.continual import build_continual_model

        size = 64 if cfg.benchmark.name == "tiny_imagenet" else 32
        model = build_continual_model(**cfg.model, num_classes=200, image_shape=(3, size, size)).to(device)
    else:
        from experiments.models.images import build_image_model

        size = cfg.dataset.get("image_size", 32) if cfg.dataset.name == "imagenet" else 32
        classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(cfg.dataset.name, 10)
        model = build_image_model(**cfg.model, num_classes=classes).to(device)
    images = torch.randn(batch_size, 3, size, size, device=device)
    labels = torch.randint(0, 10, (batch_size,), device=device)
    return model, (images, labels), lambda m, b: cross_entropy(m(b[0]), b[1])


# ---- list and index ----------------------------------------------------------------------------------

def step_times() -> dict:
    return json.loads(STEP_TIMES.read_text()) if STEP_TIMES.is_file() else {}


def compute_estimate(name: str, definition: dict) -> str:
    """Runs x steps x the step time measured for each run's experiment (SAM runs count twice: two passes),
    on each device measured, in hours; evaluations are not counted."""
    measured, total_steps = step_times(), run_count(definition, mini=False) * definition["steps_per_run"]
    seconds: dict[str, float] = defaultdict(float)
    complete = True
    for runner, grid in sweeps(definition, mini=False):
        others = math.prod(len(v) for k, v in grid.items() if k not in ("experiment", "optimizer"))
        passes = sum(2 if o.startswith("sam_") else 1 for o in grid.get("optimizer", ["adam"]))
        for experiment in grid["experiment"]:
            times = measured.get(f"{runner}/{experiment}")
            if not times:
                complete = False
                continue
            for device, step_s in times.items():
                seconds[device] += others * passes * definition["steps_per_run"] * step_s
    parts = [f"{total_steps:,} steps"]
    parts += [f"~{total / 3600:,.0f} h on {device}" for device, total in sorted(seconds.items())]
    return "; ".join(parts) if seconds and complete else parts[0] + " (step time not measured)"


def status(name: str) -> str:
    here = [label for label, mini in (("ran at mini scale", True), ("ran in full", False))
            if (results_dir(name, mini) / "README.md").is_file()]
    return ", ".join(here) or "not run"


def list_definitions() -> None:
    for name, definition in definitions().items():
        print(f"{name:22s} {definition['title']}")
        print(f"{'':22s} kind {definition['kind']}; {run_count(definition, False)} runs "
              f"(mini: {run_count(definition, True)}); status: {status(name)}")
        print(f"{'':22s} compute: {compute_estimate(name, definition)}")


def write_index() -> Path:
    lines = ["# Results", "", "<!-- Generated by `python scripts/paper.py index`. Do not edit. -->", "",
             "Every result of the paper, as one definition in `configs/paper/<name>.yaml`. `run` launches its "
             "sweeps (Hydra multiruns; `--launcher slurm` for a cluster, `--launcher print` for the commands), "
             "`collect` selects every tuned value on validation and writes `results/paper/<name>/`. The mini "
             "versions run the same pipeline at toy scale on embedded data "
             "([`paper_mini/`](paper_mini/)): they check the pipeline, they are not the paper's numbers.", "",
             "Compute: runs × steps × the training-step time that `python scripts/paper.py measure` measured for "
             "each run's model (adam_cm on random inputs of the real shapes; batches above 32 timed at 32 and "
             "scaled; SAM runs counted twice; evaluations not counted), kept in "
             "[`paper/step_times.json`](paper/step_times.json) with the machine. No GPU has measured it yet: "
             "`measure --device cuda` adds one.", "",
             "| result | what | runs | status here | compute for the full runs | command |", "|---|---|---|---|---|---|"]
    for name, definition in definitions().items():
        link = (f"[{name}](paper_mini/{name}/README.md)" if (results_dir(name, True) / "README.md").is_file()
                else name)
        lines.append(f"| {link} | {definition['title']} | {run_count(definition, False)} | {status(name)}"
                     f"{'' if (results_dir(name, False) / 'README.md').is_file() else '; full runs need GPUs'} | "
                     f"{compute_estimate(name, definition)} | `python scripts/paper.py run {name}` |")
    lines += ["", "Other generated results: [toy/](toy/) (`make reproduce`), [bench/](bench/) (`make bench`), "
                  "and the synthetic sweeps of each runner ([image_classification_synthetic/]"
                  "(image_classification_synthetic/), [language_modeling_synthetic/](language_modeling_synthetic/),"
                  " [online_learning_synthetic/](online_learning_synthetic/))."]
    path = OUTPUT / "results" / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every result, its runs, status and compute estimate")
    for verb in ("run", "collect"):
        p = sub.add_parser(verb)
        p.add_argument("name", help="a definition in configs/paper/, or all")
        p.add_argument("--mini", action="store_true", help="the toy-scale version on embedded data")
        if verb == "run":
            p.add_argument("--launcher", choices=("local", "slurm", "print"), default="local")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="where runs/ and results/ go (default: the repository)")
    sub.add_parser("index", help="write results/README.md")
    p = sub.add_parser("measure", help="time training steps of each result's model -> results/paper/step_times.json")
    p.add_argument("names", nargs="*", help="definitions (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch", type=int, default=32, help="time larger batches at this size, scaled")
    p.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    global OUTPUT
    OUTPUT = args.root.resolve()
    if args.command == "measure":
        names = args.names or [n for n in definitions() if n != "overhead"]
        return print(f"wrote {measure(names, args.device, args.max_batch, args.steps).relative_to(REPO)}")
    if args.command == "list":
        return list_definitions()
    if args.command == "index":
        return print(f"wrote {shown(write_index())}")
    known = definitions()
    names = list(known) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown result {unknown[0]!r}; the definitions are: {', '.join(known)}, all")
    started, failed = time.perf_counter(), []
    for name in names:
        if args.command == "run":
            run(name, known[name], args.mini, args.launcher)
        if args.command == "collect" or args.launcher == "local":
            try:
                print(f"[{name}] collected in {shown(collect(name, known[name], args.mini))}")
            except SystemExit as error:  # one result without runs does not stop the others
                print(f"[{name}] {error}", file=sys.stderr)
                failed.append(name)
    if args.command == "collect" or args.launcher == "local":
        write_index()
    print(f"done in {time.perf_counter() - started:.0f} s" + (f"; no results for {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
