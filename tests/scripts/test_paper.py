"""scripts/paper.py: every definition composes with its runner's real configs (full and mini), the commands
it launches are Hydra multiruns of that grid, and a mini result runs end to end (slow)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import cmopt

from experiments.reporting import collect, definitions, figures, launch, select
from experiments.reporting.definitions import override_value

REPO = Path(__file__).resolve().parents[2]
DEFINITIONS = definitions.definitions()


def test_each_ablation_holds_the_baseline_and_the_optimizers_defaults():
    """Capacity 0 (Adam+CM is then AdamW exactly) and AdamCM's own C and λ are points of the ablations, so each
    ablation compares against the plain optimizer and the setting every other result uses."""
    defaults = inspect.signature(cmopt.AdamCM).parameters
    capacities = definitions.sweeps(DEFINITIONS["ablation_capacity"], mini=False)[0][1]["optimizer.capacity"]
    decays = definitions.sweeps(DEFINITIONS["ablation_decay"], mini=False)[0][1]["optimizer.decay"]
    assert {0, defaults["capacity"].default} <= set(capacities) and len(capacities) > 2
    assert defaults["decay"].default in decays and len(decays) > 2


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
@pytest.mark.parametrize("mini", [False, True])
def test_every_definition_composes_with_its_runner(name, mini):
    definition = DEFINITIONS[name]
    for runner, grid in definitions.sweeps(definition, mini):
        first = {k: v[0] for k, v in grid.items()}
        # Every experiment of the grid composes with the other keys' first values (each optimizer config is
        # a file of the optimizer group, and composes with any experiment: tested with each runner).
        assert all((REPO / "configs" / "common" / "optimizer" / f"{o}.yaml").is_file() for o in grid["optimizer"])
        variants = [first, *({**first, "experiment": value} for value in grid.get("experiment", [])[1:])]
        with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
            # What Hydra's sweeper composes before any job: the runner's defaults with the keys not swept.
            compose(runner, overrides=[f"{k}={override_value(v[0])}" for k, v in grid.items() if len(v) == 1])
            for variant in variants:
                cfg = compose(runner, overrides=[f"{k}={override_value(v)}" for k, v in variant.items()])
                assert cfg.optimizer.name == variant["optimizer"]
                if mini and definition["tune"]:  # selection needs a validation split of embedded data
                    if runner == "image_classification":
                        assert cfg.dataset.name == "synthetic" and cfg.dataset.val_size > 0
                    if runner == "language_modeling":
                        assert cfg.dataset.name == "synthetic_lm"
                    if runner == "online_learning":
                        assert cfg.benchmark.name == "synthetic_tasks"


def test_run_prints_one_hydra_multirun_per_sweep():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "run", "cifar10", "--launcher",
                           "print"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stdout.splitlines() if x.startswith("python")]
    assert len(lines) == 3  # Adam-family, SGD-family, the Adam control (lr grid upward, warm-up)
    assert lines[0].startswith("python -m experiments.image_classification -m hydra.sweep.dir=runs/paper/cifar10/0 ")
    assert "optimizer=adam " in lines[2] and "scheduler.warmup_steps=1000" in lines[2]
    assert "optimizer=adam,adam_cg,adam_cm,sam_adam,sam_adam_cg,sam_adam_cm" in lines[0]
    assert "optimizer.lr=0.001,0.0003,0.0001" in lines[0] and "seed=0,1,2" in lines[0]
    assert definitions.run_count(DEFINITIONS["cifar10"], mini=False) == 2 * 6 * 3 * 3 + 2 * 2 * 2 * 3 + 2 * 5 * 3
    slurm = launch.commands(REPO, "cifar10", DEFINITIONS["cifar10"], mini=False, launcher="slurm")
    assert all("hydra/launcher=slurm" in argv for argv in slurm)


def test_list_names_every_result_with_its_runs_and_compute():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "list"], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    for name, definition in DEFINITIONS.items():
        assert f"{name} " in done.stdout and definition["title"] in done.stdout
        steps = definitions.run_count(definition, mini=False) * definition["steps_per_run"]
        assert f"{steps:,} steps" in done.stdout


def test_an_unknown_result_is_one_message():
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "run", "cifar11"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "unknown result 'cifar11'" in done.stderr and "cifar10" in done.stderr


# What "learned" means for a mini result's selected settings: well above chance on its task.
LEARNED = {"test: test_acc (%)": lambda mean, runs: mean > 50.0,  # 10 classes: chance is 10%
           "test: test_ppl": lambda mean, runs: mean < 0.8 * min(r["dataset_unigram_ppl"] for r in runs),
           "average_accuracy (%)": lambda mean, runs: mean > 55.0}  # 2 classes a task: chance is 50%


def not_learned(out: Path) -> list[str]:
    """The table rows of a collected result whose selected setting's test metric is not above chance."""
    import csv

    lines = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")]
    if not lines or not (out / "runs.csv").is_file():
        return []
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    runs = [{k: float(v) for k, v in r.items() if k == "dataset_unigram_ppl" and v}
            for r in csv.DictReader((out / "runs.csv").open())]
    bad = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        for column, ok in LEARNED.items():
            if column in header:
                text = cells[header.index(column)].split(" ± ")[0]
                if text in ("—", "") or not ok(float(text), runs):
                    bad.append(line)
    return bad


