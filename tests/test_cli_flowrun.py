"""The CLI's watch over a run in this process: each step reported as it finishes, and the wait at its end.

On Prefect's temporary server the CLI waits until the server has recorded every step.
"""

from __future__ import annotations

import io
import logging
import time
import uuid

import pytest
from prefect import flow, runtime, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from rich.console import Console

from arcanos_flows.cli._flowrun import StepView, run_research, wait_until_recorded
from arcanos_flows.cli._progress import step_event
from arcanos_flows.cli._render import report_of
from arcanos_flows.testing import FakeOpenAIServer, Reply

pytestmark = pytest.mark.usefixtures("prefect_harness")


@task
def step(number: int) -> str:
    return str(runtime.task_run.id)


@flow(name="cli-flowrun-steps")
def three_steps() -> list[str]:
    return [step(number) for number in range(3)]


def test_returns_once_every_task_run_that_finished_here_is_final_in_the_api() -> None:
    state = three_steps(return_state=True)
    task_run_ids = set(state.result())
    flow_run_id = str(state.state_details.flow_run_id)

    assert wait_until_recorded(flow_run_id, task_run_ids, timeout=10)

    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)]))
    with get_client(sync_client=True) as client:
        recorded = {
            str(run.id): run.state and run.state.type.value for run in client.read_task_runs(flow_run_filter=this_run)
        }
    assert recorded == dict.fromkeys(task_run_ids, "COMPLETED")


def test_gives_up_after_the_timeout_with_a_warning_naming_what_is_missing(caplog: pytest.LogCaptureFixture) -> None:
    state = three_steps(return_state=True)
    never_recorded = str(uuid.uuid4())
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="arcanos_flows.cli"):
        recorded = wait_until_recorded(
            str(state.state_details.flow_run_id), {*state.result(), never_recorded}, timeout=0.3
        )
    assert recorded is False
    assert time.monotonic() - started >= 0.3
    assert "had not recorded the final state of 1 task run(s) after 0.3 s" in caplog.text


def test_nothing_to_wait_for_returns_at_once_without_asking_the_api() -> None:
    started = time.monotonic()
    assert wait_until_recorded(str(uuid.uuid4()), set(), timeout=5)
    assert time.monotonic() - started < 0.1


def test_each_step_is_reported_once_as_it_finishes_complete_with_tokens_seconds_and_error_class(
    openai_server: FakeOpenAIServer, arcanos_env: dict[str, str]
) -> None:
    """The research flow's steps, from their own log records: tokens from the usage line, class from the hook."""
    openai_server.script(Reply.ok("The plan."), Reply.error(401))  # the first investigation is refused
    reported: list[StepView] = []
    lines = io.StringIO()
    outcome = run_research(
        Console(file=lines, width=200),  # not a terminal: a line per step
        topic="Confirmation layers",
        questions=["Which layers exist?", "Who confirms?"],
        audit=None,
        confirmation_token=None,
        max_parallel=1,
        on_step=reported.append,
    )
    assert outcome.state_name == "Failed"
    events = [step_event(step) for step in reported]
    assert [(event["step"], event["status"]) for event in events] == [
        ("plan", "completed"), ("investigate-1", "failed"), ("investigate-2", "completed"), ("synthesis", "completed")
    ]  # fmt: skip
    assert events[1]["error_class"] == "authentication"
    assert events[1]["request_id"]  # the refused request's id, from the error
    report = report_of(outcome)
    assert report is not None
    for event, record in zip(events, report.steps, strict=True):
        assert event["tokens"] == record.usage.input_tokens + record.usage.output_tokens
        assert event["task_run_id"] == record.task_run_id
        if record.latency_ms is not None:
            # From the task run's start, not from its first log record (the usage line, written after the answer).
            assert event["seconds"] >= round(record.latency_ms / 1000, 3)
    assert all(step.reported for step in outcome.steps)
    printed = [line.strip() for line in lines.getvalue().splitlines() if line.startswith("  reasoning[")]
    assert [line.split(":")[0] for line in printed] == [f"reasoning[{event['step']}]" for event in events]
    assert printed[1].startswith("reasoning[investigate-1]: Failed (authentication), 0 tokens, ")
