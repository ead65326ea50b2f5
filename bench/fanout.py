"""Fan-out: a research flow's investigations in parallel, against raw asyncio, the ideal and a naive Prefect flow.

Every side makes the same requests (a plan, ``n`` investigations, a synthesis over all findings) to the same fake
server (its own process, a fixed latency per answer), at most ``par`` at once:

- arcanos-flows: ``research_flow(topic, questions=[n], max_parallel=par)``;
- raw: ``openai.AsyncOpenAI`` with ``asyncio.Semaphore(par)`` and ``asyncio.gather`` (its own process, no Prefect);
- naive Prefect: a ``@flow(task_runner=ThreadPoolTaskRunner(par))`` mapping a plain ``@task`` around the SDK;
- ideal: ``(1 + ceil(n / par) + 1) x latency``;
- with ``--diagnose``, also ``research_flow`` inside the caller's ``tags("arcanos")`` (task runs tagged too).

Each Prefect side runs in a long-lived process against a local ``prefect server start`` that the bench started
(so no server start-up is timed); the time is ``perf_counter()`` around the flow call in that process (flow-run
creation, every task run and the final state included), after one untimed warm-up run of the same size. Sides
alternate in a rotating order each round; the medians of the rounds are compared.
"""

from __future__ import annotations

import math
from typing import Any

from ._common import Bench, Row, median

SIDES = ("raw", "research", "naive")
TARGET = "<= 1.15x raw async, <= 1.25x ideal"


def sizes(quick: bool, smoke: bool = False) -> tuple[int, int, float]:
    """Investigations, parallelism and latency (s) of the scenario."""
    if smoke:
        return (4, 2, 0.01)
    return (24, 8, 0.1) if quick else (200, 16, 0.25)


def run(bench: Bench) -> Row:
    n, par, latency = sizes(bench.quick, bench.smoke)
    scenario = f"fan-out: research flow, {n} investigations, {latency * 1000:.0f} ms latency, {par} in flight"
    server = bench.fake_server(latency)
    prefect = bench.prefect()
    flows = bench.worker("fanout-prefect", bench.arcanos_env(server.base_url, api_url=prefect.api_url))
    raw = bench.worker("fanout-raw", bench.arcanos_env(server.base_url, api_url=None))
    features = flows.call("features")
    missing = []
    if features["max_questions"] < n:
        missing.append(f"research_flow accepts {features['max_questions']} questions, the scenario needs {n}")
    if features["max_parallel"] < par:
        missing.append(f"research_flow's max_parallel is capped at {features['max_parallel']}")
    sides = [side for side in SIDES if side != "research" or not missing]
    if bench.diagnose and not missing:
        sides.append("research_tagged_tasks")
    workers = {"raw": raw, "research": flows, "naive": flows, "research_tagged_tasks": flows}

    for side in sides:  # warm-up: imports, connection pools, the flow's first run; not timed
        workers[side].call(side, topic="warm-up", n=n, par=par)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    startup: dict[str, list[float]] = {side: [] for side in sides}
    teardown: dict[str, list[float]] = {side: [] for side in sides}
    flow_cpu: dict[str, list[float]] = {side: [] for side in sides}
    server_cpu: dict[str, list[float]] = {side: [] for side in sides}
    digest: dict[str, list[float]] = {side: [] for side in sides}
    bench.settle()
    for round_number in range(bench.repeats):
        order = sides[round_number % len(sides) :] + sides[: round_number % len(sides)]
        for side in order:
            server.reset()
            cpu_before = bench.server_cpu()
            reply = workers[side].call(side, topic=f"Fan-out round {round_number}", n=n, par=par)
            stats = server.stats()
            digest[side].append(bench.settle())  # the server finishes this run's events before the next one
            server_cpu[side].append(bench.server_cpu() - cpu_before)
            _check(side, reply, stats, n)
            seconds[side].append(reply["seconds"])
            startup[side].append(stats["first_request_at"] - reply["start_mono"])
            teardown[side].append(reply["end_mono"] - stats["last_answer_at"])
            flow_cpu[side].append(reply["cpu_seconds"])

    ideal = (1 + math.ceil(n / par) + 1) * latency
    raw_s = median(seconds["raw"])
    naive_s = median(seconds["naive"])
    notes = [
        f"ideal (1 + ceil({n}/{par}) + 1) x {latency * 1000:.0f} ms = {ideal:.2f} s; "
        f"naive Prefect flow {naive_s:.2f} s = {naive_s / raw_s:.2f}x raw, {naive_s / ideal:.2f}x ideal",
        "time = perf_counter() around the call in a warm flow process (local `prefect server start`, not timed); "
        "'before' = call to first request at the fake server, 'after' = last answer to return; CPU = the "
        "flow process's CPU time during the call and the Prefect server's until it was idle again (medians)",
    ]
    for side in sides:
        notes.append(
            f"{side}: runs {_fmt(seconds[side])} s; before first request {median(startup[side]) * 1000:.0f} ms, "
            f"after last answer {median(teardown[side]) * 1000:.0f} ms; CPU: flow process "
            f"{median(flow_cpu[side]):.2f} s, Prefect server {median(server_cpu[side]):.2f} s "
            f"(idle again {median(digest[side]):.1f} s after the run)"
        )
    if "research_tagged_tasks" in sides:
        tagged = median(seconds["research_tagged_tasks"])
        notes.append(
            f"diagnosis: research_flow with every task run tagged (a tag-concurrency lease per step) {tagged:.2f} s "
            f"= {tagged / raw_s:.2f}x raw"
        )
    if missing:
        notes += [f"missing: {what}" for what in missing]
        return Row(
            scenario, "n/a (feature missing)", f"raw async {raw_s:.2f} s; ideal {ideal:.2f} s", "", TARGET, None, notes
        )
    ours = median(seconds["research"])
    return Row(
        scenario,
        f"{ours:.2f} s",
        f"raw async {raw_s:.2f} s; ideal {ideal:.2f} s; naive Prefect {naive_s:.2f} s",
        f"{ours / raw_s:.2f}x raw, {ours / ideal:.2f}x ideal",
        TARGET,
        ours / raw_s <= 1.15 and ours / ideal <= 1.25,
        notes,
        values={"research_flow": ours, "naive Prefect flow": naive_s, "ideal": ideal},
        baseline=("raw AsyncOpenAI", raw_s),
        unit="s",
    )


def _check(side: str, reply: dict[str, Any], stats: dict[str, Any], n: int) -> None:
    expected = n + 2
    answered = stats["statuses"].get("200", 0)
    if stats["completion_requests"] != expected or answered != expected or reply.get("failed"):
        raise RuntimeError(f"{side}: expected {expected} answered requests, the server saw {stats}; reply {reply}")


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"
