"""Paper-style tables from run folders, with every tuned value chosen on validation, never on test.

    python scripts/make_tables.py RUN_DIR_OR_PARENT... [--out runs/tables] [--tune optimizer.lr ...]
                                  [--seeds N]

Runs are grouped by data x model x optimizer and by every other setting that differs between them,
except the tuned ones (`--tune`, default optimizer.lr) and the seed. Inside a group, each candidate
(a value of the tuned settings) is scored by the mean of its validation metric over its seeds; the
best candidate's TEST metrics are reported as mean ± sample std over its seeds, with the number of
seeds and the selected values. The validation metric and its direction are the runs' own `select`
(configs/<runner>/<runner>.yaml, saved in each run's config.yaml); what the table reports beside it:

    image classification   select.metric val_acc              -> test_acc, top_hessian_eigenvalue
    language modelling     select.metric val_ppl              -> test_ppl (at the best-validation checkpoint)
    online learning        select.metric val_average_accuracy -> average_accuracy, forgetting, backward_transfer

A run that failed (a NaN loss, a crash) or never finished is not averaged silently: a candidate with
such runs, or with fewer seeds than `--seeds` (default: the most seeds any candidate has), is marked,
and candidates whose runs all finished are preferred. Writes <out>/table.md and <out>/selection.csv
(every candidate with its validation score, the chosen one flagged).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # collect_results, beside this file

import collect_results  # noqa: E402
from collect_results import TABLE_METRICS, Metric, flatten, load_run, shown  # noqa: E402
from collect_results import mean_and_std as cell  # noqa: E402


@dataclass(frozen=True)
class Selection:
    """What a kind of run is selected on, and what its table reports."""

    kind: str
    validation: str  # summary key
    higher_is_better: bool
    report: tuple[str, ...]  # summary keys, each shown in collect_results' format


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
        raise SystemExit(f"error: these runs select on different metrics ({', '.join(map(str, sorted(selects)))}): "
                         "make one table per runner, passing each runner's run folders.")
    [(metric, mode)] = selects
    if metric is None or mode not in ("min", "max"):
        raise SystemExit(f"error: {runs[0]['run_dir']}/config.yaml has no select (metric, min or max): it was "
                         "written before runs recorded what they select on. Rerun it with this version.")
    kind, report = REPORTS.get(metric, ("runs", (metric.replace("val_", "test_", 1),)))
    if not any(metric in r["summary"] for r in runs):
        raise SystemExit(f"error: the runs report no validation metric ({metric}, their select.metric), so "
                         "nothing can be selected without looking at test. Train with a validation split "
                         "(images: dataset.val_size > 0; online learning: benchmark.val_fraction > 0).")
    return Selection(kind, metric, mode == "max", report)


# Formats of what a paper definition's `report` may add (collect_results' own tables do not show these).
REPORT_METRICS = (
    *(Metric(key, key, decimals=2) for key in ("hessian_eigenvalue_ratio", "distance_travelled")),
    *(Metric(key, f"{key} (kB)", decimals=1, scale=1e-3) for key in ("optimizer_state_bytes", "averaging_state_bytes")),
    Metric("hessian_trace", "hessian_trace", decimals=1),
    Metric("average_sharpness", "average_sharpness (×1e-6)", decimals=1, scale=1e6),  # ½ρ²·tr(H)/n: tiny
)


def metric_format(key: str) -> Metric:
    """collect_results' format of the metric, or of its test counterpart for a validation metric."""
    for twin in (key, key.replace("val_", "test_", 1), key.removeprefix("val_")):
        known = next((m for m in (*TABLE_METRICS, *REPORT_METRICS) if m.key == twin), None)
        if known is not None:
            header = known.header.replace(twin, key)
            return Metric(key, header, known.decimals, known.scale)
    return Metric(key, key, decimals=4)


def attempted_runs(paths: list[Path]) -> list[Path]:
    """Every run folder (config.yaml) below the paths, finished or not: a missing summary is a failed run."""
    found = set()
    for path in paths:
        if not path.exists():
            raise SystemExit(f"error: {path} does not exist; pass run folders or folders above them.")
        found.update(c.parent.resolve() for c in path.rglob("config.yaml") if c.parent.name != ".hydra")
    return sorted(found)


