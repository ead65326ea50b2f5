"""A local Prefect server in the background, so that ad-hoc runs skip Prefect's temporary server start-up.

``arcanos-flows server start`` runs ``prefect server start`` as a child in its own session (it outlives the
command, and its process group can be stopped by its PID), sends its output to a log file and records its PID
and URL in a small state file, ``$XDG_STATE_HOME/arcanos-flows/server/server.json``. Commands that run flows
use the recorded server while ``PREFECT_API_URL`` is not configured and it answers ``/api/health`` within
:data:`PROBE_TIMEOUT`; otherwise Prefect starts its temporary server as usual.

Only the standard library is imported here: looking for the server costs a file read and one loopback request,
never Prefect's import. POSIX only (sessions and process groups).

Examples:
    >>> server_url("127.0.0.1", 4200)
    'http://127.0.0.1:4200'
    >>> server_url("0.0.0.0", 4200), server_url("::", 4201)
    ('http://127.0.0.1:4200', 'http://[::1]:4201')
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from arcanos_flows.core.errors import ArcanosError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "PROBE_TIMEOUT",
    "Discovery",
    "LocalServerError",
    "ServerRecord",
    "StartResult",
    "StopResult",
    "discover",
    "is_healthy",
    "is_running",
    "read_record",
    "server_url",
    "start_server",
    "state_dir",
    "stop_server",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
PROBE_TIMEOUT = 0.2
"""Seconds a command waits for the recorded server's ``/api/health`` before using the temporary server."""
DEFAULT_START_TIMEOUT = 120.0
"""Seconds ``start_server`` waits for a new server (a first start creates and migrates the database)."""
DEFAULT_STOP_GRACE = 10.0
"""Seconds between SIGTERM and SIGKILL when stopping."""

STATE_FILE = "server.json"
LOG_FILE = "server.log"
_LOCK_FILE = "server.lock"
_POLL_SECONDS = 0.1


class LocalServerError(ArcanosError):
    """The local Prefect server could not be started or stopped; the message says why and where the log is."""


def state_dir() -> Path:
    """Where the state file and the server's log live: ``$XDG_STATE_HOME/arcanos-flows/server``.

    Examples:
        >>> state_dir().parts[-2:]
        ('arcanos-flows', 'server')
    """
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "arcanos-flows" / "server"


def server_url(host: str, port: int) -> str:
    """The base URL clients use for a server bound to ``host`` (a wildcard address is reached on loopback)."""
    connect = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    if ":" in connect and not connect.startswith("["):
        connect = f"[{connect}]"
    return f"http://{connect}:{port}"


