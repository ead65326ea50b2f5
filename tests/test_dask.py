"""Flows on a ``DaskTaskRunner`` over a real ``distributed.LocalCluster``: steps run in the workers' processes.

A failed step's exception comes back to the flow pickled, the incident its task hook delivered attached to it, so the
flow's hook sends no second incident; ``research_flow`` runs its investigations on the flow's task runner (the
cluster's workers), never more than ``max_parallel`` at once.

One cluster (two worker processes, two threads each) serves the whole module: it starts in seconds. Its workers
inherit the environment set before they start: the module's own fake OpenAI server, webhook receiver and spool, which
``arcanos_env`` sets again for this process in every test (the autouse fixture clears ``ARCANOS_*`` per test).

This process plays the flow's, the Dask client's. ``import distributed`` registers ``tblib``'s pickle reducer for
every exception class that exists then (``copyreg``, process-wide); in a flow process that imported arcanos-flows first
it replaces the client's for the SDK's exceptions. So ``distributed`` is imported by a fixture, not at collection, and
its registrations are in force during this module's tests only (``dask_client_process``): the rest of the session
pickles as a process without Dask does. Needs the ``dask`` extra (``pip install -e ".[dask]"``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copyreg
import importlib
import os
import pickle
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import openai
import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET
from prefect import Task, flow
from prefect.client.schemas.objects import State
from prefect.futures import wait
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.flows.research import ResearchReport, ResearchStepsFailed, research_flow
from arcanos_flows.incidents import attached_incident
from arcanos_flows.prefect.hooks import flow_on_crashed, flow_on_failure
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.prefect.tasks import run_reasoning, with_retries
from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.timeout(120)]

FLOW_NAME = "arcanos-test-dask"
MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
WORKERS = 2
THREADS_PER_WORKER = 2  # 4 slots: more than MAX_PARALLEL, so the flow (not the cluster) is what bounds it
MAX_PARALLEL = 3
LATENCY = 1.5  # seconds each investigation takes upstream: ample time for its siblings to start on the cluster
ECHO = Reply.error(401, message=f"Incorrect API key provided: {API_KEY}")


@dataclass
class Dask:
    """``distributed`` and ``prefect_dask``, and the pickle reducers importing them registered."""

    distributed: ModuleType
    prefect_dask: ModuleType
    reducers: dict[Any, Any]


@dataclass
class Loopback:
    """The module's fake upstream, webhook and spool, which the workers were started pointing at."""

    openai: FakeOpenAIServer
    receiver: WebhookReceiver
    spool: Path


def set_dispatch_table(entries: dict[Any, Any]) -> None:
    # The same dict object: cloudpickle's pickler chains it, it is not copied.
    copyreg.dispatch_table.clear()
    copyreg.dispatch_table.update(entries)


@pytest.fixture(scope="module")
def dask() -> Dask:
    """Dask, imported now; the reducers its import registered are taken back out (``dask_client_process``)."""
    before = dict(copyreg.dispatch_table)
    distributed = pytest.importorskip("distributed", reason="the dask extra is not installed")
    prefect_dask = pytest.importorskip("prefect_dask", reason="the dask extra is not installed")
    reducers = {cls: reduce for cls, reduce in copyreg.dispatch_table.items() if before.get(cls) is not reduce}
    set_dispatch_table(before)
    return Dask(distributed, prefect_dask, reducers)


@pytest.fixture(autouse=True)
def dask_client_process(dask: Dask) -> Iterator[None]:
    """During each test, this process pickles as a flow process that imported arcanos-flows, then Dask."""
    before = dict(copyreg.dispatch_table)
    copyreg.dispatch_table.update(dask.reducers)
    try:
        yield
    finally:
        set_dispatch_table(before)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    with FakeOpenAIServer() as server, WebhookReceiver(secret=WEBHOOK_SECRET) as receiver:
        yield Loopback(server, receiver, tmp_path_factory.mktemp("dask-spool"))