def load_attempt(run_dir: Path, tuned: list[str]) -> dict:
    """A run as collect_results.load_run sees it, or, for a failed one, its identity from config.yaml."""
    run = load_run(run_dir) if (run_dir / "summary.json").is_file() else None
    if run is not None:
        run["failed"] = False
        return run
    from omegaconf import OmegaConf

    config = flatten(OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True))
    identity_keys = {k for keys in collect_results.IDENTITY.values() for k in keys}
    return {"run_dir": run_dir, "seed": config.get("seed"), "failed": True, "summary": {},
            "identity": tuple(next((config[k] for k in keys if k in config), None)
                              for keys in collect_results.IDENTITY.values()),
            "settings": {k: v for k, v in config.items()
                         if k not in identity_keys and not collect_results.is_bookkeeping(k)}}


def select(runs: list[dict], tuned: list[str], seeds_expected: int | None = None) -> list[dict]:
    """One row per group: the candidate chosen on validation and its test metrics. Pure: no files."""
    kind = selection_for(runs)
    fixed = [k for k in collect_results.varying_settings(runs) if k not in tuned]
    groups: dict[tuple, dict[tuple, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        group = run["identity"] + tuple(run["settings"].get(k) for k in fixed)
        groups[group][tuple(run["settings"].get(k) for k in tuned)].append(run)
    expected = seeds_expected or max(len(c) for g in groups.values() for c in g.values())
    rows = []
    for group in sorted(groups, key=collect_results.sort_key):
        candidates = []
        for values, members in groups[group].items():
            finished = [r for r in members if not r["failed"] and _finite(r["summary"].get(kind.validation))]
            score = statistics.mean(r["summary"][kind.validation] for r in finished) if finished else None
            complete = len(finished) == len(members) and len(members) >= expected
            candidates.append({"values": dict(zip(tuned, values)), "members": members, "finished": finished,
                               "score": score, "complete": complete})
        scored = [c for c in candidates if c["score"] is not None]
        pool = [c for c in scored if c["complete"]] or scored
        best = None
        if pool:
            best = (max if kind.higher_is_better else min)(pool, key=lambda c: c["score"])
        rows.append({"group": group, "fixed": dict(zip(fixed, group[len(collect_results.IDENTITY):])), "kind": kind,
                     "candidates": candidates, "best": best, "expected": expected})
    return rows


def _finite(value) -> bool:
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
    header = [*collect_results.IDENTITY, *fixed, f"selected ({', '.join(tuned)})",
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
                                   if _finite(r["summary"].get(metric.key))], metric))
            cells.append(seeds_note(best, row["expected"]))
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["best"] is not None and not r["best"]["complete"] for r in rows):
        lines += ["", "\\* Every candidate of this row had a failed, unfinished or missing run; the best of them "
                      "is shown and its seeds column says what is missing."]
    return "\n".join(lines) + "\n"


def write_selection_csv(rows: list[dict], tuned: list[str], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*collect_results.IDENTITY, *rows[0]["fixed"], *tuned, "validation_mean", "seeds_finished",
                         "runs", "selected"])
        for row in rows:
            for c in row["candidates"]:
                writer.writerow([*row["group"], *c["values"].values(),
                                 "" if c["score"] is None else c["score"], len(c["finished"]), len(c["members"]),
                                 c is row["best"]])


def make_tables(paths: list[Path], out: Path, tuned: list[str], seeds: int | None = None,
                report: Sequence[str] = ()) -> list[dict]:
    """`report`: summary keys the table shows besides its kind's (a paper definition's `report`)."""
    runs = [load_attempt(d, tuned) for d in attempted_runs(paths)]
    if not runs:
        raise SystemExit(f"error: no run folders (config.yaml) under {', '.join(map(str, paths))}.")
    rows = select(runs, tuned, seeds)
    kind = rows[0]["kind"]
    kind = replace(kind, report=(*kind.report, *(k for k in report if k not in kind.report)))
    for row in rows:
        row["kind"] = kind
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(render(rows, tuned, [str(shown(p.resolve())) for p in paths]))
    write_selection_csv(rows, tuned, out / "selection.csv")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, or folders above them")
    parser.add_argument("--out", type=Path, default=Path("runs/tables"),
                        help="where table.md and selection.csv go (default: runs/tables, beside your runs)")
    parser.add_argument("--tune", nargs="+", default=["optimizer.lr"],
                        help="settings chosen on validation inside each group (default: optimizer.lr)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds each setting should have")
    args = parser.parse_args(argv)
    rows = make_tables(args.paths, args.out, args.tune, args.seeds)
    print(f"{len(rows)} rows -> {args.out / 'table.md'}, {args.out / 'selection.csv'} (--out chooses the folder)")


if __name__ == "__main__":
    main()
