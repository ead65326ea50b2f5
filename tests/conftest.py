"""Shared fixtures: loopback servers, isolated configuration, and settings pointing at them."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, WebhookReceiver

API_KEY = "sk-test-arcanos-0123456789abcdefSECRET"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"arcanos-webhook-secret-32-bytes!").decode()
MODEL = "ft:gpt-5.1-2025-11-13:arcanos::t1"


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No test sees the developer's environment, .env file or spool."""

    for name in list(os.environ):
        if name.startswith(("ARCANOS_", "OPENAI_")):
            monkeypatch.delenv(name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return work


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI-compatible server on 127.0.0.1."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver on 127.0.0.1 that verifies Standard Webhooks signatures."""
    with WebhookReceiver(secret=WEBHOOK_SECRET) as hook:
        yield hook


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """The incident spool folder of this test."""
    return tmp_path / "spool"


@pytest.fixture
def make_settings(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, spool: Path
) -> Callable[..., ArcanosSettings]:
    """Build settings for the loopback servers; keyword arguments override fields."""

    def make(**overrides: Any) -> ArcanosSettings:
        values: dict[str, Any] = {
            "openai_api_key": API_KEY,
            "fine_tuned_model": MODEL,
            "openai_base_url": openai_server.base_url,
            "maintenance_webhook": receiver.url,
            "webhook_secret": WEBHOOK_SECRET,
            "incident_spool": spool,
            "request_timeout": 5.0,
            "max_retries": 2,
            "_env_file": None,
        }
        values.update(overrides)
        return ArcanosSettings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., ArcanosSettings]) -> ArcanosSettings:
    """Settings pointing at the fake OpenAI server and the webhook receiver."""
    return make_settings()


@pytest.fixture
def notifier(settings: ArcanosSettings) -> MaintenanceNotifier:
    """A notifier with fast backoff, so retry tests take milliseconds."""
    return MaintenanceNotifier(settings, backoff=0.01, source="arcanos_flows.client")


# Prefect: one temporary server per test session (its first start takes ~20 s here), and no telemetry to the internet.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
# Events reach the database within a second instead of five, so tests reading them back wait less.
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "1")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database shared by every Prefect test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def arcanos_env(
    monkeypatch: pytest.MonkeyPatch,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    spool: Path,
) -> dict[str, str]:
    """Environment variables that point tasks, hooks and flows at the loopback servers (no task retry delay)."""
    values = {
        "OPENAI_API_KEY": API_KEY,
        "ARCANOS_FINE_TUNED_MODEL": MODEL,
        "OPENAI_BASE_URL": openai_server.base_url,
        "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(spool),
        "ARCANOS_REQUEST_TIMEOUT": "5",
        "ARCANOS_TASK_RETRY_DELAY": "0",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


# Events reach the API only when the server's event persister flushes (every 5 s by default): flush every 0.5 s so
# tests that read incident events back from the temporary server wait less. Must be set before the harness starts.
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.5")
