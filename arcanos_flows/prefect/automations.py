"""Prefect Automations that report the crashes no hook can see.

A flow run's hooks run in its own process or in the runner that watched it. A run started outside any runner
(a script, a notebook, ``arcanos-flows run``) that is SIGKILLed, or whose machine disappears, stays ``Running``
forever and reports nothing. :func:`install_automations` closes that gap on the Prefect server:

1. ``arcanos: mark silent runs crashed``: flow runs tagged ``arcanos`` send ``prefect.flow-run.heartbeat``
   events every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (at least 30); a run whose next heartbeat (or
   terminal state) does not arrive within the grace period is set to ``Crashed``.
2. ``arcanos: report crashed or failed runs``: every arcanos run that ends ``Crashed`` or ``Failed`` starts the
   relay deployment (:func:`arcanos_flows.flows.relay.incident_relay_flow`) with the run's id; the relay reports what
   no hook reported, under the incident id a hook would have used.

Examples:
    Deploy the relay (``prefect deploy --name incident-relay``), then, once per server::

        from arcanos_flows.prefect.automations import install_automations

        install_automations()  # or: arcanos-flows automations install
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect.automations import Automation, AutomationCore, ChangeFlowRunState, EventTrigger, Posture, RunDeployment
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import AutomationSort
from prefect.events.filters import AutomationFilter, AutomationFilterName
from prefect.events.schemas.automations import ResourceSpecificationDict
from prefect.exceptions import ObjectNotFound
from prefect.settings import get_current_settings

from arcanos_flows.core.errors import ConfigurationError

__all__ = [
    "ARCANOS_TAG",
    "DEFAULT_HEARTBEAT_GRACE",
    "DEFAULT_RELAY_DEPLOYMENT",
    "MINIMUM_HEARTBEAT_SECONDS",
    "RELAY_AUTOMATION",
    "RELAY_FLOW_NAME",
    "ZOMBIE_AUTOMATION",
    "install_automations",
    "relay_automation",
    "uninstall_automations",
    "zombie_automation",
]

ARCANOS_TAG = "arcanos"
"""The tag of the flow runs the automations watch (the deployments in ``prefect.yaml`` carry it)."""
ZOMBIE_AUTOMATION = "arcanos: mark silent runs crashed"
RELAY_AUTOMATION = "arcanos: report crashed or failed runs"
RELAY_FLOW_NAME = "arcanos-incident-relay"
"""The relay flow's name (:func:`arcanos_flows.flows.relay.incident_relay_flow`); its runs never start the relay."""
DEFAULT_RELAY_DEPLOYMENT = f"{RELAY_FLOW_NAME}/incident-relay"
MINIMUM_HEARTBEAT_SECONDS = 30
"""Prefect never sends flow run heartbeats more often than this, whatever the setting says."""
DEFAULT_HEARTBEAT_GRACE = timedelta(seconds=3 * MINIMUM_HEARTBEAT_SECONDS)
"""Silence after which a run counts as crashed: three missed heartbeats at the 30 s minimum."""

# Events that end a run's heartbeats legitimately: a run in one of these states is not a zombie. Suspended
# runs leave their process on purpose; Cancelling runs are being stopped by someone.
_END_OF_HEARTBEATS = frozenset(
    f"prefect.flow-run.{name}"
    for name in ("Completed", "Failed", "Crashed", "Cancelled", "Cancelling", "TimedOut", "Suspended")
)
_ARCANOS_RUNS: ResourceSpecificationDict = {
    "prefect.resource.role": "tag",
    "prefect.resource.id": f"prefect.tag.{ARCANOS_TAG}",
}
# Belt and braces against an automation loop: even if someone tags the relay's deployment "arcanos", the
# relay's own runs never start the relay.
_NOT_THE_RELAY: ResourceSpecificationDict = {
    "prefect.resource.role": "flow",
    "prefect.resource.name": f"!{RELAY_FLOW_NAME}",
}


def zombie_automation(heartbeat_grace: timedelta = DEFAULT_HEARTBEAT_GRACE) -> Automation:
    """The automation that sets silent arcanos runs to ``Crashed`` (not yet saved on the server).

    Args:
        heartbeat_grace: How long after a heartbeat the next heartbeat (or a terminal state) must arrive; it
            must exceed the workers' ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (30 s at the least).

    Raises:
        ValueError: The grace is not longer than the 30 s minimum heartbeat interval.

    Examples:
        >>> zombie_automation().trigger.within.total_seconds()
        90.0
    """
    if heartbeat_grace <= timedelta(seconds=MINIMUM_HEARTBEAT_SECONDS):
        raise ValueError(
            f"heartbeat_grace must be longer than {MINIMUM_HEARTBEAT_SECONDS} s, the shortest interval between "
            f"flow run heartbeats; got {heartbeat_grace.total_seconds():g} s"
        )
    seconds = heartbeat_grace.total_seconds()
    return Automation(
        name=ZOMBIE_AUTOMATION,
        description=(
            f"Marks a flow run tagged '{ARCANOS_TAG}' Crashed when no heartbeat or terminal state follows its "
            f"last heartbeat within {seconds:g} s (its process was killed or its machine lost). "
            "Installed by arcanos-flows."
        ),
        trigger=EventTrigger(
            posture=Posture.Proactive,
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *_END_OF_HEARTBEATS},
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related=_ARCANOS_RUNS,
            for_each={"prefect.resource.id"},
            threshold=1,
            within=heartbeat_grace,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                name="Crashed",
                message=f"No heartbeat for {seconds:g} s: the flow run's process is gone (arcanos automation).",
            )
        ],
    )