@pytest.fixture(scope="module")
def cluster(dask: Dask, loopback: Loopback, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Two worker processes, started with the loopback environment."""
    environment = {
        "OPENAI_API_KEY": API_KEY,
        "ARCANOS_FINE_TUNED_MODEL": MODEL,
        "OPENAI_BASE_URL": loopback.openai.base_url,
        "ARCANOS_MAINTENANCE_WEBHOOK": loopback.receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(loopback.spool),
        "ARCANOS_REQUEST_TIMEOUT": "5",
        "ARCANOS_TASK_RETRY_DELAY": "0",
    }
    # Kept for the module's life (each test's autouse fixture clears and restores it), so that a worker the nanny
    # restarts inherits it too.
    environ = pytest.MonkeyPatch()
    try:
        for name in list(os.environ):
            if name.startswith(("ARCANOS_", "OPENAI_")):
                environ.delenv(name)
        for name, value in environment.items():
            environ.setenv(name, value)
        with pytest.MonkeyPatch.context() as cwd:
            cwd.chdir(tmp_path_factory.mktemp("dask-cwd"))  # no developer's .env for the workers to read
            local = dask.distributed.LocalCluster(
                n_workers=WORKERS,
                processes=True,
                threads_per_worker=THREADS_PER_WORKER,
                dashboard_address=None,
            )
        with local:
            yield local
    finally:
        environ.undo()


@pytest.fixture(scope="module")
def dask_client(dask: Dask, cluster: Any) -> Iterator[Any]:
    """A client of the test's own, not the default one: the flows' DaskTaskRunner must not pick it up.

    The workers import arcanos-flows, Prefect and the SDK now, so that no test's timing includes a cold import.
    """
    with dask.distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        client.run(importlib.import_module, "arcanos_flows.prefect.tasks")
        yield client


@pytest.fixture(scope="module", autouse=True)
def quick_runs(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run); results, if any, under tmp."""
    overrides = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("dask-results"),
    }
    with temporary_settings(overrides):
        yield


# The conftest fixtures of the same names, pointed at the module's loopback: `arcanos_env` then gives this process
# the environment the workers have.
@pytest.fixture
def openai_server(loopback: Loopback) -> FakeOpenAIServer:
    loopback.openai.clear()
    loopback.openai.always(Reply.ok())
    loopback.openai.latency = 0.0
    return loopback.openai


@pytest.fixture
def receiver(loopback: Loopback) -> WebhookReceiver:
    loopback.receiver.clear()
    return loopback.receiver


@pytest.fixture
def spool(loopback: Loopback) -> Path:
    return loopback.spool


@pytest.fixture
def dask_runner(dask: Dask, cluster: Any, dask_client: Any) -> Any:
    """A task runner on the module's (warm) cluster, by address: ``DaskTaskRunner.duplicate`` drops a ``cluster=``."""
    return dask.prefect_dask.DaskTaskRunner(address=cluster.scheduler_address)


@pytest.fixture
def step(arcanos_env: dict[str, str]) -> Task[..., ReasoningResult]:
    """``run_reasoning`` with the configured retries (3) and no delay."""
    return with_retries(run_reasoning, ArcanosSettings())


@pytest.fixture
def worker_pids(dask_client: Any) -> dict[str, int]:
    pids: dict[str, int] = dask_client.run(os.getpid)
    assert len(pids) == WORKERS
    assert os.getpid() not in pids.values()
    return pids


def run_on_dask(body: Callable[[], Any], task_runner: Any) -> State:
    """Run ``body`` as a flow on the Dask task runner, with the arcanos flow hooks; return its final state."""

    @flow(name=FLOW_NAME, task_runner=task_runner, on_failure=[flow_on_failure], on_crashed=[flow_on_crashed])
    def probe() -> Any:
        return body()

    return probe(return_state=True)


def ran_on(dask: Dask, dask_client: Any, action: Callable[[], State]) -> tuple[State, list[str]]:
    """The flow's final state and the address of the worker that ran each Dask task during the run."""
    with dask.distributed.get_task_stream(client=dask_client) as stream:
        state = action()
    return state, [record["worker"] for record in stream.data]


def completions(server: FakeOpenAIServer) -> list[RecordedRequest]:
    return server.completion_requests


def spooled(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.is_file()]


def test_a_step_on_a_worker_answers_the_flow(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    dask: Dask,
    dask_runner: Any,
    dask_client: Any,
    worker_pids: dict[str, int],
) -> None:
    """The step runs in a worker process; its typed result comes back; nothing is reported."""
    state, workers = ran_on(
        dask,
        dask_client,
        lambda: run_on_dask(lambda: step.submit(MESSAGES, {"ticket": "OPS-9"}, step="plan").result(), dask_runner),
    )

    assert state.is_completed(), state.message
    result = state.result()
    assert isinstance(result, ReasoningResult)
    assert result.model == MODEL
    assert result.attempts == 1
    (request,) = completions(openai_server)
    assert request.json["metadata"]["ticket"] == "OPS-9"
    assert request.json["metadata"]["prefect.task_run_id"]
    assert len(workers) == 1
    assert workers[0] in worker_pids
    assert receiver.deliveries == []


