"""Shared pieces of the benchmark: the processes it runs (fake server, Prefect server, workers) and the table."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _shapes

ROOT = Path(__file__).resolve().parent.parent
"""The repository (on ``PYTHONPATH`` of every process the bench starts)."""


class BenchError(RuntimeError):
    """A process of the bench failed; the message says which and ends with its log."""


def median(values: list[float]) -> float:
    """The median, the figure every row quotes."""
    return statistics.median(values)


def load_average() -> str:
    """The 1/5/15-minute load averages, as the table footer shows them."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[Any], *, group: bool = False, timeout: float = 15) -> None:
    # Only processes the bench started, by their id (or the process group it created for them).
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signal.SIGTERM)
        else:
            process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
        process.wait()


# --- the fake OpenAI server ------------------------------------------------------------------------------------------


class FakeServer:
    """The fake OpenAI server's process: its base URL and the counters it keeps (:mod:`bench._fake_server`)."""

    def __init__(self, process: subprocess.Popen[str], base_url: str) -> None:
        self.process = process
        self.base_url = base_url
        self._lock = threading.Lock()

    def _ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        if not line:
            raise BenchError("the fake server exited")
        return json.loads(line)

    def stats(self) -> dict[str, Any]:
        """Requests answered since the last :meth:`reset`, by status, and the first/last request times."""
        return self._ask("stats")

    def reset(self) -> None:
        """Zero the counters and forget the recorded requests."""
        self._ask("reset")


@contextlib.contextmanager
def fake_openai_process(
    latency: float = 0.0,
    rpm: int | None = None,
    *,
    gateway: str | None = None,
    aliases: dict[str, str] | None = None,
    batch_delay: float | None = None,
) -> Iterator[FakeServer]:
    """Run :mod:`bench._fake_server` (the project's fake OpenAI server) in its own process."""
    command = [sys.executable, "-m", "bench._fake_server", "--latency", str(latency)]
    if rpm is not None:
        command += ["--rpm", str(rpm)]
    if gateway is not None:
        command += ["--gateway", gateway]
        command += [argument for name, model in (aliases or {}).items() for argument in ("--alias", f"{name}={model}")]
    if batch_delay is not None:
        command += ["--batch-delay", str(batch_delay)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": _pythonpath()},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.startswith("READY "):
            raise BenchError(f"fake server did not start: {line!r}")
        yield FakeServer(process, line.removeprefix("READY "))
    finally:
        with contextlib.suppress(OSError, ValueError):
            assert process.stdin is not None
            process.stdin.close()
        _stop(process, timeout=10)


def _pythonpath() -> str:
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


# --- Prefect ---------------------------------------------------------------------------------------------------------


def prefect_env(home: Path) -> dict[str, str]:
    """Prefect settings every process of the bench gets: its own home, no telemetry."""
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # Ad-hoc runs on a busy machine: the first start of a temporary server may outlast the 20 s default.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    }


def clean_environment() -> dict[str, str]:
    """This process's environment without any arcanos, OpenAI or Prefect setting (none may leak into a run)."""
    return {
        name: value for name, value in os.environ.items() if not name.startswith(("ARCANOS_", "OPENAI_", "PREFECT_"))
    }


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system, seconds) of every live process in process group ``pgid``, from ``/proc``."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # After the command: state, ppid, pgrp, ..., utime (14th field of the line) and stime (15th).
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@dataclass
class PrefectServer:
    """A ``prefect server start`` the bench started: its API URL and home (with its database)."""

    api_url: str
    home: Path
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server's processes have used so far."""
        return group_cpu_seconds(self.process.pid)

    def copy_database(self, home: Path) -> bool:
        """Copy this server's (migrated) database into ``home``, so a temporary server there skips the migrations."""
        source = self.home / "prefect.db"
        if not source.exists():
            return False
        home.mkdir(parents=True, exist_ok=True)
        with (
            contextlib.closing(sqlite3.connect(source)) as src,
            contextlib.closing(sqlite3.connect(home / "prefect.db")) as dst,
        ):
            src.backup(dst)
        return True


