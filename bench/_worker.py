"""A measuring process: runs one side of a scenario per command and reports what it timed.

``python -m bench._worker`` reads one JSON command per line on stdin (``{"cmd": ..., "args": {...}}``) and answers
each with one line ``BENCH <json>`` on its original stdout; everything else it or Prefect prints goes to stderr
(the bench keeps it in a log file). Heavy imports happen in the commands, so a worker for the raw SDK never imports
Prefect. Times are taken with ``time.perf_counter()`` around the call, after warm-up runs made by earlier commands;
``time.monotonic()`` stamps let the bench line them up with the fake server's clock (the same clock on Linux).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from . import _shapes

COMMANDS: dict[str, Callable[..., dict[str, Any]]] = {}


def command(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    COMMANDS[function.__name__] = function
    return function


# --- environment ---------------------------------------------------------------------------------------------------


@command
def env(**values: str | None) -> dict[str, Any]:
    """Set (or, with ``None``, remove) environment variables; settings are read from the environment per run."""
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    return {"ok": True}


@command
def rss() -> dict[str, Any]:
    """This process's current and peak resident set size, in MB (``/proc/self/status``)."""
    values: dict[str, float] = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) / 1024
    return {"rss_mb": values.get("VmRSS"), "peak_mb": values.get("VmHWM")}


@command
def features() -> dict[str, Any]:
    """Which issue-5 interfaces the installed arcanos-flows has (scenarios print n/a without them)."""
    from arcanos_flows.core.settings import ArcanosSettings
    from arcanos_flows.flows import research

    aliases = {str(field.validation_alias) for field in ArcanosSettings.model_fields.values()}
    parameters = inspect.signature(research.research_flow.fn).parameters
    from . import _fake_server

    return {
        "max_questions": getattr(research, "MAX_QUESTIONS", 0),
        "max_parallel": getattr(research, "MAX_PARALLEL", 0),
        "research_cache": "cache" in parameters,
        "requests_per_minute": "ARCANOS_REQUESTS_PER_MINUTE" in aliases,
        "fake_server_rpm": _fake_server.rpm_keyword() is not None,
        "step_fields": sorted(research.StepRecord.model_fields),
    }


# --- fan-out sides ---------------------------------------------------------------------------------------------------


_cpu_at_start: list[float] = []


def _stamp(started: float, started_mono: float, **extra: Any) -> dict[str, Any]:
    return {
        "seconds": time.perf_counter() - started,
        "start_mono": started_mono,
        "end_mono": time.monotonic(),
        # CPU of this process (all its threads) during the call, for the notes: where the time went.
        "cpu_seconds": time.process_time() - _cpu_at_start.pop() if _cpu_at_start else None,
        **extra,
    }


def _start() -> tuple[float, float]:
    _cpu_at_start[:] = [time.process_time()]
    return time.monotonic(), time.perf_counter()


@command
def research(topic: str, n: int, par: int, cache: bool | None = None) -> dict[str, Any]:
    """One ``research_flow`` run with ``n`` given questions and ``max_parallel=par``, timed around the call."""
    from arcanos_flows.flows.research import ResearchStepsFailed, research_flow

    options: dict[str, Any] = {"questions": _shapes.questions(n), "audit": dict(_shapes.AUDIT), "max_parallel": par}
    if cache is not None:
        options["cache"] = cache
    started_mono, started = _start()
    try:
        report = research_flow(topic, **options)
    except ResearchStepsFailed as exc:
        report = exc.report
    result = _stamp(started, started_mono)
    steps = report.steps
    cached = 0
    for step in steps:
        flag = getattr(step, "cached", None)
        if flag is True or getattr(step, "status", None) == "cached":
            cached += 1
    result.update(
        steps=len(steps),
        failed=len(report.failed_steps),
        cached_steps=cached,
        input_tokens=report.usage.input_tokens,
        error_classes=sorted({step.error_class for step in steps if step.error_class}),
    )
    return result


@command
def research_tagged_tasks(topic: str, n: int, par: int) -> dict[str, Any]:
    """Diagnosis: ``research_flow`` called inside the caller's ``tags("arcanos")``, so its task runs carry the tag.

    Prefect then takes a tag-concurrency lease through the API for every task run (as it did for every research
    step before ``@arcanos_flow`` stopped tagging task runs).
    """
    from prefect import tags

    from arcanos_flows.flows.research import research_flow

    options: dict[str, Any] = {"questions": _shapes.questions(n), "audit": dict(_shapes.AUDIT), "max_parallel": par}
    started_mono, started = _start()
    with tags("arcanos"):
        report = research_flow(topic, **options)
    return _stamp(started, started_mono, steps=len(report.steps), failed=len(report.failed_steps))


