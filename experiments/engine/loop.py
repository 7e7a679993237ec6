"""The training loop every runner shares.

`train(cfg, build_task, run_dir)` joins torchrun's process group if there is one, seeds, builds the
runner's Task, resumes from the run folder's checkpoint when there is one, and trains: one optimizer
step per batch (SAM's two passes through cmopt.sam_step), a per-step LR schedule, and after each step
one decision (`Due`) of what else happens: a log line, an evaluation, a flatness measurement, a
checkpoint, the end. Metrics go to metrics.jsonl (and W&B), summary.json at the end. Only the main
process writes files, except checkpoints, whose shards every process writes.

The pieces: the training state a checkpoint holds (state.py), evaluation and flatness
(evaluation.py), how far the weights move (movement.py), weight averaging (averaging.py), how
parameters are spread over processes (strategy.py: ddp or fsdp), checkpoint I/O (checkpoint.py), the
run's length (length.py) and the NaN rule (finite.py). A training step reads nothing back to the host:
the window's losses and statistics stay on the device and are read at each log line, where (and before
each checkpoint) all processes check together that the loss and the weights are finite, so every
process stops with the same message and a non-finite state is never saved.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import cmopt
from experiments.engine import checkpoint, data, distributed, run_record, strategy as strategies
from experiments.engine.distributed import Placement
from experiments.engine.evaluation import Measurements, unsharded_copy
from experiments.engine.finite import FiniteRule, NonFiniteLossError, lower_lr
from experiments.engine.length import RunLength
from experiments.engine.averaging import Averaging
from experiments.engine.movement import Movement
from experiments.engine.metrics import METRICS_NAME, MetricsLog, read_summary, write_summary
from experiments.engine.schedule import build_scheduler
from experiments.engine.settings import check_settings
from experiments.engine.state import Progress, TrainingState, Window
from experiments.engine.task import Task, detach, move_to
from experiments.options import PLACEMENT_KEYS, UserError, check_options

log = logging.getLogger(__name__)

@dataclass
class TrainResult:
    summary: dict[str, Any]
    model: nn.Module
    optimizer: Optimizer


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
            distributed.teardown(placement)


@contextlib.contextmanager
def exit_on_user_error():
    """Errors a user can fix (UserError: a bad setting, missing data, a refused resume; a diverged loss) end
    in one message and exit code 1. Any other exception is a bug, ours or torch's, and keeps its traceback.

    HYDRA_FULL_ERROR=1 shows the traceback instead, as Hydra does for its own errors. Either way, and for
    any other error or an interrupt, the run's log file says how the run ended. In a multirun the error
    fails that run only: the message is printed and raised as RunFailed, which Hydra records, and the
    sweep goes on with its other runs (one diverged learning rate must not cancel the rest of a grid).
    """
    try:
        yield
    except (UserError, NonFiniteLossError) as error:
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


@dataclass
class Due:
    """What happens after a training step, decided in one place (`Trainer._due`)."""

    log: bool = False
    evaluate: bool = False
    measure: bool = False
    save: bool = False
    stop: bool = False


class Trainer:
    def __init__(self, cfg: DictConfig, task: Task, placement: Placement, run_dir: Path):
        self.cfg, self.t, self.task, self.placement, self.run_dir = cfg, cfg.trainer, task, placement, run_dir
        self.strategy = strategies.build(self.t.strategy, placement)
        self.model = task.model.to(placement.device)  # what checkpoints hold: never a compiled wrapper
        unsharded = unsharded_copy(self.model, self.strategy, self.t, placement.is_main)
        bf16 = self.t.precision == "bf16" and placement.device.type == "cuda"
        # ddp: the DDP wrapper (the plain model in one process); fsdp: the model itself, sharded in place.
        self.wrapped = self.strategy.wrap(self.model, task.shard_units, bf16)
        self.movement = Movement(self.model, self.strategy)  # update size and distance from the initial weights
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        if self.t.compile in ("optimizer", "both"):
            cmopt.compile_optimizer(self.optimizer)  # before the scheduler, as compile_optimizer asks
        # Training passes go through the compiled model; evaluation and flatness (double backward) stay eager.
        self.train_model = torch.compile(self.wrapped) if self.t.compile in ("model", "both") else self.wrapped
        self.measurements = Measurements(task, self.t, placement, self.strategy, cfg.seed, unsharded)
        self.batch_size = _per_process_batch_size(self.t.batch_size, placement.world_size)
        self.stages = task.stages
        self.batches_per_epoch = [data.batches_per_epoch(d, self.batch_size, placement) for d in self.stages]
        self.length = RunLength.of(self.t.epochs, self.t.max_steps, self.batches_per_epoch,
                                   batch_size=self.t.batch_size, world_size=placement.world_size,
                                   stage_sizes=[len(d) for d in self.stages])
        self.epochs, self.total_steps = self.length.epochs, self.length.total_steps
        self.finite = FiniteRule(cfg.optimizer.lr, run_dir, placement, self.length)  # the NaN rule
        self.averaging = Averaging(self.model, self.t, self.total_steps, self.strategy.name, self.measurements)
        self.scheduler = build_scheduler(self.optimizer, self.total_steps, select=task.select,
                                         **OmegaConf.to_container(cfg.scheduler, resolve=True))
        if self.t.grad_clip:
            # SAM's perturbation is normalised, so clipping its first-pass gradient would change nothing:
            # clip once, just before the update (for SAM, in its base optimizer's step).
            updater = getattr(self.optimizer, "base_optimizer", self.optimizer)
            updater.register_step_pre_hook(lambda *_: self.strategy.clip_gradients(self.model, self.t.grad_clip))
        self.state = TrainingState()  # what a checkpoint holds (with model, optimizer, scheduler)
        self.window = Window()  # this process's training loss and statistics since the last log line
        self.carried = None  # with Task.initial_state: the state carried to the next training batch
        self.first_loss: torch.Tensor | None = None  # the last stage's first loss, on the device until read
        self.lr = self.optimizer.param_groups[0]["lr"]  # the lr of the last step taken
        self.metrics: MetricsLog | None = None  # opened by fit()
        self.started = time.perf_counter()

    # ---- the run ----------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        resumed = checkpoint.exists(self.run_dir)
        if resumed:
            self._restore()
        if self.state.progress.finished:
            summary = read_summary(self.run_dir)
            if self.placement.is_main:
                log.info("%s already finished (%d steps): %s. Nothing to train; delete the folder to train again.",
                         self.run_dir, self.state.progress.step, _headline(summary))
            return TrainResult(summary, self.model, self.optimizer)
        if not resumed:
            # Per-process streams: dropout masks differ across processes.
            checkpoint.seed_everything(self.cfg.seed + self.placement.rank)
        if self.placement.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.cfg, self.run_dir / "config.yaml", resolve=True)
            run_record.record_accepted_run(self.cfg, self.run_dir)  # .hydra/ and the log: only for a run it trains
            log.info("Training %d steps (%s) in %s on %s x%d (%s)%s.", self.total_steps, self.length.in_words(),
                     self.run_dir, self.placement.device, self.placement.world_size, self.strategy.name,
                     f", resumed at step {self.state.progress.step}" if resumed else "")
        self.metrics = MetricsLog(self.run_dir, self.cfg.logger, self.cfg, enabled=self.placement.is_main,
                                  resume_bytes=self.state.metrics_bytes if resumed else 0)
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
        progress = self.state.progress
        name = self.run_dir.name if len(self.run_dir.name) <= 40 else self.run_dir.name[:39] + "…"
        # Log lines (evaluations) print above the bar instead of through it.
        with logging_redirect_tqdm(), tqdm(total=self.total_steps, initial=progress.step,
                                           disable=not self.placement.is_main, desc=name, dynamic_ncols=True) as bar:
            if progress.step == 0 and self.t.eval_at_start:
                self._record(self._evaluate(0), 0, 0)  # the untrained model (continual learning's baseline)
            for stage, epoch, index, batch in self._batches():
                self.movement.before_step(self._logs_at(progress.step + 1))  # outside the step's time
                started = time.perf_counter()
                loss, count, stats = self._train_step(batch)
                self.averaging.after_step(self.model, progress.step + 1)
                if epoch == 0 and index == 0:  # a stage's first step (continual tasks each start afresh)
                    self.first_loss = loss  # stays on the device; read with the next checkpoint or at the end
                self.window.add(loss, count, stats, time.perf_counter() - started, (progress.step + 1, stage, epoch))
                progress.advance(stage, epoch, index, self.batches_per_epoch, self.epochs)
                bar.update(1)
                due = self._due(stage)
                line = {}
                if due.log:
                    line.update(self._train_metrics())
                    bar.set_postfix(loss=f"{line['train_loss']:.4f}")
                if due.evaluate:
                    line.update(self._evaluate(stage))
                    self._keep_if_best(line)
                if due.measure:
                    line.update(self.measurements.flatness(self.model))
                if line:
                    self._record(line, stage, epoch)
                if due.stop:
                    break
                if due.save:
                    self._save_checkpoint()

    def _due(self, stage: int) -> Due:
        """The one place that decides what follows the step just taken (`stage`: the stage it trained)."""
        p, t = self.state.progress, self.t
        last = p.step == self.total_steps
        end_of_epoch = p.batch == 0
        end_of_stage = end_of_epoch and p.stage != stage
        return Due(log=self._logs_at(p.step),
                   evaluate=(_every(p.step, t.eval_interval) if t.eval_interval else end_of_epoch) or end_of_stage or last,
                   measure=_every(p.step, t.flatness_interval) or (last and t.flatness_at_end),
                   save=_every(p.step, t.checkpoint_interval) and not last,
                   stop=last)

    def _logs_at(self, step: int) -> bool:
        """Whether step `step` (counted from 1) ends at a log line (known before it is taken)."""
        return step % self.t.log_interval == 0 or step == self.total_steps

    def _batches(self) -> Iterator[tuple[int, int, int, Any]]:
        """(stage, epoch, batch index, batch) from the resume position to the end of the last stage."""
        p = self.state.progress
        start = (p.stage, p.epoch, p.batch)
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

    def _train_step(self, batch) -> tuple[torch.Tensor, int | torch.Tensor, dict[str, torch.Tensor]]:
        batch = move_to(batch, self.placement.device)
        first_pass = []

        def compute_loss() -> torch.Tensor:
            # SAM's second pass starts from the same carried state as its first; the first pass's is kept.
            with self.measurements.autocast():
                loss, count, stats, state = self.measurements.forward(self.train_model, batch, self.carried)
            first_pass.append((count, stats, state))
            return loss

        self.optimizer.zero_grad(set_to_none=True)
        if isinstance(self.optimizer, cmopt.SAM):
            loss = cmopt.sam_step(self.optimizer, self.wrapped, compute_loss)
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

    # ---- measurements -----------------------------------------------------------------------------

    def _train_metrics(self) -> dict[str, Any]:
        """The window's metrics: its first read of the device since the last log line."""
        window, device = self.window, self.placement.device
        sums = distributed.sum_across_processes(
            {"losses": window.losses(device), "count": torch.as_tensor(window.count, device=device),
             **window.stats}, self.placement)
        losses = sums.pop("losses")
        self.finite.check_losses(losses, window, self.state.saved_step)
        sums["loss"] = losses.sum()
        self.state.add_train_totals({k: float(v) for k, v in sums.items()})  # exact: the summary's sums
        items = float(sums["count"])
        metrics = {f"train_{k}": v for k, v in self.measurements.per_item(sums).items()}
        step_time_s = window.time_s / window.steps
        metrics.update(lr=self.lr, step_time_s=step_time_s,
                       **{f"{self.task.items}_per_s": items / window.steps / step_time_s},
                       optimizer_state_bytes=cmopt.optimizer_state_bytes(self.optimizer),
                       **self.averaging.state_bytes(), **cmopt.critical_buffer_stats(self.optimizer),
                       **self.movement.metrics(self.lr))
        self.window = Window()
        return metrics

    def _evaluate(self, stage: int) -> dict[str, float]:
        """The evaluated model: the trained one, or with trainer.weight_averaging its average (averaging.py)."""
        return self.measurements.evaluate(self.averaging.evaluated(self.model, self.stages[stage]))

    def _keep_if_best(self, line: dict[str, Any]) -> None:
        """With Task.select: remember this evaluation and keep the model when its metric is the best so far.
        A schedule that follows the metric (LR on plateau) sees it too."""
        if self.task.select is None:
            return
        name, mode = self.task.select
        value = line[name]
        self.scheduler.observe(value)
        best = self.state.best.get("metrics", {}).get(name)
        if best is None or (value < best if mode == "min" else value > best):
            self.state.best = {"step": self.state.progress.step,
                               "metrics": {k: v for k, v in line.items() if self._is_evaluated(k)}}
            averaged = self.averaging.module  # the evaluated weights: averaged ones once there is an average
            weights = self.strategy.full_state_dict(self.model if averaged is None else averaged)  # collective under fsdp
            if self.placement.is_main:
                checkpoint.save_atomically(weights, self.run_dir / checkpoint.BEST_MODEL_NAME)

    # ---- outputs ----------------------------------------------------------------------------------

    def _record(self, line: dict[str, Any], stage: int, epoch: int) -> None:
        # Epochs and stages are counted from 1 wherever a user reads them (console, metrics.jsonl, errors).
        position = {"step": self.state.progress.step, "epoch": epoch + 1}
        if len(self.stages) > 1:
            position["stage"] = stage + 1
        self.metrics.write({**position, **line})
        self.state.latest.update(line)
        if any(self._is_evaluated(k) for k in line):
            self.state.evaluations.append({**position, **{k: v for k, v in line.items() if self._is_evaluated(k)}})
        reported = {k: v for k, v in line.items() if k in REPORTED or self._is_evaluated(k)}
        if self.placement.is_main and any(k != "train_loss" for k in reported):  # an evaluation or flatness
            log.info("step %d/%d (%s): %s", self.state.progress.step, self.total_steps,
                     self.length.where(stage, epoch), _numbers(reported))

    def _is_evaluated(self, key: str) -> bool:
        return any(key.startswith(f"{split}_") for split in self.task.eval_data)

    def _save_checkpoint(self) -> None:
        self.finite.check_state(self.model, self.window, self.state.progress.step, self.state.saved_step)
        self.state.first_loss = self._first_loss()  # on every process: it averages over them
        self.state.wall_time_s, self.started = self._wall_time_s(), time.perf_counter()
        self.state.metrics_bytes = self.metrics.size()
        self.state.saved_step = self.state.progress.step
        # Every process's RNG streams, unlogged training statistics and carried state.
        per_process = distributed.gather_objects(
            {"rng": checkpoint.rng_state(), "window": self.window.state_dict(),
             "carried": move_to(self.carried, "cpu")}, self.placement)
        trainer = {"state": self.state.state_dict(), "scheduler": self.scheduler.state_dict(),
                   "per_process": per_process, "strategy": self.strategy.name, "config": _identity(self.cfg)}
        checkpoint.save(self.run_dir, self.model, self.optimizer, trainer, self.placement.is_main,
                        averaged=self.averaging.averaged)

    def _restore(self) -> None:
        saved = checkpoint.load_trainer(self.run_dir)
        legacy = saved if "state" not in saved else None  # a single-file checkpoint.pt of earlier versions
        state = (_state_of_legacy(saved, self.run_dir, self._is_evaluated) if legacy is not None
                 else TrainingState.from_state_dict(saved["state"]))
        now = _identity(self.cfg)
        differences = _differences(_with_added_settings(saved["config"], now), now)
        if differences:
            raise UserError(
                f"The run folder {self.run_dir} holds a run with a different config "
                f"({'; '.join(differences)}). "
                "Give this run its own folder (e.g. run_name=<name> or runs_dir=<dir>), or delete the folder "
                "to start over.")
        finished = state.progress.finished  # a finished run reopens with any number of processes
        saved_world = len(saved["per_process"])
        if not finished and saved_world != self.placement.world_size and not self.t.resume_any_world_size:
            raise UserError(
                f"{self.run_dir} was trained by {saved_world} process(es); resume it with the same number (now "
                f"{self.placement.world_size}) to continue exactly, or pass trainer.resume_any_world_size=true to "
                f"continue on {self.placement.world_size} (the README says which batches that epoch then takes).")
        if legacy is not None and self.strategy.name != "ddp":
            raise UserError(f"{self.run_dir} holds a single-file checkpoint.pt of an earlier version, which "
                             f"resumes with trainer.strategy=ddp only (now {self.strategy.name}).")
        checkpoint.load_model_and_optimizer(self.run_dir, self.model, self.optimizer, legacy,
                                            averaged=self.averaging.averaged)
        self.scheduler.load_state_dict(saved["scheduler"])
        self.state = state
        self.first_loss = None
        if finished:
            return
        if saved_world == self.placement.world_size:
            own = saved["per_process"][self.placement.rank]
            checkpoint.set_rng_state(own["rng"])
            self.window = Window(**own["window"])
            self.carried = move_to(own.get("carried"), self.placement.device)
        else:  # trainer.resume_any_world_size: the unlogged sums go on in the main process; fresh streams
            self.window = Window.merged([p["window"] for p in saved["per_process"]]) if self.placement.is_main \
                else Window()
            checkpoint.seed_everything(self.cfg.seed + self.placement.rank + 1_000 * state.progress.step)
            self.carried = None  # the carried state starts again from Task.initial_state

    def _finish(self) -> dict[str, Any]:
        summary = None
        warnings = self._warnings()  # on every process: reading the first loss averages over them
        if self.placement.is_main:
            latest = self.state.latest
            summary = {"status": "finished", "steps": self.state.progress.step, "top_hessian_eigenvalue": None,
                       **latest, "wall_time_s": self._wall_time_s(), "warnings": warnings}
            best = self.state.best
            if best:  # every evaluated metric at the best evaluation; at the end as final_<metric>
                name = self.task.select[0]
                summary.update({f"final_{k}": latest[k] for k in best["metrics"]})
                summary.update(best["metrics"], best_step=best["step"])
                summary[f"best_{name}"] = best["metrics"][name]
            if self.task.summarize is not None:
                summary.update(self.task.summarize(self.state.evaluations, self.state.train_totals))
            write_summary(self.run_dir, summary)
        self.state.progress.finished = True
        self._save_checkpoint()  # after summary.json: a run killed in between redoes its last steps
        if self.placement.is_main:
            for warning in warnings:
                log.warning(warning)
            log.info("Finished %d steps in %s: %s.", self.state.progress.step, self.run_dir, _headline(summary))
        return summary

    def _first_loss(self) -> float | None:
        """The last stage's first training loss, averaged over the processes (read from the device once)."""
        if self.first_loss is not None:
            total = distributed.sum_across_processes({"loss": self.first_loss.double()}, self.placement)["loss"]
            self.state.first_loss = float(total) / self.placement.world_size
            self.first_loss = None
        return self.state.first_loss

    def _warnings(self) -> list[str]:
        """What a finished run's numbers say went wrong without a NaN: a final training loss above the first
        of its (last) stage; an earlier stage's would compare different tasks of a continual run."""
        first, final = self._first_loss(), self.state.latest.get("train_loss")
        if first is None or final is None or final <= first:
            return []
        which = "first step's of the last stage" if len(self.stages) > 1 else "first step's"
        return [f"The final training loss ({final:.4g}) is above the {which} ({first:.4g}): the run diverged "
                f"or did not learn. {lower_lr(self.cfg.optimizer.lr)} or clip gradients (trainer.grad_clip=1.0), "
                "in a folder of its own (run_name=<new name>)."]

    def _wall_time_s(self) -> float:
        return self.state.wall_time_s + time.perf_counter() - self.started