def test_a_row_at_chance_is_found_not_learned(tmp_path):
    (tmp_path / "table.md").write_text("| data | optimizer | test: test_acc (%) | seeds |\n|---|---|---|---|\n"
                                       "| synthetic | adam | 98.00 ± 1.00 | 2 |\n| synthetic | adam_cm | 8.20 ± 0.00 | 2 |\n")
    (tmp_path / "runs.csv").write_text("run_dir,test_acc\na,0.98\n")
    assert not_learned(tmp_path) == ["| synthetic | adam_cm | 8.20 ± 0.00 | 2 |"]


@pytest.mark.slow
def test_every_mini_result_runs_end_to_end(tmp_path):
    # About 10 minutes on 2 cores: every definition's mini sweeps, collected, into a folder of the test's own.
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "paper.py"), "--root", str(tmp_path), "run", "all",
                           "--mini"], capture_output=True, text=True, timeout=3600, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = {"curves": "curves.png", "lr_sensitivity": "lr_sensitivity.png", "ablation": "ablation.png"}
    for name, definition in DEFINITIONS.items():
        out = tmp_path / "results" / "paper_mini" / name
        readme = (out / "README.md").read_text()
        assert readme.startswith(f"# {definition['title']}") and "not the paper's numbers" in readme
        rows = [line for line in (out / "table.md").read_text().splitlines() if line.startswith("| ")][1:]
        assert len(rows) >= 2 and all("none: no run finished" not in row for row in rows), name
        assert not_learned(out) == [], name
        assert "run all" not in readme and f"paper.py run {name} --mini" in readme
        if definition["kind"] in figures:
            assert (out / figures[definition["kind"]]).stat().st_size > 10_000
        if name.startswith("online_"):
            assert list(out.glob("accuracy_matrix_*.png"))
    index = (tmp_path / "results" / "README.md").read_text()
    assert all(f"[{name}](paper_mini/{name}/README.md)" in index for name in DEFINITIONS)


# ---- figures and generated READMEs ---------------------------------------------------------------------


@pytest.fixture
def drawn_axes(monkeypatch):
    """The axes of every figure paper.py draws during the test."""
    drawn, make = [], figures.new_figure

    def recording(*args):
        figure, axes = make(*args)
        drawn.append(axes)
        return figure, axes

    monkeypatch.setattr(figures, "new_figure", recording)
    return drawn


def test_the_curves_band_spans_the_seeds_and_stays_positive_on_a_log_axis(tmp_path, drawn_axes):
    import json

    finished = []
    for seed, values in enumerate([(400.0, 10.0), (40.0, 2.0), (4.0, 1.2)]):  # std > mean at every step
        run_dir = tmp_path / f"seed{seed}"
        run_dir.mkdir()
        run_dir.joinpath("metrics.jsonl").write_text(
            "".join(json.dumps({"step": step, "val_ppl": v}) + "\n" for step, v in zip((10, 20), values)))
        finished.append({"run_dir": run_dir})
    row = {"group": ("synthetic_lm", "lstm", "adam"), "fixed": {}, "best": {"finished": finished,
                                                                           "values": {"optimizer.lr": 0.02}}}
    note = figures.draw_curves([row], "val_ppl", tmp_path / "curves.png", "t")
    [axes] = drawn_axes
    assert axes.get_yscale() == "log"
    [band] = axes.collections
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == (1.2, 400.0)  # lowest and highest seed
    assert "lowest to the highest seed" in note


