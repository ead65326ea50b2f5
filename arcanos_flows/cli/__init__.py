"""The ``arcanos-flows`` command line; :data:`app` is the Typer application, :func:`main` its entry point.

Importing the CLI never imports Prefect: commands import what they need when they run.
"""

from arcanos_flows.cli.app import app, main

__all__ = ["app", "main"]
