"""The CLI's end of a run on Prefect's temporary server: it waits until the server has recorded every step."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from prefect import flow, runtime, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from arcanos_flows.cli._flowrun import wait_until_recorded

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
        recorded = {str(run.id): run.state.type.value for run in client.read_task_runs(flow_run_filter=this_run)}
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
