"""Memory: peak RSS of a flow process running a 1000-step research flow vs a 250-step one.

Each size runs in a fresh process (local ``prefect server start``, fake server at a small latency): imports, one
research run, then the process reads its own peak RSS (``VmHWM`` in ``/proc/self/status``). Sizes alternate; the
row quotes medians, and the growth per extra step is (peak at the large size - peak at the small) / extra steps.
"""

from __future__ import annotations

from ._common import Bench, Row, median

TARGET = "peak RSS <= 500 MB, growth per step bounded"


def sizes(quick: bool, smoke: bool = False) -> tuple[int, int, int]:
    """Small and large step counts, parallelism."""
    if smoke:
        return (2, 6, 2)
    return (25, 100, 8) if quick else (250, 1000, 16)


def run(bench: Bench) -> Row:
    small, large, par = sizes(bench.quick, bench.smoke)
    scenario = f"{large}-step research flow vs {small}-step"
    server = bench.fake_server(0.01)
    prefect = bench.prefect()
    peaks: dict[int, list[float]] = {small: [], large: []}
    baselines: list[float] = []
    seconds: dict[int, list[float]] = {small: [], large: []}
    for round_number in range(1 if bench.quick else min(bench.repeats, 2)):
        for n in (small, large) if round_number % 2 == 0 else (large, small):
            bench.settle()
            worker = bench.worker(
                f"memory-{n}-{round_number}", bench.arcanos_env(server.base_url, api_url=prefect.api_url)
            )
            try:
                features = worker.call("features")
                if features["max_questions"] < large:
                    return Row.missing(
                        scenario, TARGET, f"research_flow accepts {features['max_questions']} questions, needs {large}"
                    )
                baselines.append(worker.call("rss")["rss_mb"])
                reply = worker.call("research", topic=f"Memory {n}", n=n, par=par, timeout=1800)
                if reply["failed"]:
                    raise RuntimeError(f"{reply['failed']} steps failed in the {n}-step run")
                seconds[n].append(reply["seconds"])
                peaks[n].append(worker.call("rss")["peak_mb"])
            finally:
                worker.close()
    peak_small, peak_large = median(peaks[small]), median(peaks[large])
    per_step = (peak_large - peak_small) / (large - small)
    return Row(
        scenario,
        f"peak {peak_large:.0f} MB",
        f"{small} steps: peak {peak_small:.0f} MB",
        f"+{per_step * 1024:.0f} KB per extra step",
        TARGET,
        peak_large <= 500,
        [
            f"RSS after imports {median(baselines):.0f} MB; peaks {small}: {peaks[small]}, {large}: {peaks[large]} MB; "
            f"run times {small}: {[round(v, 1) for v in seconds[small]]} s, {large}: "
            f"{[round(v, 1) for v in seconds[large]]} s; max_parallel={par}",
            f"at {per_step * 1024:.0f} KB per step a flow stays under 500 MB up to about "
            f"{_capacity(peak_small, small, per_step):,} steps",
        ],
    )


def _capacity(peak_small: float, small: int, per_step: float) -> int:
    if per_step <= 0:
        return 10**9
    return int(small + (500 - peak_small) / per_step)
