"""Automations and the incident relay, on the shared Prefect test server: what the server-side twin promises."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from prefect import flow, tags
from prefect.automations import ChangeFlowRunState, Posture, RunDeployment
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Completed, Crashed, Failed, Running

from arcanos_flows.core.errors import ConfigurationError, IncidentClass
from arcanos_flows.flows.relay import incident_relay_flow, reported_incident_events
from arcanos_flows.incidents.model import Incident
from arcanos_flows.prefect.automations import (
    DEFAULT_RELAY_DEPLOYMENT,
    RELAY_AUTOMATION,
    ZOMBIE_AUTOMATION,
    install_automations,
    uninstall_automations,
    zombie_automation,
)
from arcanos_flows.prefect.events import emit_incident_event
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.testing import WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow(name="arcanos-automation-subject")
def subject() -> int:
    return 1


@flow(name="arcanos-automation-failing")
def failing() -> None:
    raise RuntimeError("the archive volume is read-only")


@pytest.fixture
def client() -> Iterator[SyncPrefectClient]:
    with get_client(sync_client=True) as prefect_client:
        yield prefect_client


@pytest.fixture(scope="module")
def relay_deployment_id(prefect_harness: None) -> uuid.UUID:
    """The relay flow deployed as arcanos-incident-relay/incident-relay (no worker: its runs stay scheduled)."""
    return incident_relay_flow.to_deployment(name="incident-relay").apply()


@pytest.fixture
def installed(relay_deployment_id: uuid.UUID) -> Iterator[list[Any]]:
    """The two automations, installed for one test and removed after it (the harness is shared)."""
    try:
        yield install_automations(heartbeat_grace=timedelta(seconds=45))
    finally:
        uninstall_automations()


def _run_in_state(
    client: SyncPrefectClient, state: Any, *, run_tags: list[str], subject_flow: Any = subject
) -> FlowRun:
    run = client.create_flow_run(subject_flow, tags=run_tags, state=Running())
    client.set_flow_run_state(run.id, state, force=True)
    return client.read_flow_run(run.id)


def _wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def _relay_runs(client: SyncPrefectClient, deployment_id: uuid.UUID) -> list[FlowRun]:
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))


# --- installing ---------------------------------------------------------------------------------------------------


def test_install_creates_a_zombie_detector_and_a_relay_trigger(
    installed: list[Any], client: SyncPrefectClient, relay_deployment_id: uuid.UUID
) -> None:
    """Install saves two automations: silent arcanos runs become Crashed; Crashed/Failed ones start the relay."""
    zombie, relay = (client.read_automations_by_name(name) for name in (ZOMBIE_AUTOMATION, RELAY_AUTOMATION))
    assert [a.id for a in installed] == [zombie[0].id, relay[0].id]

    trigger = zombie[0].trigger
    assert trigger.posture == Posture.Proactive
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed"} <= trigger.expect
    assert {"prefect.flow-run.Crashed", "prefect.flow-run.Cancelled"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.within == timedelta(seconds=45)
    assert trigger.threshold == 1
    assert trigger.match_related.model_dump() == {
        "prefect.resource.role": "tag",
        "prefect.resource.id": "prefect.tag.arcanos",
    }
    (action,) = zombie[0].actions
    assert isinstance(action, ChangeFlowRunState)
    assert action.state == StateType.CRASHED

    trigger = relay[0].trigger
    assert trigger.posture == Posture.Reactive
    assert trigger.match.model_dump()["prefect.state-type"] == ["CRASHED", "FAILED"]
    (action,) = relay[0].actions
    assert isinstance(action, RunDeployment)
    assert action.source == "selected"
    assert action.deployment_id == relay_deployment_id
    assert action.parameters == {"flow_run_id": {"__prefect_kind": "jinja", "template": "{{ flow_run.id }}"}}


def test_install_is_idempotent_and_updates_in_place(installed: list[Any], client: SyncPrefectClient) -> None:
    """Installing again keeps one automation per name, with the same ids and the new settings."""
    # A stray copy (e.g. from a second install racing the first) is folded into one.
    zombie_automation(timedelta(seconds=60)).create()
    again = install_automations(heartbeat_grace=timedelta(seconds=120))

    assert [a.id for a in again] == [a.id for a in installed]
    zombies = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert len(zombies) == 1
    assert zombies[0].trigger.within == timedelta(seconds=120)
    assert len(client.read_automations_by_name(RELAY_AUTOMATION)) == 1


def test_uninstall_removes_both_automations(relay_deployment_id: uuid.UUID, client: SyncPrefectClient) -> None:
    """`uninstall_automations` deletes what install created and is a no-op the second time."""
    install_automations()
    assert uninstall_automations() == 2
    assert uninstall_automations() == 0
    assert client.read_automations_by_name(ZOMBIE_AUTOMATION) == []


def test_install_without_the_relay_deployment_says_what_to_deploy(client: SyncPrefectClient) -> None:
    """A missing relay deployment is a configuration error naming it, and nothing is installed."""
    with pytest.raises(ConfigurationError, match=r"'arcanos-incident-relay/nowhere' does not exist.*deploy it first"):
        install_automations(relay_deployment="arcanos-incident-relay/nowhere")
    assert client.read_automations_by_name(ZOMBIE_AUTOMATION) == []


def test_a_grace_shorter_than_a_heartbeat_is_refused() -> None:
    """The grace must exceed Prefect's 30 s minimum heartbeat interval, or every healthy run would crash."""
    with pytest.raises(ValueError, match="longer than 30 s"):
        install_automations(DEFAULT_RELAY_DEPLOYMENT, heartbeat_grace=timedelta(seconds=30))


