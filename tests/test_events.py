"""Incidents as Prefect events: the server-side twin of the webhook, read back from the temporary Prefect server."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, WEBHOOK_SECRET
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter, EventResourceFilter
from prefect.events.schemas.events import ReceivedEvent
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import Crashed

from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.prefect.events import INCIDENT_EVENT_PREFIX, emit_incident_event
from arcanos_flows.prefect.hooks import flow_on_crashed, flow_on_failure
from arcanos_flows.prefect.tasks import run_reasoning, with_retries
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-events"
CANARY = "PROMPT-CANARY-7f3a: the confirmation layers of the vault"


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run), results under tmp."""
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "r"}):
        yield


def read_events(event_filter: EventFilter, count: int = 1, timeout: float = 20.0) -> list[ReceivedEvent]:
    """Events reach the server asynchronously (events client, then the persister): poll with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            events = client.read_events(filter=event_filter, limit=50).events
        if len(events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.2)


def incident_event(incident_id: str | uuid.UUID, timeout: float = 20.0) -> ReceivedEvent:
    events = read_events(
        EventFilter(resource=EventResourceFilter(id=[f"{INCIDENT_EVENT_PREFIX}.{incident_id}"])), timeout=timeout
    )
    assert len(events) == 1, f"expected one event for incident {incident_id}, got {events!r}"
    return events[0]


def related_by_role(event: ReceivedEvent, role: str) -> list[dict[str, str]]:
    return [dict(resource.root) for resource in event.related if resource.role == role]


def test_a_task_incident_is_emitted_as_an_event_related_to_its_runs(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """``arcanos.incident.<class>``: the incident is the resource, its runs are related, its JSON is the payload."""
    openai_server.always(Reply.error(401))
    step = with_retries(run_reasoning, ArcanosSettings())

    @flow(name=FLOW_NAME, on_failure=[flow_on_failure])
    def probe() -> None:
        step([{"role": "user", "content": CANARY}], {"ticket": "OPS-11"}, step="plan")

    state = probe(return_state=True)

    assert state.is_failed()
    (delivery,) = receiver.delivered
    incident = delivery.json
    event = incident_event(incident["incident_id"])
    assert event.event == "arcanos.incident.authentication"
    assert event.id == uuid.UUID(incident["incident_id"])
    assert event.resource.id == f"arcanos.incident.{incident['incident_id']}"
    assert event.resource["arcanos.incident.class"] == "authentication"
    assert event.occurred == Incident.model_validate(incident).occurred_at
    assert event.payload == incident
    context = incident["context"]
    flow_runs = related_by_role(event, "flow-run")
    assert {
        "prefect.resource.id": f"prefect.flow-run.{context['flow_run_id']}",
        "prefect.resource.role": "flow-run",
        "prefect.resource.name": context["flow_run_name"],
    } in flow_runs
    assert {
        "prefect.resource.id": f"prefect.task-run.{context['task_run_id']}",
        "prefect.resource.role": "task-run",
        "prefect.resource.name": "reasoning[plan]",
    } in related_by_role(event, "task-run")
    assert {"prefect.resource.id": f"arcanos.flow.{FLOW_NAME}", "prefect.resource.role": "flow"} in related_by_role(
        event, "flow"
    )
    shown = event.model_dump_json()
    assert "OPS-11" in shown  # audit metadata travels with the incident...
    assert CANARY not in shown  # ...the prompt never does
    assert API_KEY not in shown
    assert WEBHOOK_SECRET not in shown


def test_incident_events_can_be_found_by_the_flow_run_they_concern(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """An automation or relay finds a run's incidents by event prefix and related flow run."""

    @flow(name=FLOW_NAME, on_failure=[flow_on_failure])
    def probe() -> None:
        raise RuntimeError("the synthesis step found no sources")

    state = probe(return_state=True)

    flow_run_id = state.state_details.flow_run_id
    events = read_events(
        EventFilter(
            event=EventNameFilter(prefix=[f"{INCIDENT_EVENT_PREFIX}."]),
            related=EventRelatedFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        )
    )
    assert [event.event for event in events] == ["arcanos.incident.flow_failed"]
    (incident,) = receiver.incidents
    assert events[0].payload == incident


def test_a_crash_of_a_deployment_run_relates_the_deployment(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """A deployment's run carries the deployment as a related resource, with its name."""

    @flow(name=FLOW_NAME)
    def nightly() -> None: ...

    name = f"nightly-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(FLOW_NAME)
        deployment_id = client.create_deployment(flow_id=flow_id, name=name)
        created = client.create_flow_run_from_deployment(deployment_id)
        client.set_flow_run_state(created.id, Crashed(message="process killed"), force=True)
        flow_run = client.read_flow_run(created.id)
    assert flow_run.state is not None

    flow_on_crashed(flow=nightly, flow_run=flow_run, state=flow_run.state)

    (incident,) = receiver.incidents
    assert incident["context"]["deployment_name"] == name
    event = incident_event(incident["incident_id"])
    assert event.event == "arcanos.incident.crashed"
    assert {
        "prefect.resource.id": f"prefect.deployment.{deployment_id}",
        "prefect.resource.role": "deployment",
        "prefect.resource.name": name,
    } in related_by_role(event, "deployment")


def test_the_same_incident_emitted_twice_is_stored_once() -> None:
    """The event id is the incident id, so a hook and a relay reporting the same root cause make one event."""
    flow_run_id = str(uuid.uuid4())
    twice = Incident(
        incident_class="crashed",
        reason="process killed",
        error_type="prefect.Crashed",
        context={"flow_run_id": flow_run_id, "flow_name": FLOW_NAME},
    )
    after = Incident(incident_class="degraded", reason="sentinel", error_type="test", context={})

    assert emit_incident_event(twice) is True
    assert emit_incident_event(twice) is True
    assert emit_incident_event(after) is True
    incident_event(after.incident_id)  # the later event arrived, so both copies of the first were processed

    events = read_events(EventFilter(resource=EventResourceFilter(id=[f"arcanos.incident.{twice.incident_id}"])))
    assert len(events) == 1
    assert events[0].id == twice.incident_id
    payload: dict[str, Any] = events[0].payload
    assert payload == json.loads(twice.to_json())
