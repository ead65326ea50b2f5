"""Ad-hoc runs: ``arcanos-flows run research --topic ... --question one`` vs a bare Prefect flow, as fresh processes.

Both commands start as new processes with the same environment, like a user typing them, and are timed from
spawn to exit (imports, Prefect start-up, the run, teardown), hyperfine-style: one untimed warm-up each (not in
``--quick``), then alternating timed runs; medians are quoted. Two settings:

- Prefect's temporary server (no ``PREFECT_API_URL``): each process starts its own; its home gets a copy of an
  already migrated database first, as after a user's first run;
- a running local server (``prefect server start`` started by the bench, ``PREFECT_API_URL`` set);
- the server of ``arcanos-flows server start`` (no ``PREFECT_API_URL``: the CLI finds it by itself).

The fake OpenAI server answers at once (0 ms latency): what is left is the cost of starting and ending a run.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

from ._common import Bench, BenchError, PrefectServer, Row, free_port, median

TOPIC = "Ad-hoc run of the bench"
RUN_ARGS = ("run", "research", "--topic", TOPIC, "--question", "one")


def commands() -> dict[str, list[str]]:
    """The two commands, as a user would type them."""
    script = Path(sys.executable).with_name("arcanos-flows")
    arcanos = [str(script)] if script.exists() else [sys.executable, "-m", "arcanos_flows.cli"]
    return {
        "arcanos": [*arcanos, *RUN_ARGS],
        "bare": [sys.executable, "-m", "bench._bare_flow"],
    }


def timed(bench: Bench, name: str, command: list[str], env: dict[str, str], timeout: float = 300) -> float:
    """Seconds from spawn to exit of one fresh process; raises :class:`BenchError` if it fails."""
    from ._common import _pythonpath

    log = bench.logs / f"adhoc-{name}.log"
    with open(log, "wb") as output:
        started = time.perf_counter()
        completed = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONPATH": _pythonpath()},
            cwd=bench.workdir,
            timeout=timeout,
            check=False,
        )
        seconds = time.perf_counter() - started
    if completed.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise BenchError(f"{name} exited with {completed.returncode}:\n{tail}")
    return seconds


def measure(bench: Bench, label: str, env: dict[str, str]) -> dict[str, list[float]]:
    """Warm-up, then ``repeats`` alternating timed runs of both commands."""
    runs = commands()
    times: dict[str, list[float]] = {name: [] for name in runs}
    if not bench.quick:  # warm-up: the OS file cache, Prefect's first-run work; not timed
        for name, command in runs.items():
            timed(bench, f"{label}-{name}", command, env)
    for round_number in range(bench.repeats):
        order = list(runs) if round_number % 2 == 0 else list(reversed(runs))
        for name in order:
            bench.settle()
            times[name].append(timed(bench, f"{label}-{name}", runs[name], env))
    return times


def run(bench: Bench) -> list[Row]:
    server = bench.fake_server(0.0)
    prefect = bench.prefect()
    rows = []

    home = bench.tmp / "ephemeral-home"
    prefect.copy_database(home)
    times = measure(bench, "ephemeral", bench.arcanos_env(server.base_url, api_url=None, home=home))
    ours, bare = median(times["arcanos"]), median(times["bare"])
    rows.append(
        Row(
            "ad-hoc `arcanos-flows run research` (one question), Prefect's temporary server",
            f"{ours:.2f} s",
            f"bare Prefect flow, one trivial task {bare:.2f} s",
            f"{ours - bare:+.2f} s",
            "<= +1 s",
            ours - bare <= 1.0,
            [
                f"fresh processes, spawn to exit; arcanos {_fmt(times['arcanos'])} s, bare {_fmt(times['bare'])} s",
            ],
        )
    )

    times = measure(bench, "local", bench.arcanos_env(server.base_url, api_url=prefect.api_url))
    ours, bare = median(times["arcanos"]), median(times["bare"])
    rows.append(
        Row(
            "ad-hoc `arcanos-flows run research` (one question), running local Prefect server",
            f"{ours:.2f} s",
            f"bare Prefect flow, one trivial task {bare:.2f} s",
            f"{ours - bare:+.2f} s",
            "<= 3 s total",
            ours <= 3.0,
            [
                "`prefect server start` started by the bench, PREFECT_API_URL set; "
                f"arcanos {_fmt(times['arcanos'])} s, bare {_fmt(times['bare'])} s",
            ],
        )
    )
    rows.append(_reused_server(bench, server.base_url, prefect))
    return rows


def _reused_server(bench: Bench, base_url: str, prefect: PrefectServer) -> Row:
    """``arcanos-flows server start``, then runs that find it by themselves (no ``PREFECT_API_URL``)."""
    scenario = "ad-hoc `arcanos-flows run research` (one question), reusing `arcanos-flows server start`"
    target = "<= 3 s total"
    cli = commands()["arcanos"][: -len(RUN_ARGS)]
    home = bench.tmp / "cli-server-home"
    prefect.copy_database(home)
    env = bench.arcanos_env(base_url, api_url=None, home=home, XDG_STATE_HOME=str(bench.tmp / "cli-server-state"))
    probe = subprocess.run(
        [*cli, "server", "--help"], env=env, cwd=bench.workdir, capture_output=True, timeout=120, check=False
    )
    if probe.returncode != 0:
        return Row.missing(scenario, target, "no `arcanos-flows server start|stop` command")
    started = time.perf_counter()
    timed(bench, "cli-server-start", [*cli, "server", "start", "--port", str(free_port())], env, timeout=400)
    start_seconds = time.perf_counter() - started
    record = bench.tmp / "cli-server-state" / "arcanos-flows" / "server" / "server.json"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        bench.watched.append(int(json.loads(record.read_text())["pid"]))  # its own session: pgid == pid
    try:
        run = commands()["arcanos"]
        if not bench.quick:
            timed(bench, "cli-server-run", run, env)
        times = []
        for _ in range(bench.repeats):
            bench.settle()
            times.append(timed(bench, "cli-server-run", run, env))
    finally:
        bench.watched.clear()
        timed(bench, "cli-server-stop", [*cli, "server", "stop"], env, timeout=120)
    ours = median(times)
    return Row(
        scenario,
        f"{ours:.2f} s",
        "",
        "",
        target,
        ours <= 3.0,
        [
            f"no PREFECT_API_URL: the CLI finds the server that `arcanos-flows server start` recorded "
            f"(started in {start_seconds:.1f} s, not counted); runs {_fmt(times)} s",
        ],
    )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"
