"""The paper's tables and figures, one definition each (configs/paper/<name>.yaml), from launch to results.

    python scripts/paper.py list                           # every result: what it is, its runs, status, compute
    python scripts/paper.py run cifar10 [--launcher local|slurm|print] [--mini]
    python scripts/paper.py collect cifar10 [--mini]       # runs -> results/paper[_mini]/cifar10/
    python scripts/paper.py run all --mini                 # every result at toy scale on embedded data, then collect
    python scripts/paper.py index                          # results/README.md: every result, command, status

A definition's `sweeps` are Hydra multiruns of one runner (every run is also reproducible by its own
command line); runs land in runs/paper[_mini]/<name>/<sweep>/<overrides>. `collect` chooses every tuned
value on validation (scripts/make_tables.py) and draws the definition's figures. `--mini` runs the
definition's `mini` sweeps: the same pipeline at toy scale on embedded data, a check of the pipeline and
never the paper's numbers.
"""

# The logic is the package experiments.reporting; this file is its command line.

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from experiments.reporting import ResultsError, one_line_errors
from experiments.reporting.collect import collect
from experiments.reporting.definitions import REPO, definitions, experiments_of, in_repository
from experiments.reporting.index import STEP_TIMES, listing, write_index
from experiments.reporting.launch import run
from experiments.reporting.measure import measure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="every result, its runs, status and compute estimate")
    for verb in ("run", "collect"):
        p = sub.add_parser(verb)
        p.add_argument("name", help="a definition in configs/paper/, or all")
        p.add_argument("--mini", action="store_true", help="the toy-scale version on embedded data")
        if verb == "run":
            p.add_argument("--launcher", choices=("local", "slurm", "print"), default="local")
    parser.add_argument("--root", type=Path, default=REPO,
                        help="where runs/ and results/ go (default: the repository)")
    sub.add_parser("index", help="write results/README.md")
    p = sub.add_parser("measure", help="time training steps of each result's model -> results/paper/step_times.json")
    p.add_argument("names", nargs="*", help="definitions (default: all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-batch", type=int, default=32, help="time larger batches at this size, scaled")
    p.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    root, known = args.root.resolve(), definitions()
    if args.command == "list":
        return print("\n".join(listing(root, known)))
    if args.command == "index":
        return print(f"wrote {in_repository(write_index(root, known))}")
    if args.command == "measure":
        names = args.names or [n for n in known if n != "overhead"]
    else:
        names = list(known) if args.name == "all" else [args.name]
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown result {unknown[0]!r}; the definitions are: {', '.join(known)}, all")
    if args.command == "measure":
        wanted = set().union(*(experiments_of(known[n]) for n in names))
        written = measure(wanted, args.device, args.max_batch, args.steps, STEP_TIMES)
        return print(f"wrote {in_repository(written)}")
    started, failed = time.perf_counter(), []
    for name in names:
        if args.command == "run":
            run(root, name, known[name], args.mini, args.launcher)
        if args.command == "collect" or args.launcher == "local":
            try:
                print(f"[{name}] collected in {in_repository(collect(root, name, known[name], args.mini))}")
            except ResultsError as error:  # one result without runs does not stop the others
                print(f"[{name}] error: {error}", file=sys.stderr)
                failed.append(name)
    if args.command == "collect" or args.launcher == "local":
        write_index(root, known)
    print(f"done in {time.perf_counter() - started:.0f} s" + (f"; no results for {', '.join(failed)}" if failed else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    with one_line_errors():
        main()
