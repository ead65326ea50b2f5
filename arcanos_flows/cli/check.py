"""``arcanos-flows check``: validate the configuration, reach the model and the webhook."""

from __future__ import annotations

from typing import Annotated

import typer

from arcanos_flows.cli._shared import console, uses_credentials_block

__all__ = ["check"]


def check(
    send_test: Annotated[
        bool,
        typer.Option(
            "--send-test",
            help="Also POST one signed 'arcanos.check' ping (not an incident) to the webhook and expect a 2xx.",
        ),
    ] = False,
) -> None:
    """Validate the configuration and reach the model (GET /models/{id}) and the maintenance webhook.

    Without --send-test the webhook is only probed with a HEAD request: no delivery is made.
    Exit code 0 when everything is fine, 1 when a check fails, 2 when the configuration is invalid.
    """
    from arcanos_flows.cli import _check as _cli_check

    raise typer.Exit(_cli_check.run_checks(console, send_test=send_test, use_block=uses_credentials_block()))