_naive: dict[int, Any] = {}


def _naive_flow(par: int) -> Any:
    # What a user would write without arcanos-flows: a plain @task around the SDK, mapped on the flow's task runner.
    if par in _naive:
        return _naive[par]
    import openai
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    sdk = openai.OpenAI(api_key=_shapes.API_KEY, base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)

    @task
    def ask(messages: list[dict[str, str]]) -> str:
        response = sdk.chat.completions.create(
            model=_shapes.MODEL, messages=messages, metadata=_shapes.metadata(), store=True
        )
        return response.choices[0].message.content or ""

    @flow(name="bench-naive-research", task_runner=ThreadPoolTaskRunner(max_workers=par))
    def naive_research(topic: str, asked: list[str]) -> str:
        plan = ask(_shapes.plan_messages(topic, asked))
        answers = ask.map([_shapes.investigation_messages(topic, plan, question) for question in asked]).result()
        return ask(_shapes.synthesis_messages(topic, plan, list(zip(asked, answers, strict=True))))

    _naive[par] = naive_research
    return naive_research


@command
def naive(topic: str, n: int, par: int) -> dict[str, Any]:
    """The naive Prefect flow: plan, ``n`` mapped investigations (thread pool of ``par``), synthesis."""
    naive_research = _naive_flow(par)
    started_mono, started = _start()
    naive_research(topic, _shapes.questions(n))
    return _stamp(started, started_mono)


_loop: asyncio.AbstractEventLoop | None = None
_async_client: Any = None


@command
def raw(topic: str, n: int, par: int) -> dict[str, Any]:
    """Raw ``AsyncOpenAI`` with ``asyncio.Semaphore(par)``: plan, ``n`` investigations, synthesis."""
    global _loop, _async_client
    import openai

    if _loop is None:
        _loop = asyncio.new_event_loop()
        _async_client = openai.AsyncOpenAI(
            api_key=_shapes.API_KEY, base_url=os.environ["OPENAI_BASE_URL"], max_retries=0
        )
    client = _async_client

    async def ask(messages: list[dict[str, str]]) -> str:
        response = await client.chat.completions.create(
            model=_shapes.MODEL, messages=messages, metadata=_shapes.metadata(), store=True
        )
        return response.choices[0].message.content or ""

    async def research_run() -> str:
        asked = _shapes.questions(n)
        plan = await ask(_shapes.plan_messages(topic, asked))
        limit = asyncio.Semaphore(par)

        async def investigate(question: str) -> str:
            async with limit:
                return await ask(_shapes.investigation_messages(topic, plan, question))

        answers = await asyncio.gather(*(investigate(question) for question in asked))
        return await ask(_shapes.synthesis_messages(topic, plan, list(zip(asked, answers, strict=True))))

    started_mono, started = _start()
    _loop.run_until_complete(research_run())
    return _stamp(started, started_mono)


# --- async fan-out sides (issue 14) ---------------------------------------------------------------------------------
# ``n`` independent reasoning steps, at most ``par`` in flight: what an async flow gathers.

_afan: dict[str, Any] = {}


def _afan_loop() -> asyncio.AbstractEventLoop:
    # One event loop for the life of the process (the async clients and connection pools live on it).
    global _loop
    if _loop is None:
        _loop = asyncio.new_event_loop()
    return _loop


def _afan_timed(coroutine: Any) -> dict[str, Any]:
    started_mono, started = _start()
    count = _afan_loop().run_until_complete(coroutine)
    return _stamp(started, started_mono, steps=count)


async def _gather_limited(par: int, n: int, step: Callable[[int], Any]) -> int:
    limit = asyncio.Semaphore(par)

    async def one(number: int) -> Any:
        async with limit:
            return await step(number)

    results = await asyncio.gather(*(one(number) for number in range(n)))
    return len(results)


