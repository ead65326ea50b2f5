"""Step caching: re-running an identical research flow with ``cache=True`` vs its first run.

In one warm flow process (local ``prefect server start``), each round runs a research flow on a topic never used
before (so its first run cannot hit a cache), then the identical run again. Both are timed with
``perf_counter()`` around the call; the fake server counts the requests of each run (the second must make none).
"""

from __future__ import annotations

import uuid

from ._common import Bench, Row, median

TARGET = "0 requests for cached steps, >= 5x faster"


def sizes(quick: bool, smoke: bool = False) -> tuple[int, int, float]:
    """Investigations, parallelism and latency (s)."""
    if smoke:
        return (2, 2, 0.05)
    return (8, 4, 0.2) if quick else (50, 16, 1.0)


def run(bench: Bench) -> Row:
    n, par, latency = sizes(bench.quick, bench.smoke)
    scenario = f"re-run of an identical research flow with caching on ({n} investigations, {latency:g} s latency)"
    server = bench.fake_server(latency)
    prefect = bench.prefect()
    worker = bench.worker("cache", bench.arcanos_env(server.base_url, api_url=prefect.api_url))
    features = worker.call("features")
    if not features["research_cache"]:
        return Row.missing(scenario, TARGET, "research_flow has no `cache` parameter")
    worker.call("research", topic=f"warm-up {uuid.uuid4()}", n=min(n, 4), par=par, cache=True)
    worker.call("research", topic=f"warm-up {uuid.uuid4()}", n=min(n, 4), par=par, cache=False)
    first: list[float] = []
    second: list[float] = []
    requests: list[int] = []
    cached_steps: list[int] = []
    for round_number in range(bench.repeats):
        topic = f"Caching round {round_number} {uuid.uuid4()}"
        bench.settle()
        server.reset()
        reply = worker.call("research", topic=topic, n=n, par=par, cache=True)
        stats = server.stats()
        if stats["completion_requests"] != n + 2 or reply["failed"]:
            raise RuntimeError(f"the first run should make {n + 2} requests: {stats}; {reply}")
        first.append(reply["seconds"])
        bench.settle()
        server.reset()
        reply = worker.call("research", topic=topic, n=n, par=par, cache=True)
        second.append(reply["seconds"])
        requests.append(server.stats()["completion_requests"])
        cached_steps.append(reply["cached_steps"])
    first_s, second_s = median(first), median(second)
    speedup = first_s / second_s
    # The first run is its overhead plus (plan + ceil(n / par) rounds + synthesis) x latency; the re-run does not
    # depend on the latency: the speed-up grows with it. The latency per call at which it would reach 5x:
    rounds = 1 + -(-n // par) + 1
    overhead = first_s - rounds * latency
    break_even = (5 * second_s - overhead) / rounds
    notes = [
        f"the first run's overhead beyond {rounds} x latency is {overhead:.2f} s; the re-run costs {second_s:.2f} s "
        f"whatever the latency, so 5x is reached from about {break_even:.2f} s per call (reasoning calls of a real "
        "model take seconds to minutes)",
        f"first runs {_fmt(first)} s, re-runs {_fmt(second)} s; requests of each re-run at the fake server "
        f"{requests}; steps the report marks cached {cached_steps} of {n + 2}",
        f"max_parallel={par}; each round uses a new topic, so its first run starts with an empty cache",
    ]
    return Row(
        scenario,
        f"re-run {second_s:.2f} s, {max(requests)} requests",
        f"first run {first_s:.2f} s, {n + 2} requests",
        f"{speedup:.1f}x faster",
        TARGET,
        max(requests) == 0 and speedup >= 5,
        notes,
        values={"re-run, cached": second_s},
        baseline=("first run", first_s),
        unit="s",
    )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"
