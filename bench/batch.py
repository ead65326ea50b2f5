"""The Batch API path: a batch of steps end to end with ``BatchClient``, against the raw SDK, same server, same run.

A worker process (the fake server's settings only) runs both sides in alternating order each round, with new content
every round (so the client never re-attaches to an earlier batch). The fake server (its own process) ends a batch as
soon as it is read, so what is measured is the client side: writing and checking the input, the calls, reading and
checking every row. The row quotes the median wall time per side, and the worker's CPU time per row.
"""

from __future__ import annotations

from ._common import Bench, Row, median

TARGET = "<= 1.25x the raw SDK's wall time for the same batch"


def run(bench: Bench) -> Row:
    rows = 100 if bench.quick else 2000
    server = bench.fake_server(0.0, batch_delay=0.0)
    worker = bench.worker("batch", bench.arcanos_env(server.base_url, api_url=None))
    reply = worker.call("batch_overhead", rows=rows, repeats=bench.repeats, timeout=1800)
    wall, cpu = reply["wall"], reply["cpu"]
    ours, raw = median(wall["ours"]), median(wall["raw"])
    ours_cpu_ms, raw_cpu_ms = (median(cpu[side]) * 1000 / rows for side in ("ours", "raw"))
    return Row(
        scenario=f"Batch API: {rows} steps end to end (upload, create, poll, download, rows), 0 s batch delay",
        measured=f"{ours:.2f} s ({ours_cpu_ms:.3f} ms CPU/row)",
        compared=f"raw SDK {raw:.2f} s ({raw_cpu_ms:.3f} ms CPU/row)",
        ratio=f"{ours / raw:.2f}x ({(ours - raw) * 1000 / rows:+.3f} ms/row)",
        target=TARGET,
        met=ours / raw <= 1.25,
        notes=[
            f"wall s per round, raw: {[round(v, 3) for v in wall['raw']]}, BatchClient: "
            f"{[round(v, 3) for v in wall['ours']]}; CPU s of the client process per round, raw: "
            f"{[round(v, 3) for v in cpu['raw']]}, BatchClient: {[round(v, 3) for v in cpu['ours']]}",
            "BatchClient also lists the account's batches before it creates one (re-attach by fingerprint), and checks "
            "every step before the upload and every row after: the model that answered, the content, the usage",
        ],
        values={"BatchClient": ours},
        baseline=("raw OpenAI SDK", raw),
        unit="s",
    )
