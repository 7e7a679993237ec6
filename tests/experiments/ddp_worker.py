"""One torchrun process of a data-parallel test: trains through a runner, then saves its own final state.

    torchrun --nproc_per_node=2 tests/experiments/ddp_worker.py <runner module> <config name> <out dir> <override> ...
"""

import importlib
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `tests.` and `experiments.`

from tests.experiments.image_runner_helpers import compose_runner_config  # noqa: E402

runner, config_name, out_dir, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
result = importlib.import_module(runner).run(compose_runner_config(config_name, *overrides), out_dir / "run")
saved = torch.load(out_dir / "run" / "checkpoint.pt", weights_only=True)
torch.save({"model": result.model.state_dict(), "optimizer": result.optimizer.state_dict(),
            "per_process": saved["per_process"]}, out_dir / f"rank{os.environ['RANK']}.pt")
