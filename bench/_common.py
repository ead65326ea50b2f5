"""Shared pieces of the benchmark: the fake server in its own process, timing, and the printed table."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field


@contextlib.contextmanager
def fake_openai_process(latency: float = 0.0, *extra: str) -> Iterator[str]:
    """Run ``python -m arcanos_flows.testing openai`` in its own process; yield its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "arcanos_flows.testing", "openai", "--latency", str(latency), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.removeprefix("READY ")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def median(values: list[float]) -> float:
    """The median, the figure every row quotes."""
    return statistics.median(values)


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    measured: str
    compared: str
    ratio: str
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)


def print_table(rows: list[Row], repeats: int) -> None:
    """Print the results as a Markdown table, with the machine it ran on."""
    print()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"medians of {repeats} runs; the fake server runs in its own process."
    )
    print()
    print("| scenario | arcanos-flows | compared with | ratio | target | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "**NO**")
        print(f"| {row.scenario} | {row.measured} | {row.compared} | {row.ratio} | {row.target} | {met} |")
    for row in rows:
        for note in row.notes:
            print(f"- {row.scenario}: {note}")
