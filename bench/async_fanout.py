"""Async fan-out: ``n`` reasoning steps gathered in an async flow, against raw ``AsyncOpenAI`` and the alternatives.

Every side makes ``n`` chat completions (the same messages) to the same fake server (its own process, a fixed
latency per answer), at most ``par`` at once:

- ``arun``: an async flow gathering ``await arun_reasoning(...)`` under ``asyncio.Semaphore(par)`` (what the
  library offers async flows);
- ``raw``: ``openai.AsyncOpenAI`` gathered under ``asyncio.Semaphore(par)`` (its own process, no Prefect);
- ``sync_map``: the library's sync path, ``run_reasoning.map`` in a flow on ``ThreadPoolTaskRunner(par)``;
- ``bare``: a bare Prefect async ``@task`` around ``AsyncOpenAI``, gathered in an async flow (what a user writes
  without the library).

The Prefect sides run in one warm process against a local ``prefect server start`` the bench started; each side is
timed with ``perf_counter()`` around the flow call (flow-run creation, every task run and the final state
included), after an untimed warm-up. Sides rotate their order each round; the row quotes medians over rounds.
"""

from __future__ import annotations

from ._common import Bench, Row, median

SIDES = ("raw", "arun", "sync_map", "bare")
TARGET = "<= 1.15x raw async; <= 1.05x the sync path"


def sizes(quick: bool, smoke: bool = False) -> tuple[int, int, float]:
    """Steps, parallelism and latency (s) of the scenario."""
    if smoke:
        return (4, 2, 0.01)
    return (32, 8, 0.1) if quick else (200, 16, 0.25)


def run(bench: Bench) -> Row:
    n, par, latency = sizes(bench.quick, bench.smoke)
    scenario = f"async fan-out: {n} steps gathered, {latency * 1000:.0f} ms latency, {par} in flight"
    server = bench.fake_server(latency)
    prefect = bench.prefect()
    flows = bench.worker("afan-prefect", bench.arcanos_env(server.base_url, api_url=prefect.api_url))
    raw = bench.worker("afan-raw", bench.arcanos_env(server.base_url, api_url=None))
    workers = {"raw": raw, "arun": flows, "sync_map": flows, "bare": flows}

    for side in SIDES:  # warm-up: imports, connection pools, each flow's first run; not timed
        workers[side].call(f"afan_{side}", n=n, par=par)
    seconds: dict[str, list[float]] = {side: [] for side in SIDES}
    flow_cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    server_cpu: dict[str, list[float]] = {side: [] for side in SIDES}
    before: dict[str, list[float]] = {side: [] for side in SIDES}
    after: dict[str, list[float]] = {side: [] for side in SIDES}
    bench.settle()
    for round_number in range(bench.repeats):
        order = SIDES[round_number % len(SIDES) :] + SIDES[: round_number % len(SIDES)]
        for side in order:
            server.reset()
            cpu_before = bench.server_cpu()
            reply = workers[side].call(f"afan_{side}", n=n, par=par)
            stats = server.stats()
            bench.settle()
            server_cpu[side].append(bench.server_cpu() - cpu_before)
            if stats["completion_requests"] != n or stats["statuses"].get("200", 0) != n or reply.get("steps") != n:
                raise RuntimeError(f"{side}: expected {n} answered requests, the server saw {stats}; reply {reply}")
            seconds[side].append(reply["seconds"])
            flow_cpu[side].append(reply["cpu_seconds"])
            before[side].append(stats["first_request_at"] - reply["start_mono"])
            after[side].append(reply["end_mono"] - stats["last_answer_at"])

    raw_s, arun_s, sync_s, bare_s = (median(seconds[side]) for side in SIDES)
    ideal = -(-n // par) * latency
    notes = [
        f"medians: raw AsyncOpenAI {raw_s:.2f} s; arun_reasoning gathered {arun_s:.2f} s = {arun_s / raw_s:.2f}x raw; "
        f"run_reasoning.map on {par} threads {sync_s:.2f} s = {sync_s / raw_s:.2f}x raw; bare Prefect async @task "
        f"{bare_s:.2f} s = {bare_s / raw_s:.2f}x raw; ideal ceil({n}/{par}) x {latency * 1000:.0f} ms = {ideal:.2f} s",
        "where the time goes (medians): 'before' = call to first request at the fake server, 'after' = last answer "
        "to return, CPU = the flow process's CPU time during the call / the Prefect server's until idle again",
    ]
    for side in SIDES:
        notes.append(
            f"{side}: runs {_fmt(seconds[side])} s; before {median(before[side]) * 1000:.0f} ms, after "
            f"{median(after[side]) * 1000:.0f} ms; CPU {median(flow_cpu[side]):.2f} s / "
            f"{median(server_cpu[side]):.2f} s"
        )
    return Row(
        scenario,
        f"{arun_s:.2f} s",
        f"raw async {raw_s:.2f} s; sync path {sync_s:.2f} s; bare async task {bare_s:.2f} s",
        f"{arun_s / raw_s:.2f}x raw, {arun_s / sync_s:.2f}x sync path, {arun_s / bare_s:.2f}x bare",
        TARGET,
        arun_s / raw_s <= 1.15 and arun_s / sync_s <= 1.05,
        notes,
        values={"arcanos-flows (arun_reasoning)": arun_s, "run_reasoning.map": sync_s, "bare async @task": bare_s},
        baseline=("raw AsyncOpenAI", raw_s),
        unit="s",
    )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"