@pytest.mark.parametrize("finish", ["raises", "returns-the-future"])
def test_a_permanent_failure_on_a_worker_is_one_incident_and_the_real_exception(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    dask_runner: Any,
    loopback: Loopback,
    finish: str,
) -> None:
    """A 401 on a worker: the flow gets ``openai.AuthenticationError`` (not a TypeError), and one incident is sent."""
    openai_server.always(Reply.error(401))

    def body() -> Any:
        future = step.submit(MESSAGES, step="auth")
        if finish == "raises":
            return future.result()
        wait([future])
        return [future]  # Prefect fails the flow on the failed state, with no exception of the flow's own

    state = run_on_dask(body, dask_runner)

    assert state.is_failed()
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "authentication"
    assert incident["http_status"] == 401
    context = incident["context"]
    flow_run_id = str(state.state_details.flow_run_id)
    assert context["flow_run_id"] == flow_run_id
    assert context["task_run_name"] == "reasoning[auth]"
    assert incident["incident_id"] == str(incident_id_for(flow_run_id, context["task_run_id"], "authentication"))
    assert len(completions(openai_server)) == 1  # not retried
    if finish == "raises":
        error = state.result(raise_on_failure=False)
        assert type(error) is openai.AuthenticationError, repr(error)
        assert error.status_code == 401
        assert error.request_id == incident["request_id"]
        attached = attached_incident(error)
        assert attached is not None
        assert str(attached.incident_id) == incident["incident_id"]
        with pytest.raises(openai.AuthenticationError):
            state.result()
    assert spooled(loopback.spool) == []  # delivered, by the worker: nothing waits in the spool


def test_a_transient_failure_on_a_worker_is_retried_without_an_incident(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver, dask_runner: Any
) -> None:
    """503 then 200: Prefect retries the task on the cluster; the flow completes and nothing is reported."""
    openai_server.script(Reply.error(503))

    state = run_on_dask(lambda: step.submit(MESSAGES, step="flaky").result(), dask_runner)

    assert state.is_completed(), state.message
    assert state.result().attempts == 2
    task_runs = [request.json["metadata"]["prefect.task_run_id"] for request in completions(openai_server)]
    assert len(task_runs) == 2
    assert len(set(task_runs)) == 1  # two tries of one task run
    assert receiver.deliveries == []


def user_text(request: RecordedRequest) -> str:
    return str(request.json["messages"][-1]["content"])


def max_concurrency(requests: list[RecordedRequest], latency: float) -> int:
    """How many requests were in flight at once: each is open from its arrival until the server answers."""
    starts = [request.at for request in requests]
    return max(sum(1 for start in starts if start <= moment < start + latency) for moment in starts)


def test_research_runs_its_investigations_on_the_workers_at_most_max_parallel_at_once(
    arcanos_env: dict[str, str],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    dask: Dask,
    dask_runner: Any,
    dask_client: Any,
    worker_pids: dict[str, int],
) -> None:
    """``with_options(task_runner=DaskTaskRunner(...))``: every investigation runs in a worker process, 3 at a time."""
    questions = [f"Question {number}?" for number in range(1, 6)]
    openai_server.reply_when("Investigate: ", Reply.slow(LATENCY))
    on_dask = research_flow.with_options(task_runner=dask_runner)

    state, workers = ran_on(
        dask,
        dask_client,
        lambda: on_dask("Parallelism", questions=questions, max_parallel=MAX_PARALLEL, return_state=True),
    )

    assert state.is_completed(), state.message
    report: ResearchReport = state.result()
    assert [step.status for step in report.steps] == ["completed"] * (len(questions) + 2)
    # The investigations ran as Dask tasks, in the workers' processes (the plan and synthesis run in the flow's).
    assert len(workers) == len(questions)
    assert os.getpid() not in {worker_pids[worker] for worker in workers}
    investigations = [request for request in completions(openai_server) if user_text(request).startswith("Investigate")]
    assert len(investigations) == len(questions)
    investigation_runs = {step.task_run_id for step in report.steps if step.step.startswith("investigate-")}
    assert {request.json["metadata"]["prefect.task_run_id"] for request in investigations} == investigation_runs
    # Four worker threads could take all five; the flow keeps three in flight, and does reach three.
    arrivals = [round(request.at - investigations[0].at, 3) for request in investigations]
    assert max_concurrency(investigations, LATENCY) == MAX_PARALLEL, arrivals
    assert receiver.deliveries == []


