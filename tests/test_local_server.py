"""`arcanos-flows server start|status|stop`, and ad-hoc runs reusing the server it started.

Every server is started through the installed console script with its own XDG_STATE_HOME and PREFECT_HOME on a
free loopback port, and is stopped by its recorded PID (its process group) when the module ends, whatever the
tests did.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from arcanos_flows.cli import local_server
from arcanos_flows.cli.local_server import ServerRecord
from arcanos_flows.testing import FakeOpenAIServer
from tests.conftest import API_KEY, MODEL

SCRIPT = Path(sys.executable).with_name("arcanos-flows")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def user_env(state_home: Path, prefect_home: Path, **extra: str) -> dict[str, str]:
    """A user's shell: no PREFECT_API_URL, no ARCANOS_* or OPENAI_*, its own state and Prefect homes."""
    home = state_home.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_STATE_HOME": str(state_home),
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PYTHONIOENCODING": "utf-8",
        "COLUMNS": "200",
        **extra,
    }


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, encoding="utf-8", timeout=timeout, check=False
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert API_KEY not in done.stdout + done.stderr
    return done


def state_file(state_home: Path) -> Path:
    return state_home / "arcanos-flows" / "server" / "server.json"


def recorded(state_home: Path) -> ServerRecord:
    return ServerRecord.from_json(state_file(state_home).read_text())


def api_get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (http://127.0.0.1)
        return json.loads(response.read())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def kill_group(pid: int) -> None:
    """The safety net: SIGKILL a server's process group (it leads its own session) if it still runs."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)


@dataclass
class ServerHome:
    """Where the module's server lives, and every PID it ever had (all are killed at the end)."""

    state_home: Path
    prefect_home: Path
    port: int
    pids: set[int] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        return user_env(self.state_home, self.prefect_home)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home (database) for the module: only the first server to start pays for creating it."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="module")
def server_home(tmp_path_factory: pytest.TempPathFactory, prefect_home: Path) -> Iterator[ServerHome]:
    root = tmp_path_factory.mktemp("local-server")
    home = ServerHome(root / "state", prefect_home, free_port())
    try:
        yield home
    finally:
        if state_file(home.state_home).exists():
            home.pids.add(recorded(home.state_home).pid)
            cli("server", "stop", "--grace", "5", env=home.env)
        for pid in home.pids:
            kill_group(pid)


@pytest.fixture
def running_server(server_home: ServerHome) -> ServerRecord:
    """`server start` (idempotent: the first call starts the server, the others find it)."""
    done = cli("server", "start", "--port", str(server_home.port), "--timeout", "150", env=server_home.env, timeout=200)
    if state_file(server_home.state_home).exists():
        server_home.pids.add(recorded(server_home.state_home).pid)
    assert done.returncode == 0, done.stdout + done.stderr
    return recorded(server_home.state_home)


@pytest.fixture
def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_stale_record(state_home: Path, pid: int, port: int) -> None:
    folder = state_home / "arcanos-flows" / "server"
    folder.mkdir(parents=True, exist_ok=True)
    record = ServerRecord(
        pid=pid,
        host="127.0.0.1",
        port=port,
        api_url=f"http://127.0.0.1:{port}/api",
        log_path=str(folder / "server.log"),
        started_at="2025-01-01T00:00:00+00:00",
        argv=(sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)),
    )
    (folder / "server.json").write_text(record.to_json())


def test_server_start_runs_prefect_in_the_background_and_records_it(running_server: ServerRecord) -> None:
    """`server start` leaves a healthy Prefect server running in its own session, recorded with PID, URL and log."""
    assert running_server.api_url == f"http://127.0.0.1:{running_server.port}/api"
    assert api_get(f"{running_server.api_url}/health") is True
    assert alive(running_server.pid)
    assert os.getsid(running_server.pid) == running_server.pid  # stoppable by its own process group
    assert "arcanos-flows server start" in Path(running_server.log_path).read_text()


