"""``@arcanos_flow``: the flow run carries the ``arcanos`` tag, its task runs do not (no tag-concurrency leases)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from prefect import tags, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from arcanos_flows.prefect.decorator import ArcanosFlow, arcanos_flow

pytestmark = pytest.mark.usefixtures("prefect_harness")


@dataclass
class Window:
    """A parameter type only this module knows: Prefect must resolve the string annotation here."""

    days: int


@task
def count(days: int) -> int:
    return days * 2


@arcanos_flow(name="decorator-tags")
def counted(window: Window) -> int:
    return count(window.days)


def _tags_of(state: object) -> tuple[list[str], list[list[str]]]:
    run_id = state.state_details.flow_run_id  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return sorted(flow_run.tags), [sorted(task_run.tags) for task_run in task_runs]


def test_the_flow_run_is_tagged_and_its_task_runs_keep_only_the_callers_tags() -> None:
    with tags("nightly"):
        state = counted(Window(days=3), return_state=True)
    assert state.result() == 6
    assert _tags_of(state) == (["arcanos", "nightly"], [["nightly"]])


def test_a_caller_who_tags_arcanos_himself_keeps_it_on_the_tasks() -> None:
    with tags("arcanos"):
        state = counted(Window(days=1), return_state=True)
    assert _tags_of(state) == (["arcanos"], [["arcanos"]])


def test_the_wrapped_flow_keeps_its_name_signature_version_and_entrypoint() -> None:
    assert isinstance(counted, ArcanosFlow)
    assert counted.fn.__name__ == "counted"
    assert list(counted.parameters.properties) == ["window"]
    copy = counted.with_options(name="decorator-tags-copy")
    assert isinstance(copy, ArcanosFlow)
    assert copy.version == counted.version is not None
    assert counted._entrypoint == f"{__name__}:counted"
