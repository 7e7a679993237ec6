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
COMMON_GROUPS = ["optimizer", "scheduler", "trainer", "logger", "experiment", "hparams_search", "hydra/launcher"]
RUNNER_GROUPS = {  # each training runner's --help: its own data and model options only
    "image_classification": {"dataset": ["cifar10", "cifar100", "imagenet", "synthetic"],
                             "model": ["resnet18", "resnet34", "wrn28_10", "efficientnet_b0", "resnet50", "small_cnn"]},
    "language_modeling": {"dataset": ["ptb", "wikitext2", "text", "synthetic_lm"], "model": ["lstm"]},
    "online_learning": {"benchmark": ["five_datasets", "tiny_imagenet", "synthetic_tasks"],
                        "model": ["reduced_resnet18", "mlp"]},
}


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


@pytest.mark.parametrize("runner", sorted(RUNNER_GROUPS))
def test_each_training_runner_help_lists_exactly_its_own_groups_with_existing_options(runner):
    text = help_text(f"experiments.{runner}")
    assert text.startswith(f"python -m experiments.{runner}: ")
    section = text.split("== Config groups (group=option) ==\n")[1].split("\n\n")[0]
    listed = dict(line.split(": ", 1) for line in section.splitlines())
    assert list(listed) == [*RUNNER_GROUPS[runner], *COMMON_GROUPS]  # not toy/, nor another runner's groups
    for group, options in RUNNER_GROUPS[runner].items():
        assert listed[group].split(", ") == options
    for group, options in listed.items():
        for option in options.split(", "):
            assert (REPOSITORY / "configs" / group / f"{option}.yaml").is_file(), f"{group}={option}"
    assert "toy:" not in text and "goldstein_price" not in text
