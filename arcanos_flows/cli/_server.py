"""Which Prefect server a CLI run uses, and the ``arcanos-flows server start|stop|status`` commands.

Order of preference: a configured ``PREFECT_API_URL`` (environment, Prefect profile, ``.env``, ``prefect.toml``);
else the server recorded by ``arcanos-flows server start`` when it answers within 0.2 s; else Prefect's
temporary server, started for this process alone (what a fresh machine gets).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Literal

from rich.console import Console
from rich.text import Text

from arcanos_flows.cli import local_server
from arcanos_flows.cli.local_server import Discovery, LocalServerError
from arcanos_flows.core.redaction import redact

__all__ = ["PrefectTarget", "select_prefect_api", "start", "status", "stop"]

_START_HINT = "`arcanos-flows server start` keeps a local server running and makes the next runs faster"


@dataclass(frozen=True)
class PrefectTarget:
    """Where this process's flow runs go.

    Attributes:
        kind: ``configured`` (``PREFECT_API_URL`` or a profile), ``local`` (the server recorded by ``server
            start``) or ``temporary`` (Prefect's temporary server, stopped with this process).
        api_url: The API URL, unless temporary.
        discovery: What was found when looking for the recorded server.
    """

    kind: Literal["configured", "local", "temporary"]
    api_url: str | None
    discovery: Discovery

    @property
    def temporary(self) -> bool:
        """Whether runs go to Prefect's temporary server (nothing outlives this process)."""
        return self.kind == "temporary"

    def describe(self) -> str:
        """Where runs go, for one status line."""
        if self.kind == "configured":
            return f"Prefect API {self.api_url}"
        if self.kind == "local":
            return f"the local Prefect server at {self.api_url} (from `arcanos-flows server start`)"
        return "Prefect's temporary local server (PREFECT_API_URL is not set)"

    def hint(self) -> str | None:
        """Why the recorded server was not used, and how to make the next run faster; ``None`` when not needed."""
        if self.kind != "temporary":
            return None
        record = self.discovery.record
        if self.discovery.status == "not-answering" and record is not None:
            return (
                f"The server recorded by `arcanos-flows server start` ({record.api_url}, pid {record.pid}) did not "
                f"answer within {local_server.PROBE_TIMEOUT:g} s; see its log {record.log_path} or restart it with "
                "`arcanos-flows server stop` and `arcanos-flows server start`."
            )
        if self.discovery.status == "stale":
            where = f" ({record.api_url})" if record is not None else ""
            return f"The server recorded by `arcanos-flows server start`{where} is no longer running; {_START_HINT}."
        return f"Tip: {_START_HINT}."


def select_prefect_api() -> PrefectTarget:
    """Decide where this process's runs go, and point Prefect there; call before the first flow run.

    Reusing the recorded server sets ``PREFECT_API_URL`` in this process's environment (so that processes it
    starts, e.g. ``serve``'s flow runs, use it too) and refreshes Prefect's settings.
    """
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return PrefectTarget("configured", configured, Discovery("none"))
    found = local_server.discover()
    from prefect.settings import get_current_settings

    configured = get_current_settings().api.url
    if configured:  # a profile, .env or prefect.toml: the user's choice wins
        return PrefectTarget("configured", configured, found)
    if found.api_url is not None:
        from prefect.context import refresh_global_settings_context

        os.environ["PREFECT_API_URL"] = found.api_url
        refresh_global_settings_context()
        return PrefectTarget("local", found.api_url, found)
    return PrefectTarget("temporary", None, found)


def announce(console: Console, target: PrefectTarget, what: str) -> None:
    """One dim line saying where ``what`` runs, and the hint when it falls back to the temporary server."""
    console.print(Text(f"{what} on {target.describe()}", style="dim"), soft_wrap=True)
    hint = target.hint()
    if hint:
        console.print(Text(hint, style="dim yellow" if target.discovery.status != "none" else "dim"), soft_wrap=True)


def _usage_lines(record: local_server.ServerRecord) -> list[str]:
    return [
        f"API: {record.api_url}",
        f"UI:  {record.ui_url}",
        f"Log: {record.log_path}",
        "`arcanos-flows run research`, `demo`, `serve` and `automations` use it while PREFECT_API_URL is not set.",
        f"Other tools (the prefect CLI, your scripts): export PREFECT_API_URL={record.api_url}",
        "Stop it with `arcanos-flows server stop`.",
    ]


def start(console: Console, errors: Console, *, host: str, port: int, timeout: float) -> int:
    """``server start``: start (or find) the background server and say how to use it; returns the exit code."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        errors.print(
            Text(
                f"Warning: binding to {host} exposes the Prefect API (it has no authentication) beyond this machine.",
                style="yellow",
            ),
            soft_wrap=True,
        )
    if not local_server.read_record():
        errors.print(Text(f"Starting a Prefect server on {local_server.server_url(host, port)}…", style="dim"))
    try:
        result = local_server.start_server(host, port, timeout=timeout)
    except LocalServerError as exc:
        errors.print(Text(f"Error: {redact(str(exc))}", style="red"), soft_wrap=True)
        return 1
    record = result.record
    if result.already_running:
        console.print(f"A Prefect server is already running (pid {record.pid}).", markup=False)
        if (record.host, record.port) != (host, port):
            errors.print(
                Text(
                    f"It listens on {record.host}:{record.port}, not {host}:{port}; `arcanos-flows server stop` "
                    "first to move it.",
                    style="yellow",
                ),
                soft_wrap=True,
            )
    else:
        console.print(f"Prefect server started in {result.seconds:.1f}s (pid {record.pid}).", markup=False)
    for line in _usage_lines(record):
        console.print(line, markup=False, soft_wrap=True)
    if os.environ.get("PREFECT_API_URL") and os.environ["PREFECT_API_URL"] != record.api_url:
        errors.print(
            Text(
                f"Note: PREFECT_API_URL is set to {os.environ['PREFECT_API_URL']} in this shell, so runs go there, "
                "not to this server.",
                style="yellow",
            ),
            soft_wrap=True,
        )
    return 0


def stop(console: Console, *, grace: float) -> int:
    """``server stop``: stop the recorded server by its PID; returns the exit code (0 also when none ran)."""
    try:
        result = local_server.stop_server(grace=grace)
    except OSError as exc:
        console.print(Text(f"Error: could not stop the server: {exc}", style="red"), soft_wrap=True)
        return 1
    record = result.record
    if result.outcome == "none":
        console.print("No Prefect server started by `arcanos-flows server start` is recorded.", markup=False)
    elif result.outcome == "stale" and record is not None:
        console.print(
            f"The recorded Prefect server (pid {record.pid}) was no longer running; removed its record.", markup=False
        )
    elif record is not None:
        console.print(
            f"Stopped the Prefect server at {record.api_url} (pid {record.pid}, {result.signal}).", markup=False
        )
    return 0


def status(console: Console, *, as_json: bool) -> int:
    """``server status``: exit code 0 when the recorded server runs and answers, 1 otherwise."""
    record = local_server.read_record()
    running = record is not None and local_server.is_running(record)
    healthy = record is not None and running and local_server.is_healthy(record.api_url, timeout=2.0)
    if as_json:
        document = {
            "running": running,
            "healthy": healthy,
            "state_file": str(local_server.state_dir() / local_server.STATE_FILE),
            "server": json.loads(record.to_json()) if record is not None else None,
        }
        console.print_json(json.dumps(document))
        return 0 if healthy else 1
    if record is None:
        console.print(f"No Prefect server is recorded; {_START_HINT}.", markup=False, soft_wrap=True)
        return 1
    if not running:
        console.print(
            f"The recorded Prefect server (pid {record.pid}, {record.api_url}) is not running; "
            "`arcanos-flows server start` starts a new one.",
            markup=False,
            soft_wrap=True,
        )
        return 1
    state = "running" if healthy else "running, but not answering /api/health"
    console.print(f"Prefect server {state} (pid {record.pid}, started {record.started_at}).", markup=False)
    for line in _usage_lines(record)[:3]:
        console.print(line, markup=False, soft_wrap=True)
    return 0 if healthy else 1
