"""``arcanos-flows serve``: the bundled deployments, served from this process for users without a worker.

Deployment names, tags, schedules and default parameters are those of ``prefect.yaml`` (``research``,
``maintenance-check``, ``incident-relay``), so ``arcanos-flows automations install`` finds the relay whichever
way it was deployed. Entrypoints are module paths (``arcanos_flows.flows.research.flow.research_flow``): the runner's
flow processes import the installed package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from arcanos_flows.cli._server import PrefectTarget

__all__ = ["deployments", "serve_deployments"]


def deployments(*, topic: str, cron: str, check_interval: int) -> list[Any]:
    """The runner deployments of the research flow, the maintenance check and the incident relay."""
    from prefect.types.entrypoint import EntrypointType

    from arcanos_flows.flows.maintenance import maintenance_check_flow
    from arcanos_flows.flows.relay import incident_relay_flow
    from arcanos_flows.flows.research import research_flow
    from arcanos_flows.prefect.decorator import ARCANOS_TAGS

    module = EntrypointType.MODULE_PATH
    return [
        research_flow.to_deployment(
            name="research",
            cron=cron,
            parameters={"topic": topic, "audit": {"source": "scheduled"}, "max_parallel": 4},
            tags=[*ARCANOS_TAGS, "research"],
            description="Scheduled research run (served by `arcanos-flows serve`).",
            entrypoint_type=module,
        ),
        maintenance_check_flow.to_deployment(
            name="maintenance-check",
            interval=check_interval,
            tags=[*ARCANOS_TAGS, "maintenance"],
            description="Heartbeat of the enforced model (served by `arcanos-flows serve`).",
            entrypoint_type=module,
        ),
        # Not tagged arcanos: the relay reports runs that failed; it must not trigger itself.
        incident_relay_flow.to_deployment(
            name="incident-relay",
            tags=["arcanos-relay"],
            description="Reports crashed or failed arcanos runs; started by the arcanos automation.",
            entrypoint_type=module,
        ),
    ]


def serve_deployments(
    console: Console,
    *,
    topic: str,
    cron: str,
    check_interval: int,
    limit: int | None = None,
    target: PrefectTarget | None = None,
) -> int:
    """Serve the deployments until interrupted; returns the exit code.

    ``target`` is where the CLI pointed Prefect (:func:`arcanos_flows.cli._server.select_prefect_api`); on
    Prefect's temporary server the deployments, their schedules and their runs vanish with this process.
    """
    from prefect import serve
    from prefect.settings import get_current_settings

    if target is not None and target.kind != "temporary":
        console.print(Text(f"Serving on {target.describe()}", style="dim"), soft_wrap=True)
    elif get_current_settings().api.url is None:
        console.print(
            Text(
                "PREFECT_API_URL is not set and no `arcanos-flows server start` server is running: serving on a "
                "temporary Prefect server that stops with this process (no UI to watch). Run `arcanos-flows server "
                "start` (or set PREFECT_API_URL) to keep the deployments and their runs.",
                style="yellow",
            ),
            soft_wrap=True,
        )
    served = deployments(topic=topic, cron=cron, check_interval=check_interval)
    options: dict[str, Any] = {} if limit is None else {"limit": limit}
    serve(*served, **options)
    return 0