@contextlib.contextmanager
def prefect_server_process(home: Path, log: Path, timeout: float = 240) -> Iterator[PrefectServer]:
    """``prefect server start`` on a free port with its own home; yields once ``/api/health`` answers."""
    port = free_port()
    home.mkdir(parents=True, exist_ok=True)
    prefect = Path(sys.executable).with_name("prefect")
    command = [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command,
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**clean_environment(), **prefect_env(home)},
            start_new_session=True,  # its uvicorn child is stopped with it
        )
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise BenchError(f"prefect server exited with {process.returncode}:\n{_log_tail(log)}")
            with (
                contextlib.suppress(OSError, ValueError),
                urllib.request.urlopen(f"{api_url}/health", timeout=2) as response,  # noqa: S310 (loopback)
            ):
                if response.status == 200:
                    break
            if time.monotonic() > deadline:
                raise BenchError(f"prefect server not healthy after {timeout:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.5)
        yield PrefectServer(api_url, home, process)
    finally:
        _stop(process, group=True, timeout=20)


# --- workers ---------------------------------------------------------------------------------------------------------


class Worker:
    """A :mod:`bench._worker` process: commands in, measurements out (its own output goes to a log file)."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path, logs: Path) -> None:
        self.name = name
        self.log = logs / f"{name}.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench._worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=output,
                text=True,
                cwd=workdir,
                env={**env, "PYTHONPATH": _pythonpath()},
            )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, name=f"bench-worker-{name}", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("BENCH "):
                self._lines.put(line.removeprefix("BENCH "))
        self._lines.put(None)

    def call(self, cmd: str, timeout: float = 600, **args: Any) -> dict[str, Any]:
        """Run one command in the worker and return its reply; raises :class:`BenchError` on an error."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"cmd": cmd, "args": args}) + "\n")
            self.process.stdin.flush()
        except (OSError, ValueError) as exc:
            raise BenchError(f"worker {self.name} is gone ({exc}):\n{_log_tail(self.log)}") from None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"worker {self.name}: {cmd} took over {timeout:.0f} s:\n{_log_tail(self.log)}") from None
        if line is None:
            raise BenchError(f"worker {self.name} exited during {cmd}:\n{_log_tail(self.log)}")
        reply = json.loads(line)
        if "error" in reply:
            raise BenchError(f"worker {self.name}: {cmd} failed: {reply['error']}\n{_log_tail(self.log)}")
        return reply

    def close(self) -> None:
        """Ask the worker to quit; stop it if it does not."""
        with contextlib.suppress(BenchError):
            if self.process.poll() is None:
                self.call("quit", timeout=30)
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        _stop(self.process, timeout=15)


