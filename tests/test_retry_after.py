"""Retries that listen to the endpoint: ``Retry-After``, ``retry-after-ms`` and ``x-ratelimit-reset-*``, capped."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from prefect import Task, flow
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.core.errors import ConfigurationError
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.prefect.tasks import arun_reasoning, requested_wait, run_reasoning, with_retries
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-retry-after"
MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
TASK_RETRIES = 2
TRIES = TASK_RETRIES + 1


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run) and results stored under the test's tmp folder."""
    with temporary_settings(
        {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    ):
        yield


@pytest.fixture
def configured(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ArcanosSettings:
    """The environment's settings: 2 retries, no retry delay of Prefect's own, the default cap (60 s)."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    return ArcanosSettings()


def run_step(kind: str, settings: ArcanosSettings) -> State:
    """One step, ``sync`` (``run_reasoning`` in a sync flow) or ``async`` (``arun_reasoning`` in an async flow)."""
    if kind == "sync":
        step: Task[..., Any] = with_retries(run_reasoning, settings)

        @flow(name=FLOW_NAME)
        def sync_probe() -> Any:
            return step(MESSAGES, step="limited")

        return sync_probe(return_state=True)
    astep: Task[..., Any] = with_retries(arun_reasoning, settings)

    @flow(name=FLOW_NAME)
    async def async_probe() -> Any:
        return await astep(MESSAGES, step="limited")

    state: State = asyncio.run(async_probe(return_state=True))
    return state


def gaps(server: FakeOpenAIServer) -> list[float]:
    arrivals = [request.at for request in server.completion_requests]
    return [later - earlier for earlier, later in itertools.pairwise(arrivals)]


def with_headers(reply: Reply, **headers: str) -> Reply:
    return dataclasses.replace(reply, headers={name.replace("_", "-"): value for name, value in headers.items()})


def test_a_429_with_retry_after_3_is_retried_no_sooner_than_3_seconds_later(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """429 ``Retry-After: 3``, then 200: one success in 2 attempts, the second >= 3 s after the first, no incident."""
    openai_server.script(Reply.error(429, retry_after=3), Reply.ok("Answered after the wait."))
    state = run_step("sync", configured)

    result = state.result()
    assert (result.content, result.attempts) == ("Answered after the wait.", 2)
    (gap,) = gaps(openai_server)
    assert 3.0 <= gap < 3.0 + 2.0  # Prefect's own delay is 0 here: what was asked, not twice that
    assert receiver.deliveries == []


ASKED = {
    "retry-after-ms": (with_headers(Reply.error(429), retry_after_ms="400"), 0.4),
    "reset-requests": (
        with_headers(Reply.error(429), x_ratelimit_reset_requests="400ms", x_ratelimit_remaining_requests="0"),
        0.4,
    ),
    "reset-tokens": (with_headers(Reply.error(429), x_ratelimit_reset_tokens="0.4s"), 0.4),
    "503-retry-after-ms": (with_headers(Reply.error(503), retry_after_ms="400"), 0.4),
}


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(("reply", "asked"), ASKED.values(), ids=ASKED.keys())
def test_each_way_of_asking_for_a_wait_is_honoured_by_sync_and_async_steps(
    configured: ArcanosSettings,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    kind: str,
    reply: Reply,
    asked: float,
) -> None:
    """``retry-after-ms``, OpenAI's reset headers and a 503's wait: the next try waits at least that long."""
    openai_server.script(reply, Reply.ok("Answered."))
    result = run_step(kind, configured).result()

    assert result.attempts == 2
    (gap,) = gaps(openai_server)
    assert gap >= asked
    assert receiver.deliveries == []


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_the_attempt_count_stays_exact_when_every_try_is_asked_to_wait(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, kind: str
) -> None:
    """Always 429 with a short wait: every try waits, then one incident counts the ``task_retries + 1`` attempts."""
    openai_server.always(with_headers(Reply.error(429), retry_after_ms="100"))
    state = run_step(kind, configured)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == TRIES
    assert all(gap >= 0.1 for gap in gaps(openai_server))
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "rate_limit"
    assert incident["attempts"] == incident["context"]["attempts"] == TRIES


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_wait_over_the_cap_fails_at_once_stating_the_wait(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, kind: str
) -> None:
    """``Retry-After: 120`` over the default cap of 60 s: one attempt, one incident whose reason names the wait."""
    openai_server.always(Reply.error(429, retry_after=120))
    state = run_step(kind, configured)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1
    error = state.result(raise_on_failure=False)
    note = "the endpoint asked to wait 120 s before trying again, longer than ARCANOS_MAX_RETRY_AFTER (60 s)"
    assert note in str(error)
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "rate_limit"
    assert incident["reason"].startswith(note)
    assert incident["attempts"] == incident["context"]["attempts"] == 1


def test_the_cap_is_configured_by_arcanos_max_retry_after(
    configured: ArcanosSettings,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``ARCANOS_MAX_RETRY_AFTER=0.2``: a 503 asking for 300 ms fails at once; invalid values name the variable."""
    monkeypatch.setenv("ARCANOS_MAX_RETRY_AFTER", "0.2")
    openai_server.always(with_headers(Reply.error(503), retry_after_ms="300"))
    state = run_step("async", ArcanosSettings())

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "upstream_error"
    assert "wait 0.3 s before trying again, longer than ARCANOS_MAX_RETRY_AFTER (0.2 s)" in incident["reason"]

    monkeypatch.setenv("ARCANOS_MAX_RETRY_AFTER", "-1")
    with pytest.raises(ConfigurationError, match="ARCANOS_MAX_RETRY_AFTER"):
        ArcanosSettings()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_insufficient_quota_is_never_retried_whatever_it_asks(
    configured: ArcanosSettings, openai_server: FakeOpenAIServer, receiver: WebhookReceiver, kind: str
) -> None:
    """A 429 ``insufficient_quota`` with ``Retry-After``: one attempt, a ``quota_exhausted`` incident."""
    openai_server.always(Reply.error(429, code="insufficient_quota", retry_after=1))
    state = run_step(kind, configured)

    assert state.is_failed()
    assert len(openai_server.completion_requests) == 1
    (incident,) = receiver.incidents
    assert (incident["incident_class"], incident["attempts"]) == ("quota_exhausted", 1)
    assert "ARCANOS_MAX_RETRY_AFTER" not in incident["reason"]


# --- reading the headers ------------------------------------------------------------------------------------------

NOW = datetime(2026, 10, 21, 7, 27, 30, tzinfo=timezone.utc)
HEADERS: dict[str, tuple[int, dict[str, str], float | None]] = {
    "retry-after seconds": (429, {"Retry-After": "3"}, 3.0),
    "retry-after fraction": (503, {"retry-after": "1.5"}, 1.5),
    "retry-after date": (429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, 30.0),
    "retry-after date past": (429, {"Retry-After": "Wed, 21 Oct 2026 07:00:00 GMT"}, 0.0),
    "retry-after-ms wins": (429, {"Retry-After": "3", "Retry-After-Ms": "250"}, 0.25),
    "retry-after wins over resets": (429, {"Retry-After": "2", "x-ratelimit-reset-requests": "6m0s"}, 2.0),
    "reset 6m0s": (429, {"x-ratelimit-reset-requests": "6m0s"}, 360.0),
    "reset 20ms": (429, {"x-ratelimit-reset-tokens": "20ms"}, 0.02),
    "reset 1h2m3.5s": (429, {"x-ratelimit-reset-tokens": "1h2m3.5s"}, 3723.5),
    "longest reset when neither is used up": (
        429,
        {"x-ratelimit-reset-requests": "1s", "x-ratelimit-reset-tokens": "7.5s"},
        7.5,
    ),
    "the used-up limit's reset": (
        429,
        {
            "x-ratelimit-reset-requests": "1s",
            "x-ratelimit-reset-tokens": "6m0s",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-remaining-tokens": "12000",
        },
        1.0,
    ),
    "resets only on a 429": (503, {"x-ratelimit-reset-requests": "1s"}, None),
    "not a 429 or 503": (500, {"Retry-After": "3"}, None),
    "nothing asked": (429, {}, None),
    "unreadable": (429, {"Retry-After": "soon", "retry-after-ms": "-5", "x-ratelimit-reset-requests": "1x"}, None),
    "not finite": (429, {"Retry-After": "inf"}, None),
}


@pytest.mark.parametrize(("status", "headers", "expected"), HEADERS.values(), ids=HEADERS.keys())
def test_requested_wait_reads_each_header(status: int, headers: dict[str, str], expected: float | None) -> None:
    """Seconds, HTTP dates, milliseconds and Go durations; unreadable values ask for nothing."""
    wait = requested_wait(status, headers, now=NOW)
    assert wait == pytest.approx(expected) if expected is not None else wait is None
