"""Run the benchmarks and print the results table: ``python -m bench [--quick] [--repeats N] [--only NAME]``."""

from __future__ import annotations

import argparse

from . import client_overhead
from ._common import Row, fake_openai_process, print_table


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run proving the bench works")
    parser.add_argument(
        "--repeats", type=int, default=None, help="runs per scenario (median quoted); default 5, quick 2"
    )
    parser.add_argument("--only", action="append", default=None, help="run only these scenarios (overhead)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    wanted = set(args.only or ["overhead"])
    rows: list[Row] = []
    if "overhead" in wanted:
        with fake_openai_process(0.0) as base_url:
            rows.append(client_overhead.run(base_url, calls=50 if args.quick else 1000, repeats=repeats))
    print_table(rows, repeats)
    return 0 if all(row.met is not False for row in rows) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
