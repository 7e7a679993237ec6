"""The training loop every runner shares.

`train(cfg, build_task, run_dir)` joins torchrun's process group if there is one, seeds, builds the
runner's Task, resumes from `run_dir/checkpoint.pt` when it exists, and trains: one optimizer step
per batch (SAM's two passes through cmopt.sam_step), a per-step LR schedule, evaluation, flatness
and optimizer diagnostics on a schedule, metrics to metrics.jsonl (and W&B), atomic checkpoints,
and summary.json at the end. Only the main process writes files.

A training step reads nothing back to the host: the window's losses and statistics stay on the device
and are read at each log line, where (and before each checkpoint) all processes check together that
the loss and the weights are finite, so every process stops with the same message and a non-finite
state is never saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.nn.utils import clip_grad_norm_
from torch.optim import Optimizer
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import cmopt
from experiments.engine import checkpoint, data, distributed, run_record
from experiments.engine.checkpoint import CHECKPOINT_NAME
from experiments.engine.distributed import Placement
from experiments.engine.metrics import METRICS_NAME, MetricsLog, read_summary, write_summary
from experiments.engine.schedule import build_scheduler
from experiments.engine.settings import check_settings
from experiments.engine.task import Task, detach, move_to
from experiments.options import PLACEMENT_KEYS, check_options

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss (or a weight) became NaN or infinite; the run stops without checkpointing the bad state."""


@dataclass
class TrainResult:
    summary: dict[str, Any]
    model: nn.Module
    optimizer: Optimizer


@dataclass
class Progress:
    """Where training stands: steps taken, and the next batch to train (stage, epoch, batch index)."""

    step: int = 0
    stage: int = 0
    epoch: int = 0
    batch: int = 0
    finished: bool = False


def train(cfg: DictConfig, build_task: Callable[[DictConfig], Task], run_dir: str | Path) -> TrainResult:
    """Train the Task that `build_task(cfg)` returns, in `run_dir`, resuming from its checkpoint if any."""
    with run_record.removed_if_refused(Path(run_dir), cfg):
        check_settings(cfg)
        placement = distributed.setup(cfg.trainer.device)
        try:
            _make_deterministic(placement.device, cfg.trainer.deterministic_gpu)
            checkpoint.seed_everything(cfg.seed)  # the same initial weights on every process
            with distributed.local_main_first(placement):  # one download per machine, not one per process
                task = build_task(cfg)
            return Trainer(cfg, task, placement, Path(run_dir)).fit()
        finally:
            distributed.teardown()


@contextlib.contextmanager
def exit_on_user_error():
    """Errors a user can fix (bad config, missing data, diverged loss) end in one message and exit code 1.

    HYDRA_FULL_ERROR=1 shows the traceback instead, as Hydra does for its own errors. Either way, and for
    any other error or an interrupt, the run's log file says how the run ended. In a multirun the error
    fails that run only: the message is printed and raised as RunFailed, which Hydra records, and the
    sweep goes on with its other runs (one diverged learning rate must not cancel the rest of a grid).
    """
    try:
        yield
    except (ValueError, FileNotFoundError, ImportError, NonFiniteLossError) as error:
        _log_to_files(f"Error: {error}")
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {error}\n(Set HYDRA_FULL_ERROR=1 for the traceback.)", file=sys.stderr)
        if _in_multirun():
            raise RunFailed(str(error)) from None
        sys.exit(1)
    except BaseException as error:  # noqa: BLE001  (logged, then raised on as it was)
        _log_to_files(f"Stopped by {type(error).__name__}: {error}")
        raise


class RunFailed(RuntimeError):
    """One run of a multirun stopped with a user error (already printed); the sweep's other runs go on."""


