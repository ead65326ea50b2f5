"""``arcanos-flows demo``: the whole path on a fresh machine, with no API key and no Prefect server.

1. Starts two loopback stand-ins, labelled as such: the bundled fake OpenAI-compatible server and a webhook
   receiver that verifies signatures like a maintenance system would. With ``OPENAI_API_KEY`` set (in the
   environment or ``.env``) the research run uses your real configuration instead, and says so.
2. Runs the research flow on Prefect and shows the report, the usage table and the metadata every request
   carried. The runs go to ``PREFECT_API_URL`` when set, else to the server of ``arcanos-flows server start``
   when it is running (they then stay in its UI), else to Prefect's temporary server: on a fresh machine the
   demo needs nothing running (and that server sends Prefect no usage telemetry, unless your environment or
   Prefect profile turns it on).
3. Runs the maintenance check against the stand-in, scripted to answer 401 as a revoked key would: the
   step fails, its hook reports one incident, and the demo shows what the receiver got.

The demo's settings live in this process's environment only while it runs (restored afterwards); its
incidents go to a temporary spool, so a backlog in your own spool is neither sent to the stand-in nor touched.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli import _render as _cli_render
from arcanos_flows.cli._tables import FirstThatFits, key_column, table_style, with_notes
from arcanos_flows.core.redaction import mask, redact
from arcanos_flows.incidents.model import Incident

if TYPE_CHECKING:
    from arcanos_flows.cli._server import PrefectTarget

__all__ = ["DEMO_MODEL", "run_demo"]

DEMO_MODEL = "ft:gpt-5.1-2025-11-13:arcanos::demo"
"""The model id the stand-in server answers as."""

DEMO_AUDIT = {"ticket": "DEMO-1", "requested_by": "arcanos-flows demo"}
DEMO_CONFIRMATION_TOKEN = "demo-confirmation-token"  # noqa: S105 - an audit label, not a secret
STAND_IN_LATENCY = 0.3
"""Seconds the stand-in server waits before answering, so the steps' progress is visible."""