def test_the_ablation_and_lr_figures_show_accuracy_in_percent_as_their_tables_do(tmp_path, drawn_axes):
    kind = select.Selection("image classification", "val_acc", True, ("test_acc", "top_hessian_eigenvalue"))
    runs = [{"summary": {"val_acc": 0.5, "test_acc": 0.4}}, {"summary": {"val_acc": 0.7, "test_acc": 0.6}}]
    rows = [{"kind": kind, "group": ("synthetic", "small_cnn", "adam_cm"), "fixed": {"optimizer.decay": decay},
             "best": {"finished": runs}, "candidates": [{"values": {"optimizer.lr": 1e-3}, "finished": runs}]}
            for decay in (0.5, 0.9)]
    figures.draw_ablation(rows, "optimizer.decay", tmp_path / "ablation.png", "t")
    figures.draw_lr_sensitivity(rows, tmp_path / "lr.png", "t")
    ablation, lr = drawn_axes
    assert ablation.get_ylabel() == "test_acc (%) at the lr chosen on validation"
    assert list(ablation.lines[0].get_ydata()) == pytest.approx([50.0, 50.0])
    assert "test_acc (%)" in lr.get_ylabel()
    assert sorted(lr.lines[0].get_ydata()) == pytest.approx([50.0])  # test, solid
    assert sorted(lr.lines[1].get_ydata()) == pytest.approx([60.0])  # validation, dashed


def test_a_generated_readme_links_only_the_files_it_wrote(tmp_path):
    (tmp_path / "table.md").write_text("<!-- x -->\n| a |\n")
    (tmp_path / "runs.csv").write_text("a\n")
    collect.write_result_readme("overhead", {"title": "Overhead"}, True, tmp_path, [])
    readme = (tmp_path / "README.md").read_text()
    assert "[runs.csv](runs.csv)" in readme and "selection.csv" not in readme
    assert "run all" not in readme and "`python scripts/paper.py run overhead --mini" in readme


def test_collect_prints_each_runs_warning_once(tmp_path, monkeypatch, capsys):
    import json

    definition = {"title": "T", "kind": "table", "tune": ["optimizer.lr"]}
    for seed in (0, 1):
        run_dir = definitions.runs_dir(tmp_path, "t", mini=True) / "0" / f"seed={seed}"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(f"seed: {seed}\ndataset:\n  name: synthetic\nmodel:\n  name: small_cnn\n"
                                             "optimizer:\n  name: adam\n  lr: 0.001\nselect:\n  metric: val_acc\n  mode: max\n")
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished", "val_acc": 0.5, "test_acc": 0.5,
                                                          "warnings": [f"loss rose in seed {seed}"]}))
    collect.collect(tmp_path, "t", definition, mini=True)
    err = capsys.readouterr().err
    assert err.count("loss rose in seed 0") == 1 and err.count("loss rose in seed 1") == 1


# ---- measure -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("runner, experiment", [("image_classification", "synthetic"),
                                                ("language_modeling", "synthetic_lm")])
def test_measure_times_the_runners_own_task_and_scales_the_batch(runner, experiment, tmp_path, monkeypatch):
    """The model and batch timed are those of the runner's build_task (the text model with its carried state);
    a clock that advances one second a call makes every step last exactly 1 s, so the recorded time is the
    batch scaling alone: batch_size / max_batch."""
    import importlib
    import json
    import types

    from hydra import compose as compose_config

    from experiments.reporting import measure

    module, built = importlib.import_module(f"experiments.{runner}"), []
    build_task = module.build_task

    def recording(cfg):
        task = build_task(cfg)
        built.append((task, [p.detach().clone() for p in task.model.parameters()]))
        return task

    monkeypatch.setattr(module, "build_task", recording)
    clock = iter(range(1_000_000))
    monkeypatch.setattr(measure, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock))))
    path = tmp_path / "step_times.json"
    path.write_text(json.dumps({"other/experiment": {"gpu": 1.0}}))
    measure.measure([(runner, experiment)], "cpu", max_batch=4, steps=2, path=path)
    with initialize_config_dir(config_dir=str(REPO / "configs" / runner), version_base="1.3"):
        batch_size = compose_config(runner, overrides=[f"experiment={experiment}"]).trainer.batch_size
    [(task, before)] = built
    assert any(not p.equal(b) for p, b in zip(task.model.parameters(), before))  # the runner's model stepped
    measured = json.loads(path.read_text())
    [(label, seconds)] = measured[f"{runner}/{experiment}"].items()
    assert label.startswith("cpu (") and seconds == pytest.approx(batch_size / 4)
    assert measured["other/experiment"] == {"gpu": 1.0}  # other entries are kept
