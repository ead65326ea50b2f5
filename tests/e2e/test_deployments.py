"""End to end: prefect.yaml deployed to a real Prefect server, runs executed by a process worker."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType

from arcanos_flows.flows.relay import reported_incident_events
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from tests.e2e.conftest import Deployed, Process, processes_of_flow_run, queue_run, wait_until, worker_argv

pytestmark = pytest.mark.e2e

AUDIT = {"ticket": "OPS-7", "requested_by": "maintenance"}
TOKEN = "ct-e2e-2025-11"


def test_deployed_research_run_carries_its_parameters_into_every_request_and_publishes_artifacts(
    deployed: Deployed,
    prefect_api: str,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    process_env: Callable[..., dict[str, str]],
    processes: Callable[..., Process],
) -> None:
    """`prefect deploy --all` + `prefect deployment run` + a process worker: audit and token reach every request."""
    cli_env = process_env("cli")
    flow_run_id = queue_run(
        "arcanos-research/research",
        cli_env,
        "--param",
        'topic="Confirmation layers of the Arcanos backend"',
        "--param",
        'questions=["Which layers exist?", "Who confirms a release?"]',
        "--params",
        json.dumps({"audit": AUDIT, "confirmation_token": TOKEN}),
    )

    worker = processes("worker", worker_argv(run_once=True), env=process_env("worker"))
    assert worker.wait(timeout=150) == 0, worker.log()

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(flow_run_id))
        assert run.state is not None
        assert run.state.type == StateType.COMPLETED, f"{run.state!r}\n{worker.log()}"
        assert run.parameters["audit"] == AUDIT
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        # The steps table is updated while the run runs: the last version of each key is the final one.
        artifacts = {artifact.key: artifact for artifact in sorted(found, key=lambda artifact: artifact.created)}

    assert {"arcanos-research-report", "arcanos-research-steps"} <= set(artifacts)
    report = artifacts["arcanos-research-report"]
    assert report.type == "markdown"
    assert "# Research: Confirmation layers of the Arcanos backend" in str(report.data)
    assert "Who confirms a release?" in str(report.data)
    steps = artifacts["arcanos-research-steps"]
    assert steps.type == "table"
    rows = json.loads(steps.data) if isinstance(steps.data, str) else steps.data
    assert [row["step"] for row in rows] == ["plan", "investigate-1", "investigate-2", "synthesis"]
    assert all(row["status"] == "completed" for row in rows)
    assert f"**Model:** `{openai_server.completion_requests[0].json['model']}`" in str(report.data)

    requests = openai_server.completion_requests
    assert len(requests) == 4
    task_runs = set()
    for request in requests:
        metadata = request.json["metadata"]
        assert {key: metadata.get(key) for key in AUDIT} == AUDIT
        assert metadata["confirmation_token"] == TOKEN
        assert metadata["prefect.flow_run_id"] == flow_run_id
        assert metadata["prefect.flow"] == "arcanos-research"
        assert metadata["prefect.deployment"] == "research"
        task_runs.add(metadata["prefect.task_run_id"])
    assert len(task_runs) == 4
    assert receiver.deliveries == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the flow process through /proc (Linux)")
def test_sigkilled_flow_process_under_a_worker_reports_one_crash(
    deployed: Deployed,
    prefect_api: str,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    process_env: Callable[..., dict[str, str]],
    processes: Callable[..., Process],
) -> None:
    """A deployed run whose flow process is SIGKILLed mid-step: the worker marks it Crashed, one incident goes out."""
    # The plan step waits on an answer that comes only after the test is over.
    openai_server.always(Reply.slow(600))
    flow_run_id = queue_run(
        "arcanos-research/research",
        process_env("cli"),
        "--param",
        'topic="A run that will be killed"',
        "--params",
        json.dumps({"audit": AUDIT, "questions": ["Does anything survive SIGKILL?"]}),
    )
    worker = processes("worker", worker_argv(run_once=True), env=process_env("worker"))

    wait_until(lambda: openai_server.completion_requests, 120, f"the plan request of the run\n{worker.log()}")
    pids = wait_until(lambda: processes_of_flow_run(flow_run_id), 10, "the flow run's engine process")
    assert len(pids) == 1, f"expected one process running flow run {flow_run_id}, found {pids}"
    (engine,) = pids
    assert engine != worker.pid
    os.kill(engine, signal.SIGKILL)

    assert worker.wait(timeout=90) == 0, worker.log()
    expected = incident_id_for(flow_run_id, None, "crashed")
    (delivery,) = receiver.wait_for(1, timeout=10)
    assert delivery.headers["webhook-id"] == str(expected)
    assert delivery.signature_valid is True
    incident = delivery.json
    assert incident["incident_class"] == "crashed"
    assert incident["source"] == "arcanos_flows.hooks.flow_on_crashed"
    assert incident["context"]["flow_run_id"] == flow_run_id
    assert incident["context"]["deployment_name"] == "research"
    assert incident["context"]["final_state"] == "Crashed"
    assert "SIGKILL" in incident["reason"] or "-9" in incident["reason"]
    assert len(receiver.deliveries) == 1

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(flow_run_id))
        assert run.state is not None
        assert run.state.type == StateType.CRASHED
        # The server-side twin: the incident is also an event related to the run (what the relay looks for).
        events = wait_until(lambda: reported_incident_events(client, run), 15, "the crashed incident's event")
    assert events == ["arcanos.incident.crashed"]


def test_the_nightly_batch_deployment_runs_its_investigations_as_one_batch(
    deployed: Deployed,
    prefect_api: str,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    process_env: Callable[..., dict[str, str]],
    processes: Callable[..., Process],
) -> None:
    """`research-nightly-batch` from prefect.yaml: plan and synthesis direct, the investigations as one batch."""
    openai_server.batches.delay = 0.5
    cli_env = process_env("cli")
    flow_run_id = queue_run(
        "arcanos-research/research-nightly-batch",
        cli_env,
        "--param",
        'questions=["Which layers exist?", "Who confirms a release?"]',
        "--param",
        "batch_poll_interval=0.2",
    )

    worker = processes("worker", worker_argv(run_once=True), env=process_env("worker"))
    assert worker.wait(timeout=150) == 0, worker.log()

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(uuid.UUID(flow_run_id))
        assert run.state is not None
        assert run.state.type == StateType.COMPLETED, f"{run.state!r}\n{worker.log()}"
        assert run.parameters["mode"] == "batch"
        found = client.read_artifacts(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        artifacts = {artifact.key: artifact for artifact in sorted(found, key=lambda artifact: artifact.created)}
    report = str(artifacts["arcanos-research-report"].data)
    assert "## Batch" in report
    assert "2 of 2 answered" in report
    assert openai_server.batches.created == 1
    assert len(openai_server.completion_requests) == 2  # the plan and the synthesis
    stored = openai_server.files.get(next(iter(sorted(openai_server.files.ids))))
    assert stored is not None
    for line in stored.data.decode().splitlines():
        metadata = json.loads(line)["body"]["metadata"]
        assert metadata["prefect.deployment"] == "research-nightly-batch"
        assert metadata["source"] == "scheduled-batch"
    assert receiver.deliveries == []
