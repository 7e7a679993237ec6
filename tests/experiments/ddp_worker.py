"""One torchrun process of a data-parallel test: trains through a runner, then saves its own final state.

    torchrun --nproc_per_node=2 tests/experiments/ddp_worker.py <runner module> <config name> <out dir> <override> ...

Several runs in one launch: separate their override lists with "--"; run i trains in <out dir>/run<i>
(the first in <out dir>/run) and saves rank<r>_<i>.pt (the first: rank<r>.pt). A run that stops on a
non-finite loss saves {"error": its message} instead, and the launch goes on with the next run.
"""

import importlib
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository, for `tests.` and `experiments.`

from experiments.engine import NonFiniteLossError, checkpoint  # noqa: E402
from tests.experiments.image_runner_helpers import compose_runner_config  # noqa: E402


runner, config_name, out_dir, rest = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4:]
torch.distributed.init_process_group("gloo")  # one process group for all the runs (the engine uses it as it is)
runs, current = [], []
for arg in rest:
    if arg == "--":
        runs.append(current)
        current = []
    else:
        current.append(arg)
runs.append(current)
for i, overrides in enumerate(runs):
    suffix = "" if i == 0 else f"_{i}"
    run_dir = out_dir / f"run{'' if i == 0 else i}"
    try:
        result = importlib.import_module(runner).run(compose_runner_config(config_name, *overrides), run_dir)
    except NonFiniteLossError as error:
        torch.save({"error": str(error)}, out_dir / f"rank{os.environ['RANK']}{suffix}.pt")
        continue
    saved = checkpoint.read(run_dir)
    model, optimizer = result.model.state_dict(), result.optimizer.state_dict()
    if any(hasattr(v, "to_local") for v in model.values()):  # fsdp: the shards, gathered from the checkpoint
        model, optimizer = saved["model"], saved["optimizer"]
    torch.save({"model": model, "optimizer": optimizer, "per_process": saved["per_process"]},
               out_dir / f"rank{os.environ['RANK']}{suffix}.pt")
torch.distributed.destroy_process_group()
