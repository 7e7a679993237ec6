"""Independent jobs on a pool of worker processes, results in submission order (so in any pool, the same numbers)."""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from tqdm import tqdm
from experiments.options import UserError


def _one_thread() -> None:
    torch.set_num_threads(1)  # the jobs are tiny: threads only contend with the other workers


class Jobs:
    """Maps a function over jobs with a progress bar, on `workers` processes (1: in this process)."""

    def __init__(self, pool: Any | None):
        self._pool = pool

    def map(self, function: Callable[[Any], Any], jobs: Sequence[Any], description: str) -> list[Any]:
        results = map(function, jobs) if self._pool is None else self._pool.imap(function, jobs)
        return list(tqdm(results, total=len(jobs), desc=description, unit="job", dynamic_ncols=True))


@contextlib.contextmanager
def job_pool(workers: int) -> Iterator[Jobs]:
    if workers < 1:
        raise UserError(f"workers={workers}: give the number of processes to run jobs on, 1 or more.")
    _one_thread()
    # torch.optim imports torch._dynamo (~2 s) on the first optimizer built: do it once, before forking.
    torch.optim.SGD([torch.zeros(1)])
    if workers == 1:
        yield Jobs(None)
        return
    # fork: workers inherit the imported modules instead of importing torch again.
    with multiprocessing.get_context("fork").Pool(workers, initializer=_one_thread) as pool:
        yield Jobs(pool)
