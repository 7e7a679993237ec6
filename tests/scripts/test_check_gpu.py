"""`make check-gpu` on a machine without a GPU: one line saying so, exit 0 (CI has no GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_without_a_gpu_it_says_so_in_one_line_and_succeeds(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "scripts/check_gpu.py", "--out", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "check-gpu: no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure, skipped."]
    assert not (tmp_path / "gpu.md").exists()
