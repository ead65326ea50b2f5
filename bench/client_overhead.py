"""Client overhead: ArcanosPythonClient.run_reasoning vs the raw OpenAI SDK, same server, same run."""

from __future__ import annotations

import time

import openai

from arcanos_flows import ArcanosPythonClient, ArcanosSettings, MaintenanceNotifier, NotifierSettings

from ._common import Row, median

MODEL = "ft:gpt-5.1:arcanos::bench"
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
METADATA = {"intent": "bench", "run": "1"}


def run(base_url: str, calls: int, repeats: int) -> Row:
    """Time ``calls`` calls per round for each side, rounds interleaved so drift hits both alike."""
    raw = openai.OpenAI(api_key="sk-bench-000000", base_url=base_url, max_retries=0)
    settings = ArcanosSettings(
        openai_api_key="sk-bench-000000",
        fine_tuned_model=MODEL,
        openai_base_url=base_url,
        max_retries=0,
        _env_file=None,
    )
    client = ArcanosPythonClient(settings, notifier=MaintenanceNotifier(NotifierSettings.model_construct()))
    for _ in range(20):  # warm both connection pools
        raw.chat.completions.create(model=MODEL, messages=MESSAGES, metadata=METADATA, store=True)
        client.run_reasoning(MESSAGES, metadata=METADATA)
    raw_ms: list[float] = []
    ours_ms: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            raw.chat.completions.create(model=MODEL, messages=MESSAGES, metadata=METADATA, store=True)
        raw_ms.append((time.perf_counter() - started) * 1000 / calls)
        started = time.perf_counter()
        for _ in range(calls):
            client.run_reasoning(MESSAGES, metadata=METADATA)
        ours_ms.append((time.perf_counter() - started) * 1000 / calls)
    raw.close()
    client.close()
    overhead = median(ours_ms) - median(raw_ms)
    return Row(
        scenario=f"client overhead, {calls} calls, 0 ms latency",
        measured=f"{median(ours_ms):.3f} ms/call",
        compared=f"raw SDK {median(raw_ms):.3f} ms/call",
        ratio=f"{median(ours_ms) / median(raw_ms):.2f}x (+{overhead:.3f} ms)",
        target="<= +0.3 ms per call",
        met=overhead <= 0.3,
        notes=[f"per-round ms/call, raw: {[round(v, 3) for v in raw_ms]}, arcanos: {[round(v, 3) for v in ours_ms]}"],
    )