# --- the run as a whole ----------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """One bench run: its options, temporary folder, the shared Prefect server and the processes to clean up."""

    quick: bool
    repeats: int
    keep: bool = False
    diagnose: bool = False
    smoke: bool = False
    """``--smoke``: the smallest sizes (see each scenario's ``sizes``) and no settling; implies ``quick``."""
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="arcanos-bench-")))
    watched: list[int] = field(default_factory=list)
    """Process groups of other servers :meth:`settle` waits for (e.g. one ``arcanos-flows server start`` made)."""
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _prefect: PrefectServer | None = None

    def __post_init__(self) -> None:
        self.logs = self.tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.workdir = self.tmp / "cwd"  # no .env of the repository or the user is read
        self.workdir.mkdir(exist_ok=True)

    def close(self) -> None:
        """Stop every process the bench started and remove its folder (unless ``--keep``)."""
        self._stack.close()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def settle(self) -> float:
        """Wait until the Prefect server has digested the previous run (events, logs, task runs); seconds waited.

        A run leaves work behind on the server (it ingests the run's events for a while after the run ends); the
        next run's API calls would queue behind it. Measurements start once the server's CPU use over half a
        second is below 10% (or after a cap), so every side starts from an idle server.
        """
        if self.smoke:  # nothing is measured for real: no wait
            return 0.0
        started = time.perf_counter()
        time.sleep(0.2 if self.quick else 1.0)
        groups = ([self._prefect.process.pid] if self._prefect is not None else []) + self.watched
        if groups:
            deadline = started + (15 if self.quick else 90)
            while time.perf_counter() < deadline:
                before, at = sum(map(group_cpu_seconds, groups)), time.perf_counter()
                time.sleep(0.5)
                if (sum(map(group_cpu_seconds, groups)) - before) / (time.perf_counter() - at) < 0.10:
                    break
        return time.perf_counter() - started

    def server_cpu(self) -> float:
        """CPU seconds the local Prefect server has used so far (0 when it has not been started)."""
        return self._prefect.cpu_seconds() if self._prefect is not None else 0.0

    def prefect(self) -> PrefectServer:
        """The local Prefect server of this run (``prefect server start``), started on first use."""
        if self._prefect is None:
            started = time.perf_counter()
            self._prefect = self._stack.enter_context(
                prefect_server_process(self.tmp / "prefect-server-home", self.logs / "prefect-server.log")
            )
            self.prefect_start_seconds = time.perf_counter() - started
        return self._prefect

    def fake_server(self, latency: float, rpm: int | None = None, **options: Any) -> FakeServer:
        """A fake OpenAI server for the rest of the run (``gateway``, ``aliases``, ``batch_delay``: its modes)."""
        return self._stack.enter_context(fake_openai_process(latency, rpm, **options))

    def arcanos_env(
        self, base_url: str, *, api_url: str | None, home: Path | None = None, **extra: str
    ) -> dict[str, str]:
        """The environment of a flow process: settings for the fake server, Prefect at ``api_url`` (or temporary)."""
        env = {
            **clean_environment(),
            **prefect_env(home or self.tmp / "client-home"),
            "OPENAI_API_KEY": _shapes.API_KEY,
            "ARCANOS_FINE_TUNED_MODEL": _shapes.MODEL,
            "OPENAI_BASE_URL": base_url,
            "ARCANOS_INCIDENT_SPOOL": str(self.tmp / "spool"),
            "XDG_STATE_HOME": str(self.tmp / "state"),
            **extra,
        }
        if api_url is not None:
            env["PREFECT_API_URL"] = api_url
        return env

    def worker(self, name: str, env: dict[str, str]) -> Worker:
        """A worker process, stopped when the bench ends."""
        worker = Worker(name, env, self.workdir, self.logs)
        self._stack.callback(worker.close)
        return worker


@dataclass
class Row:
    """One line of the results table, with the details printed under it."""

    scenario: str
    measured: str
    compared: str
    ratio: str
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    """The measured figures the chart draws, by label (``unit`` each), compared with ``baseline``."""
    baseline: tuple[str, float] | None = None
    """The label and figure the ratios are taken against (the raw SDK, measured in the same run)."""
    unit: str = ""

    @classmethod
    def missing(cls, scenario: str, target: str, what: str) -> Row:
        """A row for a scenario whose feature is not in the library yet."""
        return cls(scenario, "n/a (feature missing)", "", "", target, None, [f"missing: {what}"])

    @classmethod
    def failed(cls, scenario: str, target: str, error: BaseException) -> Row:
        """A row for a scenario that could not be measured."""
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        return cls(scenario, "n/a (bench error)", "", "", target, None, [f"error: {first}"])


def print_table(rows: list[Row], repeats: int, *, quick: bool, seconds: float, loads: tuple[str, str]) -> None:
    """Print the results as a Markdown table, with the machine, the load and the details of each row."""
    print()
    print(
        f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{'quick smoke run (tiny sizes, targets not asserted); ' if quick else ''}"
        f"medians of {repeats} runs unless a row says otherwise; the fake server runs in its own process. "
        f"Load average (1/5/15 min) {loads[0]} at the start, {loads[1]} at the end; the bench took {seconds:.0f} s."
    )
    print()
    print("| scenario | arcanos-flows | compared with | ratio | target | met |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "**NO**")
        print(f"| {row.scenario} | {row.measured} | {row.compared} | {row.ratio} | {row.target} | {met} |")
    print()
    for row in rows:
        for note in row.notes:
            print(f"- {row.scenario}: {note}")
