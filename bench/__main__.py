"""Run the benchmarks and print the results table.

``python -m bench [--quick | --smoke] [--repeats N] [--only NAME ...] [--keep] [--diagnose] [--json FILE]
[--chart FILE.svg]``

Scenarios (``--only`` names): ``fanout``, ``async-fanout``, ``overhead``, ``task-cost``, ``adhoc``, ``cache``,
``rate-limit``, ``memory``, ``typed-overhead``, ``traced-overhead``, ``gateway-overhead``, ``batch``. ``--quick``
runs every scenario at tiny sizes as a smoke test (targets are shown, not asserted).
``--smoke`` is ``--quick`` at the smallest sizes, without waiting for the Prefect server to go idle between runs:
the test suite's proof that every scenario runs and prints its row (its figures mean nothing). The exit status is
1 when a measured target is missed (not in ``--quick``/``--smoke``), 2 when a scenario could not be measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from . import adhoc, async_fanout, batch, caching, chart, client_overhead, fanout, memory, rate_limit, task_cost
from ._common import Bench, Row, load_average, print_table

SCENARIOS: dict[str, tuple[str, str, Callable[[Bench], Row | list[Row]]]] = {
    "fanout": ("fan-out", fanout.TARGET, fanout.run),
    "async-fanout": ("async fan-out", async_fanout.TARGET, async_fanout.run),
    "overhead": ("client overhead", client_overhead.TARGET, client_overhead.run),
    "typed-overhead": ("typed answers", client_overhead.TYPED_TARGET, client_overhead.run_typed),
    "traced-overhead": ("client with OpenTelemetry spans", client_overhead.TRACED_TARGET, client_overhead.run_traced),
    "gateway-overhead": ("client behind a gateway", client_overhead.GATEWAY_TARGET, client_overhead.run_gateway),
    "batch": ("Batch API", batch.TARGET, batch.run),
    "task-cost": ("Prefect cost per reasoning task", task_cost.TARGET, task_cost.run),
    "adhoc": ("ad-hoc `arcanos-flows run research`", "<= +1 s temporary server; <= 3 s local server", adhoc.run),
    "cache": ("re-run with caching on", caching.TARGET, caching.run),
    "rate-limit": ("requests-per-minute limit", rate_limit.TARGET, rate_limit.run),
    "memory": ("memory", memory.TARGET, memory.run),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run proving the bench works")
    parser.add_argument(
        "--smoke", action="store_true", help="--quick at the smallest sizes, no settling: the test suite's smoke run"
    )
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds per scenario (median quoted); default 5, quick 1"
    )
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), default=None, help="run only this scenario (repeatable)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder with the processes' logs")
    parser.add_argument(
        "--diagnose", action="store_true", help="also run diagnostic variants (research flow with tagged task runs)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this file")
    parser.add_argument(
        "--chart", type=Path, default=None, help="also draw the measured ratios as an SVG chart (bench.chart)"
    )
    args = parser.parse_args(argv)
    args.quick = args.quick or args.smoke
    repeats = args.repeats or (1 if args.quick else 5)
    wanted = [name for name in SCENARIOS if name in set(args.only or SCENARIOS)]

    bench = Bench(quick=args.quick, repeats=repeats, keep=args.keep, diagnose=args.diagnose, smoke=args.smoke)
    started, load_at_start = time.perf_counter(), load_average()
    rows: list[Row] = []
    errors = 0
    try:
        for name in wanted:
            title, target, scenario = SCENARIOS[name]
            scenario_started, load_before = time.perf_counter(), load_average()
            print(f"[bench] {name}: running (load {load_before})", file=sys.stderr, flush=True)
            try:
                result = scenario(bench)
            except Exception as exc:
                errors += 1
                traceback.print_exc()
                result = Row.failed(title, target, exc)
            produced = result if isinstance(result, list) else [result]
            took = time.perf_counter() - scenario_started
            for row in produced:
                row.notes.append(f"took {took:.0f} s, load average {load_before} before, {load_average()} after")
            rows.extend(produced)
            print(f"[bench] {name}: done in {took:.0f} s", file=sys.stderr, flush=True)
    finally:
        bench.close()
        if bench.keep:
            print(f"[bench] logs kept in {bench.logs}", file=sys.stderr)
    seconds = time.perf_counter() - started
    print_table(rows, repeats, quick=args.quick, seconds=seconds, loads=(load_at_start, load_average()))
    if getattr(bench, "prefect_start_seconds", None) is not None:
        print(
            f"- the local Prefect server (`prefect server start`, fresh database) took "
            f"{bench.prefect_start_seconds:.0f} s to become healthy (not part of any figure)"
        )
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2) + "\n")
    if args.chart and chart.chartable([row.__dict__ for row in rows]):
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        caption = (
            f"python -m bench {' '.join(sys.argv[1:] if argv is None else argv)} · {os.cpu_count()} CPUs, "
            f"Python {platform.python_version()} · medians of {repeats} rounds · {time.strftime('%Y-%m-%d')}"
        )
        args.chart.write_text(chart.render([row.__dict__ for row in rows], caption))
    if errors:
        return 2
    return 0 if args.quick or all(row.met is not False for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
