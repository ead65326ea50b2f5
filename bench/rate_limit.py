"""Rate limits: a research flow against a server that allows ``rpm`` requests a minute (429 + Retry-After beyond).

The flow process sets ``ARCANOS_REQUESTS_PER_MINUTE`` to the server's limit and runs ``research_flow`` with ``n``
investigations; each round gets a fresh fake server (its own process, so no earlier round's requests count against
the limit) after an untimed warm-up run against an unlimited one. Throughput = requests answered 200 / flow wall
time (perf_counter() around the call, so the flow run's start and end count), against the allowed ``rpm / 60`` per
second; 429s are counted at the server. The notes also give the rate between the first and the last request.
"""

from __future__ import annotations

from ._common import Bench, Row, fake_openai_process, median

TARGET = ">= 90% of the allowed throughput, <= 5% of requests answered 429"


def sizes(quick: bool, smoke: bool = False) -> tuple[int, int, int, float]:
    """Investigations, server limit (requests/min), parallelism and latency (s)."""
    if smoke:
        return (6, 1200, 4, 0.01)
    return (40, 1200, 8, 0.05) if quick else (300, 600, 16, 0.25)


def run(bench: Bench) -> Row:
    from ._fake_server import rpm_keyword

    n, rpm, par, latency = sizes(bench.quick, bench.smoke)
    scenario = f"{n} steps against a server allowing {rpm} requests/min"
    prefect = bench.prefect()
    warm = bench.fake_server(0.0)
    worker = bench.worker(
        "rate-limit",
        bench.arcanos_env(warm.base_url, api_url=prefect.api_url, ARCANOS_REQUESTS_PER_MINUTE=str(rpm)),
    )
    features = worker.call("features")
    missing = []
    if not features["requests_per_minute"]:
        missing.append("no ARCANOS_REQUESTS_PER_MINUTE setting (client-side rate limiting)")
    if rpm_keyword() is None:
        missing.append("the fake server has no requests-per-minute mode")
    if features["max_questions"] < n:
        missing.append(f"research_flow accepts {features['max_questions']} questions, the scenario needs {n}")
    if missing:
        return Row(scenario, "n/a (feature missing)", "", "", TARGET, None, [f"missing: {what}" for what in missing])
    worker.call("research", topic="warm-up", n=4, par=par)
    allowed = rpm / 60
    throughput: list[float] = []
    limited: list[float] = []
    details: list[str] = []
    rounds = ["research"] * (1 if bench.quick else min(bench.repeats, 3))
    if bench.diagnose:
        rounds.append("research_tagged_tasks")
    for round_number, side in enumerate(rounds):
        with fake_openai_process(latency, rpm) as server:
            worker.call("env", OPENAI_BASE_URL=server.base_url)
            bench.settle()
            reply = worker.call(side, topic=f"Rate limit round {round_number}", n=n, par=par, timeout=1800)
            stats = server.stats()
        answered = stats["statuses"].get("200", 0)
        too_many = stats["statuses"].get("429", 0)
        # While requests were arriving (first to last), without the flow run's start and end.
        span = (stats["last_request_at"] or 0) - (stats["first_request_at"] or 0)
        arriving = (answered - 1) / span if span > 0 else float("nan")
        details.append(
            f"{'diagnosis, without tags: ' if side != 'research' else ''}{reply['seconds']:.1f} s, "
            f"{stats['requests']} requests ({answered} x 200, {too_many} x 429), {reply['failed']} failed steps, "
            f"{arriving:.2f} req/s between the first and the last request"
        )
        if side != "research":
            continue
        throughput.append(answered / reply["seconds"])
        limited.append(too_many / max(stats["requests"], 1))
    achieved = median(throughput)
    share_429 = median(limited)
    return Row(
        scenario,
        f"{achieved:.2f} req/s, {share_429:.1%} answered 429",
        f"the limit {allowed:.2f} req/s",
        f"{achieved / allowed:.0%} of the limit",
        TARGET,
        achieved / allowed >= 0.9 and share_429 <= 0.05,
        [
            f"ARCANOS_REQUESTS_PER_MINUTE={rpm}, max_parallel={par}, latency {latency * 1000:.0f} ms; rounds: "
            + "; ".join(details)
        ],
        values={"arcanos-flows": achieved},
        baseline=("the limit", allowed),
        unit="req/s",
    )