@command
def afan_raw(n: int, par: int) -> dict[str, Any]:
    """Raw ``AsyncOpenAI``: ``n`` chat completions gathered under ``asyncio.Semaphore(par)``, no Prefect."""
    import openai

    if "raw" not in _afan:
        base_url = os.environ["OPENAI_BASE_URL"]
        _afan["raw"] = openai.AsyncOpenAI(api_key=_shapes.API_KEY, base_url=base_url, max_retries=0)
    client = _afan["raw"]

    async def step(number: int) -> str:
        response = await client.chat.completions.create(
            model=_shapes.MODEL, messages=MESSAGES, metadata=_shapes.metadata(), store=True
        )
        return response.choices[0].message.content or ""

    return _afan_timed(_gather_limited(par, n, step))


@command
def afan_arun(n: int, par: int) -> dict[str, Any]:
    """An async flow gathering ``await arun_reasoning(...)`` for ``n`` steps, ``par`` at once (a semaphore)."""
    if "arun" not in _afan:
        from prefect import flow

        from arcanos_flows.prefect import arun_reasoning

        @flow(name="bench-async-fanout")
        async def async_fanout(n: int, par: int) -> int:
            metadata = dict(_shapes.AUDIT)
            return await _gather_limited(par, n, lambda number: arun_reasoning(MESSAGES, metadata, f"s{number}"))

        _afan["arun"] = async_fanout
    return _afan_timed(_afan["arun"](n, par))


@command
def afan_sync_map(n: int, par: int) -> dict[str, Any]:
    """The library's sync path: ``run_reasoning.map`` over ``n`` steps on a ``ThreadPoolTaskRunner(par)``."""
    key = f"sync_map-{par}"
    if key not in _afan:
        from prefect import flow, unmapped
        from prefect.task_runners import ThreadPoolTaskRunner

        from arcanos_flows.prefect import run_reasoning

        @flow(name="bench-sync-fanout", task_runner=ThreadPoolTaskRunner(max_workers=par))
        def sync_fanout(n: int) -> int:
            metadata = dict(_shapes.AUDIT)
            futures = run_reasoning.map(unmapped(MESSAGES), unmapped(metadata), [f"s{i}" for i in range(n)])
            return len(futures.result())

        _afan[key] = sync_fanout
    started_mono, started = _start()
    count = _afan[key](n)
    return _stamp(started, started_mono, steps=count)


@command
def afan_bare(n: int, par: int) -> dict[str, Any]:
    """What a user writes instead: a bare Prefect async ``@task`` around ``AsyncOpenAI``, gathered in an async flow."""
    if "bare" not in _afan:
        import openai
        from prefect import flow, task

        client = openai.AsyncOpenAI(api_key=_shapes.API_KEY, base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)

        @task(name="bench-bare-async-step")
        async def ask(step: str) -> str:
            response = await client.chat.completions.create(
                model=_shapes.MODEL, messages=MESSAGES, metadata=_shapes.metadata(), store=True
            )
            return response.choices[0].message.content or ""

        @flow(name="bench-bare-async-fanout")
        async def bare_fanout(n: int, par: int) -> int:
            return await _gather_limited(par, n, lambda number: ask(f"s{number}"))

        _afan["bare"] = bare_fanout
    return _afan_timed(_afan["bare"](n, par))


# --- client overhead ------------------------------------------------------------------------------------------------


