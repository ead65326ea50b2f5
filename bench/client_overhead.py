"""Client overhead: ``ArcanosPythonClient.run_reasoning`` vs the raw OpenAI SDK client, same server, same process.

A worker process (clean environment: only the fake server's settings) warms both clients, then runs ``repeats``
rounds of ``calls`` calls per side, in alternating blocks of 50 so drift hits both alike. The fake server answers at
once (0 ms latency), so what is measured is the client's own cost per call. The row quotes the median over rounds of
the per-round difference (arcanos - raw, ms per call).
"""

from __future__ import annotations

from . import _shapes
from ._common import Bench, Row, median

TARGET = "<= +0.3 ms per call"
TYPED_TARGET = "<= +0.3 ms per call over the SDK's own parse()"
TRACED_TARGET = "<= +0.3 ms per call with a span per request"
GATEWAY_TARGET = "<= +0.3 ms per call behind a LiteLLM-like gateway"
GATEWAY_ALIAS = "arcanos-reasoning"


def run(bench: Bench) -> Row:
    """The plain client against the raw SDK."""
    return _compare(bench, "client overhead", TARGET, ours="ArcanosPythonClient.run_reasoning", raw="raw SDK")


def run_typed(bench: Bench) -> Row:
    """Typed answers: ``run_reasoning(output_type=Model)`` vs the SDK's ``chat.completions.parse(...)``.

    Both parse and validate a nested model on every call (the fake server answers the strict JSON schema they send).
    """
    return _compare(
        bench,
        "typed answers (output_type)",
        TYPED_TARGET,
        ours="run_reasoning(output_type=...)",
        raw="SDK parse()",
        baseline="OpenAI SDK chat.completions.parse",
        typed=True,
    )


def run_traced(bench: Bench) -> Row:
    """The client with OpenTelemetry spans on (an SDK tracer provider, in-memory exporter) vs the raw SDK."""
    return _compare(
        bench, "client with OpenTelemetry spans", TRACED_TARGET, ours="ArcanosPythonClient, traced", raw="raw SDK",
        traced=True,
    )  # fmt: skip


def run_gateway(bench: Bench) -> Row:
    """Behind the fake server in LiteLLM mode: the client verifying the model from the gateway's headers vs the raw SDK.

    Both send the gateway's alias; the client also reads ``x-litellm-model-name`` and the fallback headers, and
    builds the result's ``GatewayRoute``.
    """
    return _compare(
        bench, "client behind a LiteLLM-like gateway", GATEWAY_TARGET, ours="ArcanosPythonClient, gateway litellm",
        raw="raw SDK", gateway=True,
    )  # fmt: skip


def _compare(
    bench: Bench, title: str, target: str, *, ours: str, raw: str, baseline: str = "raw OpenAI SDK", **variant: bool
) -> Row:
    calls = 50 if bench.quick else 1000
    gateway = variant.get("gateway", False)
    server = (
        bench.fake_server(0.0, gateway="litellm", aliases={GATEWAY_ALIAS: _shapes.MODEL})
        if gateway
        else bench.fake_server(0.0)
    )
    extra = {"ARCANOS_GATEWAY": "litellm", "ARCANOS_GATEWAY_MODEL": GATEWAY_ALIAS} if gateway else {}
    worker = bench.worker(
        title.split(" (")[0].replace(" ", "-"), bench.arcanos_env(server.base_url, api_url=None, **extra)
    )
    reply = worker.call("client_overhead", calls=calls, repeats=bench.repeats, timeout=1800, **variant)
    raw_ms, ours_ms = reply["raw_ms"], reply["ours_ms"]
    overhead = median([mine - theirs for mine, theirs in zip(ours_ms, raw_ms, strict=True)])
    spans = f"{reply['spans']} spans recorded; " if variant.get("traced") else ""
    return Row(
        scenario=f"{title}, {calls} calls, 0 ms latency",
        measured=f"{median(ours_ms):.3f} ms/call",
        compared=f"{raw} {median(raw_ms):.3f} ms/call",
        ratio=f"{median(ours_ms) / median(raw_ms):.2f}x ({overhead:+.3f} ms)",
        target=target,
        met=overhead <= 0.3,
        notes=[
            f"{spans}per-round ms/call, {raw}: {[round(v, 3) for v in raw_ms]}, {ours}: "
            f"{[round(v, 3) for v in ours_ms]}; the figure is the median of the per-round differences"
        ],
        values={ours: median(ours_ms)},
        baseline=(baseline, median(raw_ms)),
        unit="ms/call",
    )
