"""The committed results/ regenerate byte for byte from the runs they were made from.

The runs themselves are not committed, but every number a table, a selection or a figure is made of is in the
committed runs.csv (each finished run: its identity, seed, settings and summary numbers, written with repr so
they read back exactly) and selection.csv (how many runs each candidate had: the missing ones failed). The
test writes those run folders again (config.yaml + summary.json), runs the collection on them, and compares
every file with the committed one. Not rebuildable, hence not compared: every curves.png (drawn from each
run's metrics.jsonl, which results/ does not keep); the online heat-maps are the runs' own files, copied.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from experiments.reporting.collect import collect
from experiments.reporting.definitions import definitions, sweeps
from experiments.reporting.runs import collect_runs

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "results" / "paper_mini"
NOT_REBUILDABLE = {(p.parent.name, p.name) for p in MINI.glob("*/curves.png")}


def _value(text: str):
    """A runs.csv cell as the value it was written from (csv writes str(value))."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return json.loads(text) if text.startswith("[") else text


def _nested(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    return nested


def rebuild_runs(committed: Path, root: Path, runner: str | None) -> dict[Path, dict]:
    """The run folders runs.csv lists, under root (the csv's run_dir is relative to where it was collected),
    and, for every candidate of selection.csv with more runs than runs.csv holds, its failed runs; returns
    each finished run's folder and its runs.csv row."""
    select = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / runner / f"{runner}.yaml").select) \
        if runner else None
    rows = list(csv.DictReader((committed / "runs.csv").open()))
    configs = {}
    for row in rows:
        identity = {"seed": _value(row["seed"]), "dataset.name": row["data"], "model.name": row["model"],
                    "optimizer.name": row["optimizer"]}
        settings = {k: _value(v) for k, v in row.items() if "." in k and k != "run_dir" and v != ""}
        config = _nested({**identity, **settings})
        if select is not None:
            config["select"] = select
        summary = {k: _value(v) for k, v in row.items()
                   if "." not in k and k not in ("run_dir", "data", "model", "optimizer", "seed")}
        run_dir = root / row["run_dir"]
        run_dir.mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(config), run_dir / "config.yaml")
        (run_dir / "summary.json").write_text(json.dumps({"status": "finished", **summary}))
        configs[run_dir] = (row, config)
    if not (committed / "selection.csv").is_file():
        return {d: row for d, (row, _) in configs.items()}
    for candidate in csv.DictReader((committed / "selection.csv").open()):
        keys = [k for k in candidate if k not in ("validation_mean", "seeds_finished", "runs", "selected")]
        members = [(d, c) for d, (row, c) in configs.items() if all(row[k] == candidate[k] for k in keys)]
        seeds = {c["seed"] for _, c in members}
        missing = [s for s in range(int(candidate["runs"]) + len(seeds)) if s not in seeds]
        for seed in missing[:int(candidate["runs"]) - len(members)]:  # failed: a config and no summary
            run_dir, config = members[0]
            failed = run_dir.parent / run_dir.name.replace(f"seed={config['seed']}", f"seed={seed}")
            failed.mkdir()
            OmegaConf.save(OmegaConf.create({**config, "seed": seed}), failed / "config.yaml")
    return {d: row for d, (row, _) in configs.items()}


def committed_files(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if (name, p.name) not in NOT_REBUILDABLE)


@pytest.mark.parametrize("name", sorted(p.name for p in MINI.iterdir() if p.is_dir()))
def test_a_mini_result_regenerates_byte_for_byte_from_its_runs(name, tmp_path, monkeypatch):
    definition = definitions()[name]
    runners = {runner for runner, _ in sweeps(definition, mini=True)}
    committed = MINI / name
    runs = rebuild_runs(committed, tmp_path, runners.pop() if len(runners) == 1 else None)
    for run_dir, row in runs.items():  # the runs' own heat-map, which collect copies
        png = committed / f"accuracy_matrix_{row['optimizer']}.png"
        if png.is_file():
            (run_dir / "accuracy_matrix.png").write_bytes(png.read_bytes())
    monkeypatch.chdir(tmp_path)  # run_dir and source paths are shown relative to where collect runs
    out = collect(tmp_path, name, definition, mini=True)
    assert committed_files(out, name) == committed_files(committed, name)
    for file in committed_files(committed, name):
        assert (out / file).read_bytes() == (committed / file).read_bytes(), f"{name}/{file}"


SYNTHETIC = {"image_classification_synthetic": "runs/synthetic",  # the runs' folder when they were collected
             "language_modeling_synthetic": "runs/synthetic_lm", "online_learning_synthetic": "runs/synthetic_tasks"}


@pytest.mark.parametrize("folder", sorted(SYNTHETIC))
def test_a_synthetic_sweep_regenerates_byte_for_byte_from_its_runs(folder, tmp_path, monkeypatch):
    committed = REPO / "results" / folder
    rebuild_runs(committed, tmp_path, folder.removesuffix("_synthetic"))
    monkeypatch.chdir(tmp_path)
    collect_runs([Path(SYNTHETIC[folder])], Path("out"))  # what scripts/collect_results.py runs
    for file in ("runs.csv", "table.md"):
        assert (tmp_path / "out" / file).read_bytes() == (committed / file).read_bytes(), f"{folder}/{file}"