@command
def client_overhead(
    calls: int, repeats: int, block: int = 50, typed: bool = False, traced: bool = False, gateway: bool = False
) -> dict[str, Any]:
    """``ArcanosPythonClient.run_reasoning`` vs the raw SDK client, same server, in alternating blocks of calls.

    Each round makes ``calls`` calls per side in blocks of ``block``, alternating which side goes first, so drift
    and noise hit both alike; the round's figure per side is its mean ms per call. With ``typed``, both ask for a
    pydantic model: ``run_reasoning(output_type=...)`` against the SDK's own ``chat.completions.parse``. With
    ``traced``, the client records an OpenTelemetry span per request (an SDK tracer provider, in-memory exporter).
    With ``gateway``, the server acts as a LiteLLM proxy: both sides send its alias (``ARCANOS_GATEWAY_MODEL``), and
    the client verifies the model from its headers (``ARCANOS_GATEWAY=litellm``).
    """
    import openai
    from pydantic import BaseModel

    from arcanos_flows import ArcanosPythonClient, ArcanosSettings

    class Layer(BaseModel):
        name: str
        confirmed_by: list[str]

    class LayerAudit(BaseModel):
        summary: str
        layers: list[Layer]

    base_url = os.environ["OPENAI_BASE_URL"]
    raw_client = openai.OpenAI(api_key=_shapes.API_KEY, base_url=base_url, max_retries=0)
    # The environment of this process is the bench's clean one: nothing but the fake server's settings.
    client = ArcanosPythonClient(ArcanosSettings(max_retries=0, _env_file=None))
    if traced:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from arcanos_flows.client import instrument

        provider = TracerProvider()
        exported = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(exported))
        instrument(tracer_provider=provider)
    metadata = dict(_shapes.AUDIT)
    requested = os.environ.get("ARCANOS_GATEWAY_MODEL", _shapes.MODEL) if gateway else _shapes.MODEL

    def raw_call() -> None:
        if typed:
            parsed = raw_client.chat.completions.parse(
                model=_shapes.MODEL, messages=MESSAGES, metadata=metadata, store=True, response_format=LayerAudit
            )
            assert isinstance(parsed.choices[0].message.parsed, LayerAudit)
        else:
            raw_client.chat.completions.create(model=requested, messages=MESSAGES, metadata=metadata, store=True)

    def ours_call() -> None:
        if typed:
            assert isinstance(
                client.run_reasoning(MESSAGES, metadata=metadata, output_type=LayerAudit).output, LayerAudit
            )
        elif gateway:
            assert client.run_reasoning(MESSAGES, metadata=metadata).gateway is not None
        else:
            client.run_reasoning(MESSAGES, metadata=metadata)

    for _ in range(20):  # warm both connection pools
        raw_call()
        ours_call()
    raw_ms: list[float] = []
    ours_ms: list[float] = []
    for round_number in range(repeats):
        spent = {"raw": 0.0, "ours": 0.0}
        sides = [("raw", raw_call), ("ours", ours_call)]
        for block_number in range(max(1, calls // block)):
            for name, call in sides if (round_number + block_number) % 2 == 0 else reversed(sides):
                started = time.perf_counter()
                for _ in range(block):
                    call()
                spent[name] += time.perf_counter() - started
        count = max(1, calls // block) * block
        raw_ms.append(spent["raw"] * 1000 / count)
        ours_ms.append(spent["ours"] * 1000 / count)
    raw_client.close()
    client.close()
    spans = len(exported.get_finished_spans()) if traced else 0
    return {"raw_ms": raw_ms, "ours_ms": ours_ms, "spans": spans}


# --- the Batch API ---------------------------------------------------------------------------------------------------


@command
def batch_overhead(rows: int, repeats: int, poll: float = 0.01) -> dict[str, Any]:
    """A batch of ``rows`` steps end to end, ``BatchClient`` vs the raw SDK, alternating, new content every round.

    Raw: the JSONL written with ``json.dumps``, ``files.create``, ``batches.create``, ``batches.retrieve`` until done,
    ``files.content`` and ``json.loads`` of each row. Ours: ``prepare`` (every step checked), ``submit`` (which first
    lists the batches for the fingerprint), ``wait`` and ``rows`` (every row checked like a direct answer). Both poll
    every ``poll`` seconds; the server (another process) ends a batch at once. Wall time and this process's CPU time.
    """
    import openai

    from arcanos_flows import ArcanosSettings
    from arcanos_flows.client.batch_client import FINISHED_STATUSES, BatchClient

    raw_client = openai.OpenAI(api_key=_shapes.API_KEY, base_url=os.environ["OPENAI_BASE_URL"], max_retries=0)
    client = BatchClient(ArcanosSettings(max_retries=0, _env_file=None))

    def messages(tag: str, number: int) -> list[dict[str, str]]:
        return [MESSAGES[0], {"role": "user", "content": f"{MESSAGES[1]['content']} ({tag}, part {number})"}]

    def raw_side(tag: str) -> None:
        lines = [
            json.dumps(
                {
                    "custom_id": f"step-{number}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": _shapes.MODEL,
                        "messages": messages(tag, number),
                        "metadata": dict(_shapes.AUDIT),
                        "store": True,
                    },
                }
            )
            for number in range(rows)
        ]
        uploaded = raw_client.files.create(file=("input.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = raw_client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in FINISHED_STATUSES:
            time.sleep(poll)
            batch = raw_client.batches.retrieve(batch.id)
        assert batch.output_file_id is not None
        answers = {}
        for line in raw_client.files.content(batch.output_file_id).content.splitlines():
            row = json.loads(line)
            answers[row["custom_id"]] = row["response"]["body"]["choices"][0]["message"]["content"]
        assert len(answers) == rows

    def ours_side(tag: str) -> None:
        steps = [{"step": f"step-{number}", "messages": messages(tag, number)} for number in range(rows)]
        batch_input = client.prepare(steps, metadata=dict(_shapes.AUDIT))
        batch, created = client.submit(batch_input)
        assert created
        batch = client.wait(batch.id, poll_interval=poll, max_poll_interval=poll)
        assert all(row.ok for row in client.rows(batch, batch_input))

    for side in (raw_side, ours_side):  # warm-up: imports, connections, the schema of the rows
        side("warm-up")
    wall: dict[str, list[float]] = {"raw": [], "ours": []}
    cpu: dict[str, list[float]] = {"raw": [], "ours": []}
    for round_number in range(repeats):
        order = [("raw", raw_side), ("ours", ours_side)]
        for name, side in order if round_number % 2 == 0 else reversed(order):
            started, started_cpu = time.perf_counter(), time.process_time()
            side(f"{name}-{round_number}")
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - started_cpu)
    raw_client.close()
    client.close()
    return {"wall": wall, "cpu": cpu}


# --- Prefect cost per reasoning task --------------------------------------------------------------------------------

_cost_flows: dict[str, Any] = {}
MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]


def _task_cost_flow() -> Any:
    if "flow" in _cost_flows:
        return _cost_flows["flow"]
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from arcanos_flows.prefect.credentials import resolve_settings
    from arcanos_flows.prefect.tasks import run_reasoning, shared_client

    @task(name="bench-plain-reasoning", cache_policy=NO_CACHE, persist_result=False)
    def plain_reasoning(messages: list[dict[str, str]], metadata: dict[str, str], step: str) -> Any:
        return shared_client(resolve_settings()).run_reasoning(messages, metadata=metadata)

    @flow(name="bench-task-cost")
    def task_cost_flow(n: int, mode: str) -> list[float]:
        durations: list[float] = []
        metadata = dict(_shapes.AUDIT)
        if mode == "direct":
            client = shared_client(resolve_settings())
            for _ in range(n):
                started = time.perf_counter()
                client.run_reasoning(MESSAGES, metadata=metadata)
                durations.append(time.perf_counter() - started)
        else:
            step_task = run_reasoning if mode == "task" else plain_reasoning
            for number in range(n):
                started = time.perf_counter()
                step_task(MESSAGES, metadata, f"s{number}")
                durations.append(time.perf_counter() - started)
        _cost_flows["last"] = durations
        return []

    _cost_flows["flow"] = task_cost_flow
    return task_cost_flow


@command
def task_cost(n: int, mode: str) -> dict[str, Any]:
    """``n`` sequential calls in one flow: ``task`` (run_reasoning), ``plain`` (a bare @task) or ``direct``.

    A ``-tagged`` suffix runs the flow inside ``tags("arcanos")``, as ``@arcanos_flow`` does.
    """
    import contextlib

    from prefect import tags

    flow = _task_cost_flow()
    # "-tagged": as the bundled flows run (`@arcanos_flow` calls them inside `tags("arcanos")`), so every task run
    # carries the tag too.
    mode, _, tagged = mode.partition("-")
    started_mono, started = _start()
    with tags("arcanos") if tagged else contextlib.nullcontext():
        flow(n, mode)
    durations = _cost_flows.pop("last")
    return _stamp(started, started_mono, per_call_ms=[value * 1000 for value in durations])


# --- protocol --------------------------------------------------------------------------------------------------------


def main() -> int:
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # stray prints (Prefect's, the SDK's) go to the log, never into the protocol
    sys.stdout = sys.stderr
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            reply = COMMANDS[request["cmd"]](**request.get("args", {}))
        except BaseException as exc:  # report anything, the bench decides
            traceback.print_exc()
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        out.write("BENCH " + json.dumps(reply, default=_json_default) + "\n")
        if request["cmd"] == "quit":
            break
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _quit() -> dict[str, Any]:
    return {"ok": True}


COMMANDS["quit"] = _quit


if __name__ == "__main__":
    raise SystemExit(main())
