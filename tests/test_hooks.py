"""State hooks in real Prefect runs: exactly one maintenance incident per root cause, and hooks that never raise."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, WEBHOOK_SECRET
from prefect import Task, flow, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.futures import wait
from prefect.settings import (
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOCAL_STORAGE_PATH,
    PREFECT_UI_URL,
    temporary_settings,
)
from prefect.states import Cancelled, Crashed, Failed

from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings, NotifierSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.credentials import resolve_settings
from arcanos_flows.prefect.hooks import flow_on_cancellation, flow_on_crashed, flow_on_failure, task_on_failure
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.prefect.tasks import notify_maintenance, run_reasoning, shared_client, with_retries
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-hooks"
MESSAGES = [{"role": "user", "content": "Summarise the audit trail of the last deploy."}]
TASK_RETRIES = 2
UI = "https://prefect.example.test"


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run), results under tmp, a known UI address."""
    overrides = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results",
        PREFECT_UI_URL: UI,
    }
    with temporary_settings(overrides):
        yield


@pytest.fixture
def step(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Task[..., ReasoningResult]:
    """``run_reasoning`` with 2 retries and no delay."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    return with_retries(run_reasoning, ArcanosSettings())


def run_flow(body: Callable[[], Any], **options: Any) -> State:
    """Run ``body`` as a flow with the arcanos flow hooks; return its final state."""

    @flow(name=FLOW_NAME, on_failure=[flow_on_failure], on_crashed=[flow_on_crashed], **options)
    def probe() -> Any:
        return body()

    return probe(return_state=True)


def flow_run_of(state: State) -> FlowRun:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def spooled() -> list[Any]:
    return MaintenanceNotifier(NotifierSettings()).pending()


def test_a_task_failing_after_its_retries_sends_one_incident_with_the_prefect_context(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """One signed incident for the failed step, naming run, task, tries and UI link; none for the flow."""
    openai_server.always(Reply.error(503))
    state = run_flow(lambda: step(MESSAGES, {"ticket": "OPS-9"}, step="plan"))

    assert state.is_failed()
    flow_run = flow_run_of(state)
    (delivery,) = receiver.deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    incident = delivery.json
    context = incident["context"]
    assert incident["incident_class"] == "upstream_error"
    assert incident["metadata"]["ticket"] == "OPS-9"
    assert context["flow_run_id"] == str(flow_run.id)
    assert context["flow_run_name"] == flow_run.name
    assert context["flow_name"] == FLOW_NAME
    assert context["task_run_name"] == "reasoning[plan]"
    assert context["task_run_id"] == incident["metadata"]["prefect.task_run_id"]
    assert context["attempts"] == TASK_RETRIES + 1
    assert context["final_state"] == "Failed"
    assert context["ui_url"] == f"{UI}/runs/flow-run/{flow_run.id}"
    expected_id = incident_id_for(flow_run.id, context["task_run_id"], "upstream_error")
    assert incident["incident_id"] == str(expected_id)
    assert delivery.headers["webhook-id"] == str(expected_id)
    assert spooled() == []


def test_the_task_incident_id_is_the_same_whoever_computes_it(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A run's root cause always maps to the same incident id, so replays and relays de-duplicate."""
    openai_server.always(Reply.error(401))
    state = run_flow(lambda: step(MESSAGES, step="auth"))

    (incident,) = receiver.incidents
    task_run_id = incident["context"]["task_run_id"]
    flow_run_id = state.state_details.flow_run_id
    assert incident["incident_id"] == str(incident_id_for(str(flow_run_id), uuid.UUID(task_run_id), "authentication"))
    assert incident["incident_id"] != str(incident_id_for(flow_run_id, None, "authentication"))


def test_a_flow_failing_for_another_reason_sends_one_flow_failed_incident(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """A flow's own error is a ``flow_failed`` incident with the flow run's context."""

    def body() -> None:
        raise LookupError("inventory of confirmation layers is empty")

    state = run_flow(body)

    assert state.is_failed()
    flow_run = flow_run_of(state)
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "flow_failed"
    assert incident["error_type"] == "builtins.LookupError"
    assert incident["reason"] == "inventory of confirmation layers is empty"
    assert incident["incident_id"] == str(incident_id_for(flow_run.id, None, "flow_failed"))
    context = incident["context"]
    assert context["cause_class"] == "unknown"
    assert context["flow_run_name"] == flow_run.name
    assert context["flow_name"] == FLOW_NAME
    assert context["final_state"] == "Failed"
    assert "task_run_id" not in context


def test_a_flow_failing_on_a_failed_state_after_a_degraded_notice_still_reports_the_flow(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """A ``degraded`` notice is not the root cause of a later failure: the failure gets its own incident."""

    def body() -> State:
        notify_maintenance("synthesis is partial")
        return Failed(message="gave up after the partial synthesis")

    state = run_flow(body)

    assert state.is_failed()
    classes = sorted(incident["incident_class"] for incident in receiver.incidents)
    assert classes == ["degraded", "flow_failed"]


def test_a_task_failure_the_flow_swallows_sends_only_the_task_incident(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The flow recovers and completes; the failed step was still reported, once."""
    openai_server.always(Reply.error(401))

    def body() -> str:
        try:
            step(MESSAGES, step="optional")
        except Exception:
            return "continued without the optional step"
        return "unexpected"

    state = run_flow(body)

    assert state.is_completed()
    assert state.result() == "continued without the optional step"
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "authentication"


def test_an_unresolved_failed_submit_is_reported_though_the_flow_completes(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A failed ``.submit()`` whose future is never resolved leaves the flow Completed; the task hook still reports."""
    openai_server.always(Reply.error(404))

    def body() -> str:
        wait([step.submit(MESSAGES, step="ignored")])
        return "done"

    state = run_flow(body)

    assert state.is_completed()
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "not_found"
    assert incident["context"]["task_run_name"] == "reasoning[ignored]"


def _raise_first(futures: list[Any]) -> Any:
    return [future.result() for future in futures]


def _return_futures(futures: list[Any]) -> Any:
    return futures


@pytest.mark.parametrize("finish", [_raise_first, _return_futures], ids=["raises-first-error", "returns-futures"])
def test_two_failed_tasks_send_two_incidents_and_no_flow_incident(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    finish: Callable[[list[Any]], Any],
) -> None:
    """Each failed step is its own root cause; the flow that fails because of them adds nothing."""
    openai_server.always(Reply.error(400))

    def body() -> Any:
        futures = [step.submit(MESSAGES, step=name) for name in ("left", "right")]
        wait(futures)
        return finish(futures)

    state = run_flow(body)

    assert state.is_failed()
    incidents = receiver.incidents
    assert sorted(incident["context"]["task_run_name"] for incident in incidents) == [
        "reasoning[left]",
        "reasoning[right]",
    ]
    assert {incident["incident_class"] for incident in incidents} == {"bad_request"}
    assert len({incident["incident_id"] for incident in incidents}) == 2


def test_a_flow_that_rewraps_the_task_error_sends_no_second_incident(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Raising a new error ``from`` the failed step's error is still the same root cause."""
    openai_server.always(Reply.refused())

    def body() -> None:
        try:
            step(MESSAGES, step="plan")
        except Exception as exc:
            raise RuntimeError("research aborted: the plan step failed") from exc

    state = run_flow(body)

    assert state.is_failed()
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "refusal"


def test_a_user_task_with_the_hook_reports_a_plain_exception_as_unknown(
    arcanos_env: dict[str, str], receiver: WebhookReceiver
) -> None:
    """``@task(on_failure=[task_on_failure])`` on your own task: one ``unknown`` incident with the run context."""

    @task(name="fetch-sources", task_run_name="fetch[{source}]", retries=1, on_failure=[task_on_failure])
    def fetch(source: str) -> None:
        raise KeyError(f"no such source: {source}")

    state = run_flow(lambda: fetch("wiki"))

    assert state.is_failed()
    flow_run = flow_run_of(state)
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "unknown"
    assert incident["error_type"] == "builtins.KeyError"
    assert "no such source: wiki" in incident["reason"]
    context = incident["context"]
    assert context["flow_run_id"] == str(flow_run.id)
    assert context["flow_name"] == FLOW_NAME
    assert context["task_run_name"] == "fetch[wiki]"
    assert context["attempts"] == 2
    assert incident["incident_id"] == str(incident_id_for(flow_run.id, context["task_run_id"], "unknown"))


def test_the_hooks_work_on_async_tasks_and_flows(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """In async runs the hooks see the real exception: one incident with its class, none for the flow."""
    openai_server.always(Reply.error(404))

    @task(task_run_name="ask[status]", on_failure=[task_on_failure])
    async def ask() -> str:
        return shared_client(resolve_settings()).run_simple_prompt("Status?", notify=False).content

    @flow(name=FLOW_NAME, on_failure=[flow_on_failure])
    async def probe() -> str:
        return await ask()

    state = asyncio.run(probe(return_state=True))

    assert state.is_failed()
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "not_found"
    assert incident["error_type"] == "openai.NotFoundError"
    assert incident["context"]["task_run_name"] == "ask[status]"


def test_when_the_webhook_is_down_the_incident_waits_in_the_spool_and_the_flow_state_is_unchanged(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Hooks never raise into Prefect and never lose an incident: it is spooled, then flushed with the same id."""
    openai_server.always(Reply.error(401))
    receiver.close()

    state = run_flow(lambda: step(MESSAGES, step="plan"))

    assert state.is_failed()
    assert type(state.result(raise_on_failure=False)).__name__ == "AuthenticationError"
    (waiting,) = spooled()
    assert waiting.incident_class.value == "authentication"
    receiver.reopen()
    assert MaintenanceNotifier(NotifierSettings()).flush().delivered == 1
    (incident,) = receiver.incidents
    assert incident["incident_id"] == str(waiting.incident_id)
    assert incident["context"]["flow_run_id"] == str(state.state_details.flow_run_id)


def test_hooks_never_raise_even_when_they_cannot_build_an_incident(
    arcanos_env: dict[str, str], receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever they are given, hooks log the problem and return."""
    caplog.set_level(logging.ERROR, logger="arcanos_flows.hooks")
    not_a_run = object()

    for hook in (flow_on_failure, flow_on_crashed, flow_on_cancellation):
        assert hook(flow=not_a_run, flow_run=not_a_run, state=not_a_run) is None  # type: ignore[arg-type]
    assert task_on_failure(task=not_a_run, task_run=not_a_run, state=not_a_run) is None  # type: ignore[arg-type]

    assert len([record for record in caplog.records if record.name == "arcanos_flows.hooks"]) == 4
    assert receiver.deliveries == []


@pytest.fixture
def finished_run(arcanos_env: dict[str, str]) -> Callable[[State], tuple[Any, FlowRun]]:
    """A real flow run moved to the given final state, read back from the API."""

    @flow(name=FLOW_NAME)
    def nightly() -> None: ...

    def make(final: State) -> tuple[Any, FlowRun]:
        with get_client(sync_client=True) as client:
            created = client.create_flow_run(nightly, name=f"nightly-{uuid.uuid4().hex[:6]}")
            client.set_flow_run_state(created.id, final, force=True)
            return nightly, client.read_flow_run(created.id)

    return make


def test_flow_on_crashed_sends_a_crashed_incident(
    finished_run: Callable[[State], tuple[Any, FlowRun]], receiver: WebhookReceiver
) -> None:
    """The runner calls ``on_crashed`` with keywords; the incident is ``crashed`` and de-duplicable."""
    nightly, flow_run = finished_run(Crashed(message="Flow run infrastructure exited with non-zero status code -9."))
    assert flow_run.state is not None

    flow_on_crashed(flow=nightly, flow_run=flow_run, state=flow_run.state)
    flow_on_crashed(flow=nightly, flow_run=flow_run, state=flow_run.state)  # e.g. the runner, then a replay

    first, second = receiver.deliveries
    incident = first.json
    assert incident["incident_class"] == "crashed"
    assert incident["error_type"] == "prefect.Crashed"
    assert incident["reason"] == "Flow run infrastructure exited with non-zero status code -9."
    assert incident["incident_id"] == str(incident_id_for(flow_run.id, None, "crashed"))
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == incident["incident_id"]
    context = incident["context"]
    assert context["flow_run_id"] == str(flow_run.id)
    assert context["flow_run_name"] == flow_run.name
    assert context["flow_name"] == FLOW_NAME
    assert context["final_state"] == "Crashed"
    assert context["ui_url"] == f"{UI}/runs/flow-run/{flow_run.id}"


def test_flow_on_cancellation_sends_a_cancelled_incident(
    finished_run: Callable[[State], tuple[Any, FlowRun]], receiver: WebhookReceiver
) -> None:
    """For flows whose cancellation is a failure, ``on_cancellation`` reports a ``cancelled`` incident."""
    nightly, flow_run = finished_run(Cancelled(message="Cancelled by the scheduler"))
    assert flow_run.state is not None

    flow_on_cancellation(flow=nightly, flow_run=flow_run, state=flow_run.state)

    (incident,) = receiver.incidents
    assert incident["incident_class"] == "cancelled"
    assert incident["incident_id"] == str(incident_id_for(flow_run.id, None, "cancelled"))
    assert incident["context"]["final_state"] == "Cancelled"
    assert incident["context"]["flow_run_id"] == str(flow_run.id)


def test_secrets_never_reach_incidents_states_or_logs(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An upstream that echoes the API key: the incident, the run's state and every log line show it redacted."""
    caplog.set_level(logging.DEBUG)
    openai_server.always(Reply.error(401, message=f"Incorrect API key provided: {API_KEY}."))

    state = run_flow(lambda: step(MESSAGES, step="leaky"))

    assert state.is_failed()
    (delivery,) = receiver.deliveries
    body = delivery.body.decode()
    assert "Incorrect API key provided" in body
    flow_run = flow_run_of(state)
    for text in (body, caplog.text, str(state.message), str(flow_run.state and flow_run.state.message)):
        assert API_KEY not in text
        assert WEBHOOK_SECRET not in text
        assert WEBHOOK_SECRET.removeprefix("whsec_") not in text
    assert json.loads(body)["context"]["state_message"].count(API_KEY) == 0


def test_bind_notifier_routes_a_task_runs_incident(arcanos_env: dict[str, str], receiver: WebhookReceiver) -> None:
    """A bound notifier wins over the environment's, once; unbinding restores the default."""
    with WebhookReceiver(secret=WEBHOOK_SECRET) as other:
        notifier = MaintenanceNotifier(NotifierSettings(maintenance_webhook=other.url), backoff=0.01)

        @task(on_failure=[task_on_failure])
        def bound() -> None:
            from prefect.runtime import task_run

            hooks.bind_notifier(uuid.UUID(task_run.id), notifier)
            raise ValueError("routed elsewhere")

        run_flow(bound)

        (incident,) = other.incidents
        assert incident["reason"] == "routed elsewhere"
    assert receiver.deliveries == []
