"""Paper-style tables: inside each group of runs, the tuned values chosen on validation, never on test.

Runs are grouped by data x model x optimizer and by every other setting that differs between them, except
the tuned ones and the seed. Inside a group, each candidate (a value of the tuned settings) is scored by the
mean of its validation metric over its seeds; the best candidate's TEST metrics are reported as mean ± sample
std over its seeds. The validation metric and its direction are the runs' own `select` (saved in each run's
config.yaml). A failed or unfinished run is never averaged silently: its candidate is marked, and candidates
whose runs all finished are preferred.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from experiments.reporting import ResultsError
from experiments.reporting.runs import (IDENTITY, TABLE_METRICS, Metric, attempted_runs, load_attempt, shown,
                                        sort_key, varying_settings)
from experiments.reporting.runs import mean_and_std as cell


@dataclass(frozen=True)
class Selection:
    """What a kind of run is selected on, and what its table reports."""

    kind: str
    validation: str  # summary key
    higher_is_better: bool
    report: tuple[str, ...]  # summary keys, each shown in its TABLE_METRICS format


# What each kind of run's table reports beside its selection metric (keyed by the runs' select.metric).
REPORTS = {
    "val_acc": ("image classification", ("test_acc", "top_hessian_eigenvalue")),
    "val_ppl": ("language modelling", ("test_ppl", "top_hessian_eigenvalue")),
    "val_average_accuracy": ("online learning", ("average_accuracy", "forgetting", "backward_transfer")),
}


def selection_for(runs: list[dict]) -> Selection:
    """The runs' own select (metric, mode), one for all of them, with what their table reports."""
    selects = {(r["settings"].get("select.metric"), r["settings"].get("select.mode")) for r in runs}
    if len(selects) > 1:
        raise ResultsError(f"these runs select on different metrics ({', '.join(sorted(map(str, selects)))}): "
                           "make one table per runner, passing each runner's run folders.")
    [(metric, mode)] = selects
    if metric is None or mode not in ("min", "max"):
        raise ResultsError(f"{runs[0]['run_dir']}/config.yaml has no select (metric, min or max): it was "
                           "written before runs recorded what they select on. Rerun it with this version.")
    kind, report = REPORTS.get(metric, ("runs", (metric.replace("val_", "test_", 1),)))
    if not any(metric in r["summary"] for r in runs):
        raise ResultsError(f"the runs report no validation metric ({metric}, their select.metric), so "
                           "nothing can be selected without looking at test. Train with a validation split "
                           "(images: dataset.val_size > 0; online learning: benchmark.val_fraction > 0).")
    return Selection(kind, metric, mode == "max", report)


# Formats of what a paper definition's `report` may add (the sweep tables of runs.py do not show these).
REPORT_METRICS = (
    *(Metric(key, key, decimals=2) for key in ("hessian_eigenvalue_ratio", "distance_travelled")),
    *(Metric(key, f"{key} (kB)", decimals=1, scale=1e-3) for key in ("optimizer_state_bytes", "averaging_state_bytes")),
    Metric("hessian_trace", "hessian_trace", decimals=1),
    Metric("average_sharpness", "average_sharpness (×1e-6)", decimals=1, scale=1e6),  # ½ρ²·tr(H)/n: tiny
)


def metric_format(key: str) -> Metric:
    """The TABLE_METRICS (or REPORT_METRICS) format of the metric, or of its test counterpart for a validation metric."""
    for twin in (key, key.replace("val_", "test_", 1), key.removeprefix("val_")):
        known = next((m for m in (*TABLE_METRICS, *REPORT_METRICS) if m.key == twin), None)
        if known is not None:
            header = known.header.replace(twin, key)
            return Metric(key, header, known.decimals, known.scale)
    return Metric(key, key, decimals=4)


def select(runs: list[dict], tuned: list[str], seeds_expected: int | None = None) -> list[dict]:
    """One row per group: the candidate chosen on validation and its test metrics. Pure: no files."""
    kind = selection_for(runs)
    fixed = [k for k in varying_settings(runs) if k not in tuned]
    groups: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        group = run["identity"] + tuple(run["settings"].get(k) for k in fixed)
        groups[group][tuple(run["settings"].get(k) for k in tuned)].append(run)
    expected = seeds_expected or max(len(c) for g in groups.values() for c in g.values())
    rows = []
    for group in sorted(groups, key=sort_key):
        candidates = []
        for values, members in groups[group].items():
            finished = [r for r in members if not r["failed"] and finite(r["summary"].get(kind.validation))]
            score = statistics.mean(r["summary"][kind.validation] for r in finished) if finished else None
            complete = len(finished) == len(members) and len(members) >= expected
            candidates.append({"values": dict(zip(tuned, values)), "members": members, "finished": finished,
                               "score": score, "complete": complete})
        scored = [c for c in candidates if c["score"] is not None]
        pool = [c for c in scored if c["complete"]] or scored
        best = None
        if pool:
            best = (max if kind.higher_is_better else min)(pool, key=lambda c: c["score"])
        rows.append({"group": group, "fixed": dict(zip(fixed, group[len(IDENTITY):])), "kind": kind,
                     "candidates": candidates, "best": best, "expected": expected})
    return rows


def finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def seeds_note(best: dict, expected: int) -> str:
    failed = sum(1 for r in best["members"] if r["failed"])
    unfinished_metric = len(best["members"]) - failed - len(best["finished"])
    note = str(len(best["finished"]))
    problems = []
    if failed:
        problems.append(f"{failed} failed")
    if unfinished_metric:
        problems.append(f"{unfinished_metric} without the metric")
    if len(best["members"]) < expected:
        problems.append(f"{expected - len(best['members'])} missing")
    return note + (f" of {expected} ({', '.join(problems)})" if problems else "")


def render(rows: list[dict], tuned: list[str], sources: list[str]) -> str:
    kind = rows[0]["kind"]
    fixed = list(rows[0]["fixed"])
    report = [metric_format(k) for k in kind.report
              if any(r["best"] and any(m["summary"].get(k) is not None for m in r["best"]["finished"]) for r in rows)]
    validation = metric_format(kind.validation)
    header = [*IDENTITY, *fixed, f"selected ({', '.join(tuned)})",
              f"validation {validation.header}", *(f"test: {m.header}" if m.key.startswith("test") else m.header
                                                   for m in report), "seeds"]
    lines = [
        f"<!-- Generated by scripts/make_tables.py from the runs under {', '.join(sources)}. Do not edit. -->",
        "",
        f"{kind.kind.capitalize()}: for each row, the {', '.join(tuned)} with the best mean "
        f"{kind.validation} ({'higher' if kind.higher_is_better else 'lower'} is better) over seeds was "
        f"selected; the other columns are that setting's results, mean ± sample std (n − 1) over its "
        f"seeds. Test metrics were never used to select.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        best = row["best"]
        cells = [("" if v is None else str(v)) for v in row["group"]]
        if best is None:
            members = [m for c in row["candidates"] for m in c["members"]]
            failed = sum(1 for m in members if m["failed"])
            problems = [f"{failed} failed"] if failed else []
            if len(members) > failed:
                problems.append(f"{len(members) - failed} finished without {kind.validation}")
            what = f"no run reports {kind.validation}" if failed < len(members) else "no run finished"
            cells += [f"none: {what}", "—", *("—" for _ in report),
                      f"0 of {row['expected']} ({', '.join(problems)})"]
        else:
            cells.append(", ".join(f"{v}" for v in best["values"].values()) + ("" if best["complete"] else " *"))
            cells.append(cell([r["summary"][kind.validation] for r in best["finished"]], validation))
            for metric in report:
                cells.append(cell([r["summary"][metric.key] for r in best["finished"]
                                   if finite(r["summary"].get(metric.key))], metric))
            cells.append(seeds_note(best, row["expected"]))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["best"] is not None and not r["best"]["complete"] for r in rows):
        lines += ["", "\\* Every candidate of this row had a failed, unfinished or missing run; the best of them "
                      "is shown and its seeds column says what is missing."]
    return "\n".join(lines) + "\n"


def write_selection_csv(rows: list[dict], tuned: list[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*IDENTITY, *rows[0]["fixed"], *tuned, "validation_mean", "seeds_finished", "runs",
                         "selected"])
        for row in rows:
            for c in row["candidates"]:
                writer.writerow([*row["group"], *c["values"].values(),
                                 "" if c["score"] is None else c["score"], len(c["finished"]), len(c["members"]),
                                 c is row["best"]])


def make_tables(paths: list[Path], out: Path, tuned: list[str], seeds: int | None = None,
                report: Sequence[str] = ()) -> list[dict]:
    """<out>/table.md and <out>/selection.csv from every run folder below the paths; the selected rows.
    `report`: summary keys the table shows besides its kind's (a paper definition's `report`)."""
    runs = [load_attempt(d) for d in attempted_runs(paths)]
    if not runs:
        raise ResultsError(f"no run folders (config.yaml) under {', '.join(map(str, paths))}.")
    rows = select(runs, tuned, seeds)
    kind = rows[0]["kind"]
    kind = replace(kind, report=(*kind.report, *(k for k in report if k not in kind.report)))
    for row in rows:
        row["kind"] = kind
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(render(rows, tuned, [str(shown(p.resolve())) for p in paths]))
    write_selection_csv(rows, tuned, out / "selection.csv")
    return rows