def _in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return False
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _log_to_files(message: str) -> None:
    """An error line for the log files only (Hydra's <run folder>/<job>.log): the console shows it once, plainly."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and record.levelno >= handler.level:
            handler.handle(record)


class Trainer:
    def __init__(self, cfg: DictConfig, task: Task, placement: Placement, run_dir: Path):
        self.cfg, self.t, self.task, self.placement, self.run_dir = cfg, cfg.trainer, task, placement, run_dir
        self.model = task.model.to(placement.device)  # what checkpoints hold: never the compiled wrapper
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        if self.t.compile in ("optimizer", "both"):
            cmopt.compile_optimizer(self.optimizer)  # before the scheduler, as compile_optimizer asks
        self.ddp_model = (DistributedDataParallel(self.model, device_ids=_device_ids(placement))
                          if placement.distributed else self.model)
        # Training passes go through the compiled model; evaluation and flatness (double backward) stay eager.
        self.train_model = torch.compile(self.ddp_model) if self.t.compile in ("model", "both") else self.ddp_model
        self.batch_size = _per_process_batch_size(self.t.batch_size, placement.world_size)
        self.eval_batch_size = self.t.eval_batch_size or self.t.batch_size  # global, like batch_size
        self.stages = task.stages
        self.batches_per_epoch = [data.batches_per_epoch(d, self.batch_size, placement) for d in self.stages]
        self.epochs, self.total_steps = self._length()
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, select=task.select,
                                         **OmegaConf.to_container(cfg.scheduler, resolve=True))
        if self.t.grad_clip:
            # SAM's perturbation is normalised, so clipping its first-pass gradient would change nothing:
            # clip once, just before the update (for SAM, in its base optimizer's step).
            updater = getattr(self.optimizer, "base_optimizer", self.optimizer)
            updater.register_step_pre_hook(self._clip_gradients)
        self.progress = Progress()
        self.window = _Window()  # this process's training loss and statistics since the last log line
        self.latest: dict[str, Any] = {}  # the last logged value of every metric, for summary.json
        self.best: dict[str, Any] = {}  # with Task.select: the step and metrics of the best evaluation so far
        self.carried = None  # with Task.initial_state: the state carried to the next training batch
        # The last stage's first loss: a final training loss above it means divergence.
        self.first_loss: torch.Tensor | float | None = None
        self.wall_time_before_s = 0.0  # time spent before the last resumption
        self.flatness_batch = (data.fixed_batch(self.stages[0], self.t.flatness_batch_size, task.collate_fn)
                               if self.t.flatness_interval or self.t.flatness_at_end else None)

    def _clip_gradients(self, *_) -> None:
        clip_grad_norm_(self.model.parameters(), self.t.grad_clip)

    # ---- the run ----------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        checkpoint_path = self.run_dir / CHECKPOINT_NAME
        resumed = checkpoint.load(checkpoint_path, self.placement.device) if checkpoint_path.exists() else None
        if resumed is not None:
            self._restore(resumed)
        if self.progress.finished:
            summary = read_summary(self.run_dir)
            if self.placement.is_main:
                log.info("%s already finished (%d steps): %s. Nothing to train; delete the folder to train again.",
                         self.run_dir, self.progress.step, _headline(summary))
            return TrainResult(summary, self.model, self.optimizer)
        if resumed is None:
            # Per-process streams: dropout masks differ across processes.
            checkpoint.seed_everything(self.cfg.seed + self.placement.rank)
        if self.placement.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
            run_record.record_accepted_run(self.cfg, self.run_dir)  # .hydra/ and the log: only for a run it trains
            log.info("Training %d steps (%s) in %s on %s x%d%s.", self.total_steps, self._length_in_words(),
                     self.run_dir, self.placement.device, self.placement.world_size,
                     f", resumed at step {self.progress.step}" if resumed else "")
        self.metrics = MetricsLog(self.run_dir, self.cfg.logger, self.cfg, enabled=self.placement.is_main,
                                  resume_bytes=resumed["metrics_bytes"] if resumed else 0)
        self.started = time.perf_counter()
        summary, exit_code = None, 1
        try:
            self._loop()
            summary = self._finish()
            exit_code = 0
        finally:
            self.metrics.close(summary, exit_code)
        return TrainResult(summary, self.model, self.optimizer)

    def _loop(self) -> None:
        name = self.run_dir.name if len(self.run_dir.name) <= 40 else self.run_dir.name[:39] + "…"
        # Log lines (evaluations) print above the bar instead of through it.
        with logging_redirect_tqdm(), tqdm(total=self.total_steps, initial=self.progress.step,
                                           disable=not self.placement.is_main, desc=name, dynamic_ncols=True) as bar:
            if self.progress.step == 0 and self.t.eval_at_start:
                self._log(self.evaluate(), 0, 0)  # the untrained model (continual learning's baseline)
            for stage, epoch, index, batch in self._batches():
                started = time.perf_counter()
                loss, count, stats = self._train_step(batch)
                if epoch == 0 and index == 0:  # a stage's first step (continual tasks each start afresh)
                    self.first_loss = loss  # stays on the device; read with the next checkpoint or at the end
                self.window.add(loss, count, stats, time.perf_counter() - started, self.progress.step + 1,
                                stage, epoch)
                self._advance(stage, epoch, index)
                bar.update(1)
                step, last = self.progress.step, self.progress.step == self.total_steps
                end_of_epoch = self.progress.batch == 0
                end_of_stage = end_of_epoch and self.progress.stage != stage
                line = {}
                if step % self.t.log_interval == 0 or last:
                    line.update(self._train_metrics(self.window))
                    bar.set_postfix(loss=f"{line['train_loss']:.4f}")
                    self.window = _Window()
                eval_due = _due(step, self.t.eval_interval) if self.t.eval_interval else end_of_epoch
                if eval_due or end_of_stage or last:
                    line.update(self.evaluate())
                    self._keep_if_best(line)
                if _due(step, self.t.flatness_interval) or (last and self.t.flatness_at_end):
                    line.update(self.measure_flatness())
                if line:
                    self._log(line, stage, epoch)
                if last:
                    break
                if _due(step, self.t.checkpoint_interval):
                    self._save_checkpoint()

    def _batches(self) -> Iterator[tuple[int, int, int, Any]]:
        """(stage, epoch, batch index, batch) from the resume position to the end of the last stage."""
        start = (self.progress.stage, self.progress.epoch, self.progress.batch)
        for stage in range(start[0], len(self.stages)):
            for epoch in range(start[1] if stage == start[0] else 0, self.epochs):
                skip = start[2] if (stage, epoch) == start[:2] else 0
                if skip == 0:
                    self.carried = None  # every epoch starts from Task.initial_state
                loader = data.train_loader(
                    self.stages[stage], batch_size=self.batch_size, seed=self.cfg.seed, stage=stage,
                    epoch=epoch, skip_batches=skip, shuffle=self.t.shuffle, num_workers=self.t.num_workers,
                    collate_fn=self.task.collate_fn, placement=self.placement)
                for index, batch in enumerate(loader, start=skip):
                    yield stage, epoch, index, batch

    def _forward(self, model: nn.Module, batch, state=None) -> tuple:
        """(loss, count, stats, next carried state or None): Task.forward with the state when it carries one."""
        if self.task.initial_state is None:
            return (*self.task.forward(model, batch), None)
        return self.task.forward(model, batch, self.task.initial_state(batch) if state is None else state)

    def _train_step(self, batch) -> tuple[torch.Tensor, int | torch.Tensor, dict[str, torch.Tensor]]:
        batch = move_to(batch, self.placement.device)
        first_pass = []

        def compute_loss() -> torch.Tensor:
            # SAM's second pass starts from the same carried state as its first; the first pass's is kept.
            with self._autocast():
                loss, count, stats, state = self._forward(self.train_model, batch, self.carried)
            first_pass.append((count, stats, state))
            return loss

        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(self.optimizer, cmopt.SAM):
            loss = cmopt.sam_step(self.optimizer, self.ddp_model, compute_loss)
        else:
            loss = compute_loss()
            loss.backward()
            self.optimizer.step()
        self.lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        count, stats, state = first_pass[0]
        if self.task.initial_state is not None:
            self.carried = detach(state)  # truncated backpropagation: the next batch starts from its value
        return loss.detach(), count, {k: v.detach() for k, v in stats.items()}

    def _check_finite(self, losses: torch.Tensor, window: "_Window") -> None:
        """Raise NonFiniteLossError naming the first step whose (all-process) loss is not finite."""
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad) == 0:
            return
        at = int(bad[0])
        step, stage, epoch = window.positions[at]
        raise NonFiniteLossError(
            f"The training loss is {float(losses[at])} at step {step} ({self._where(stage, epoch)}). "
            f"{self._advice()}")

    def _advice(self) -> str:
        fix = f"{self._lower_lr()} or clip gradients (trainer.grad_clip=1.0)."
        if not hasattr(self, "saved_step"):
            return f"{fix} No checkpoint was written yet; {METRICS_NAME} is kept."
        # The checkpoint holds this config: a rerun with a change would be refused in this folder.
        return (f"{fix} The last good checkpoint (step {self.saved_step}) and {METRICS_NAME} are kept in "
                f"{self.run_dir}. A changed config trains in a folder of its own: add run_name=<new name> to "
                f"the command, or delete {self.run_dir} to start over.")

    def _check_state_finite(self) -> None:
        """Before a checkpoint: the unlogged losses and every weight finite, on all processes together."""
        losses = self.window.losses(self.placement.device)
        weights_ok = torch.stack([p.detach().isfinite().all() for p in self.model.parameters()]).all()
        sums = distributed.sum_across_processes(
            {"losses": losses, "weights_bad": (~weights_ok).double()}, self.placement)
        self._check_finite(sums["losses"], self.window)
        if float(sums["weights_bad"]) > 0:
            raise NonFiniteLossError(
                f"A weight became NaN or infinite by step {self.progress.step}, with a finite loss. "
                f"{self._advice()}")

    def _advance(self, stage: int, epoch: int, index: int) -> None:
        p = self.progress
        p.step += 1
        p.stage, p.epoch, p.batch = stage, epoch, index + 1
        if p.batch == self.batches_per_epoch[stage]:
            p.epoch, p.batch = epoch + 1, 0
            if p.epoch == self.epochs:
                p.stage, p.epoch = stage + 1, 0

    # ---- measurements -----------------------------------------------------------------------------

    def _train_metrics(self, window: "_Window") -> dict[str, Any]:
        """The window's metrics: its first read of the device since the last log line."""
        device = self.placement.device
        sums = distributed.sum_across_processes(
            {"losses": window.losses(device), "count": torch.as_tensor(window.count, device=device),
             **window.stats}, self.placement)
        losses = sums.pop("losses")
        self._check_finite(losses, window)
        sums["loss"] = losses.sum()
        items = float(sums["count"])
        metrics = self._per_item(sums)
        metrics = {f"train_{k}": v for k, v in metrics.items()}
        step_time_s = window.time_s / window.steps
        metrics.update(lr=self.lr, step_time_s=step_time_s,
                       **{f"{self.task.items}_per_s": items / window.steps / step_time_s},
                       optimizer_state_bytes=cmopt.optimizer_state_bytes(self.optimizer),
                       **cmopt.critical_buffer_stats(self.optimizer))
        return metrics

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Every eval split: statistics summed over all processes' items, divided by the summed counts."""
        self.model.eval()
        metrics = {}
        for split, dataset in self.task.eval_data.items():
            sums = {"loss": torch.zeros((), dtype=torch.float64, device=self.placement.device),
                    "count": torch.zeros((), dtype=torch.float64, device=self.placement.device)}
            loader = data.eval_loader(dataset, batch_size=self.eval_batch_size, num_workers=self.t.num_workers,
                                      collate_fn=self.task.collate_fn, placement=self.placement)
            state = None  # every split starts from Task.initial_state
            for batch in loader:
                with self._autocast():
                    loss, count, stats, state = self._forward(
                        self.model, move_to(batch, self.placement.device), state)
                sums["loss"] += loss.double() * count
                sums["count"] += count
                for name, value in stats.items():
                    sums[name] = sums.get(name, 0) + value.double()
            split_metrics = self._per_item(distributed.sum_across_processes(sums, self.placement))
            metrics.update({f"{split}_{k}": v for k, v in split_metrics.items()})
        self.model.train()
        return metrics

    def measure_flatness(self) -> dict[str, float]:
        """Top Hessian eigenvalue (and trace, if asked) of the training loss on a fixed batch, in eval mode.

        Main process only: every process holds the same weights."""
        if not self.placement.is_main:
            return {}
        batch = move_to(self.flatness_batch, self.placement.device)

        def loss_fn(model, b):
            return self._forward(model, b)[0].float()  # a carried state starts from Task.initial_state

        self.model.eval()
        # cuDNN's RNN kernels have no double backward, which Hessian-vector products need.
        with torch.backends.cudnn.flags(enabled=False):
            metrics = {"top_hessian_eigenvalue": cmopt.top_hessian_eigenvalue(
                self.model, loss_fn, batch, max_iter=self.t.flatness_max_iter, seed=self.cfg.seed)}
            if self.t.hessian_trace_samples:
                metrics["hessian_trace"] = cmopt.hessian_trace(
                    self.model, loss_fn, batch, n_samples=self.t.hessian_trace_samples, seed=self.cfg.seed)
        self.model.train()
        return metrics

    def _keep_if_best(self, line: dict[str, Any]) -> None:
        """With Task.select: remember this evaluation and keep the model when its metric is the best so far.
        A schedule that follows the metric (LR on plateau) sees it too."""
        if self.task.select is None:
            return
        name, mode = self.task.select
        value = line[name]
        self.scheduler.observe(value)
        best = self.best.get("metrics", {}).get(name)
        if best is None or (value < best if mode == "min" else value > best):
            evaluated = {k: v for k, v in line.items() if any(k.startswith(f"{s}_") for s in self.task.eval_data)}
            self.best = {"step": self.progress.step, "metrics": evaluated}
            if self.placement.is_main:
                checkpoint.save_atomically(self.model.state_dict(), self.run_dir / checkpoint.BEST_MODEL_NAME)

    def _per_item(self, sums: dict[str, torch.Tensor]) -> dict[str, float]:
        count = float(sums.pop("count"))
        metrics = {name: float(value) / count for name, value in sums.items()}
        if self.task.derive is not None:
            metrics.update(self.task.derive(metrics))
        return metrics

    # ---- outputs ----------------------------------------------------------------------------------

    def _log(self, line: dict[str, Any], stage: int, epoch: int) -> None:
        # Epochs and stages are counted from 1 wherever a user reads them (console, metrics.jsonl, errors).
        position = {"step": self.progress.step, "epoch": epoch + 1}
        if len(self.stages) > 1:
            position["stage"] = stage + 1
        self.metrics.write({**position, **line})
        self.latest.update(line)
        reported = {k: v for k, v in line.items() if k in REPORTED or self._is_evaluated(k)}
        if self.placement.is_main and any(k != "train_loss" for k in reported):  # an evaluation or flatness
            log.info("step %d/%d (%s): %s", self.progress.step, self.total_steps, self._where(stage, epoch),
                     _numbers(reported))

    def _where(self, stage: int, epoch: int) -> str:
        """'epoch 2/4' or 'stage 3/5, epoch 1/1' from 0-based positions."""
        where = f"epoch {epoch + 1}/{self.epochs}"
        return where if len(self.stages) == 1 else f"stage {stage + 1}/{len(self.stages)}, {where}"

    def _is_evaluated(self, key: str) -> bool:
        return any(key.startswith(f"{split}_") for split in self.task.eval_data)

    def _save_checkpoint(self) -> None:
        self._check_state_finite()
        first_loss = self._first_loss()  # on every process: it averages over them
        # Every process's RNG streams, unlogged training statistics and carried state.
        per_process = distributed.gather_objects(
            {"rng": checkpoint.rng_state(), "window": self.window.state(), "carried": move_to(self.carried, "cpu")},
            self.placement)
        if self.placement.is_main:
            checkpoint.save_atomically({
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "progress": asdict(self.progress),
                "per_process": per_process,
                "metrics_bytes": self.metrics.size(),
                "latest": self.latest,
                "best": self.best,
                "wall_time_s": self._wall_time_s(),
                "first_loss": first_loss,
                "config": _identity(self.cfg),
            }, self.run_dir / CHECKPOINT_NAME)
        self.saved_step = self.progress.step

    def _restore(self, state: dict[str, Any]) -> None:
        differences = _differences(state["config"], _identity(self.cfg))
        if differences:
            raise ValueError(
                f"The run folder {self.run_dir} holds a run with a different config "
                f"({'; '.join(differences)}). "
                "Give this run its own folder (e.g. run_name=<name> or runs_dir=<dir>), or delete the folder "
                "to start over.")
        finished = state["progress"]["finished"]  # a finished run reopens with any number of processes
        if not finished and len(state["per_process"]) != self.placement.world_size:
            raise ValueError(f"{self.run_dir} was trained by {len(state['per_process'])} process(es); resume "
                             f"it with the same number (now {self.placement.world_size}) to continue exactly.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = Progress(**state["progress"])
        self.latest = dict(state["latest"])
        self.best = dict(state.get("best", {}))
        self.wall_time_before_s = state["wall_time_s"]
        self.saved_step = self.progress.step
        self.first_loss = state.get("first_loss")
        if finished:
            return
        own = state["per_process"][self.placement.rank]
        checkpoint.set_rng_state(own["rng"])
        self.window = _Window(**own["window"])
        self.carried = move_to(own.get("carried"), self.placement.device)

    def _finish(self) -> dict[str, Any]:
        summary = None
        warnings = self._warnings()  # on every process: reading the first loss averages over them
        if self.placement.is_main:
            summary = {"status": "finished", "steps": self.progress.step, "top_hessian_eigenvalue": None,
                       **self.latest, "wall_time_s": self._wall_time_s(), "warnings": warnings}
            if self.best:  # every evaluated metric at the best evaluation; at the end as final_<metric>
                name = self.task.select[0]
                summary.update({f"final_{k}": self.latest[k] for k in self.best["metrics"]})
                summary.update(self.best["metrics"], best_step=self.best["step"])
                summary[f"best_{name}"] = self.best["metrics"][name]
            if self.task.summarize is not None:
                lines = [json.loads(s) for s in (self.run_dir / METRICS_NAME).read_text().splitlines()]
                summary.update(self.task.summarize(lines))
            write_summary(self.run_dir, summary)
        self.progress.finished = True
        self._save_checkpoint()  # after summary.json: a run killed in between redoes its last steps
        if self.placement.is_main:
            for warning in warnings:
                log.warning(warning)
            log.info("Finished %d steps in %s: %s.", self.progress.step, self.run_dir, _headline(summary))
        return summary

    def _first_loss(self) -> float | None:
        """The last stage's first training loss, averaged over the processes (read from the device once)."""
        if isinstance(self.first_loss, torch.Tensor):
            total = distributed.sum_across_processes({"loss": self.first_loss.double()}, self.placement)["loss"]
            self.first_loss = float(total) / self.placement.world_size
        return self.first_loss

    def _warnings(self) -> list[str]:
        """What a finished run's numbers say went wrong without a NaN: a final training loss above the first
        of its (last) stage; an earlier stage's would compare different tasks of a continual run."""
        first, final = self._first_loss(), self.latest.get("train_loss")
        if first is None or final is None or final <= first:
            return []
        which = "first step's of the last stage" if len(self.stages) > 1 else "first step's"
        return [f"The final training loss ({final:.4g}) is above the {which} ({first:.4g}): the run diverged "
                f"or did not learn. {self._lower_lr()} or clip gradients (trainer.grad_clip=1.0), in a folder of "
                "its own (run_name=<new name>)."]

    def _lower_lr(self) -> str:
        lr = self.cfg.optimizer.lr
        return f"Lower the learning rate (now {lr:g}), e.g. to a tenth: optimizer.lr={lr / 10:g},"

    def _wall_time_s(self) -> float:
        return self.wall_time_before_s + time.perf_counter() - self.started

    def _length(self) -> tuple[int, int]:
        """(epochs per stage, total steps). trainer.max_steps, when given, decides a single-stage run's length
        (epochs extend to reach it, as in most trainers); over several stages it only caps the steps."""
        natural = self.t.epochs * sum(self.batches_per_epoch)
        if natural == 0:
            sizes = ", ".join(str(len(d)) for d in self.stages)
            raise ValueError(f"No full batch to train on: trainer.batch_size={self.t.batch_size} over "
                             f"{self.placement.world_size} process(es) and training set(s) of {sizes} items, "
                             f"trainer.epochs={self.t.epochs}. Lower the batch size or use more data.")
        max_steps = self.t.max_steps
        if max_steps is None or max_steps <= natural:
            return self.t.epochs, min(natural, max_steps or natural)
        if len(self.stages) == 1:
            return -(-max_steps // self.batches_per_epoch[0]), max_steps
        return self.t.epochs, natural

    def _length_in_words(self) -> str:
        epochs = f"{self.epochs} epoch(s) of {'+'.join(map(str, self.batches_per_epoch))} steps"
        if len(self.stages) > 1:
            epochs += f" per stage, {len(self.stages)} stages"
        max_steps = self.t.max_steps
        if max_steps is not None and self.epochs > self.t.epochs:
            return f"trainer.max_steps={max_steps} decides: {epochs}, trainer.epochs={self.t.epochs} extended"
        if max_steps is not None and max_steps < self.epochs * sum(self.batches_per_epoch):
            return f"{epochs}, cut at trainer.max_steps={max_steps}"
        if max_steps is not None and len(self.stages) > 1 and max_steps > self.total_steps:
            return f"{epochs}; trainer.max_steps={max_steps} only caps a run of several stages"
        return epochs

    def _autocast(self):
        bf16 = self.t.precision == "bf16" and self.placement.device.type == "cuda"  # the CPU runs fp32
        return torch.autocast(self.placement.device.type, dtype=torch.bfloat16, enabled=bf16)


class _Window:
    """Training losses (one per step, times its count), counts and statistics since the last log line.

    They stay where the step computed them (no host read per step); `positions` are (step, stage, epoch).
    """

    def __init__(self, step_losses=None, count=0, steps=0, time_s=0.0, stats=None, positions=None):
        self.step_losses: list[torch.Tensor] = list(step_losses or [])
        self.count, self.steps, self.time_s = count, steps, time_s
        self.stats: dict[str, torch.Tensor] = dict(stats or {})
        self.positions: list[tuple[int, int, int]] = [tuple(p) for p in positions or []]

    def add(self, loss: torch.Tensor, count: int | torch.Tensor, stats: dict[str, torch.Tensor], time_s: float,
            step: int, stage: int, epoch: int) -> None:
        self.step_losses.append(loss.double() * count)
        self.count = self.count + count
        self.steps += 1
        self.time_s += time_s
        self.positions.append((step, stage, epoch))
        for name, value in stats.items():
            self.stats[name] = self.stats.get(name, 0) + value.double()

    def losses(self, device: torch.device) -> torch.Tensor:
        if not self.step_losses:
            return torch.zeros(0, dtype=torch.float64, device=device)
        return torch.stack([x.to(device) for x in self.step_losses])

    def state(self) -> dict[str, Any]:
        """For the checkpoint, on the CPU."""
        return {"step_losses": [x.cpu() for x in self.step_losses], "count": move_to(self.count, "cpu"),
                "steps": self.steps, "time_s": self.time_s, "positions": self.positions,
                "stats": {k: move_to(v, "cpu") for k, v in self.stats.items()}}


# Besides every evaluated metric (<split>_<name>), what an evaluation's log line and the final line show.
REPORTED = ("train_loss", "top_hessian_eigenvalue", "hessian_trace")


def _numbers(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _headline(summary: dict[str, Any]) -> str:
    """The summary's results in one line: selected-best and final metrics of every split, training loss,
    flatness and any summarize() numbers, without timings, diagnostics or bookkeeping."""
    skipped = ("status", "steps", "wall_time_s", "warnings", "lr", "step_time_s", "optimizer_state_bytes",
               "best_step")
    shown = {k: v for k, v in summary.items()
             if k not in skipped and isinstance(v, (int, float)) and not isinstance(v, bool)
             and not k.endswith("_per_s") and not k.startswith(("buffer_", "critical_", "dataset_"))
             and (not k.startswith("train_") or k == "train_loss")}
    shown = dict(sorted(shown.items(), key=lambda item: item[0] in REPORTED))  # flatness and train_loss last
    return _numbers(shown) + (f" (with {len(summary['warnings'])} warning(s))" if summary.get("warnings") else "")


def build_optimizer(optimizer_cfg: DictConfig, model: nn.Module) -> Optimizer:
    """cmopt.create_optimizer(name, model, **hyperparameters) from an optimizer config group entry."""
    options = OmegaConf.to_container(optimizer_cfg, resolve=True)
    name = options.pop("name")
    check_options("Optimizer", name, [*cmopt.registry.hyperparameter_names(name), "no_decay_bias_and_norm"], options)
    hyperparameters = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return cmopt.create_optimizer(name, model, **hyperparameters)


def _due(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def _per_process_batch_size(batch_size: int, world_size: int) -> int:
    # A positive integer already (engine/settings.py); here only its split over the processes is checked.
    if batch_size < world_size or batch_size % world_size:
        raise ValueError(f"trainer.batch_size={batch_size} is the global batch and must split evenly over "
                         f"{world_size} processes; use a multiple of {world_size}.")
    return batch_size // world_size


def _device_ids(placement: Placement) -> list[int] | None:
    return [placement.device.index] if placement.device.type == "cuda" else None


def _make_deterministic(device: torch.device, on_gpu: bool) -> None:
    """Deterministic kernels: always on the CPU (bit-for-bit resume); on GPUs only when asked, as they can be slow."""
    if device.type == "cuda":
        if not on_gpu:
            return
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)  # ops without a deterministic kernel only warn


def _identity(cfg: DictConfig) -> dict[str, Any]:
    """The config as written (interpolations unresolved), minus what may change on resume (where things live
    and how they are loaded)."""
    identity = OmegaConf.to_container(cfg, resolve=False)
    for key in PLACEMENT_KEYS:
        *parents, leaf = key.split(".")
        node = identity
        for parent in parents:
            node = node.get(parent, {})
        node.pop(leaf, None)
    return identity


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in sorted(set(saved) | set(now), key=str)
                for d in _differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} in the folder, {now!r} now"]
