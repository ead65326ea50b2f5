"""What every command shares: the two consoles, settings loading, the one-line error exit, option types.

Importing this module never imports Prefect (nor the OpenAI SDK): commands import what they need when they run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from arcanos_flows.core.redaction import redact
from arcanos_flows.core.variables import CREDENTIALS_BLOCK_VARIABLE

if TYPE_CHECKING:
    from arcanos_flows.cli._server import PrefectTarget
    from arcanos_flows.core.settings import ArcanosSettings, NotifierSettings

__all__ = [
    "CREDENTIALS_BLOCK_VARIABLE",
    "JsonOption",
    "MetaOption",
    "connect_prefect",
    "console",
    "err_console",
    "exit_with_error",
    "failure_line",
    "load_notifier_settings",
    "load_settings",
    "parse_meta",
    "prepare_prefect",
    "uses_credentials_block",
]

EPHEMERAL_STARTUP_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"

console = Console(highlight=False)
"""Results: reports, answers, tables (stdout)."""
err_console = Console(stderr=True, highlight=False)
"""Progress, status and errors (stderr)."""


def exit_with_error(message: str, code: int = 1) -> NoReturn:
    """Print one redacted line to stderr and exit with ``code`` (1 failure, 2 configuration or usage)."""
    err_console.print(Text(f"Error: {redact(message)}", style="red"), soft_wrap=True)
    raise typer.Exit(code)


def prepare_prefect() -> None:
    """Prepare the environment before Prefect is imported (it reads its settings then)."""
    # A first run creates Prefect's database, which
    # on a slow or busy machine outlasts the temporary server's default 20 s start-up timeout.
    os.environ.setdefault(EPHEMERAL_STARTUP_TIMEOUT_VARIABLE, "120")


def connect_prefect(what: str | None = None) -> PrefectTarget:
    """Pick the Prefect server for this process's runs (see :mod:`arcanos_flows.cli._server`) and say which.

    Imports Prefect (with :func:`arcanos_flows.cli._flowrun.heavy_imports`); call it once a command knows it
    will run something.
    """
    from arcanos_flows.cli import _flowrun as _cli_flowrun
    from arcanos_flows.cli import _server as _cli_server

    with _cli_flowrun.heavy_imports():
        target = _cli_server.select_prefect_api()
    if what is not None:
        _cli_server.announce(err_console, target, what)
    return target


def uses_credentials_block() -> bool:
    """Whether ``ARCANOS_CREDENTIALS_BLOCK`` names a credentials block to load settings from."""
    return bool(os.environ.get(CREDENTIALS_BLOCK_VARIABLE))


def load_settings(*, allow_block: bool = True) -> ArcanosSettings:
    """The reasoning settings (block named by ``ARCANOS_CREDENTIALS_BLOCK``, else environment and ``.env``).

    Exits with code 2 on a configuration error. Only the block lookup imports Prefect.
    """
    from arcanos_flows.core.errors import ConfigurationError

    try:
        if allow_block and uses_credentials_block():
            from arcanos_flows.prefect.credentials import resolve_settings

            return resolve_settings()
        from arcanos_flows.core.settings import ArcanosSettings

        return ArcanosSettings()
    except ConfigurationError as exc:
        exit_with_error(str(exc), 2)


def load_notifier_settings() -> NotifierSettings:
    """The webhook, secret and spool settings; exits with code 2 on a configuration error."""
    from arcanos_flows.core.errors import ConfigurationError

    try:
        if uses_credentials_block():
            from arcanos_flows.prefect.credentials import load_notifier_settings as from_block

            return from_block()
        from arcanos_flows.core.settings import NotifierSettings

        return NotifierSettings()
    except ConfigurationError as exc:
        exit_with_error(str(exc), 2)


def parse_meta(values: list[str] | None) -> dict[str, str]:
    """Turn ``--meta key=value`` options into audit metadata, checked against OpenAI's limits.

    Examples:
        >>> parse_meta(["ticket=OPS-7", "note=a=b"])
        {'ticket': 'OPS-7', 'note': 'a=b'}
    """
    from arcanos_flows.core.errors import InvalidReasoningInput
    from arcanos_flows.core.metadata import build_metadata

    metadata: dict[str, str] = {}
    for item in values or []:
        key, separator, value = item.partition("=")
        key = key.strip()
        if not separator or not key:
            raise typer.BadParameter(f"{item!r} is not key=value (e.g. --meta ticket=OPS-7)", param_hint="'--meta'")
        if key in metadata:
            raise typer.BadParameter(f"key {key!r} is given twice", param_hint="'--meta'")
        metadata[key] = value
    try:
        return build_metadata(metadata)
    except InvalidReasoningInput as exc:
        raise typer.BadParameter(str(exc), param_hint="'--meta'") from None


def failure_line(error: BaseException) -> str:
    """One line for a failed call: its incident class, the message's first line, HTTP status and request id."""
    from arcanos_flows.core.errors import classify

    facts = classify(error)
    details = [f"HTTP {facts.http_status}" if facts.http_status else None, facts.request_id]
    shown = ", ".join(detail for detail in details if detail)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{facts.incident_class.value}: {text}" + (f" ({shown})" if shown else "")


MetaOption = Annotated[
    list[str] | None,
    typer.Option("--meta", "-m", metavar="KEY=VALUE", help="Audit metadata for every request; repeatable."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
