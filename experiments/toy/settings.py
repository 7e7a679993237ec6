"""What a toy run was asked to do: its settings checked up front, and the folder its results go to.

Every value of configs/toy.yaml and configs/toy/<problem>.yaml is checked against one table before
any job starts, so a bad value ends in one message that names it, its valid range and a fix (not in
a traceback from a worker process). Only the canonical settings (`make reproduce`) write
results/toy/; a run with any other setting writes runs/toy/<what it changed>/.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cmopt.registry import OPTIMIZER_NAMES
from experiments.options import UserError, Valid, finite_real, integer, number, shown
from experiments.toy import VARIANTS

TOY_OPTIMIZERS = (*OPTIMIZER_NAMES, *VARIANTS)

PROBLEMS = ("goldstein_price", "ackley", "flat_sharp", "quadratic")
SHARED = ("optimizers", "capacity", "decay", "rho")  # top-level values every optimizer comparison uses
SHORTCUTS = ("steps", "noise", "seeds")  # top-level values that, when set, replace the problem's own
NOT_RESULTS = ("problem", "out_dir", "workers")  # settings that change where or how fast, never a number

REPOSITORY = Path(__file__).resolve().parents[2]
CANONICAL_DIR = REPOSITORY / "results" / "toy"  # written by the canonical settings alone
AD_HOC_DIR = Path("runs") / "toy"  # other settings: a folder below this one, relative to where you run
LONGEST_FOLDER_NAME = 100


# ---- the checks: one row per setting (the engine's validators, experiments/options.py) ------------------

def _list_of(test: Callable[[Any], bool], described: str, example: str) -> Valid:
    return Valid(lambda v: isinstance(v, list) and len(v) > 0 and all(test(x) for x in v), described, example)


def _condition_numbers(v: Any) -> bool:
    return (isinstance(v, list) and len(v) == 3 and finite_real(v[0]) and finite_real(v[1]) and 0 <= v[0] <= v[1]
            and integer(1).test(v[2]))


def positive(example: str) -> Valid:
    return number(0, low_open=True, example=example)


def non_negative(example: str) -> Valid:
    return number(0, example=example)


def finite(example: str) -> Valid:
    return Valid(finite_real, "a finite number", example)


def positive_list(example: str) -> Valid:
    return _list_of(positive(example).test, "a non-empty list of numbers > 0", example)


OPTIMIZERS = Valid(lambda v: isinstance(v, list) and len(v) > 0 and len(set(map(str, v))) == len(v)
                   and all(name in TOY_OPTIMIZERS for name in v),
                   f"a non-empty list of distinct names from: {', '.join(TOY_OPTIMIZERS)}", "[adam,adam_cg,adam_cm]")
POINTS = Valid(lambda v: isinstance(v, list) and len(v) > 0
               and all(isinstance(p, list) and len(p) == 2 and all(finite_real(x) for x in p) for p in v),
               "a non-empty list of [x, y] points", "[[2.6,-1.7]]")
CONDITION_NUMBERS = Valid(_condition_numbers, "[first, last, count]: log10 of the condition numbers, "
                          "0 <= first <= last, count an integer >= 1", "[0.5,4.0,8]")
UNSET = "unset"

# Top level: key -> (what it is, its valid values with an example).
TOP_LEVEL: dict[str, tuple[str, Valid]] = {
    "workers": ("the number of worker processes", integer(1, example=2)),
    "optimizers": ("the optimizers compared", OPTIMIZERS),
    "capacity": ("the buffer capacity C", integer(0, example=5)),
    "decay": ("the priority decay λ", number(0, 1, example=0.7)),
    "rho": ("SAM's radius ρ", non_negative("0.05")),
    "lr": ("the learning rate of every problem", number(0, low_open=True, example=0.03, null=UNSET)),
    "steps": ("the number of optimizer steps", integer(1, example=200, null=UNSET)),
    "noise": ("the gradient noise's standard deviation", number(0, example=0.1, null=UNSET)),
    "seeds": ("the number of noise seeds", integer(1, example=3, null=UNSET)),
}
_RUNS = {
    "lr": ("the figures' learning rate", positive("0.03")),
    "lr_sweep": ("the tables' learning rates", positive_list("[0.01,0.03,0.1]")),
    "steps": ("the number of optimizer steps", integer(1, example=200)),
    "noise": ("the gradient noise's standard deviation", non_negative("0.1")),
    "seeds": ("the number of noise seeds", integer(1, example=3)),
}
_SEARCH = {
    **_RUNS,
    "starts.low": ("the grid's lowest coordinate", finite("-3.0")),
    "starts.high": ("the grid's highest coordinate", finite("3.0")),
    "starts.points": ("the grid's points per axis", integer(1, example=7)),
    "figure_starts": ("the figures' starting points", POINTS),
    "figure_seeds": ("the figures' number of seeds", integer(1, example=10)),
}
PER_PROBLEM: dict[str, dict[str, tuple[str, Valid]]] = {
    "goldstein_price": _SEARCH,
    "ackley": {**_SEARCH, "first_steps": ("the steps Figure 2 shows", integer(1, example=10))},
    "flat_sharp": {
        **_RUNS,
        "flat_minimum": ("the flat minimum's position", finite("-1.0")),
        "sharp_minimum": ("the sharp minimum's position", finite("1.0")),
        "flat_width": ("the flat minimum's width", positive("0.5")),
        "sharpness": ("the sharpness values", positive_list("[1,4,16]")),
        "start_offsets": ("the start offsets (in sharp widths)",
                          _list_of(finite_real, "a non-empty list of finite numbers", "[-1.0,0.0,1.0]")),
    },
    "quadratic": {
        "log10_condition_numbers": ("the condition numbers", CONDITION_NUMBERS),
        "fixed_momentum": ("the fixed momentum", number(0, 1, high_open=True, example=0.9)),
        "scaled_lr_sweep": ("the learning rates (in units of 1/L)", positive_list("[0.01,0.1,1.0]")),
    },
}


def _check(key: str, value: Any, meaning: str, valid: Valid, hint: str = "") -> None:
    if not valid.test(value):
        raise UserError(f"{key}={_shown(value)}: {meaning} must be {valid.described}. "
                         f"Set e.g. {key}={shown(valid.example)}{hint}.")


def check_config(cfg: DictConfig) -> list[str]:
    """Check every setting the run will use; returns the chosen problems. Raises ValueError naming a bad one."""
    values = _flatten(OmegaConf.to_container(cfg, resolve=True))
    problems = chosen_problems(values["problem"])
    for key, (meaning, valid) in TOP_LEVEL.items():
        hint = ", or leave it unset for each problem's own" if key in (*SHORTCUTS, "lr") else ""
        _check(key, values[key], meaning, valid, hint)
    for problem in problems:
        for key, (meaning, valid) in PER_PROBLEM[problem].items():
            _check(f"{problem}.{key}", values[f"{problem}.{key}"], meaning, valid)
        low, high = values.get(f"{problem}.starts.low"), values.get(f"{problem}.starts.high")
        if low is not None and low > high:
            raise UserError(f"{problem}.starts.low={low} is above {problem}.starts.high={high}: the grid of "
                             f"starting points runs from low to high. Swap them.")
    if "flat_sharp" in problems and values["flat_sharp.flat_minimum"] == values["flat_sharp.sharp_minimum"]:
        raise UserError(f"flat_sharp.flat_minimum={values['flat_sharp.flat_minimum']} equals "
                         f"flat_sharp.sharp_minimum: the two minima must be apart. Set e.g. "
                         f"flat_sharp.flat_minimum=-1.0 flat_sharp.sharp_minimum=1.0.")
    return problems


def _shown(value: Any, quoted: bool = True) -> str:
    """A value as one would type it on the command line (a string alone in quotes, to show its type)."""
    if isinstance(value, list):
        return "[" + ",".join(_shown(v, quoted=False) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_shown(v, quoted=False)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) and quoted else str(value)


# ---- what each problem runs -------------------------------------------------------------------------

def chosen_problems(problem: str) -> list[str]:
    if problem == "all":
        return list(PROBLEMS)
    if problem not in PROBLEMS:
        raise UserError(f"problem={problem!r} is not a toy experiment. Choose one of: {', '.join(PROBLEMS)}, all.")
    return [problem]


def problem_settings(cfg: DictConfig, problem: str) -> dict[str, Any]:
    """The problem's own settings, with the shared ones and any command-line shortcut applied."""
    values = OmegaConf.to_container(cfg, resolve=True)
    settings = values[problem]
    if problem == "quadratic":
        settings["capacity"] = values["capacity"]
        return settings
    settings.update({key: values[key] for key in SHARED})
    settings.update({key: values[key] for key in SHORTCUTS if values[key] is not None})
    if values["lr"] is not None:
        settings["lr"], settings["lr_sweep"] = values["lr"], [values["lr"]]
    if settings["lr"] not in settings["lr_sweep"]:
        raise UserError(
            f"{problem}.lr={settings['lr']} is not in {problem}.lr_sweep={_shown(settings['lr_sweep'])}: the "
            f"figures show runs of the sweep. Add it to the sweep, or set lr=... alone to run that one learning rate."
        )
    return settings


