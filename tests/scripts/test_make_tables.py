"""scripts/make_tables.py: tuned values chosen on validation, never on test; mean ± std against the statistics
module; failed and missing runs said, not silently averaged away."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_tables.py"


SELECT = {"dataset": ("val_acc", "max"), "benchmark": ("val_average_accuracy", "max")}  # as the runners' configs


def write_run(folder: Path, *, optimizer: str, lr: float, seed: int, summary: dict | None,
              data: str = "cifar10", group: str = "dataset", select: tuple[str, str] | None = None) -> None:
    folder.mkdir(parents=True)
    metric, mode = select or SELECT[group]
    (folder / "config.yaml").write_text(
        f"seed: {seed}\nruns_dir: runs\n{group}:\n  name: {data}\nmodel:\n  name: resnet18\n"
        f"optimizer:\n  name: {optimizer}\n  lr: {lr}\ntrainer:\n  epochs: 10\n"
        f"select:\n  metric: {metric}\n  mode: {mode}\n")
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps({"status": "finished", **summary}))


def make(tmp_path: Path, *args: str) -> tuple[str, list[dict]]:
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "runs"), "--out", str(tmp_path / "out"),
                           *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((tmp_path / "out" / "selection.csv").open()))
    return (tmp_path / "out" / "table.md").read_text(), rows


def table_row(table: str, optimizer: str) -> list[str]:
    [line] = [x for x in table.splitlines() if f"| {optimizer} |" in x]
    return [c.strip() for c in line.strip("|").split("|")]


# adam at lr 1e-3 has the better validation accuracy, lr 1e-2 the better TEST accuracy: the table must
# report lr 1e-3 and its test numbers.
ADAM = {1e-3: [(0.80, 0.70), (0.82, 0.72), (0.81, 0.71)],  # (val_acc, test_acc) per seed
        1e-2: [(0.75, 0.90), (0.74, 0.91), (0.76, 0.92)]}


def test_the_setting_best_on_validation_is_reported_even_where_another_is_better_on_test(tmp_path):
    for lr, seeds in ADAM.items():
        for seed, (val, test) in enumerate(seeds):
            write_run(tmp_path / "runs" / f"adam_{lr}_{seed}", optimizer="adam", lr=lr, seed=seed,
                      summary={"val_acc": val, "test_acc": test})
    table, candidates = make(tmp_path)
    row = table_row(table, "adam")
    test = [t for _, t in ADAM[1e-3]]
    val = [v for v, _ in ADAM[1e-3]]
    expected_test = f"{100 * statistics.mean(test):.2f} ± {100 * statistics.stdev(test):.2f}"
    expected_val = f"{100 * statistics.mean(val):.2f} ± {100 * statistics.stdev(val):.2f}"
    assert row == ["cifar10", "resnet18", "adam", "0.001", expected_val, expected_test, "3"]
    assert "never used to select" in table
    chosen = {float(c["optimizer.lr"]): c["selected"] for c in candidates}
    assert chosen == {1e-3: "True", 1e-2: "False"}
    assert float([c for c in candidates if c["selected"] == "True"][0]["validation_mean"]) == statistics.mean(val)


def test_lower_is_better_for_perplexity(tmp_path):
    for lr, ppl in ((1e-3, [(120.0, 110.0), (118.0, 111.0)]), (3e-4, [(125.0, 100.0), (126.0, 101.0)])):
        for seed, (val, test) in enumerate(ppl):
            write_run(tmp_path / "runs" / f"{lr}_{seed}", optimizer="adam_cm", lr=lr, seed=seed, data="ptb",
                      select=("val_ppl", "min"), summary={"val_ppl": val, "test_ppl": test})
    table, _ = make(tmp_path)
    assert table_row(table, "adam_cm")[3:6] == ["0.001", "119.00 ± 1.41", "110.50 ± 0.71"]


def test_a_failed_or_missing_run_is_said_and_complete_candidates_are_preferred(tmp_path):
    # lr 1e-2 has the best validation score, but one of its seeds diverged (no summary): the complete
    # candidate lr 1e-3 is chosen. For sgd, only 2 of 3 seeds exist at all.
    for seed in range(3):
        write_run(tmp_path / "runs" / f"a3_{seed}", optimizer="adam", lr=1e-3, seed=seed,
                  summary={"val_acc": 0.8, "test_acc": 0.7})
        write_run(tmp_path / "runs" / f"a2_{seed}", optimizer="adam", lr=1e-2, seed=seed,
                  summary=None if seed == 1 else {"val_acc": 0.9, "test_acc": 0.9})
    for seed in range(2):
        write_run(tmp_path / "runs" / f"s_{seed}", optimizer="sgd", lr=0.1, seed=seed,
                  summary={"val_acc": 0.5 + seed / 10, "test_acc": 0.4})
    table, _ = make(tmp_path, "--seeds", "3")
    assert table_row(table, "adam")[3] == "0.001" and table_row(table, "adam")[-1] == "3"
    sgd = table_row(table, "sgd")
    assert sgd[3] == "0.1 *" and sgd[-1] == "2 of 3 (1 missing)"
    assert "\\* Every candidate of this row had a failed" in table


def test_every_candidate_failed_is_a_row_that_says_so(tmp_path):
    write_run(tmp_path / "runs" / "x", optimizer="adam", lr=1e-3, seed=0, summary={"val_acc": 0.5, "test_acc": 0.5})
    write_run(tmp_path / "runs" / "y", optimizer="sgd", lr=0.1, seed=0, summary=None)
    table, _ = make(tmp_path)
    assert table_row(table, "sgd")[3] == "none: no run finished" and table_row(table, "sgd")[-1] == "0 of 1 (1 failed)"


def test_online_learning_runs_are_selected_on_the_validation_average_accuracy(tmp_path):
    for lr, (val, a, f) in ((0.01, (0.6, 0.5, 0.2)), (0.1, (0.4, 0.7, 0.1))):
        write_run(tmp_path / "runs" / str(lr), optimizer="sgd", lr=lr, seed=0, data="five_datasets",
                  group="benchmark", summary={"val_average_accuracy": val, "average_accuracy": a,
                                              "forgetting": f, "backward_transfer": -f})
    table, _ = make(tmp_path)
    assert table_row(table, "sgd") == ["five_datasets", "resnet18", "sgd", "0.01", "60.00", "50.00", "20.00",
                                       "-20.00", "1"]


def test_runs_without_a_validation_metric_are_refused(tmp_path):
    write_run(tmp_path / "runs" / "x", optimizer="adam", lr=1e-3, seed=0, summary={"test_acc": 0.5})
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "runs"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no validation metric" in done.stderr and "dataset.val_size" in done.stderr


def test_the_metric_and_its_direction_are_the_runs_own_select(tmp_path):
    """The same summaries selected on the metric and mode their config.yaml names: the choice follows it."""
    for lr, (val, other, test) in ((1e-3, (0.8, 5.0, 0.1)), (1e-2, (0.6, 2.0, 0.2))):
        for select, name in ((("val_acc", "max"), "acc"), (("val_score", "min"), "score")):
            write_run(tmp_path / name / "runs" / str(lr), optimizer="adam", lr=lr, seed=0, select=select,
                      summary={"val_acc": val, "val_score": other, "test_acc": test, "test_score": test})
    assert table_row(make(tmp_path / "acc")[0], "adam")[3] == "0.001"  # higher val_acc
    table, _ = make(tmp_path / "score")
    assert table_row(table, "adam")[3] == "0.01" and "best mean val_score (lower is better)" in table


def test_runs_of_different_selects_or_without_one_are_refused(tmp_path):
    write_run(tmp_path / "mixed" / "a", optimizer="adam", lr=1e-3, seed=0, summary={"val_acc": 0.5})
    write_run(tmp_path / "mixed" / "b", optimizer="adam", lr=1e-3, seed=1, select=("val_ppl", "min"),
              summary={"val_ppl": 50.0})
    old = tmp_path / "old" / "a"
    write_run(old, optimizer="adam", lr=1e-3, seed=0, summary={"val_acc": 0.5})
    (old / "config.yaml").write_text((old / "config.yaml").read_text().split("select:")[0])
    for runs, message in (("mixed", "select on different metrics"), ("old", "has no select")):
        done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / runs), "--out", str(tmp_path / "o")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1 and message in done.stderr, done.stderr


def test_a_finished_run_without_a_validation_split_is_said_to_have_no_validation_metric(tmp_path):
    write_run(tmp_path / "runs" / "x", optimizer="adam", lr=1e-3, seed=0, summary={"val_acc": 0.5, "test_acc": 0.5})
    write_run(tmp_path / "runs" / "y", optimizer="sgd", lr=0.1, seed=0, summary={"test_acc": 0.9})  # no val split
    write_run(tmp_path / "runs" / "z", optimizer="sgd", lr=0.1, seed=1, summary=None)
    table, _ = make(tmp_path)
    sgd = table_row(table, "sgd")
    assert sgd[3] == "none: no run reports val_acc" and sgd[-1] == "0 of 2 (1 failed, 1 finished without val_acc)"


def test_without_out_the_tables_go_to_runs_tables_and_the_console_says_where(tmp_path):
    write_run(tmp_path / "runs" / "x", optimizer="adam", lr=1e-3, seed=0, summary={"val_acc": 0.5, "test_acc": 0.5})
    done = subprocess.run([sys.executable, str(SCRIPT), "runs"], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "tables" / "table.md").is_file() and not (tmp_path / "results").exists()
    assert "-> runs/tables/table.md, runs/tables/selection.csv" in done.stdout