@dataclass(frozen=True)
class ServerRecord:
    """What ``server start`` recorded about the server it started.

    Attributes:
        pid: The ``prefect server start`` process; it leads its own session and process group.
        host: The address it binds.
        port: Its port.
        api_url: What ``PREFECT_API_URL`` must be to use it.
        log_path: The file its output goes to.
        started_at: When it was started (UTC, ISO 8601).
        argv: Its command line, to recognise the process (a reused PID has another one).
        prefect_home: The ``PREFECT_HOME`` (database) it was started with, when one was set.
    """

    pid: int
    host: str
    port: int
    api_url: str
    log_path: str
    started_at: str
    argv: tuple[str, ...] = field(default_factory=tuple)
    prefect_home: str | None = None

    @property
    def ui_url(self) -> str:
        """The Prefect UI of the server."""
        return self.api_url.removesuffix("/api")

    def to_json(self) -> str:
        """The state file's content."""
        return json.dumps({**asdict(self), "argv": list(self.argv)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ServerRecord:
        """Parse a state file; raises ``ValueError`` (or ``TypeError``/``KeyError``) when it is not one."""
        data = json.loads(text)
        return cls(
            pid=int(data["pid"]),
            host=str(data["host"]),
            port=int(data["port"]),
            api_url=str(data["api_url"]),
            log_path=str(data["log_path"]),
            started_at=str(data["started_at"]),
            argv=tuple(str(item) for item in data.get("argv") or ()),
            prefect_home=data.get("prefect_home"),
        )


def _directory(directory: Path | None) -> Path:
    return state_dir() if directory is None else directory


def read_record(directory: Path | None = None) -> ServerRecord | None:
    """The recorded server, or ``None`` when nothing (or something unreadable) is recorded."""
    path = _directory(directory) / STATE_FILE
    try:
        return ServerRecord.from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write_record(record: ServerRecord, directory: Path) -> None:
    path = directory / STATE_FILE
    partial = path.with_name(f".{STATE_FILE}.{os.getpid()}")
    partial.write_text(record.to_json(), encoding="utf-8")
    os.replace(partial, path)  # readers see the old file or the new one, never half of one


def _forget(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILE).unlink()


def is_healthy(api_url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a Prefect server answers ``GET {api_url}/health`` with ``true`` within ``timeout`` seconds.

    Connects directly (no proxy from the environment: the server is local).
    """
    from urllib.parse import urlsplit

    parts = urlsplit(api_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", parts.path.rstrip("/") + "/health")
        response = connection.getresponse()
        return response.status == 200 and response.read(64).strip() == b"true"
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def _process_line(pid: int) -> tuple[str, list[str]] | None:
    """The state letter and command line of a process, or ``None`` when there is no such process."""
    proc = Path("/proc")
    if (proc / "self").exists():
        try:
            stat = (proc / str(pid) / "stat").read_text(errors="replace")
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        state = stat.rpartition(")")[2].split()[0] if ")" in stat else "?"
        return state, raw.decode(errors="replace").split("\0")[:-1]
    done = subprocess.run(  # macOS, BSD: no /proc
        ["ps", "-p", str(pid), "-o", "stat=", "-o", "command="],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        return None
    state, _, command = done.stdout.strip().partition(" ")
    return state[:1], command.strip().split(" ")


def is_running(record: ServerRecord) -> bool:
    """Whether the recorded process still runs (not a zombie, and not another program that reused the PID)."""
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not the one we started
    found = _process_line(record.pid)
    if found is None or found[0] == "Z":
        return False
    if not record.argv:
        return True
    return " ".join(found[1]) == " ".join(record.argv)


@dataclass(frozen=True)
class Discovery:
    """What a command found when it looked for the recorded server.

    Attributes:
        status: ``running`` (answers, use it), ``not-answering`` (its process runs but it did not answer in time),
            ``stale`` (its process is gone; the state file was removed) or ``none`` (nothing recorded).
        record: The recorded server, when there was one.
    """

    status: Literal["running", "not-answering", "stale", "none"]
    record: ServerRecord | None = None

    @property
    def api_url(self) -> str | None:
        """The API URL to use, when the server is running."""
        return self.record.api_url if self.status == "running" and self.record else None


def discover(timeout: float = PROBE_TIMEOUT, directory: Path | None = None) -> Discovery:
    """Look for the server recorded by ``server start``; cheap (one file read, one loopback request).

    A record whose process is gone is removed, so the next command does not probe it again.
    """
    folder = _directory(directory)
    record = read_record(folder)
    if record is None:
        if (folder / STATE_FILE).exists():
            _forget(folder)  # unreadable: nothing to stop through it
            return Discovery("stale")
        return Discovery("none")
    if is_healthy(record.api_url, timeout):
        return Discovery("running", record)
    if is_running(record):
        return Discovery("not-answering", record)
    _forget_if_unchanged(folder, record)
    return Discovery("stale", record)


def _forget_if_unchanged(directory: Path, record: ServerRecord) -> None:
    # A `server start` may have recorded a new server since we read the file: remove only what we judged.
    if read_record(directory) == record:
        _forget(directory)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise ``start`` and ``stop`` (two terminals starting at once must not start two servers)."""
    import fcntl

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with (directory / _LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _port_in_use(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LocalServerError(f"invalid host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return True
    return False


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


@dataclass(frozen=True)
class StartResult:
    """The outcome of :func:`start_server`: the server, and whether it was already running."""

    record: ServerRecord
    already_running: bool
    seconds: float = 0.0


def start_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    timeout: float = DEFAULT_START_TIMEOUT,
    directory: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> StartResult:
    """Start ``prefect server start`` in the background and wait until it answers; idempotent.

    Args:
        host: Address to bind (loopback by default: the API has no authentication).
        port: Port to listen on.
        timeout: Seconds to wait for ``/api/health``; on timeout the process is stopped.
        directory: Where the state file and the log go (default :func:`state_dir`).
        environ: The server's environment (default this process's; ``PREFECT_API_URL`` is set to the server).

    Returns:
        The recorded server; ``already_running`` when a recorded server already answered.

    Raises:
        LocalServerError: The port is taken, the process exited, or it did not answer in time (the message
            names the log file and shows its end).

    Examples:
        >>> result = start_server(port=4200)  # doctest: +SKIP
        >>> result.record.api_url  # doctest: +SKIP
        'http://127.0.0.1:4200/api'
    """
    if os.name != "posix":  # pragma: no cover - sessions and process groups
        raise LocalServerError("`server start` needs POSIX; run `prefect server start` and set PREFECT_API_URL")
    folder = _directory(directory)
    started = time.monotonic()
    # The lock covers looking and spawning, not the wait: a `server stop` in another terminal must not hang
    # behind a start, and a second `server start` finds the record and waits for the same server.
    with _locked(folder):
        record = read_record(folder)
        if record is not None and not is_running(record):
            _forget(folder)
            record = None
        if record is None:
            record, process = _spawn(host, port, folder, environ)
        else:
            process = None
    if process is None:
        if is_healthy(record.api_url, timeout=1.0) or _wait_healthy(record, None, timeout, started):
            return StartResult(record, already_running=True)
        raise LocalServerError(
            f"the recorded Prefect server (pid {record.pid}, {record.api_url}) did not answer within {timeout:g} s; "
            f"see its log {record.log_path}, then `arcanos-flows server stop`"
        )
    try:
        if not _wait_healthy(record, process, timeout, started):
            raise LocalServerError(
                f"the Prefect server did not answer {record.api_url}/health within {timeout:g} s, so it was "
                f"stopped; see its log {record.log_path} (a first start creates the database: try a longer "
                f"--timeout).\n{_log_tail(Path(record.log_path))}"
            )
    except BaseException:
        _terminate(process.pid, DEFAULT_STOP_GRACE, process)
        _forget_if_unchanged(folder, record)
        raise
    return StartResult(record, already_running=False, seconds=time.monotonic() - started)


def _spawn(
    host: str, port: int, folder: Path, environ: Mapping[str, str] | None
) -> tuple[ServerRecord, subprocess.Popen[bytes]]:
    """Start the server process and record it (at once: `server stop` can stop it even while it starts)."""
    url = server_url(host, port)
    if _port_in_use(host, port):
        if is_healthy(f"{url}/api", timeout=1.0):
            raise LocalServerError(
                f"a Prefect server that arcanos-flows did not start already answers at {url}/api: use it with "
                f"PREFECT_API_URL={url}/api, or choose another --port"
            )
        raise LocalServerError(f"port {port} on {host} is already in use: choose another --port")
    log_path = folder / LOG_FILE
    argv = (sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port))
    env = dict(os.environ if environ is None else environ)
    env["PREFECT_API_URL"] = f"{url}/api"  # the server's UI and actions talk to this server, not a profile's
    env.setdefault("PYTHONUNBUFFERED", "1")
    with log_path.open("ab") as log:
        log.write(f"\n--- arcanos-flows server start {datetime.now(timezone.utc).isoformat()}: {url}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=folder,  # not the caller's directory: its .env or prefect.toml must not reconfigure the server
            start_new_session=True,  # survives this command and the terminal; stopped by its process group
        )
    record = ServerRecord(
        pid=process.pid,
        host=host,
        port=port,
        api_url=f"{url}/api",
        log_path=str(log_path),
        started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        argv=argv,
        prefect_home=env.get("PREFECT_HOME"),
    )
    _write_record(record, folder)
    return record, process


def _wait_healthy(
    record: ServerRecord, process: subprocess.Popen[bytes] | None, timeout: float, started: float
) -> bool:
    deadline = started + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalServerError(
                f"`prefect server start` exited with code {process.returncode}; see its log {record.log_path}\n"
                f"{_log_tail(Path(record.log_path))}"
            )
        if process is None and not is_running(record):
            return False
        if is_healthy(record.api_url, timeout=1.0):
            return True
        time.sleep(_POLL_SECONDS)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    found = _process_line(pid)
    return found is not None and found[0] != "Z"


def _signal_group(pid: int, signum: int) -> None:
    # The server leads its own process group (start_new_session): signal the group, so that anything it
    # started goes too. Never signal a group that is not led by the recorded PID (e.g. our own).
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _terminate(pid: int, grace: float, process: subprocess.Popen[bytes] | None = None) -> str:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns which signal ended it."""

    def gone() -> bool:
        return process.poll() is not None if process is not None else not _alive(pid)

    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if gone():
            return "SIGTERM"
        time.sleep(_POLL_SECONDS)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while not gone() and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
    return "SIGKILL"


@dataclass(frozen=True)
class StopResult:
    """The outcome of :func:`stop_server`.

    Attributes:
        record: The server that was recorded, if any.
        outcome: ``stopped`` (it ran and was stopped), ``stale`` (its process was already gone) or ``none``.
        signal: ``SIGTERM`` or ``SIGKILL`` when it was stopped.
    """

    record: ServerRecord | None
    outcome: Literal["stopped", "stale", "none"]
    signal: str | None = None


def stop_server(*, grace: float = DEFAULT_STOP_GRACE, directory: Path | None = None) -> StopResult:
    """Stop the recorded server by its PID (SIGTERM, then SIGKILL after ``grace``) and remove the state file."""
    folder = _directory(directory)
    if not (folder / STATE_FILE).exists():
        return StopResult(None, "none")
    with _locked(folder):
        record = read_record(folder)
        if record is None:
            _forget(folder)
            return StopResult(None, "none")
        if not is_running(record):
            _forget(folder)
            return StopResult(record, "stale")
        how = _terminate(record.pid, grace)
        _forget(folder)
        return StopResult(record, "stopped", how)