def test_server_start_again_says_it_is_already_running(server_home: ServerHome, running_server: ServerRecord) -> None:
    """A second `server start` starts nothing: it says the server already runs and exits 0."""
    done = cli("server", "start", "--port", str(server_home.port), env=server_home.env)
    assert done.returncode == 0, done.stderr
    assert f"already running (pid {running_server.pid})" in done.stdout
    assert f"export PREFECT_API_URL={running_server.api_url}" in done.stdout
    assert recorded(server_home.state_home) == running_server


def test_server_status_shows_the_running_server(server_home: ServerHome, running_server: ServerRecord) -> None:
    """`server status` shows the PID, URL and log of the running server (exit 0), also as JSON."""
    done = cli("server", "status", env=server_home.env)
    assert done.returncode == 0, done.stdout
    assert f"pid {running_server.pid}" in done.stdout
    assert running_server.api_url in done.stdout
    as_json = json.loads(cli("server", "status", "--json", env=server_home.env).stdout)
    assert (as_json["running"], as_json["healthy"]) == (True, True)
    assert as_json["server"]["pid"] == running_server.pid


def test_a_port_taken_by_a_foreign_prefect_server_is_named(
    tmp_path: Path, server_home: ServerHome, running_server: ServerRecord
) -> None:
    """On a port where another Prefect server answers, `server start` exits 1 and says how to use that one."""
    done = cli("server", "start", "--port", str(running_server.port), env=user_env(tmp_path / "s", tmp_path / "p"))
    assert done.returncode == 1
    assert f"PREFECT_API_URL={running_server.api_url}" in done.stderr
    assert not state_file(tmp_path / "s").exists()


def test_run_research_reuses_the_running_server(
    server_home: ServerHome, running_server: ServerRecord, openai_server: FakeOpenAIServer
) -> None:
    """With PREFECT_API_URL unset, `run research` runs on the server of `server start`: its API knows the run."""
    env = {
        **server_home.env,
        "OPENAI_API_KEY": API_KEY,
        "ARCANOS_FINE_TUNED_MODEL": MODEL,
        "OPENAI_BASE_URL": openai_server.base_url,
        "ARCANOS_INCIDENT_SPOOL": str(server_home.state_home / "spool"),
    }
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"on the local Prefect server at {running_server.api_url}" in done.stderr
    assert "temporary" not in done.stderr
    outcome = json.loads(done.stdout.splitlines()[-1])  # the summary follows one JSON line per finished step
    assert outcome["event"] == "summary"
    assert outcome["ui_url"] == f"{running_server.ui_url}/runs/flow-run/{outcome['flow_run_id']}"
    flow_run = api_get(f"{running_server.api_url}/flow_runs/{outcome['flow_run_id']}")
    assert isinstance(flow_run, dict)
    assert flow_run["state_type"] == "COMPLETED"
    assert "arcanos" in flow_run["tags"]


