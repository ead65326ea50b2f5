"""``arcanos-flows run``: run a flow now, in this process, and show its progress."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from arcanos_flows.cli._shared import (
    MetaOption,
    connect_prefect,
    console,
    err_console,
    load_settings,
    parse_meta,
    prepare_prefect,
)

__all__ = ["run_app", "run_research"]

run_app = typer.Typer(help="Run a flow now, in this process, and show its progress.", no_args_is_help=True)


@run_app.command("research")
def run_research(
    topic: Annotated[str, typer.Option("--topic", "-t", help="What to research.")],
    question: Annotated[
        list[str] | None,
        typer.Option("--question", "-q", metavar="QUESTION", help="A question to investigate in parallel; repeatable."),
    ] = None,
    meta: MetaOption = None,
    confirmation_token: Annotated[
        str | None,
        typer.Option("--confirmation-token", help="Added to the metadata of every request of the run."),
    ] = None,
    max_parallel: Annotated[
        int, typer.Option("--max-parallel", min=1, max=32, help="Investigation steps in flight at once.")
    ] = 4,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON lines instead of the report: one object per step as it finishes "
            '("event": "step"), then the run\'s summary ("event": "summary").',
        ),
    ] = False,
    show_logs: Annotated[
        bool, typer.Option("--show-logs", help="Also print Prefect's own run logs on stderr.")
    ] = False,
    batch: Annotated[
        bool,
        typer.Option(
            "--batch",
            help="Run the investigations as one OpenAI Batch API batch (half the price, up to 24 h); the plan and "
            "the synthesis stay direct. The report shows the batch id and its status history.",
        ),
    ] = False,
    batch_poll_interval: Annotated[
        float,
        typer.Option("--batch-poll-interval", min=0.01, help="With --batch: the longest wait between two polls (s)."),
    ] = 60.0,
) -> None:
    """Run the research flow now (plan, parallel investigations, synthesis) and print its report.

    Progress goes to stderr while the run runs: on a terminal, a live view of the steps (`3/5 steps`); otherwise
    one line per step as it finishes (status, tokens, seconds). Then the report, with its usage table, goes to
    stdout. With --json, stdout gets one JSON object per line instead: each step as it finishes, then the summary.

    Uses PREFECT_API_URL when set, else the server of `arcanos-flows server start` when it is running, else a
    temporary local server for this run alone. Exit code 0 when the run completed, 1 when it failed, 2 on
    configuration errors.
    """
    prepare_prefect()
    audit = parse_meta(meta)
    reserved = [key for key in audit if key.startswith("prefect.")]
    if reserved:
        raise typer.BadParameter(
            f"key {reserved[0]!r} is reserved: arcanos-flows sets the prefect.* keys", param_hint="'--meta'"
        )
    if not topic.strip():
        raise typer.BadParameter("the topic must not be blank", param_hint="'--topic'")
    if question is not None and any(not item.strip() for item in question):
        raise typer.BadParameter("questions must not be blank", param_hint="'--question'")
    load_settings()  # fail fast (exit 2) before Prefect starts
    connect_prefect("Running arcanos-research")
    from arcanos_flows.cli import _flowrun as _cli_flowrun
    from arcanos_flows.cli import _progress as _cli_progress
    from arcanos_flows.cli import _render as _cli_render

    # --json: each step's object goes to stdout as it finishes. Otherwise run_flow shows the steps (a live view,
    # or a line each when stderr is not a terminal); the steps it could not see finish get their line at the end.
    reporter = (
        _cli_progress.StepReporter(typer.echo, as_json=True)
        if as_json
        else _cli_progress.StepReporter(lambda line: err_console.print(Text(line), soft_wrap=True), as_json=False)
    )
    outcome = _cli_flowrun.run_research(
        err_console,
        topic=topic,
        questions=question or None,
        audit=audit or None,
        confirmation_token=confirmation_token,
        max_parallel=max_parallel,
        mode="batch" if batch else "direct",
        batch_poll_interval=batch_poll_interval,
        show_logs=show_logs,
        live=not as_json,
        on_step=reporter.on_step if as_json else None,
    )
    if as_json or not (show_logs or err_console.is_terminal):
        reporter.finish(_cli_render.report_of(outcome), outcome.steps)
    if as_json:
        typer.echo(_cli_render.outcome_json(outcome))
    else:
        _cli_render.print_outcome(console, outcome, errors=err_console)
    raise typer.Exit(outcome.exit_code)
