"""A paper definition's `claims`, checked against its table's rows: the generated README says for each
whether it holds on these runs, with the numbers, and plainly when it does not.

    claims:
      - text: Adam+CM is more accurate than Adam with an EMA of its weights
        metric: test_acc                 # a summary key of the selected runs (mean over their seeds)
        lower: false                     # true: lower is better (perplexity)
        better: {optimizer: adam_cm, trainer.weight_averaging: none}   # the row(s) claimed better ...
        than: {optimizer: adam, trainer.weight_averaging: ema}         # ... than these
        every: trainer.batch_size        # optional: compared within each value of this setting, all must hold

A selector names the optimizer (or data, model) and any setting that tells the table's rows apart (their fixed columns);
each side must match exactly one row (per value of `every`). A difference smaller than the larger of the
two sides' seed standard deviations is said to be within the spread of the seeds.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from experiments.reporting.select import finite, metric_format


def verdicts(rows: list[dict], claims: list[dict], mini: bool) -> list[str]:
    if not claims:
        return []
    scale = "these toy-scale runs" if mini else "these runs"
    lines = ["", f"**Claims checked on {scale}** (mean over the seeds of each row's selected setting):", ""]
    for claim in claims:
        lines.append(f"- {claim['text']}: {_verdict(rows, claim)}")
    return ["\n".join(lines) + "\n"]  # a blank line before what follows (a figure)


def _verdict(rows: list[dict], claim: dict) -> str:
    metric, lower, every = claim["metric"], bool(claim.get("lower", False)), claim.get("every")
    shown = metric_format(metric)
    by_value: dict = defaultdict(list)
    for row in rows:
        by_value[None if every is None else str(_value(row, every))].append(row)
    results = []
    for value, group in sorted(by_value.items(), key=lambda kv: _number_or_text(kv[0])):
        better, than = (_only(group, claim[side]) for side in ("better", "than"))
        where = "" if every is None else f"{every}={value}: "
        if better is None or than is None:
            results.append((None, f"{where}not measured (no single finished row for each side)"))
            continue
        (b_mean, b_std), (t_mean, t_std) = _stats(better, metric), _stats(than, metric)
        if b_mean is None or t_mean is None:
            results.append((None, f"{where}not measured (no {metric})"))
            continue
        holds = b_mean < t_mean if lower else b_mean > t_mean
        close = abs(b_mean - t_mean) < max(b_std, t_std)
        numbers = (f"{shown.scale * b_mean:.{shown.decimals}f} against {shown.scale * t_mean:.{shown.decimals}f}"
                   f" {shown.header}")
        results.append((holds, f"{where}{numbers}" + (" (within the spread of the seeds)" if close else "")))
    if any(h is None for h, _ in results):
        head = "**not measured**"
    elif all(h for h, _ in results):
        head = "**holds**"
    else:
        failed = sum(1 for h, _ in results if not h)
        head = "**does not hold**" if failed == len(results) else f"**does not hold** ({failed} of {len(results)})"
    return f"{head}: " + "; ".join(text for _, text in results) + "."


IDENTITY = {"data": 0, "model": 1, "optimizer": 2}  # a row's group starts with data, model, optimizer


def _value(row: dict, key: str):
    return row["group"][IDENTITY[key]] if key in IDENTITY else row["fixed"].get(key)


def _only(rows: list[dict], selector: dict) -> dict | None:
    matching = [r for r in rows if all(str(_value(r, k)) == str(v) for k, v in selector.items())]
    return matching[0] if len(matching) == 1 and matching[0]["best"] is not None else None


def _stats(row: dict, metric: str) -> tuple[float | None, float]:
    values = [r["summary"][metric] for r in row["best"]["finished"] if finite(r["summary"].get(metric))]
    if not values:
        return None, 0.0
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _number_or_text(value) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
