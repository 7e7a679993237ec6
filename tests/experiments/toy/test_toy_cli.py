"""The Hydra entry point end to end on tiny settings: files written, numbers repeatable, overrides honoured."""

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.toy.__main__ import CONFIG_DIR, rounded, run
from experiments.toy.settings import chosen_problems, problem_settings

REPOSITORY = Path(__file__).resolve().parents[3]
TINY = [
    "workers=1", "steps=6", "seeds=1", "optimizers=[adam,adam_cg,adam_cm,sam_adam_cm]",
    "goldstein_price.starts.points=2", "goldstein_price.figure_starts=[[1.5,1.5]]",
    "ackley.starts.points=2", "ackley.figure_seeds=2", "ackley.first_steps=3",
    "flat_sharp.sharpness=[1,8]", "flat_sharp.start_offsets=[0.5]",
    "quadratic.log10_condition_numbers=[1,2,2]",
]


def config(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose("toy", overrides=list(overrides))


def command_line(*arguments, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    return subprocess.run([sys.executable, "-m", "experiments.toy", *arguments], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_every_problem_writes_its_json_figures_and_the_report(tmp_path):
    run(config(*TINY, f"out_dir={tmp_path}"))
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([
        "README.md", "goldstein_price.json", "ackley.json", "flat_sharp.json", "quadratic.json",
        "figure1_goldstein_price.png", "figure2_ackley_first_steps.png", "figure3_quadratic_rates.png",
        "figure4_ackley.png", "figure5_flat_sharp.png",
    ])
    ackley = json.loads((tmp_path / "ackley.json").read_text())
    assert ackley["settings"]["steps"] == 6 and ackley["settings"]["lr_sweep"] == [0.01, 0.03, 0.1]
    assert len(ackley["runs"]) == 3 * 4 * 4  # learning rates x optimizers x starts
    assert all(len(t["points"]) == 7 for t in ackley["trajectories"])  # trajectories: start + 6 steps
    readme = (tmp_path / "README.md").read_text()
    # Each of the five numbered claims ends in a bold verdict that says whether it holds in these runs.
    claims = re.findall(r"^([1-5])\. .*\*\*(.+)\*\*$", readme, re.MULTILINE)
    assert [number for number, _ in claims] == ["1", "2", "3", "4", "5"]
    assert all(re.search(r"HOLDS|holds|does NOT hold|not tested", verdict) for _, verdict in claims)

    # seeded: a second run writes the same numbers
    first = {name: (tmp_path / f"{name}.json").read_text() for name in chosen_problems("all")}
    run(config(*TINY, f"out_dir={tmp_path}", "problem=flat_sharp"))
    run(config(*TINY, f"out_dir={tmp_path}", "problem=ackley"))
    assert {name: (tmp_path / f"{name}.json").read_text() for name in first} == first


def test_shortcuts_replace_the_problems_values():
    cfg = config("lr=0.05", "noise=0.2", "capacity=3", "decay=0.5", "optimizers=[adam]")
    settings = problem_settings(cfg, "ackley")
    assert settings["lr"] == 0.05 and settings["lr_sweep"] == [0.05]
    assert [settings[k] for k in ("noise", "capacity", "decay", "optimizers")] == [0.2, 3, 0.5, ["adam"]]
    assert problem_settings(config(), "ackley")["noise"] == 0.1  # unset: the problem's own


def test_written_numbers_are_rounded_to_eight_significant_digits():
    assert rounded(0.9208945446793424) == 0.92089454
    assert rounded(0.9208945446793421) == 0.92089454  # what another machine's BLAS gave: the same bytes
    assert rounded(12345.678912) == 12345.679 and rounded(1 / 3) == 0.33333333 and rounded(-2.5e-12) == -2.5e-12
    nested = rounded({"a": [1.23456789012, {"b": 2 / 3}], "n": 7, "flag": True, "name": "adam", "none": None})
    assert nested == {"a": [1.2345679, {"b": 0.66666667}], "n": 7, "flag": True, "name": "adam", "none": None}
    assert type(nested["n"]) is int and nested["flag"] is True


def test_command_line_run_writes_only_to_out_dir(tmp_path):
    completed = command_line("problem=flat_sharp", "out_dir=out", *TINY, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no outputs/ or .hydra/ from Hydra
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["README.md", "figure5_flat_sharp.png", "flat_sharp.json"]
    assert "[flat_sharp] done" in completed.stdout
    assert completed.stdout.splitlines()[-1].startswith("Results in out ")


def test_an_ad_hoc_run_without_out_dir_leaves_results_toy_alone(tmp_path):
    committed = {p.name: p.read_bytes() for p in (REPOSITORY / "results" / "toy").iterdir()}
    completed = command_line("problem=flat_sharp", "capacity=3", "decay=0.5", *TINY, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert {p.name: p.read_bytes() for p in (REPOSITORY / "results" / "toy").iterdir()} == committed
    (folder,) = (tmp_path / "runs" / "toy").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "figure5_flat_sharp.png", "flat_sharp.json"]
    assert json.loads((folder / "flat_sharp.json").read_text())["settings"]["capacity"] == 3
    last = completed.stdout.splitlines()[-1]
    assert last.startswith(f"Results in {Path('runs') / 'toy' / folder.name} ")
    assert "capacity, decay" in last and "results/toy/ is left as it was" in last


def test_the_committed_quadratic_results_regenerate_byte_for_byte(tmp_path):
    # The numbers most exposed to the machine (LAPACK eigenvalues); every file: the slow test below.
    run(config("problem=quadratic", "workers=1", f"out_dir={tmp_path}"))
    for name in ("quadratic.json", "figure3_quadratic_rates.png"):
        assert (tmp_path / name).read_bytes() == (REPOSITORY / "results" / "toy" / name).read_bytes(), name


@pytest.mark.slow
def test_make_reproduce_regenerates_every_committed_file_byte_for_byte(tmp_path):
    run(config(f"out_dir={tmp_path}"))
    committed = REPOSITORY / "results" / "toy"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in committed.iterdir():
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