def relay_automation(relay_deployment_id: Any) -> Automation:
    """The automation that runs the relay deployment for every crashed or failed arcanos run (not yet saved).

    The relay gets the run's id through a Jinja template rendered by the server when the automation fires.

    Args:
        relay_deployment_id: The id of the relay deployment.

    Examples:
        >>> import uuid
        >>> relay_automation(uuid.UUID(int=1)).actions[0].parameters
        {'flow_run_id': {'__prefect_kind': 'jinja', 'template': '{{ flow_run.id }}'}}
    """
    return Automation(
        name=RELAY_AUTOMATION,
        description=(
            f"Starts the {RELAY_FLOW_NAME} deployment for a flow run tagged '{ARCANOS_TAG}' that ended Crashed or "
            "Failed; the relay reports it to the maintenance webhook unless a hook already did. "
            "Installed by arcanos-flows."
        ),
        trigger=EventTrigger(
            posture=Posture.Reactive,
            # Every Failed-type state counts (Failed, TimedOut, ...), so match on the state type label.
            expect={"prefect.flow-run.*"},
            match={"prefect.resource.id": "prefect.flow-run.*", "prefect.state-type": ["CRASHED", "FAILED"]},
            match_related=[_ARCANOS_RUNS, _NOT_THE_RELAY],
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=relay_deployment_id,
                # An explicit "jinja" placeholder renders to a string: the v1 shorthand ("{{ flow_run.id }}" as
                # a plain string) is rendered through `tojson`, which cannot serialise the UUID.
                parameters={"flow_run_id": {"__prefect_kind": "jinja", "template": "{{ flow_run.id }}"}},
            )
        ],
    )


def _named(client: SyncPrefectClient, name: str) -> list[Any]:
    """The automations called ``name``, newest first."""
    return client.read_automations(
        automations=AutomationFilter(name=AutomationFilterName(any_=[name])), sort=AutomationSort.CREATED_DESC
    )


def _save(client: SyncPrefectClient, automation: Automation) -> Automation:
    existing = _named(client, automation.name)
    if not existing:
        automation.id = client.create_automation(AutomationCore(**automation.model_dump(exclude={"id"})))
        return automation
    # The oldest one keeps its id, so links to it in the UI stay valid across installs.
    *duplicates, keep = existing
    # The update endpoint refuses `owner_resource` (it is fixed at creation).
    client.update_automation(keep.id, AutomationCore(**automation.model_dump(exclude={"id", "owner_resource"})))
    for duplicate in duplicates:
        client.delete_automation(duplicate.id)
    automation.id = keep.id
    return automation


def install_automations(
    relay_deployment: str = DEFAULT_RELAY_DEPLOYMENT,
    heartbeat_grace: timedelta = DEFAULT_HEARTBEAT_GRACE,
) -> list[Automation]:
    """Create or update the two arcanos automations on the current Prefect server; safe to run again.

    Automations are matched by name: an existing one is replaced in place (same id), duplicates are removed.

    Args:
        relay_deployment: ``<flow name>/<deployment name>`` of the deployed relay flow.
        heartbeat_grace: Silence after a heartbeat before a run counts as crashed; longer than the workers'
            ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``.

    Returns:
        The zombie detector and the relay trigger, with their server ids.

    Raises:
        ConfigurationError: The relay deployment does not exist on the server.
        ValueError: ``heartbeat_grace`` is not longer than the 30 s minimum heartbeat interval.

    Examples:
        Against a server where ``prefect deploy --all`` ran::

            from datetime import timedelta
            from arcanos_flows.prefect.automations import install_automations

            for automation in install_automations(heartbeat_grace=timedelta(minutes=2)):
                print(automation.name, automation.id)
    """
    zombie = zombie_automation(heartbeat_grace)
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(relay_deployment)
        except ObjectNotFound:
            raise ConfigurationError(
                f"The relay deployment {relay_deployment!r} does not exist on the Prefect server at "
                f"{get_current_settings().api.url or 'the ephemeral API'}: deploy it first "
                "(prefect deploy --name incident-relay, from the project's prefect.yaml), then install again"
            ) from None
        return [_save(client, zombie), _save(client, relay_automation(deployment.id))]


def uninstall_automations() -> int:
    """Delete the arcanos automations from the current Prefect server.

    Returns:
        How many automations were deleted (0 when none were installed).

    Examples:
        ::

            from arcanos_flows.prefect.automations import uninstall_automations

            uninstall_automations()
    """
    deleted = 0
    with get_client(sync_client=True) as client:
        for name in (ZOMBIE_AUTOMATION, RELAY_AUTOMATION):
            for automation in _named(client, name):
                client.delete_automation(automation.id)
                deleted += 1
    return deleted
