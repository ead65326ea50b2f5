"""End-to-end fixtures: a real ``prefect server``, deployments from ``prefect.yaml``, workers and flow processes.

Every process is started with :class:`subprocess.Popen` in its own session, with its own ``PREFECT_HOME``, and
stopped by its PID (then its process group) in the fixture or test that started it; none outlives the session.
The fake OpenAI server and the webhook receiver run in the test process; the processes reach them over loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from arcanos_flows.testing import FakeOpenAIServer, WebhookReceiver
from tests.conftest import API_KEY, MODEL, WEBHOOK_SECRET

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect") if (BIN / "prefect").exists() else "prefect"
WORK_POOL = "arcanos-process"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_environment(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process: none of the caller's Prefect/OpenAI/Arcanos settings, its own home."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("PREFECT_", "ARCANOS_", "OPENAI_"))
    }
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_COLORS="false",
        PYTHONUNBUFFERED="1",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


class Process:
    """A child process in its own session, with its output in a log file, stopped by PID (and process group)."""

    def __init__(self, name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            list(argv), env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.pid = self.popen.pid

    def log(self, tail: int = 4000) -> str:
        """The end of the process's output, for assertion messages."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-tail:]

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; fail the test with the log when it does not come in time."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) still running after {timeout}s:\n{self.log()}"
            ) from None

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM the process, SIGKILL it after ``grace``; then SIGKILL whatever is left of its process group."""
        try:
            if self.popen.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(grace)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.popen.wait(10)
        except ProcessLookupError:
            pass
        finally:
            # Children it started (a worker's flow processes) share its process group, led by its PID.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            self._log.close()


@dataclass(frozen=True)
class PrefectServer:
    """A running ``prefect server start``."""

    api_url: str
    process: Process


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:  # noqa: S310 (http://127.0.0.1)
            return response.status == 200 and json.loads(response.read()) is True
    except (OSError, ValueError, urllib.error.URLError):
        return False


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real Prefect server on a free loopback port, with its own database; stopped by PID at session end."""
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = clean_environment(
        root / "home",
        # No scheduled runs from the deployments' schedules: the tests queue exactly the runs they look at.
        PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",
        # Store events within a second (default 5 s) and evaluate proactive triggers every second (default 5 s).
        PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL="1",
        PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY="PT1S",
    )
    server = Process(
        "prefect-server",
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=root,
        log_dir=root,
    )
    try:
        deadline = time.monotonic() + 180
        while not _healthy(api_url):
            if not server.alive():
                raise AssertionError(f"prefect server exited with {server.popen.returncode}:\n{server.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"prefect server not healthy after 180 s:\n{server.log()}")
            time.sleep(0.25)
        yield PrefectServer(api_url=api_url, process=server)
    finally:
        server.stop()


def run_cli(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a short CLI command to completion; fail with its output when it exits non-zero."""
    result = subprocess.run(list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@dataclass(frozen=True)
class Deployed:
    """The project deployed to the session's server from ``prefect.yaml``."""

    api_url: str
    project: Path
    output: str


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServer, tmp_path_factory: pytest.TempPathFactory) -> Deployed:
    """``prefect work-pool create arcanos-process`` and ``prefect --no-prompt deploy --all`` from the repo root."""
    assert (REPO / "prefect.yaml").is_file(), "prefect.yaml is missing from the project root"
    env = clean_environment(tmp_path_factory.mktemp("deploy-home"), prefect_server.api_url)
    run_cli([PREFECT, "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env=env, cwd=REPO)
    result = run_cli([PREFECT, "--no-prompt", "deploy", "--all"], env=env, cwd=REPO, timeout=180)
    return Deployed(api_url=prefect_server.api_url, project=REPO, output=result.stdout)


@pytest.fixture
def prefect_api(prefect_server: PrefectServer) -> Iterator[str]:
    """Point this test process's Prefect client at the session's server (not at the test harness)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.api_url}):
        yield prefect_server.api_url


@pytest.fixture
def process_env(
    prefect_server: PrefectServer,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    tmp_path: Path,
) -> Callable[..., dict[str, str]]:
    """Build the environment of a worker or flow process: the session's server, the fake servers, a fresh home."""

    def make(name: str, **extra: str) -> dict[str, str]:
        return clean_environment(
            tmp_path / "homes" / name,
            prefect_server.api_url,
            OPENAI_API_KEY=API_KEY,
            ARCANOS_FINE_TUNED_MODEL=MODEL,
            OPENAI_BASE_URL=openai_server.base_url,
            ARCANOS_MAINTENANCE_WEBHOOK=receiver.url,
            ARCANOS_WEBHOOK_SECRET=WEBHOOK_SECRET,
            ARCANOS_INCIDENT_SPOOL=str(tmp_path / "spool"),
            ARCANOS_REQUEST_TIMEOUT="300",
            ARCANOS_TASK_RETRY_DELAY="0",
            # Workers look for new runs every second (default 10 s).
            PREFECT_WORKER_QUERY_SECONDS="1",
            **extra,
        )

    return make


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start processes for one test; every one of them is stopped by its PID when the test ends."""
    started: list[Process] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    def start(name: str, argv: Sequence[str], *, env: dict[str, str], cwd: Path = REPO) -> Process:
        process = Process(name, argv, env=env, cwd=cwd, log_dir=log_dir)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in reversed(started):
            process.stop()


def worker_argv(*, run_once: bool) -> list[str]:
    """``prefect worker start`` for the project's process pool."""
    argv = [PREFECT, "worker", "start", "--pool", WORK_POOL, "--type", "process"]
    return [*argv, "--run-once"] if run_once else argv


def queue_run(deployment: str, env: dict[str, str], *args: str) -> str:
    """``prefect deployment run <deployment> ...``; returns the new flow run's id."""
    result = run_cli([PREFECT, "deployment", "run", deployment, *args], env=env, cwd=REPO)
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", result.stdout)
    assert match, f"no flow run id in the output of prefect deployment run:\n{result.stdout}"
    return match.group(1)


def processes_of_flow_run(flow_run_id: str) -> list[int]:
    """PIDs of the processes whose environment names this flow run (the engine process a worker started)."""
    pids = []
    marker = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                pids.append(int(entry.name))
    return pids


def wait_until(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
