"""The ``arcanos-flows`` command line (filled in by the Prefect layer)."""

from __future__ import annotations

import typer

app = typer.Typer(help="Run arcanos-flows research flows, checks and incident replay.", no_args_is_help=True)


@app.command()
def version() -> None:
    """Print the installed arcanos-flows version."""
    from arcanos_flows._version import __version__

    typer.echo(__version__)


def main() -> None:
    """Entry point of the ``arcanos-flows`` console script."""
    app()
