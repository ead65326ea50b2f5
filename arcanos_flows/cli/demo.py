"""``arcanos-flows demo``: the whole path on this machine, no API key needed."""

from __future__ import annotations

from typing import Annotated

import typer

from arcanos_flows.cli._shared import connect_prefect, console, err_console, prepare_prefect

__all__ = ["demo"]


def demo(
    topic: Annotated[
        str, typer.Option("--topic", "-t", help="What the demo research run is about.")
    ] = "Confirmation layers of the Arcanos maintenance AI",
) -> None:
    """Show the whole path on this machine, no API key needed.

    Starts a fake OpenAI-compatible server and a webhook receiver on loopback (labelled stand-ins; with
    OPENAI_API_KEY set the research run uses your real configuration instead), runs the research flow on
    Prefect (the server of `arcanos-flows server start` when it is running, else a temporary one), then a
    maintenance check that fails on purpose, and shows the report, the usage table and the incident the
    receiver got. Exit code 0 when the demo ran as designed.
    """
    prepare_prefect()
    target = connect_prefect()
    from arcanos_flows.cli import _demo

    raise typer.Exit(_demo.run_demo(console, err_console, topic=topic, target=target))
