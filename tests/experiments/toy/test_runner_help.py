"""Each runner's --help names the runner and lists its own settings, never another runner's config groups.

(The training runners' check lives here with the toy runner's because they test one thing: what --help
lists, from configs/toy.yaml and from configs/common/hydra/default.yaml.)
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]
CONFIGS = REPOSITORY / "configs"
RUNNERS = ("image_classification", "language_modeling", "online_learning")


def option_files(root: Path) -> dict[str, list[str]]:
    """{group: sorted option names} of every folder below `root` holding option files (hydra/ itself aside)."""
    return {folder.relative_to(root).as_posix(): sorted(f.stem for f in folder.glob("*.yaml"))
            for folder in root.rglob("*") if folder.is_dir() and any(folder.glob("*.yaml")) and folder.name != "hydra"}


def help_text(module: str) -> str:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPOSITORY, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPOSITORY)}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "is powered by Hydra" not in done.stdout and "__main__" not in done.stdout
    return done.stdout


def test_toy_help_names_the_runner_and_lists_its_own_settings():
    text = help_text("experiments.toy")
    assert text.startswith("python -m experiments.toy: the paper's toy experiments")
    assert "Usage: python -m experiments.toy [key=value ...]" in text
    assert "Only the canonical settings write results/toy/" in text
    # Its settings, as composed: the top-level keys and each problem's own.
    for key in ("problem: all", "capacity: 5", "decay: 0.7", "optimizers:", "flat_sharp:", "sharpness:",
                "quadratic:", "fixed_momentum: 0.9"):
        assert re.search(rf"^\s*{re.escape(key)}", text, re.MULTILINE), key
    # None of the image runner's groups.
    for group in ("dataset:", "scheduler:", "trainer:", "experiment:", "hydra/launcher"):
        assert not re.search(rf"^{re.escape(group)}", text, re.MULTILINE), group


@pytest.mark.parametrize("override", [[], ["capacity=3"]])
def test_toy_help_shows_the_settings_with_overrides_applied(override):
    done = subprocess.run([sys.executable, "-m", "experiments.toy", *override, "--help"], cwd=REPOSITORY,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert re.search(rf"^capacity: {3 if override else 5}$", done.stdout, re.MULTILINE)


@pytest.mark.parametrize("runner", RUNNERS)
def test_each_training_runner_help_lists_exactly_its_own_groups_and_their_option_files(runner):
    """The groups are those of the runner's config root and of configs/common/, each with every option file it
    holds (an option added is listed with no other change); no other runner's group, nor toy/ or paper/."""
    text = help_text(f"experiments.{runner}")
    assert text.startswith(f"python -m experiments.{runner}: ")
    section = text.split("== Config groups (group=option) ==\n")[1].split("\n\n== Config")[0]
    listed = dict(line.split(": ", 1) for line in section.splitlines() if line)
    expected = {**option_files(CONFIGS / runner), **option_files(CONFIGS / "common")}
    assert {group: options.split(", ") for group, options in listed.items()} == expected
    others = {group for other in RUNNERS if other != runner for group in option_files(CONFIGS / other)}
    assert others - set(expected) and not (others - set(expected)) & set(listed)  # e.g. benchmark, dataset
    assert "toy:" not in text and "goldstein_price" not in text and "paper" not in listed


def test_another_runners_option_is_hydras_could_not_find_listing_the_valid_ones():
    done = subprocess.run([sys.executable, "-m", "experiments.image_classification", "dataset=ptb", "--cfg", "job"],
                          cwd=REPOSITORY, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPOSITORY)})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    listed = done.stderr.split("Available options in 'dataset':")[1].split("Config search path")[0].split()
    assert "Could not find 'dataset/ptb'" in done.stderr
    assert listed == option_files(CONFIGS / "image_classification")["dataset"]  # the image datasets only