def test_server_stop_stops_it_by_pid(server_home: ServerHome, running_server: ServerRecord) -> None:
    """`server stop` stops the recorded process group and forgets it; stopping again is a no-op (exit 0)."""
    done = cli("server", "stop", env=server_home.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Stopped the Prefect server at {running_server.api_url} (pid {running_server.pid}, SIGTERM)" in done.stdout
    assert not alive(running_server.pid)
    assert not state_file(server_home.state_home).exists()
    assert not local_server.is_healthy(running_server.api_url, timeout=1)
    status = cli("server", "status", env=server_home.env)
    assert status.returncode == 1
    assert "No Prefect server is recorded" in status.stdout
    again = cli("server", "stop", env=server_home.env)
    assert (again.returncode, again.stdout.strip()) == (
        0,
        "No Prefect server started by `arcanos-flows server start` is recorded.",
    )


def test_start_timeout_names_the_log_and_leaves_nothing_running(tmp_path: Path) -> None:
    """When the server does not answer in time, `server start` stops it, exits 1 and names the log file."""
    env = user_env(tmp_path / "state", tmp_path / "prefect-home")
    port = free_port()
    done = cli("server", "start", "--port", str(port), "--timeout", "1", env=env)
    assert done.returncode == 1
    log = tmp_path / "state" / "arcanos-flows" / "server" / "server.log"
    assert "did not answer" in done.stderr
    assert str(log) in done.stderr.replace("\n", "")
    assert log.is_file()
    assert not state_file(tmp_path / "state").exists()
    assert not [pid for pid in _pids_with_argument(f"{port}") if pid != os.getpid()]


def _pids_with_argument(argument: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                args = (entry / "cmdline").read_bytes().split(b"\0")
                if b"server" in args and argument.encode() in args:
                    pids.append(int(entry.name))
    return pids


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    """A port something else listens on is refused before anything starts: exit 1 naming the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("server", "start", "--port", str(port), env=user_env(tmp_path / "state", tmp_path / "p"))
    assert done.returncode == 1
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert not state_file(tmp_path / "state").exists()


def test_stop_never_kills_a_process_that_reused_the_pid(tmp_path: Path) -> None:
    """A recorded PID that now belongs to another program is left alone: the record is dropped as stale."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        write_stale_record(tmp_path / "state", bystander.pid, free_port())
        done = cli("server", "stop", env=user_env(tmp_path / "state", tmp_path / "p"))
        assert done.returncode == 0
        assert "no longer running" in done.stdout
        assert bystander.poll() is None
        assert not state_file(tmp_path / "state").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_server_commands_do_not_import_prefect(tmp_path: Path, dead_pid: int) -> None:
    """`server status` (and finding the recorded server) costs no Prefect import."""
    write_stale_record(tmp_path / "state", dead_pid, free_port())
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "arcanos_flows.cli", "server", "status"],
        env=user_env(tmp_path / "state", tmp_path / "p"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "is not running" in done.stdout
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "arcanos_flows.cli.local_server" in modules
    assert not [module for module in modules if module.split(".")[0] == "prefect"]


def test_discover_removes_the_record_of_a_dead_server(tmp_path: Path, dead_pid: int) -> None:
    """Looking for the server forgets a record whose process is gone, so later commands do not probe it again."""
    folder = tmp_path / "state" / "arcanos-flows" / "server"
    write_stale_record(tmp_path / "state", dead_pid, free_port())
    found = local_server.discover(directory=folder)
    assert (found.status, found.api_url) == ("stale", None)
    assert not (folder / "server.json").exists()
    assert local_server.discover(directory=folder).status == "none"


def test_automations_without_a_server_name_the_dead_one(tmp_path: Path, dead_pid: int) -> None:
    """`automations install` needs a lasting server: with only a dead recorded one it exits 2 and says so."""
    write_stale_record(tmp_path / "state", dead_pid, free_port())
    done = cli("automations", "install", env=user_env(tmp_path / "state", tmp_path / "p"))
    assert done.returncode == 2
    assert "arcanos-flows server start" in done.stderr
    assert "is no longer running" in done.stderr


@pytest.mark.slow
def test_run_research_falls_back_to_the_temporary_server_when_the_recorded_one_is_dead(
    tmp_path: Path, prefect_home: Path, dead_pid: int, openai_server: FakeOpenAIServer
) -> None:
    """A stale record does not break runs: `run research` says so, uses Prefect's temporary server and completes."""
    write_stale_record(tmp_path / "state", dead_pid, free_port())
    env = user_env(
        tmp_path / "state",
        prefect_home,
        OPENAI_API_KEY=API_KEY,
        ARCANOS_FINE_TUNED_MODEL=MODEL,
        OPENAI_BASE_URL=openai_server.base_url,
        ARCANOS_INCIDENT_SPOOL=str(tmp_path / "spool"),
    )
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "--json", env=env, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "is no longer running" in done.stderr
    assert "on Prefect's temporary local server" in done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["state"] == "Completed"
    assert not state_file(tmp_path / "state").exists()