def test_the_relay_automation_runs_the_relay_with_the_crashed_runs_id(
    installed: list[Any], client: SyncPrefectClient, relay_deployment_id: uuid.UUID
) -> None:
    """A Crashed or Failed arcanos run starts the relay deployment with its id; other runs (and the relay) do not."""
    untagged = _run_in_state(client, Crashed(), run_tags=["nightly"])
    relay_itself = _run_in_state(client, Crashed(), run_tags=["arcanos"], subject_flow=incident_relay_flow)
    completed = _run_in_state(client, Completed(), run_tags=["arcanos"])
    timed_out = _run_in_state(client, Failed(name="TimedOut"), run_tags=["arcanos"])
    crashed = _run_in_state(client, Crashed(message="worker lost"), run_tags=["arcanos"])

    def relayed() -> set[str]:
        return {run.parameters["flow_run_id"] for run in _relay_runs(client, relay_deployment_id)}

    _wait_until(lambda: {str(crashed.id), str(timed_out.id)} <= relayed(), 15, "the relay runs")
    assert relayed() == {str(crashed.id), str(timed_out.id)}
    assert str(untagged.id) not in relayed()
    assert str(relay_itself.id) not in relayed()
    assert str(completed.id) not in relayed()
    for run in _relay_runs(client, relay_deployment_id):
        # The template rendered to the bare id string, ready for `incident_relay_flow(flow_run_id: str)`.
        uuid.UUID(run.parameters["flow_run_id"])


# --- the relay flow ---------------------------------------------------------------------------------------------


def test_relay_reports_a_crashed_run_once_with_the_hooks_incident_id(
    arcanos_env: dict[str, str], receiver: WebhookReceiver, client: SyncPrefectClient
) -> None:
    """A Crashed run becomes one signed `crashed` incident whose id (and webhook-id) is the one the hook would use."""
    run = _run_in_state(
        client, Crashed(message="Flow run infrastructure exited with non-zero status code -9."), run_tags=["arcanos"]
    )
    expected_id = incident_id_for(run.id, None, "crashed")

    incident = incident_relay_flow(str(run.id))

    assert incident is not None
    assert incident.incident_id == expected_id
    (delivery,) = receiver.wait_for(1)
    assert delivery.headers["webhook-id"] == str(expected_id)
    assert delivery.signature_valid is True
    body = delivery.json
    assert body["incident_class"] == "crashed"
    assert body["error_type"] == "prefect.Crashed"
    assert "non-zero status code -9" in body["reason"]
    assert body["source"] == "arcanos_flows.relay"
    assert body["context"]["flow_run_id"] == str(run.id)
    assert body["context"]["flow_name"] == "arcanos-automation-subject"
    assert body["context"]["final_state"] == "Crashed"
    assert body["context"]["reported_by"] == "arcanos-incident-relay"

    # The relay emitted the incident as an event related to the run; a second relay run finds it and stays quiet.
    _wait_until(lambda: reported_incident_events(client, run), 15, "the incident event to be stored")
    assert incident_relay_flow(str(run.id)) is None
    assert len(receiver.deliveries) == 1


def test_relay_stays_quiet_when_a_hook_already_reported_the_failure(
    arcanos_env: dict[str, str], receiver: WebhookReceiver, client: SyncPrefectClient
) -> None:
    """A Failed run with an `arcanos.incident.*` event about it (a hook reported the cause) is not reported again."""
    with tags("arcanos"):
        state = failing(return_state=True)
    assert state.is_failed()
    run = client.read_flow_run(state.state_details.flow_run_id)
    task_incident = Incident(
        incident_id=incident_id_for(run.id, uuid.uuid4(), "rate_limit"),
        incident_class=IncidentClass.RATE_LIMIT,
        reason="429 after 4 tries",
        error_type="openai.RateLimitError",
        context={"flow_run_id": str(run.id), "flow_name": "arcanos-automation-failing"},
    )
    assert emit_incident_event(task_incident)
    _wait_until(lambda: reported_incident_events(client, run), 15, "the task incident event to be stored")

    assert incident_relay_flow(str(run.id)) is None
    assert receiver.deliveries == []


def test_relay_reports_a_failure_nobody_reported_as_flow_failed(
    arcanos_env: dict[str, str], receiver: WebhookReceiver, client: SyncPrefectClient
) -> None:
    """A Failed run without any incident event becomes one `flow_failed` incident with the deterministic id."""
    with tags("arcanos"):
        state = failing(return_state=True)
    run_id = state.state_details.flow_run_id

    incident = incident_relay_flow(str(run_id))

    assert incident is not None
    assert incident.incident_class == IncidentClass.FLOW_FAILED
    assert incident.incident_id == incident_id_for(run_id, None, "flow_failed")
    (delivery,) = receiver.wait_for(1)
    assert delivery.headers["webhook-id"] == str(incident.incident_id)
    assert delivery.json["incident_class"] == "flow_failed"
    assert "the archive volume is read-only" in delivery.json["reason"]
    assert delivery.json["context"]["flow_name"] == "arcanos-automation-failing"


def test_relay_ignores_runs_that_neither_crashed_nor_failed(
    arcanos_env: dict[str, str], receiver: WebhookReceiver, client: SyncPrefectClient
) -> None:
    """A run that completed (e.g. retried after the automation fired) is left alone."""
    run = _run_in_state(client, Completed(), run_tags=["arcanos"])
    assert incident_relay_flow(str(run.id)) is None
    assert receiver.deliveries == []
