"""Checks a builder's keyword options against its signature, so a misspelt config key is named, not ignored."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable


def check_options(kind: str, name: str, builder: Callable, options: Iterable[str], given_apart: tuple[str, ...],
                  common: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the options `builder` does not take, and the ones it does.

    `given_apart` are the builder's arguments passed separately from `options`; `common` are those of them
    that every such builder takes from the user too (named in the message).
    """
    accepted = [p for p in inspect.signature(builder).parameters if p not in given_apart]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} does not take option(s) {', '.join(unknown)}. "
                         f"It takes: {', '.join(accepted) or 'no options'}"
                         + (f" (besides {', '.join(common)})." if common else "."))
