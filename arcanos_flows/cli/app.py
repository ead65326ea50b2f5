"""The ``arcanos-flows`` command line: ad-hoc research runs, one-off prompts, checks, the incident spool, the demo.

Exit codes: 0 success, 1 a flow, run or check failed, 2 configuration or usage error (one clear line, no
traceback). Secrets are only ever printed masked.

One module per command (group): :mod:`~arcanos_flows.cli.prompt`, :mod:`~arcanos_flows.cli.check`,
:mod:`~arcanos_flows.cli.run`, :mod:`~arcanos_flows.cli.incidents`, :mod:`~arcanos_flows.cli.demo`,
:mod:`~arcanos_flows.cli.serve`, :mod:`~arcanos_flows.cli.automations`, :mod:`~arcanos_flows.cli.server`; what
they run lives in the private modules beside them. Importing the CLI must stay cheap: ``--help``, ``prompt``,
``check``, ``incidents`` and ``server`` never import Prefect. Commands that run flows use, in this order, a
configured ``PREFECT_API_URL``, the server started by ``arcanos-flows server start`` (when it answers at once),
or Prefect's temporary server.
"""

from __future__ import annotations

import gc
import os
import sys

import typer
from rich.text import Text

from arcanos_flows.cli._shared import err_console
from arcanos_flows.cli.automations import automations_app
from arcanos_flows.cli.check import check
from arcanos_flows.cli.demo import demo
from arcanos_flows.cli.incidents import incidents_app
from arcanos_flows.cli.prompt import prompt
from arcanos_flows.cli.run import run_app
from arcanos_flows.cli.serve import serve
from arcanos_flows.cli.server import server_app
from arcanos_flows.core.redaction import redact

__all__ = ["app", "main"]

app = typer.Typer(
    name="arcanos-flows",
    help="Run arcanos-flows research flows, prompts, checks and incident replay.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    # Tracebacks with locals would print the API key; unexpected errors are reported in main() instead.
    pretty_exceptions_enable=False,
)
app.command()(prompt)
app.command()(check)
app.add_typer(run_app, name="run")
app.add_typer(incidents_app, name="incidents")
app.command()(demo)
app.command()(serve)
app.add_typer(automations_app, name="automations")
app.add_typer(server_app, name="server")


@app.command()
def version() -> None:
    """Print the installed arcanos-flows version."""
    from arcanos_flows._version import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``arcanos-flows`` console script."""
    try:
        app()
    except Exception as exc:
        # Known problems are handled in the commands; this is the last line: one redacted line, no locals.
        from arcanos_flows.core.errors import ConfigurationError

        code = 2 if isinstance(exc, ConfigurationError) else 1
        message = f"Error: unexpected {type(exc).__name__}: {redact(str(exc)).splitlines()[0] if str(exc) else ''}"
        err_console.print(Text(message, style="red"), soft_wrap=True)
        if os.environ.get("ARCANOS_CLI_TRACEBACK"):
            import traceback

            sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        sys.exit(code)
    finally:
        # The command is done and the process ends: its objects go with it. Freezing them spares the
        # interpreter's last full garbage collection, about half a second once Prefect and the SDK are loaded.
        gc.freeze()
