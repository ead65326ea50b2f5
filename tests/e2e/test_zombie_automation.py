"""End to end: a flow run killed outside any runner is found by its missing heartbeats and reported by the relay."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter
from prefect.client.schemas.objects import StateType
from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

from arcanos_flows.prefect.automations import install_automations, uninstall_automations
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from tests.e2e.conftest import Deployed, Process, wait_until, worker_argv

pytestmark = pytest.mark.e2e

# Prefect's shortest heartbeat interval is 30 s; the grace must be longer, and the shorter it is the faster this runs.
HEARTBEAT_SECONDS = 30
GRACE = timedelta(seconds=35)

FLOW_SCRIPT = """
from arcanos_flows.flows.research import research_flow

research_flow("A run nobody watches", questions=["Is anyone there?"], audit={"ticket": "OPS-9"})
"""


@pytest.fixture
def automations(deployed: Deployed, prefect_api: str) -> Iterator[list[Any]]:
    """The arcanos automations installed on the session's server for this test only."""
    try:
        yield install_automations(heartbeat_grace=GRACE)
    finally:
        uninstall_automations()


def _heartbeats(client: SyncPrefectClient, flow_run_id: str) -> list[Any]:
    page = client.read_events(
        filter=EventFilter(
            event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"]),
        ),
        limit=5,
    )
    return page.events


def _relay_runs(client: SyncPrefectClient, flow_run_id: str) -> list[Any]:
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(),
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["incident-relay"])),
    )
    return [run for run in runs if run.parameters.get("flow_run_id") == flow_run_id]


def test_a_run_killed_outside_any_runner_is_marked_crashed_and_relayed_once(
    automations: list[Any],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    process_env: Callable[..., dict[str, str]],
    processes: Callable[..., Process],
) -> None:
    """SIGKILL a plain `python` flow run after its first heartbeat: the automation crashes it, the relay reports it."""
    openai_server.always(Reply.slow(600))  # the plan step hangs until the process is killed
    worker = processes("worker", worker_argv(run_once=False), env=process_env("worker"))
    flow = processes(
        "flow",
        [sys.executable, "-c", FLOW_SCRIPT],
        env=process_env("flow", PREFECT_FLOWS_HEARTBEAT_FREQUENCY=str(HEARTBEAT_SECONDS)),
    )

    (request,) = wait_until(lambda: openai_server.completion_requests, 90, f"the flow's plan request\n{flow.log()}")
    flow_run_id = request.json["metadata"]["prefect.flow_run_id"]
    with get_client(sync_client=True) as client:
        (heartbeat, *_) = wait_until(lambda: _heartbeats(client, flow_run_id), 30, "the run's first heartbeat")
        assert "prefect.tag.arcanos" in {related.id for related in heartbeat.related}
        os.kill(flow.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        assert flow.wait(timeout=10) == -signal.SIGKILL

        # Nothing is left to report the crash: only the missing heartbeat tells, after the grace period.
        def crashed() -> Any:
            run = client.read_flow_run(uuid.UUID(flow_run_id))
            return run if run.state is not None and run.state.type == StateType.CRASHED else None

        run = wait_until(crashed, GRACE.total_seconds() + 30, "the zombie automation to mark the run Crashed")
        crashed_after = time.monotonic() - killed_at
        assert "No heartbeat" in (run.state.message or "")

        (delivery,) = receiver.wait_for(1, timeout=90)
        relay_runs = wait_until(
            lambda: [r for r in _relay_runs(client, flow_run_id) if r.state and r.state.is_final()],
            30,
            "the relay run to finish",
        )

    assert crashed_after < GRACE.total_seconds() + 15
    assert delivery.headers["webhook-id"] == str(incident_id_for(flow_run_id, None, "crashed"))
    assert delivery.signature_valid is True
    incident = delivery.json
    assert incident["incident_class"] == "crashed"
    assert incident["source"] == "arcanos_flows.relay"
    assert incident["context"]["flow_run_id"] == flow_run_id
    assert incident["context"]["flow_name"] == "arcanos-research"
    assert incident["context"]["final_state"] == "Crashed"
    assert incident["context"]["reported_by"] == "arcanos-incident-relay"
    assert "No heartbeat" in incident["reason"]
    assert [r.state.type for r in relay_runs] == [StateType.COMPLETED], worker.log()
    assert len(receiver.deliveries) == 1, json.dumps([d.json for d in receiver.deliveries], indent=1)