_ENV_FILE = "ARCANOS_ENV_FILE"
_BLOCK = "ARCANOS_CREDENTIALS_BLOCK"
_ANALYTICS = "PREFECT_SERVER_ANALYTICS_ENABLED"


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, with ``None``, unset) variables of this process's environment, restoring them on exit.

    Examples:
        >>> with scoped_environ({"ARCANOS_DEMO_EXAMPLE": "1"}):
        ...     os.environ["ARCANOS_DEMO_EXAMPLE"]
        '1'
        >>> "ARCANOS_DEMO_EXAMPLE" in os.environ
        False
    """
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _has_api_key() -> bool:
    if os.environ.get("OPENAI_API_KEY"):
        return True
    from dotenv import dotenv_values

    path = Path(os.environ.get(_ENV_FILE) or ".env").expanduser()
    try:
        return bool(path.is_file() and dotenv_values(path).get("OPENAI_API_KEY"))
    except (OSError, UnicodeDecodeError):
        return False


def _new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@dataclass
class _StandIns:
    """The loopback servers and the environment that points at them."""

    openai: Any
    receiver: Any
    api_key: str
    webhook_secret: str
    workdir: Path

    def environment(self) -> dict[str, str | None]:
        empty_env_file = self.workdir / "empty.env"
        empty_env_file.touch()
        return {
            "OPENAI_API_KEY": self.api_key,
            "ARCANOS_FINE_TUNED_MODEL": DEMO_MODEL,
            "OPENAI_BASE_URL": self.openai.base_url,
            "ARCANOS_OPENAI_API": "chat",
            "ARCANOS_CONFIRMATION_TOKEN": None,
            _BLOCK: None,
            _ENV_FILE: str(empty_env_file),  # nothing from your .env leaks into the stand-in runs
            **self.notifier_environment(),
        }

    def notifier_environment(self) -> dict[str, str | None]:
        return {
            "ARCANOS_MAINTENANCE_WEBHOOK": self.receiver.url,
            "ARCANOS_WEBHOOK_SECRET": self.webhook_secret,
            "ARCANOS_INCIDENT_SPOOL": str(self.workdir / "spool"),
            "ARCANOS_ALLOW_INSECURE_WEBHOOK": None,
        }


def _label(out: Console, text: str) -> None:
    out.print(Text.assemble(("LOCAL STAND-IN: ", "bold yellow"), text), soft_wrap=True)


def _metadata_table(metadata: Mapping[str, Any]) -> Table:
    table = Table(title="Metadata of the last request the model received")
    key_column(table, "key")
    table.add_column("value", overflow="fold")
    for key, value in metadata.items():
        shown = mask(str(value)) if key == "confirmation_token" else redact(str(value))
        table.add_row(Text(str(key)), Text(shown))
    return table


def _deliveries_table(deliveries: list[Any]) -> RenderableType:
    """What the receiver got: one row per delivery, the reasons listed below, each under its task run's name.

    Ids, classes, signatures and task run names are never cut; on a narrow terminal the task run moves from its
    column to the reasons below, then the HTTP status goes.
    """
    bodies = [delivery.json if isinstance(delivery.json, dict) else {} for delivery in deliveries]
    task_runs = [str((body.get("context") or {}).get("task_run_name", "")) for body in bodies]

    def layout(task_run: bool, http: bool, *, narrow: bool) -> Table:
        table = Table(title="Incidents the receiver got", **table_style(narrow=narrow))
        table.add_column("#", justify="right", no_wrap=True)
        key_column(table, "webhook-id")
        key_column(table, "class")
        if http:
            table.add_column("http", no_wrap=True)
        key_column(table, "signature")
        if task_run:
            key_column(table, "task run")
        for number, (delivery, body, name) in enumerate(zip(deliveries, bodies, task_runs, strict=True), 1):
            row: list[RenderableType] = [
                str(number),
                Text(delivery.headers.get("webhook-id", "")),
                Text(str(body.get("incident_class", "?"))),
            ]
            if http:
                row.append(str(body.get("http_status") or ""))
            row.append(Text("valid", style="green") if delivery.signature_valid else Text("INVALID", style="red"))
            if task_run:
                row.append(Text(name))
            table.add_row(*row)
        return table

    table = FirstThatFits(
        layout(True, True, narrow=False),
        layout(True, True, narrow=True),
        layout(False, True, narrow=False),
        layout(False, True, narrow=True),
        layout(False, False, narrow=True),
    )
    reasons = [
        (name, _cli_render.shorten(str(body.get("reason", "")), _cli_render.REASON_LIMIT))
        for body, name in zip(bodies, task_runs, strict=True)
    ]
    return with_notes(table, reasons)


def run_demo(out: Console, err: Console, *, topic: str, target: PrefectTarget | None = None) -> int:
    """Run the demo; return the exit code (0 when everything happened as designed).

    Args:
        out: Where the narrative, report and tables go (stdout).
        err: Where the live progress goes (stderr).
        topic: Topic of the research run.
        target: The Prefect server the CLI chose (:func:`arcanos_flows.cli._server.select_prefect_api`); chosen
            here when not given.
    """
    if target is None:
        from arcanos_flows.cli import _flowrun as _cli_flowrun
        from arcanos_flows.cli import _server as _cli_server

        with _cli_flowrun.heavy_imports():
            target = _cli_server.select_prefect_api()
    from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

    real = _has_api_key()
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="arcanos-demo-")))
        stand_ins = _StandIns(
            openai=stack.enter_context(FakeOpenAIServer(latency=STAND_IN_LATENCY)),
            receiver=None,
            api_key="sk-demo-" + secrets.token_hex(16),
            webhook_secret=_new_webhook_secret(),
            workdir=workdir,
        )
        stand_ins.receiver = stack.enter_context(WebhookReceiver(secret=stand_ins.webhook_secret))
        out.print(Rule("arcanos-flows demo"))
        if real:
            from arcanos_flows.cli._shared import load_settings

            settings = load_settings()
            out.print(
                Text(
                    f"Using your configuration for the research run: {settings.fine_tuned_model} at "
                    f"{settings.openai_base_url or 'https://api.openai.com/v1'} with OPENAI_API_KEY "
                    f"{mask(settings.openai_api_key.get_secret_value())}. This calls the real model and is billed.",
                    style="bold",
                ),
                soft_wrap=True,
            )
            _label(
                out,
                f"fake OpenAI-compatible server at {stand_ins.openai.base_url} — used only for the failing "
                "maintenance check below, so your account is never made to fail",
            )
        else:
            _label(
                out,
                f"fake OpenAI-compatible server at {stand_ins.openai.base_url} — no real model is called "
                f"(it answers as {DEMO_MODEL}; set OPENAI_API_KEY to use yours)",
            )
        _label(
            out,
            f"webhook receiver at {stand_ins.receiver.url} — stands in for your maintenance system and verifies "
            "each incident's Standard Webhooks signature",
        )
        research_env = {} if real else stand_ins.environment()
        with scoped_environ(research_env):
            research_ok = _research(out, err, stand_ins, topic=topic, real=real, target=target)
        stand_ins.receiver.clear()
        with scoped_environ(stand_ins.environment()):
            check_ok = _failing_check(out, err, stand_ins, Reply)
        out.print(Rule())
        if research_ok and check_ok:
            out.print(
                Text(
                    "Demo complete: the research run completed, and the failing step became exactly one signed "
                    "incident at the webhook.",
                    style="bold green",
                ),
                soft_wrap=True,
            )
            out.print(
                "Next: put OPENAI_API_KEY, ARCANOS_FINE_TUNED_MODEL and ARCANOS_MAINTENANCE_WEBHOOK in .env, run "
                "`arcanos-flows check`, then `arcanos-flows run research --topic ...`.",
                markup=False,
                soft_wrap=True,
            )
            return 0
        out.print(Text("The demo did not run as designed (see above).", style="bold red"), soft_wrap=True)
        return 1


def _research(
    out: Console, err: Console, stand_ins: _StandIns, *, topic: str, real: bool, target: PrefectTarget
) -> bool:
    from arcanos_flows.cli import _flowrun as _cli_flowrun
    from arcanos_flows.cli import _server as _cli_server

    questions = [
        f"Which layers make up: {topic}?",
        "Who confirms each layer, and how is a confirmation recorded?",
        "What happens when a confirmation is missing?",
    ]
    out.print(Rule("1. Research flow: a plan, 3 parallel investigations, a synthesis"))
    _cli_server.announce(out, target, "Running")
    outcome = _cli_flowrun.run_flow(
        err,
        _research_flow(err),
        {
            "topic": topic,
            "questions": questions,
            "audit": DEMO_AUDIT,
            "confirmation_token": DEMO_CONFIRMATION_TOKEN,
            "max_parallel": 4,
        },
    )
    report = _cli_render.report_of(outcome)
    if report is not None:
        _cli_render.print_report(out, report)
    if not real:
        requests = stand_ins.openai.completion_requests
        if requests and isinstance(requests[-1].json, dict):
            out.print(_metadata_table(requests[-1].json.get("metadata") or {}))
    _cli_render.print_run_footer(out, outcome)
    if not outcome.completed:
        out.print(Text(f"✗ The research run ended {outcome.state_name}: {outcome.error_line}", style="red"))
        return False
    out.print(Text(f"✓ Research run completed in {outcome.elapsed:.1f}s.", style="green"))
    return True


def _research_flow(err: Console) -> Any:
    from arcanos_flows.cli import _flowrun as _cli_flowrun

    _cli_flowrun.quiet_prefect_console()
    # Everything the demo talks to is local: its temporary Prefect server (when it starts one) sends no usage
    # telemetry to Prefect, unless the user's environment or profile says otherwise. The server keeps the
    # environment it started with.
    analytics = os.environ.get(_ANALYTICS, "false")
    with (
        scoped_environ({_ANALYTICS: analytics}),
        _cli_flowrun.temporary_server_starting(err),
        _cli_flowrun.heavy_imports(),
    ):
        from arcanos_flows.flows.research import research_flow

    return research_flow


def _failing_check(out: Console, err: Console, stand_ins: _StandIns, reply: Any) -> bool:
    from arcanos_flows.cli import _flowrun as _cli_flowrun
    from arcanos_flows.flows.maintenance import maintenance_check_flow

    out.print(Rule("2. A step that fails: the maintenance check, answered 401 as for a revoked key"))
    _label(out, "the fake server is scripted to answer the next request with HTTP 401 (invalid_api_key)")
    stand_ins.openai.script(reply.error(401))
    outcome = _cli_flowrun.run_flow(err, maintenance_check_flow, {})
    _cli_render.print_run_footer(out, outcome)
    if outcome.completed:
        out.print(Text("✗ The maintenance check completed, but it was scripted to fail.", style="red"))
        return False
    out.print(Text(f"✓ The maintenance check failed as scripted: {outcome.error_line}", style="green"), soft_wrap=True)
    try:
        delivered = stand_ins.receiver.wait_for(1, timeout=10)
    except AssertionError:
        out.print(Text("✗ No incident reached the webhook receiver.", style="red"))
        return False
    out.print(_deliveries_table(stand_ins.receiver.deliveries))
    incident = Incident.model_validate(delivered[0].json)
    out.print(
        Text(
            f"Incident {incident.incident_id} ({incident.incident_class.value}) was delivered once, signed; "
            f"its webhook-id is its incident id, so a receiver drops a redelivery. Full JSON:",
            style="dim",
        ),
        soft_wrap=True,
    )
    out.print_json(incident.to_json())
    ok = (
        len(delivered) == 1
        and incident.incident_class.value == "authentication"
        and delivered[0].signature_valid is True
        and delivered[0].headers.get("webhook-id") == str(incident.incident_id)
    )
    if not ok:
        out.print(Text("✗ Expected exactly one signed authentication incident.", style="red"))
    return ok