# ---- where the results go ---------------------------------------------------------------------------

def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_settings(cfg: DictConfig, canonical: DictConfig) -> dict[str, Any]:
    """The settings (dotted key -> value) in which cfg differs from the canonical config, in key order."""
    ours = _flatten(OmegaConf.to_container(cfg, resolve=True))
    theirs = _flatten(OmegaConf.to_container(canonical, resolve=True))
    return {key: ours.get(key) for key in sorted(set(ours) | set(theirs))
            if key.split(".")[0] not in NOT_RESULTS and ours.get(key) != theirs.get(key)}


def ad_hoc_folder_name(changed: dict[str, Any]) -> str:
    """e.g. "capacity=3,decay=0.5,noise=0"; a long one is cut and made unique by a hash of the whole."""
    name = ",".join(f"{key}={_shown(value, quoted=False)}" for key, value in changed.items()).replace("/", "_")
    if len(name) <= LONGEST_FOLDER_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[:LONGEST_FOLDER_NAME - 9]}-{digest}"


def output_dir(cfg: DictConfig, canonical: DictConfig) -> tuple[Path, dict[str, Any]]:
    """Where this run writes, and the settings in which it differs from the canonical run.

    out_dir unset: results/toy for the canonical settings, else runs/toy/<changed settings>. An
    explicit out_dir is honoured, except results/toy for settings other than the canonical ones.
    """
    changed = changed_settings(cfg, canonical)
    if cfg.out_dir is None:
        return (AD_HOC_DIR / ad_hoc_folder_name(changed) if changed else CANONICAL_DIR), changed
    out_dir = Path(cfg.out_dir)
    if changed and out_dir.resolve() == CANONICAL_DIR:
        raise UserError(
            f"out_dir={cfg.out_dir}: results/toy holds only the results of `make reproduce`, and these settings "
            f"differ from it ({', '.join(changed)}). Leave out_dir unset (they go to "
            f"{AD_HOC_DIR / ad_hoc_folder_name(changed)}) or give another folder."
        )
    return out_dir, changed