def test_a_failed_investigation_on_a_worker_is_one_incident(
    arcanos_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver, dask_runner: Any
) -> None:
    """One investigation refused with 401 on a worker: its incident only; the run fails with ResearchStepsFailed."""
    openai_server.reply_when("Investigate: Who confirms?", Reply.error(401))
    on_dask = research_flow.with_options(task_runner=dask_runner)

    state = on_dask("Confirmation layers", questions=["Which layers exist?", "Who confirms?"], return_state=True)

    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, ResearchStepsFailed), repr(error)
    assert type(error.__cause__) is openai.AuthenticationError
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "authentication"
    failed = error.report.failed_steps
    assert [(step.step, step.error_class, step.incident_id) for step in failed] == [
        ("investigate-2", "authentication", incident["incident_id"])
    ]
    assert uuid.UUID(incident["incident_id"]) == incident_id_for(
        str(state.state_details.flow_run_id), failed[0].task_run_id, "authentication"
    )
    assert error.report.synthesis  # the synthesis still used the other investigation


def stored_blobs(folder: Path) -> list[bytes]:
    """Every file under ``folder``, raw and base64-decoded (Prefect stores pickles base64-encoded)."""
    blobs = []
    for path in folder.rglob("*"):
        if path.is_file():
            raw = path.read_bytes()
            blobs.append(raw)
            with contextlib.suppress(binascii.Error, ValueError):
                blobs.append(base64.b64decode(raw, validate=False))
    return blobs


def test_a_step_failing_in_the_flow_process_writes_no_key_to_result_storage(
    step: Task[..., ReasoningResult],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    dask_runner: Any,
    tmp_path: Path,
) -> None:
    """A step called directly runs in the flow's process, where Dask's exception reducer pickles chains.

    The SDK's error keeps the HTTP client's error, and its request with the raw ``Authorization`` header, as its
    suppressed ``__context__``. The task hook re-asserts the reduction that leaves the chain behind before Prefect
    writes the failed run's exception to result storage.
    """
    openai_server.always(ECHO)
    storage = tmp_path / "results"

    with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: storage}):
        state = run_on_dask(lambda: step(MESSAGES, step="inline"), dask_runner)

    assert state.is_failed()
    assert [incident["incident_class"] for incident in receiver.incidents] == ["authentication"]
    blobs = stored_blobs(storage)
    assert blobs, "Prefect wrote nothing: the test would prove nothing"
    assert not [blob for blob in blobs if API_KEY.encode() in blob]


def test_a_plain_client_error_pickles_without_its_chain_after_dask_was_imported(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer
) -> None:
    """Outside Prefect nothing but the client itself can re-assert the reduction once Dask replaced it."""
    openai_server.always(ECHO)
    with (
        ArcanosPythonClient(make_settings(max_retries=0)) as client,
        pytest.raises(openai.AuthenticationError) as raised,
    ):
        client.run_reasoning(MESSAGES, notify=False)

    assert API_KEY.encode() not in pickle.dumps(raised.value)


def test_the_docs_dask_example_runs_on_a_cluster_of_its_own(
    openai_server: FakeOpenAIServer, receiver: WebhookReceiver, arcanos_env: dict[str, str], eval_example: Any
) -> None:
    """The Dask example of the docs (not run by tests/test_examples.py: it imports distributed) runs as a user's would.

    It starts its own LocalCluster, whose workers inherit this process's environment (the module's loopback).
    """
    from test_examples import DASK_EXAMPLES

    assert DASK_EXAMPLES, "the docs lost their Dask example"
    for example in DASK_EXAMPLES:
        openai_server.clear()
        openai_server.always(Reply.ok())
        eval_example.run(example)
        assert len(completions(openai_server)) == 3, example.path
        metadata = [request.json["metadata"] for request in completions(openai_server)]
        assert len({entry["prefect.task_run_id"] for entry in metadata}) == 3
    assert receiver.incidents == []
