"""Client overhead: ``ArcanosPythonClient.run_reasoning`` vs the raw OpenAI SDK client, same server, same process.

A worker process (clean environment: only the fake server's settings) warms both clients, then runs ``repeats``
rounds of ``calls`` calls per side, in alternating blocks of 50 so drift hits both alike. The fake server answers at
once (0 ms latency), so what is measured is the client's own cost per call. The row quotes the median over rounds of
the per-round difference (arcanos - raw, ms per call).
"""

from __future__ import annotations

from ._common import Bench, Row, median

TARGET = "<= +0.3 ms per call"


def run(bench: Bench) -> Row:
    calls = 50 if bench.quick else 1000
    server = bench.fake_server(0.0)
    worker = bench.worker("client-overhead", bench.arcanos_env(server.base_url, api_url=None))
    reply = worker.call("client_overhead", calls=calls, repeats=bench.repeats, timeout=1800)
    raw_ms, ours_ms = reply["raw_ms"], reply["ours_ms"]
    overhead = median([ours - raw for ours, raw in zip(ours_ms, raw_ms, strict=True)])
    return Row(
        scenario=f"client overhead, {calls} calls, 0 ms latency",
        measured=f"{median(ours_ms):.3f} ms/call",
        compared=f"raw SDK {median(raw_ms):.3f} ms/call",
        ratio=f"{median(ours_ms) / median(raw_ms):.2f}x ({overhead:+.3f} ms)",
        target=TARGET,
        met=overhead <= 0.3,
        notes=[
            f"per-round ms/call, raw: {[round(v, 3) for v in raw_ms]}, arcanos: {[round(v, 3) for v in ours_ms]}; "
            "the figure is the median of the per-round differences"
        ],
        values={"ArcanosPythonClient.run_reasoning": median(ours_ms)},
        baseline=("raw OpenAI SDK", median(raw_ms)),
        unit="ms/call",
    )


TYPED_TARGET = "<= +0.3 ms per call over the SDK's own parse()"


def run_typed(bench: Bench) -> Row:
    """Typed answers: ``run_reasoning(output_type=Model)`` vs the SDK's ``chat.completions.parse(...)``.

    The same alternating blocks as :func:`run`; the fake server answers the strict JSON schema both send with JSON that
    validates, so both sides parse and validate a nested model on every call.
    """
    calls = 50 if bench.quick else 1000
    server = bench.fake_server(0.0)
    worker = bench.worker("typed-overhead", bench.arcanos_env(server.base_url, api_url=None))
    reply = worker.call("client_overhead", calls=calls, repeats=bench.repeats, typed=True, timeout=1800)
    raw_ms, ours_ms = reply["raw_ms"], reply["ours_ms"]
    overhead = median([ours - raw for ours, raw in zip(ours_ms, raw_ms, strict=True)])
    return Row(
        scenario=f"typed answers (output_type), {calls} calls, 0 ms latency",
        measured=f"{median(ours_ms):.3f} ms/call",
        compared=f"SDK parse() {median(raw_ms):.3f} ms/call",
        ratio=f"{median(ours_ms) / median(raw_ms):.2f}x ({overhead:+.3f} ms)",
        target=TYPED_TARGET,
        met=overhead <= 0.3,
        notes=[
            f"per-round ms/call, SDK parse(): {[round(v, 3) for v in raw_ms]}, arcanos output_type: "
            f"{[round(v, 3) for v in ours_ms]}; the figure is the median of the per-round differences"
        ],
        values={"run_reasoning(output_type=...)": median(ours_ms)},
        baseline=("OpenAI SDK chat.completions.parse", median(raw_ms)),
        unit="ms/call",
    )


TRACED_TARGET = "<= +0.3 ms per call with a span per request"


def run_traced(bench: Bench) -> Row:
    """The client with OpenTelemetry spans on (an SDK tracer provider, in-memory exporter) vs the raw SDK."""
    calls = 50 if bench.quick else 1000
    server = bench.fake_server(0.0)
    worker = bench.worker("traced-overhead", bench.arcanos_env(server.base_url, api_url=None))
    reply = worker.call("client_overhead", calls=calls, repeats=bench.repeats, traced=True, timeout=1800)
    raw_ms, ours_ms = reply["raw_ms"], reply["ours_ms"]
    overhead = median([ours - raw for ours, raw in zip(ours_ms, raw_ms, strict=True)])
    return Row(
        scenario=f"client with OpenTelemetry spans, {calls} calls, 0 ms latency",
        measured=f"{median(ours_ms):.3f} ms/call",
        compared=f"raw SDK {median(raw_ms):.3f} ms/call",
        ratio=f"{median(ours_ms) / median(raw_ms):.2f}x ({overhead:+.3f} ms)",
        target=TRACED_TARGET,
        met=overhead <= 0.3,
        notes=[
            f"{reply['spans']} spans recorded; per-round ms/call, raw: {[round(v, 3) for v in raw_ms]}, traced "
            f"client: {[round(v, 3) for v in ours_ms]}; the figure is the median of the per-round differences"
        ],
        values={"ArcanosPythonClient, traced": median(ours_ms)},
        baseline=("raw OpenAI SDK", median(raw_ms)),
        unit="ms/call",
    )
