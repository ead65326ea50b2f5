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


# --- pytest-xdist ------------------------------------------------------------------------------------------------
# pyproject runs the suite on `-n auto` workers (one more than the CPUs: most of the suite waits on servers and
# subprocesses; `-n 0` runs it in this process). Each worker has its own Prefect test harness, Prefect homes and free
# ports, so tests on different workers never see each other. Tests that share state run on one worker, in collection
# order: every test under each path prefix below is one unit of work.
XDIST_GROUPS = {
    # One real `prefect server`, its deployments (`prefect deploy --all`) and workers, started once per worker.
    "tests/e2e/": "e2e",
    # test_matrix_summary summarises the RESULTS that the module's cells recorded in this process.
    "tests/reliability/test_fault_matrix.py": "fault-matrix",
    # Module fixtures: one `arcanos-flows server start` that the tests query, reuse and stop, in order.
    "tests/test_local_server.py": "local-server",
    # One Prefect home per session for the CLI's runs: only the first run creates (migrates) its database.
    "tests/test_cli.py": "cli",
    # One distributed.LocalCluster (2 worker processes) for the module: one per xdist worker would not fit.
    "tests/test_dask.py": "dask",
}
LONG_MARKS = ("slow", "typecheck")
"""Tests with these marks (and no group) are handed out first, so that none starts when the others are done."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker more than the CPUs this process may use (``PYTEST_XDIST_AUTO_NUM_WORKERS`` wins).

    On two cores, three workers finish the suite sooner than two (about 4.5 vs 5.5 min): the tests spend much of
    their time waiting on servers, subprocesses and timeouts. Four are slower again.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(os.sched_getaffinity(0)) + 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) + 1


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` that also groups the tests of :data:`XDIST_GROUPS`, in the order of the collection.

    xdist passes ``xdist_group`` marks to its scheduler by rewriting node ids, which pytest 9.2 no longer lets it do
    (pytest-dev/pytest-xdist#1386: the marks are silently ignored), so the groups are given here by path. The units
    are handed out in the order the workers collected them (:func:`pytest_collection_modifyitems`), not largest
    group first.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class PathGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = str(super()._split_scope(nodeid))
            if scope != nodeid:  # an xdist_group mark that did reach the node id
                return scope
            return _xdist_group(nodeid) or nodeid

    config.option.loadscopereorder = False
    return PathGroupScheduling(config, log)


def _xdist_group(nodeid: str) -> str | None:
    return next((group for prefix, group in XDIST_GROUPS.items() if nodeid.startswith(prefix)), None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers: the long tests outside any group first, then the groups, then the rest.

    The scheduler hands out units of work in this order, so the longest start at once and the many short tests fill
    in at the end. Every worker reorders alike, so their collections still match.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return

    def rank(item: pytest.Item) -> int:
        if _xdist_group(item.nodeid):
            return 1
        return 0 if any(item.get_closest_marker(name) for name in LONG_MARKS) else 2

    items.sort(key=rank)  # stable: the collection order within each rank


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database shared by every Prefect test of the session.

    Under pytest-xdist each worker process has its own (its own port and temporary database): a worker's tests
    never see another worker's flow runs, deployments or automations.
    """
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