# Besides every evaluated metric (<split>_<name>), what an evaluation's log line and the final line show.
REPORTED = ("train_loss", "top_hessian_eigenvalue", "hessian_trace", "hessian_eigenvalue_ratio", "epsilon_sharpness",
            "average_sharpness")


def _state_of_legacy(saved: dict[str, Any], run_dir: Path, is_evaluated: Callable[[str], bool]) -> TrainingState:
    """The training state of a single-file checkpoint.pt: its evaluations and training sums rebuilt from
    metrics.jsonl up to the checkpoint (the training sums from the logged averages, as it then did)."""
    import json

    with open(run_dir / METRICS_NAME, "rb") as f:
        lines = [json.loads(s) for s in f.read(saved["metrics_bytes"]).decode().splitlines()]
    state = TrainingState(progress=Progress(**saved["progress"]), latest=dict(saved["latest"]),
                          best=dict(saved.get("best", {})), first_loss=saved.get("first_loss"),
                          wall_time_s=saved["wall_time_s"], saved_step=saved["progress"]["step"],
                          metrics_bytes=saved["metrics_bytes"])
    steps = 0
    for line in lines:
        evaluated = {k: v for k, v in line.items() if is_evaluated(k)}
        if evaluated:
            state.evaluations.append({k: line[k] for k in ("step", "epoch", "stage") if k in line} | evaluated)
        if "train_loss" in line:
            window = line["step"] - steps
            count = window * saved["config"]["trainer"]["batch_size"]
            state.add_train_totals({"count": count, **{k[len("train_"):]: v * count for k, v in line.items()
                                                      if k.startswith("train_") and isinstance(v, float)}})
            steps = line["step"]
    return state


