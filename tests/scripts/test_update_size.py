"""scripts/update_size.py measures update sizes that closed forms fix: Adam's first step, Adam+CM's."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

import update_size  # noqa: E402


def test_first_steps_match_their_closed_forms():
    # Adam's first update is lr * g / (|g| + eps) per weight: size lr * sqrt(weights) when no gradient is 0.
    weights = 20 * 64 + 64 + 64 * 10 + 10
    [adam] = update_size.update_sizes("adam", 1e-3, 1)
    assert adam == pytest.approx(1e-3 * math.sqrt(weights), rel=1e-4)
    # Adam+CM's first step stores the gradient in its buffer and moves nothing.
    assert update_size.update_sizes("adam_cm", 1e-3, 1) == [0.0]


def test_the_script_prints_a_ratio_row_per_optimizer_and_lr(capsys):
    update_size.main(["--steps", "2", "--optimizers", "adam_cm"])
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["optimizer", "step", "1", "step", "2"]
    assert out[3].split()[:3] == ["adam_cm,", "lr=0.001", "0.00"] and out[4].startswith("adam_cm, lr=0.0001")
