"""Toy settings: every bad value ends in one message (exit code 1, no traceback); where each run writes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.toy import __main__ as toy
from experiments.toy.settings import AD_HOC_DIR, CANONICAL_DIR, changed_settings, check_config, output_dir

REPOSITORY = Path(__file__).resolve().parents[3]


def config(*overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPOSITORY / "configs")):
        return compose("toy", overrides=list(overrides))


# (override, what the message must contain: the value as given, the valid range, a fix)
BAD_VALUES = [
    ("lr=-1", "lr=-1: the learning rate of every problem must be null (unset) or a finite number > 0", "Set e.g. lr=0.03"),
    ("lr=0", "lr=0: ", "a finite number > 0"),
    ("seeds=0", "seeds=0: the number of noise seeds must be null (unset) or an integer >= 1", "Set e.g. seeds=3"),
    ("steps=0", "steps=0: the number of optimizer steps must be null (unset) or an integer >= 1", "Set e.g. steps=200"),
    ("steps=2.5", "steps=2.5: ", "an integer >= 1"),
    ("steps=abc", "steps='abc': ", "an integer >= 1"),
    ("noise=-0.1", "noise=-0.1: ", "a finite number >= 0"),
    ("noise=nan", "noise=nan: ", "a finite number >= 0"),
    ("capacity=-1", "capacity=-1: the buffer capacity C must be an integer >= 0", "capacity=5"),
    ("capacity=2.5", "capacity=2.5: ", "an integer >= 0"),
    ("decay=1.5", "decay=1.5: the priority decay λ must be a number in [0, 1]", "Set e.g. decay=0.7"),
    ("rho=-0.05", "rho=-0.05: ", "a finite number >= 0"),
    ("workers=0", "workers=0: the number of worker processes must be an integer >= 1", "workers=2"),
    ("optimizers=[]", "optimizers=[]: ", "a non-empty list of distinct names from: sgd, adam"),
    ("optimizers=[adam,lion]", "optimizers=[adam,lion]: ", "a non-empty list of distinct names"),
    ("optimizers=[adam,adam]", "optimizers=[adam,adam]: ", "distinct names"),
    ("problem=rosenbrock", "problem='rosenbrock' is not a toy experiment", "Choose one of: goldstein_price"),
    ("ackley.lr=0.2", "ackley.lr=0.2 is not in ackley.lr_sweep=[0.01,0.03,0.1]", "Add it to the sweep"),
    ("ackley.lr_sweep=[0.03,-1]", "ackley.lr_sweep=[0.03,-1]: ", "a non-empty list of numbers > 0"),
    ("ackley.starts.points=0", "ackley.starts.points=0: ", "an integer >= 1"),
    ("goldstein_price.starts.low=3", "goldstein_price.starts.low=3 is above goldstein_price.starts.high=1.8",
     "Swap them"),
    ("ackley.figure_starts=[[1]]", "ackley.figure_starts=[[1]]: ", "a non-empty list of [x, y] points"),
    ("ackley.figure_seeds=0", "ackley.figure_seeds=0: ", "an integer >= 1"),
    ("ackley.first_steps=0", "ackley.first_steps=0: ", "an integer >= 1"),
    ("flat_sharp.sharpness=[]", "flat_sharp.sharpness=[]: ", "a non-empty list of numbers > 0"),
    ("flat_sharp.flat_width=0", "flat_sharp.flat_width=0: ", "a finite number > 0"),
    ("flat_sharp.start_offsets=[]", "flat_sharp.start_offsets=[]: ", "a non-empty list of finite numbers"),
    ("flat_sharp.flat_minimum=1.0", "flat_sharp.flat_minimum=1.0 equals flat_sharp.sharp_minimum", "Set e.g."),
    ("quadratic.log10_condition_numbers=[2,1,3]", "quadratic.log10_condition_numbers=[2,1,3]: ",
     "0 <= first <= last"),
    ("quadratic.fixed_momentum=1.0", "quadratic.fixed_momentum=1.0: ", "a number in [0, 1)"),
    ("quadratic.scaled_lr_sweep=[0]", "quadratic.scaled_lr_sweep=[0]: ", "a non-empty list of numbers > 0"),
    (f"out_dir={REPOSITORY / 'results' / 'toy'} capacity=3", "results/toy holds only the results of `make reproduce`",
     "differ from it (capacity). Leave out_dir unset (they go to runs/toy/capacity=3)"),
]


@pytest.mark.parametrize("override, message, fix", BAD_VALUES, ids=[b[0].split("/")[-1] for b in BAD_VALUES])
def test_each_bad_value_ends_in_one_message_and_exit_code_1(override, message, fix, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # were a bad value to slip through, nothing lands in the repository
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(sys, "argv", ["experiments.toy", *override.split()])
    with pytest.raises(SystemExit) as exited:
        toy.main()
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0] and fix in errors[0], err
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_gives_the_same_one_line_errors(tmp_path):
    for override, message in [("lr=-1", "Error: lr=-1: the learning rate"), ("seeds=0", "Error: seeds=0: ")]:
        done = subprocess.run([sys.executable, "-m", "experiments.toy", override], cwd=tmp_path, text=True,
                              capture_output=True, env={**os.environ, "PYTHONPATH": str(REPOSITORY)}, timeout=120)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.startswith(message) and done.stderr.count("Error:") == 1, done.stderr


def test_the_canonical_settings_pass_every_check():
    assert check_config(config()) == ["goldstein_price", "ackley", "flat_sharp", "quadratic"]


def test_only_the_canonical_settings_write_results_toy():
    canonical = config()
    # Where and how fast change no number: still the canonical run.
    assert output_dir(config("workers=1", "problem=ackley"), canonical) == (CANONICAL_DIR, {})
    assert output_dir(config("capacity=5"), canonical) == (CANONICAL_DIR, {})  # the canonical value, given
    assert CANONICAL_DIR == REPOSITORY / "results" / "toy"
    # Anything else: a folder named by what changed.
    cfg = config("problem=flat_sharp", "flat_sharp.sharpness=[1,4,16]", "capacity=3", "decay=0.5", "noise=0")
    assert changed_settings(cfg, canonical) == {"capacity": 3, "decay": 0.5, "flat_sharp.sharpness": [1, 4, 16],
                                                "noise": 0}
    assert output_dir(cfg, canonical) == (AD_HOC_DIR / "capacity=3,decay=0.5,flat_sharp.sharpness=[1,4,16],noise=0",
                                          changed_settings(cfg, canonical))
    assert AD_HOC_DIR == Path("runs") / "toy"
    # An explicit out_dir is honoured, except results/toy for other settings.
    assert output_dir(config("capacity=3", "out_dir=/tmp/mine"), canonical)[0] == Path("/tmp/mine")
    assert output_dir(config(f"out_dir={CANONICAL_DIR}"), canonical)[0] == CANONICAL_DIR
    with pytest.raises(ValueError, match=r"results/toy holds only the results of `make reproduce`"):
        output_dir(config("capacity=3", f"out_dir={CANONICAL_DIR}"), canonical)


def test_a_long_folder_name_is_cut_and_kept_unique():
    canonical = config()
    one = output_dir(config("ackley.figure_starts=[[0.1,0.2],[0.3,0.4],[0.5,0.6],[0.7,0.8],[0.9,1.0],[1.1,1.2]]",
                            "goldstein_price.lr_sweep=[0.003,0.01,0.03,0.1]", "steps=11"), canonical)[0]
    other = output_dir(config("ackley.figure_starts=[[0.1,0.2],[0.3,0.4],[0.5,0.6],[0.7,0.8],[0.9,1.0],[1.1,1.2]]",
                              "goldstein_price.lr_sweep=[0.003,0.01,0.03,0.1]", "steps=12"), canonical)[0]
    assert len(one.name) == 100 and len(other.name) == 100 and one != other
    assert one.name.startswith("ackley.figure_starts=[[0.1,0.2],")