def _numbers(metrics: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items())


def _headline(summary: dict[str, Any]) -> str:
    """The summary's results in one line: selected-best and final metrics of every split, training loss,
    flatness and any summarize() numbers, without timings, diagnostics or bookkeeping."""
    skipped = ("status", "steps", "wall_time_s", "warnings", "lr", "step_time_s", "optimizer_state_bytes",
               "best_step", "averaging_state_bytes", "update_size", "update_size_per_lr", "distance_travelled")
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
    # priority_group takes a process group (ZeroRedundancyOptimizer's), which no config holds.
    settable = [k for k in cmopt.registry.hyperparameter_names(name) if k != "priority_group"]
    check_options("Optimizer", name, [*settable, "no_decay_bias_and_norm"], options)
    hyperparameters = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    return cmopt.create_optimizer(name, model, **hyperparameters)


def _every(step: int, interval: int | None) -> bool:
    return bool(interval) and step % interval == 0


def _per_process_batch_size(batch_size: int, world_size: int) -> int:
    # A positive integer already (engine/settings.py); here only its split over the processes is checked.
    if batch_size < world_size or batch_size % world_size:
        raise UserError(f"trainer.batch_size={batch_size} is the global batch and must split evenly over "
                         f"{world_size} processes; use a multiple of {world_size}.")
    return batch_size // world_size


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


# Settings added after runs were already being saved: the value those runs had (None: the current one,
# for settings that change no training step, e.g. which metric selects the best checkpoint).
ADDED_SETTINGS = {"trainer.strategy": "ddp", "select": None, "trainer.weight_averaging": "none",
                  "trainer.ema_decay": None, "trainer.swa_start": None, "trainer.hessian_top_k": None,
                  "trainer.sharpness_rho": None, "trainer.sharpness_ascent_steps": None,
                  "trainer.sharpness_samples": None}


def _with_added_settings(saved: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """A saved config with every setting added since given the value a run of that time had."""
    saved = {k: dict(v) if isinstance(v, dict) else v for k, v in saved.items()}
    for key, value in ADDED_SETTINGS.items():
        *parents, leaf = key.split(".")
        node, current = saved, now
        for parent in parents:
            node, current = node.setdefault(parent, {}), current.get(parent, {})
        if leaf not in node:
            node[leaf] = current.get(leaf) if value is None else value
    return saved


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        return [d for k in sorted(set(saved) | set(now), key=str)
                for d in _differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [f"{prefix.rstrip('.')}: {saved!r} in the folder, {now!r} now"]
