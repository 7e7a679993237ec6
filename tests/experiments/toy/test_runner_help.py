"""Each runner's --help names the runner and lists its own settings, never another runner's config groups.

(The image runner's check lives here with the toy runner's because they test one thing: the two
`hydra.help` blocks of configs/toy.yaml and configs/image_classification.yaml.)
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[3]
IMAGE_GROUPS = ["dataset", "model", "optimizer", "scheduler", "trainer", "logger", "experiment", "hydra/launcher"]


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


def test_image_help_lists_exactly_its_own_groups_with_existing_options():
    text = help_text("experiments.image_classification")
    assert text.startswith("python -m experiments.image_classification: train an image classifier")
    section = text.split("== Config groups (group=option) ==\n")[1].split("\n\n")[0]
    listed = dict(line.split(": ", 1) for line in section.splitlines())
    assert list(listed) == IMAGE_GROUPS  # not toy/, nor any other runner's groups
    for group, options in listed.items():
        for option in options.split(", "):
            assert (REPOSITORY / "configs" / group / f"{option}.yaml").is_file(), f"{group}={option}"
    assert "toy:" not in text and "goldstein_price" not in text
