"""What a toy run was asked to do: its settings checked up front, and the folder its results go to.

Every value of configs/toy.yaml and configs/toy/<problem>.yaml is checked against one table before
any job starts, so a bad value ends in one message that names it, its valid range and a fix (not in
a traceback from a worker process). Only the canonical settings (`make reproduce`) write
results/toy/; a run with any other setting writes runs/toy/<what it changed>/.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cmopt.registry import OPTIMIZER_NAMES
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


# ---- the checks: one row per setting ------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    valid: Callable[[Any], bool]
    range: str  # what is valid, in words


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def whole(minimum: int) -> Rule:
    return Rule(lambda v: _whole(v) and v >= minimum, f"a whole number, {minimum} or more")


POSITIVE = Rule(lambda v: _real(v) and v > 0, "a number > 0")
NON_NEGATIVE = Rule(lambda v: _real(v) and v >= 0, "a number >= 0")
NUMBER = Rule(_real, "a finite number")
UNIT_CLOSED = Rule(lambda v: _real(v) and 0 <= v <= 1, "a number in [0, 1]")
UNIT_OPEN = Rule(lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
POSITIVE_LIST = Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(POSITIVE.valid(x) for x in v),
                     "a non-empty list of numbers > 0")
NUMBER_LIST = Rule(lambda v: isinstance(v, list) and len(v) > 0 and all(_real(x) for x in v),
                   "a non-empty list of finite numbers")
POINTS = Rule(lambda v: isinstance(v, list) and len(v) > 0
              and all(isinstance(p, list) and len(p) == 2 and all(_real(x) for x in p) for p in v),
              "a non-empty list of [x, y] points")
OPTIMIZERS = Rule(lambda v: isinstance(v, list) and len(v) > 0 and len(set(map(str, v))) == len(v)
                  and all(name in TOY_OPTIMIZERS for name in v),
                  f"a non-empty list of distinct names from: {', '.join(TOY_OPTIMIZERS)}")
CONDITION_NUMBERS = Rule(lambda v: isinstance(v, list) and len(v) == 3 and _real(v[0]) and _real(v[1])
                         and 0 <= v[0] <= v[1] and _whole(v[2]) and v[2] >= 1,
                         "[first, last, count]: log10 of the condition numbers, 0 <= first <= last, "
                         "count a whole number, 1 or more")


def _optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.valid(v), f"{rule.range}, or null (unset)")


# Top level: key -> (what it is, rule, an example of a valid value).
TOP_LEVEL: dict[str, tuple[str, Rule, str]] = {
    "workers": ("the number of worker processes", whole(1), "2"),
    "optimizers": ("the optimizers compared", OPTIMIZERS, "[adam,adam_cg,adam_cm]"),
    "capacity": ("the buffer capacity C", whole(0), "5"),
    "decay": ("the priority decay λ", UNIT_CLOSED, "0.7"),
    "rho": ("SAM's radius ρ", NON_NEGATIVE, "0.05"),
    "lr": ("the learning rate of every problem", _optional(POSITIVE), "0.03"),
    "steps": ("the number of optimizer steps", _optional(whole(1)), "200"),
    "noise": ("the gradient noise's standard deviation", _optional(NON_NEGATIVE), "0.1"),
    "seeds": ("the number of noise seeds", _optional(whole(1)), "3"),
}
_RUNS = {
    "lr": ("the figures' learning rate", POSITIVE, "0.03"),
    "lr_sweep": ("the tables' learning rates", POSITIVE_LIST, "[0.01,0.03,0.1]"),
    "steps": ("the number of optimizer steps", whole(1), "200"),
    "noise": ("the gradient noise's standard deviation", NON_NEGATIVE, "0.1"),
    "seeds": ("the number of noise seeds", whole(1), "3"),
}
_SEARCH = {
    **_RUNS,
    "starts.low": ("the grid's lowest coordinate", NUMBER, "-3.0"),
    "starts.high": ("the grid's highest coordinate", NUMBER, "3.0"),
    "starts.points": ("the grid's points per axis", whole(1), "7"),
    "figure_starts": ("the figures' starting points", POINTS, "[[2.6,-1.7]]"),
    "figure_seeds": ("the figures' number of seeds", whole(1), "10"),
}
PER_PROBLEM: dict[str, dict[str, tuple[str, Rule, str]]] = {
    "goldstein_price": _SEARCH,
    "ackley": {**_SEARCH, "first_steps": ("the steps Figure 2 shows", whole(1), "10")},
    "flat_sharp": {
        **_RUNS,
        "flat_minimum": ("the flat minimum's position", NUMBER, "-1.0"),
        "sharp_minimum": ("the sharp minimum's position", NUMBER, "1.0"),
        "flat_width": ("the flat minimum's width", POSITIVE, "0.5"),
        "sharpness": ("the sharpness values", POSITIVE_LIST, "[1,4,16]"),
        "start_offsets": ("the start offsets (in sharp widths)", NUMBER_LIST, "[-1.0,0.0,1.0]"),
    },
    "quadratic": {
        "log10_condition_numbers": ("the condition numbers", CONDITION_NUMBERS, "[0.5,4.0,8]"),
        "fixed_momentum": ("the fixed momentum", UNIT_OPEN, "0.9"),
        "scaled_lr_sweep": ("the learning rates (in units of 1/L)", POSITIVE_LIST, "[0.01,0.1,1.0]"),
    },
}


def _check(key: str, value: Any, meaning: str, rule: Rule, example: str, hint: str = "") -> None:
    if not rule.valid(value):
        raise ValueError(f"{key}={_shown(value)}: {meaning} must be {rule.range}. Set e.g. {key}={example}{hint}.")


def check_config(cfg: DictConfig) -> list[str]:
    """Check every setting the run will use; returns the chosen problems. Raises ValueError naming a bad one."""
    values = _flatten(OmegaConf.to_container(cfg, resolve=True))
    problems = chosen_problems(values["problem"])
    for key, (meaning, rule, example) in TOP_LEVEL.items():
        hint = ", or leave it unset for each problem's own" if key in (*SHORTCUTS, "lr") else ""
        _check(key, values[key], meaning, rule, example, hint)
    for problem in problems:
        for key, (meaning, rule, example) in PER_PROBLEM[problem].items():
            _check(f"{problem}.{key}", values[f"{problem}.{key}"], meaning, rule, example)
        low, high = values.get(f"{problem}.starts.low"), values.get(f"{problem}.starts.high")
        if low is not None and low > high:
            raise ValueError(f"{problem}.starts.low={low} is above {problem}.starts.high={high}: the grid of "
                             f"starting points runs from low to high. Swap them.")
    if "flat_sharp" in problems and values["flat_sharp.flat_minimum"] == values["flat_sharp.sharp_minimum"]:
        raise ValueError(f"flat_sharp.flat_minimum={values['flat_sharp.flat_minimum']} equals "
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
        raise ValueError(f"problem={problem!r} is not a toy experiment. Choose one of: {', '.join(PROBLEMS)}, all.")
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
        raise ValueError(
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
        raise ValueError(
            f"out_dir={cfg.out_dir}: results/toy holds only the results of `make reproduce`, and these settings "
            f"differ from it ({', '.join(changed)}). Leave out_dir unset (they go to "
            f"{AD_HOC_DIR / ad_hoc_folder_name(changed)}) or give another folder."
        )
    return out_dir, changed
