"""One torchrun process of the data-parallel test: trains through the runner, then saves its own final state.

    torchrun --nproc_per_node=2 tests/experiments/ddp_image_worker.py <out dir> <override> ...
"""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `tests.` and `experiments.`

from experiments.image_classification import run  # noqa: E402
from tests.experiments.image_runner_helpers import compose_config  # noqa: E402

out_dir, overrides = Path(sys.argv[1]), sys.argv[2:]
result = run(compose_config(*overrides), out_dir / "run")
torch.save({"model": result.model.state_dict(), "optimizer": result.optimizer.state_dict()},
           out_dir / f"rank{os.environ['RANK']}.pt")
