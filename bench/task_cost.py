"""Prefect cost per reasoning task: ``run_reasoning`` task calls vs the same client calls, each inside one flow.

One warm flow process (local ``prefect server start``, fake server at 0 ms latency) runs, in rotating order each
round, a flow that makes ``n`` sequential calls of:

- ``task``: the ``run_reasoning`` task (what flows use);
- ``plain``: a bare ``@task(cache_policy=NO_CACHE, persist_result=False)`` calling the shared client (Prefect's own
  cost per task run, without arcanos-flows' task code);
- ``direct``: ``shared_client(settings).run_reasoning(...)`` straight in the flow body;
- ``task-tagged``: ``task`` with the flow run inside ``tags("arcanos")``, as ``@arcanos_flow`` runs the bundled
  flows (shown in the notes; each tagged task run first asks the API for tag concurrency slots).

Each call is timed with ``perf_counter()`` inside the flow; a round's figure is the median call, and the row
quotes the median over rounds of (task median - direct median). The mean difference (whole loop / n) is shown too.
"""

from __future__ import annotations

from ._common import Bench, Row, median

MODES = ("task", "plain", "direct", "task-tagged")
TARGET = "<= 10 ms per task (median)"


def run(bench: Bench) -> Row:
    n = 3 if bench.smoke else 20 if bench.quick else 200
    scenario = f"Prefect cost per reasoning task, {n} sequential calls in one flow"
    server = bench.fake_server(0.0)
    prefect = bench.prefect()
    worker = bench.worker("task-cost", bench.arcanos_env(server.base_url, api_url=prefect.api_url))
    for mode in MODES:
        worker.call("task_cost", n=min(n, 20), mode=mode)  # warm-up
    medians: dict[str, list[float]] = {mode: [] for mode in MODES}
    means: dict[str, list[float]] = {mode: [] for mode in MODES}
    per_round: list[float] = []
    flow_cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    server_cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    bench.settle()
    for round_number in range(bench.repeats):
        order = MODES[round_number % len(MODES) :] + MODES[: round_number % len(MODES)]
        for mode in order:
            cpu_before = bench.server_cpu()
            reply = worker.call("task_cost", n=n, mode=mode)
            bench.settle()
            server_cpu[mode].append((bench.server_cpu() - cpu_before) * 1000 / n)
            flow_cpu[mode].append(reply["cpu_seconds"] * 1000 / n)
            medians[mode].append(median(reply["per_call_ms"]))
            means[mode].append(sum(reply["per_call_ms"]) / n)
        per_round.append(medians["task"][-1] - medians["direct"][-1])
    task_ms, plain_ms, direct_ms, tagged_ms = (median(medians[mode]) for mode in MODES)
    difference = median(per_round)
    mean_difference = median(means["task"]) - median(means["direct"])
    notes = [
        f"median call per round (ms): task {_fmt(medians['task'])}, plain @task {_fmt(medians['plain'])}, "
        f"direct {_fmt(medians['direct'])}",
        f"mean per call: task {median(means['task']):.2f} ms, plain @task {median(means['plain']):.2f} ms, "
        f"direct {median(means['direct']):.2f} ms: +{mean_difference:.2f} ms per task on average",
        f"of the +{difference:.2f} ms, Prefect's bare task run is +{plain_ms - direct_ms:.2f} ms and arcanos-flows' "
        f"task code (settings, hooks, identity, usage log) +{task_ms - plain_ms:.2f} ms",
        f"with every task run tagged (a caller's tags() around the flow: Prefect then takes a tag-concurrency lease "
        f"per task run; @arcanos_flow tags only the flow run): {tagged_ms:.2f} ms/call, "
        f"+{tagged_ms - direct_ms:.2f} ms per task; per round {_fmt(medians['task-tagged'])}",
        "CPU per call (ms), flow process / Prefect server: "
        + ", ".join(f"{mode} {median(flow_cpu[mode]):.1f} / {median(server_cpu[mode]):.1f}" for mode in MODES),
    ]
    return Row(
        scenario,
        f"{task_ms:.2f} ms/call",
        f"direct client call {direct_ms:.2f} ms/call",
        f"+{difference:.2f} ms per task",
        TARGET,
        difference <= 10,
        notes,
        values={"run_reasoning task": task_ms, "bare @task": plain_ms},
        baseline=("direct client call", direct_ms),
        unit="ms/call",
    )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"
