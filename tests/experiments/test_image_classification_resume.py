"""A run killed with SIGKILL and started again with the same command ends exactly where an uninterrupted run does.

CPU, exact: every tensor of the final checkpoint's model and optimizer state is bitwise equal, and
so are metrics.jsonl and summary.json apart from timings.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.experiments.image_runner_helpers import check_killed_run_resumes_exactly


def check_resume_matches_uninterrupted(tmp_path: Path, optimizer: str, *overrides: str,
                                       setting: tuple[str, ...] = ("experiment=smoke",),
                                       folder: Path | None = None) -> None:
    def args(runs: str) -> list[str]:
        return [*setting, f"runs_dir={tmp_path / runs}", f"optimizer={optimizer}", *overrides]

    folder = folder or Path("smoke") / f"synthetic_small_cnn_{optimizer}_seed0"
    _, _, resumed, _ = check_killed_run_resumes_exactly(tmp_path, args, folder)
    assert "resumed at step 3" in resumed.stdout  # Hydra logs to stdout


# 512 items in batches of 32 over 4 epochs: 64 steps, checkpoints every 3 (the kill lands mid-epoch).
LONGER = ("trainer.max_steps=null", "trainer.epochs=4", "trainer.checkpoint_interval=3", "trainer.log_interval=4",
          "trainer.eval_interval=20", "trainer.flatness_interval=25", "model.width=16")


def test_a_killed_run_resumes_bit_for_bit(tmp_path):
    check_resume_matches_uninterrupted(tmp_path, "adam_cm", *LONGER)


@pytest.mark.slow
def test_a_killed_sam_run_with_loader_workers_resumes_bit_for_bit(tmp_path):
    check_resume_matches_uninterrupted(tmp_path, "sam_adam_cm", *LONGER, "trainer.num_workers=2",
                                       "trainer.grad_clip=0.5", "scheduler.warmup_steps=10", "trainer.epochs=2")


def write_image_folder(root: Path, classes: int = 2, per_class: int = 24, size: int = 40) -> None:
    """root/{train,val}/<class>/*.png of random pixels, in the ImageNet layout."""
    from PIL import Image

    rng = random.Random(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = bytes(rng.randrange(256) for _ in range(size * size * 3))
                Image.frombytes("RGB", (size, size), pixels).save(folder / f"{i}.png")


def test_a_killed_run_on_image_files_with_random_augmentation_resumes_bit_for_bit(tmp_path):
    # Real PNG files through ImageFolder with RandomResizedCrop and flips: the resumed run must draw the
    # same crops as the uninterrupted one (the synthetic data above draws no random numbers).
    write_image_folder(tmp_path / "data" / "imagenet")
    setting = ("dataset=imagenet", f"data_dir={tmp_path / 'data'}", "dataset.image_size=32", "model=small_cnn",
               "model.width=8", "logger=none", "trainer.device=cpu", "trainer.num_workers=0",
               "trainer.batch_size=8", "trainer.epochs=3", "trainer.checkpoint_interval=3",
               "trainer.log_interval=4", "trainer.eval_interval=6", "trainer.flatness_at_end=false")
    check_resume_matches_uninterrupted(tmp_path, "adam_cm", setting=setting,
                                       folder=Path("default") / "imagenet_small_cnn_adam_cm_seed0")
