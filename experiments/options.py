"""Config options: which keys leave a run's result alone, and checks of option names and values.

Torch-free, so experiments.reporting (scripts/collect_results.py) imports it as cheaply as the engine does.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

# The one list of config keys that do not change what a run computes, in three parts.
# Where files live and how they are loaded: a run may resume with other values, Hydra leaves them out
# of multirun folder names, and results tables never group by them.
PLACEMENT_KEYS = ("data_dir", "runs_dir", "logger", "trainer.num_workers", "trainer.device",
                  "trainer.resume_any_world_size",
                  "dataset.root", "dataset.download", "benchmark.root", "benchmark.download")
# How often a run reports and saves: no result changes, so tables ignore them, but a resumed run would
# write other metrics lines and checkpoints than the ones its folder holds, so a resume with another
# value is refused.
REPORTING_KEYS = ("trainer.log_interval", "trainer.checkpoint_interval")
# Names: the seed is what tables average over; the rest only name the run or configure Hydra.
NAMING_KEYS = ("seed", "run_name", "hydra")
# What multirun folder names leave out: configs/common/hydra/default.yaml's exclude_keys read this tuple
# (through experiments/configs.py). `experiment` names the folder above a multirun's runs already (experiment_name); `hparams_search` only
# chooses the sweeper, whose trials' own values name the folders.
FOLDER_NAME_EXCLUDES = ("experiment", "hparams_search", *PLACEMENT_KEYS)
# What collect_results leaves out of the settings it groups runs by.
BOOKKEEPING_KEYS = (*NAMING_KEYS, *PLACEMENT_KEYS, *REPORTING_KEYS)


def check_options(kind: str, name: str, builder: Callable | Iterable[str], options: Iterable[str],
                  given_apart: tuple[str, ...] = (), common: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the options `builder` does not take, and the ones it does.

    `builder` is a function (its keyword arguments are the options) or the option names themselves.
    `given_apart` are the builder's arguments passed separately from `options`; `common` are those of them
    that every such builder takes from the user too (named in the message).
    """
    names = inspect.signature(builder).parameters if callable(builder) else builder
    accepted = [p for p in names if p not in given_apart]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        group = kind.lower()
        raise UserError(f"{kind} {name!r} does not take option(s) {', '.join(unknown)}. "
                         f"It takes: {', '.join(accepted) or 'no options'}"
                         + (f" (besides {', '.join(common)})." if common else ".")
                         + f" If you did not set {'it' if len(unknown) == 1 else 'them'}, an experiment file "
                           f"written for another {group} did: choose that experiment's {group}, or drop "
                           f"{'it' if len(unknown) == 1 else 'them'} with "
                           + " ".join(f"~{group}.{option}" for option in unknown) + ".")


class UserError(ValueError):
    """A value, a file or a resume the user can fix: a runner prints its message alone and exits 1.

    Raised by the checks of settings, data, models and resumes (and only those): any other exception,
    a ValueError from inside torch included, is a bug and keeps its traceback."""


@dataclass(frozen=True)
class Valid:
    """What values one option takes: `test(value)` is true for them, `described` says which in words,
    and `example` is a valid value for the message's fix."""

    test: Callable[[Any], bool]
    described: str
    example: Any


def finite_real(value: Any) -> bool:
    """A finite real number (not a bool, not NaN or infinite)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def integer(low: int, *, example: int | None = None, null: str | None = None) -> Valid:
    """An integer >= low; with `null` (what null means), null too."""
    ok = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low  # noqa: E731
    return _nullable(Valid(ok, f"an integer >= {low}", max(low, 1) if example is None else example), null)


def number(low: float, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           example: float, null: str | None = None) -> Valid:
    """A finite real number in the interval from low to high (open or closed at each end; high None: unbounded)."""
    def ok(v) -> bool:
        if not finite_real(v):  # NaN is in no interval, and infinity is no setting
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    if high is None:
        described = f"a finite number {'>' if low_open else '>='} {low:g}"
    else:
        described = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    return _nullable(Valid(ok, described, example), null)


def one_of(*choices: Any) -> Valid:
    ok = lambda v: any(type(v) is type(c) and v == c for c in choices)  # noqa: E731  (1 is not true)
    return Valid(ok, f"one of {', '.join(map(shown, choices))}", choices[0])


def boolean() -> Valid:
    return Valid(lambda v: isinstance(v, bool), "true or false", "true")


def _nullable(valid: Valid, null: str | None) -> Valid:
    if null is None:
        return valid
    return Valid(lambda v: v is None or valid.test(v), f"null ({null}) or {valid.described}", valid.example)


def check_values(prefix: str, table: Mapping[str, Valid], values: Mapping[str, Any]) -> None:
    """Raise ValueError for the first value outside its valid set: the value, the valid ones and a fix."""
    for name, valid in table.items():
        if name in values and not valid.test(values[name]):
            raise UserError(f"{prefix}.{name}={shown(values[name])} is not valid: it must be {valid.described}. "
                             f"Set it to one, e.g. {prefix}.{name}={shown(valid.example)}.")


def shown(value: Any) -> str:
    """A value as a user writes it on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
