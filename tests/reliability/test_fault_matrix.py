"""The fault matrix: every failure the fake OpenAI server can produce, wherever it happens.

Each failure kind is injected into a plain :class:`ArcanosPythonClient` call, into a reasoning task inside a
small flow, and into one mapped investigation of ``research_flow`` (the other steps answer normally). Every
cell checks what the caller gets (the original exception), the incident class, how many HTTP attempts were
made (the SDK retries the plain client's transient failures, Prefect retries a task's), the final Prefect
state, and that exactly one incident reached the webhook, carrying its Prefect context. Transient kinds are
also run failing once only: then the call, the task or the flow completes and nothing is reported.

The last test writes the results to ``fault-matrix.json`` in pytest's base temporary folder (also to
``$ARCANOS_MATRIX_JSON`` when set) and prints them as a Markdown table, the one README quotes::

    ARCANOS_MATRIX_JSON=fault-matrix.json pytest tests/reliability/test_fault_matrix.py -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import MODEL
from prefect import flow
from prefect.client.schemas.objects import State, TaskRun
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import (
    EmptyCompletionError,
    IncompleteCompletionError,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
)
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.flows.research import ResearchReport, ResearchStepsFailed, research_flow
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.credentials import resolve_settings
from arcanos_flows.prefect.runs import incident_id_for
from arcanos_flows.prefect.tasks import run_reasoning, with_retries
from arcanos_flows.testing import Delivery, FakeOpenAIServer, RecordedRequest, Reply, WebhookReceiver
from reliability.faults import (
    PLAN,
    HangingUpOpenAIServer,
    closed_port,
    flow_task_runs,
    prompt_starts_with,
    user_text,
)

pytestmark = pytest.mark.usefixtures("prefect_harness")

SDK_RETRIES = 2  # plain client: ARCANOS_MAX_RETRIES
TASK_RETRIES = 2  # reasoning tasks: ARCANOS_TASK_RETRIES (no delay)
TIMEOUT = 1.0  # ARCANOS_REQUEST_TIMEOUT of the "slow" rows: short, yet no normal answer comes near it
SLOW = 3.0  # how long a slow answer takes
FAST_RETRY_AFTER = 0.01

MESSAGES = [
    {"role": "system", "content": "You are the Arcanos maintenance AI."},
    {"role": "user", "content": "List the current confirmation layers."},
]
METADATA = {"intent": "fault-matrix"}
TOPIC = "Confirmation layers of the Arcanos backend"
QUESTIONS = ["Which confirmation layers exist?", "Who confirms each layer?", "What happens on timeout?"]
TARGET = 1  # the investigation that fails: investigate-2
TARGET_MARKER = f"Investigate: {QUESTIONS[TARGET]}"
TARGET_STEP = f"investigate-{TARGET + 1}"
PROBE_FLOW = "arcanos-fault-matrix"
MATRIX_JSON = os.environ.get("ARCANOS_MATRIX_JSON")  # read at import: the autouse fixture clears ARCANOS_*


@dataclass(frozen=True)
class Kind:
    """One failure kind and what every place must make of it.

    ``reply`` is what the server answers (``None``: nothing listens, the connection is refused);
    ``sdk_retried`` says whether the SDK retries it in the plain client, ``task_retried`` whether Prefect
    retries it in a task; ``http_status`` is the status the incident reports.
    """

    reply: Reply | None
    error: type[BaseException]
    incident_class: str
    sdk_retried: bool
    task_retried: bool
    http_status: int | None

    @property
    def slow(self) -> bool:
        return self.reply is not None and self.reply.delay > 0


def _error(status: int, **options: Any) -> Reply:
    return Reply.error(status, **options)


KINDS: dict[str, Kind] = {
    "401": Kind(_error(401), openai.AuthenticationError, "authentication", False, False, 401),
    "403": Kind(_error(403), openai.PermissionDeniedError, "permission", False, False, 403),
    "404 model_not_found": Kind(
        _error(404, code="model_not_found"), openai.NotFoundError, "not_found", False, False, 404
    ),
    "400": Kind(_error(400), openai.BadRequestError, "bad_request", False, False, 400),
    "422": Kind(_error(422), openai.UnprocessableEntityError, "bad_request", False, False, 422),
    "408": Kind(_error(408), openai.APIStatusError, "timeout", True, True, 408),
    "409": Kind(_error(409), openai.ConflictError, "upstream_error", True, True, 409),
    "429 with Retry-After": Kind(
        _error(429, retry_after=FAST_RETRY_AFTER), openai.RateLimitError, "rate_limit", True, True, 429
    ),
    "429 without Retry-After": Kind(_error(429), openai.RateLimitError, "rate_limit", True, True, 429),
    "429 insufficient_quota": Kind(
        _error(429, code="insufficient_quota", retry_after=FAST_RETRY_AFTER),
        openai.RateLimitError,
        "quota_exhausted",
        False,
        False,
        429,
    ),
    "500": Kind(_error(500), openai.InternalServerError, "upstream_error", True, True, 500),
    "502": Kind(_error(502), openai.InternalServerError, "upstream_error", True, True, 502),
    "503": Kind(_error(503), openai.InternalServerError, "upstream_error", True, True, 503),
    "slow beyond the timeout": Kind(Reply.slow(SLOW), openai.APITimeoutError, "timeout", True, True, None),
    "connection refused": Kind(None, openai.APIConnectionError, "connection", True, True, None),
    # Headers and part of the body arrive, then the server hangs up: the announced length is never reached.
    "connection dropped mid-response": Kind(
        Reply(content="Layer one: the operator. " * 20, content_length=64_000),
        openai.APIConnectionError,
        "connection",
        True,
        True,
        None,
    ),
    "malformed JSON": Kind(Reply.malformed(), UpstreamResponseError, "invalid_response", False, False, 200),
    "non-JSON 200": Kind(Reply.non_json(), UpstreamResponseError, "invalid_response", False, False, 200),
    "wrong-shape 200": Kind(Reply.wrong_shape(), UpstreamResponseError, "invalid_response", False, False, 200),
    "empty choices": Kind(Reply.no_choices(), EmptyCompletionError, "empty_completion", False, False, 200),
    "finish_reason length": Kind(
        Reply.length("Layer one"), IncompleteCompletionError, "incomplete_completion", False, False, 200
    ),
    "refusal": Kind(Reply.refused("I can't help with that."), RefusalError, "refusal", False, False, 200),
    "another model": Kind(Reply.other_model("gpt-4o"), ModelEnforcementError, "model_enforcement", False, False, 200),
}

PLACES = ("client", "task", "research")
PLACE_TITLES = {"client": "plain client", "task": "task in a flow", "research": "research step"}


def cells(retried: str) -> list[Any]:
    """(kind, variant) pairs: every kind fails throughout; the retried ones also fail once and then recover."""
    pairs = [pytest.param(name, "fails", id=f"{name}-fails") for name in KINDS]
    pairs += [
        pytest.param(name, "recovers", id=f"{name}-recovers")
        for name, kind in KINDS.items()
        if getattr(kind, retried) and kind.reply is not None
    ]
    return pairs


# --- recording --------------------------------------------------------------------------------------------

# Under pytest-xdist the whole module runs on one worker (tests/conftest.py, XDIST_GROUPS), so the summary sees
# every cell.
RESULTS: dict[str, dict[str, Any]] = {}


def record(kind: str, place: str, variant: str, started: float, **facts: Any) -> None:
    """Keep what a cell observed, for the summary table (recorded before its assertions run)."""
    RESULTS[f"{place}|{kind}|{variant}"] = {
        "kind": kind,
        "place": place,
        "variant": variant,
        "seconds": round(time.monotonic() - started, 2),
        **facts,
    }


def qualified(error: BaseException | None) -> str | None:
    return None if error is None else f"{type(error).__module__}.{type(error).__qualname__}"


# --- fixtures and helpers -------------------------------------------------------------------------------------


@pytest.fixture
def openai_server() -> Iterator[HangingUpOpenAIServer]:
    """The fake OpenAI server; it can also stop listening in the middle of a run."""
    with HangingUpOpenAIServer() as server:
        yield server


def hang_up_after_the_plan(server: HangingUpOpenAIServer) -> None:
    """Answer the research plan, then refuse every later connection."""

    def plan_request(request: RecordedRequest) -> bool:
        if not user_text(request).startswith(PLAN):
            return False
        # The listener closes before the plan's answer is written; the answer closes its own connection, so
        # no pooled keep-alive connection survives either: every later request is refused.
        server.stop_listening()
        return True

    server.reply_when(plan_request, Reply.ok(headers={"Connection": "close"}), times=1)


@pytest.fixture(scope="module", autouse=True)
def quick_runs(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run); results, if any, under tmp."""
    overrides = {
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
        PREFECT_LOCAL_STORAGE_PATH: tmp_path_factory.mktemp("matrix-results"),
    }
    with temporary_settings(overrides):
        yield


@pytest.fixture
def flow_env(arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Tasks retry transient failures twice, at once."""
    monkeypatch.setenv("ARCANOS_TASK_RETRIES", str(TASK_RETRIES))
    monkeypatch.setenv("ARCANOS_TASK_RETRY_DELAY", "0")
    return arcanos_env


@flow(name=PROBE_FLOW, on_failure=[hooks.flow_on_failure], on_crashed=[hooks.flow_on_crashed])
def probe_flow(step: str) -> ReasoningResult:
    """A small flow with one reasoning step, as a user would write it."""
    return with_retries(run_reasoning, resolve_settings())(MESSAGES, METADATA, step=step)


def inject(server: FakeOpenAIServer, kind: Kind, variant: str, marker: str | None = None) -> None:
    """Make the server fail (every time, or the first time only) the requests whose prompt starts with ``marker``."""
    assert kind.reply is not None
    times = 1 if variant == "recovers" else None
    if marker is not None:
        server.reply_when(prompt_starts_with(marker), kind.reply, times=times)
    elif times is None:
        server.always(kind.reply)
    else:
        server.script(kind.reply)


def expected_tries(kind: Kind, variant: str, place: str) -> int:
    """HTTP attempts: the SDK retries in the plain client, Prefect in tasks (one attempt per try), each its kinds."""
    if variant == "recovers":
        return 2
    if place == "client":
        return 1 + SDK_RETRIES if kind.sdk_retried else 1
    return 1 + TASK_RETRIES if kind.task_retried else 1


def assert_original(error: BaseException, kind: Kind) -> None:
    """The very exception raised where the failure happened: its exact class, raised by the SDK or by us."""
    assert type(error) is kind.error, f"{type(error).__name__}: {error}"
    assert error.__traceback__ is not None
    innermost = traceback.extract_tb(error.__traceback__)[-1].filename
    assert ("/openai/" if isinstance(error, openai.OpenAIError) else "/arcanos_flows/") in innermost, innermost


def one_incident(receiver: WebhookReceiver) -> tuple[dict[str, Any], Delivery]:
    """Exactly one delivery reached the webhook, signed, answered 2xx, under the incident's own id."""
    deliveries = receiver.deliveries
    assert len(deliveries) == 1, [delivery.json for delivery in deliveries]
    (delivery,) = deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    incident = delivery.json
    assert delivery.headers["webhook-id"] == incident["incident_id"]
    return incident, delivery


def assert_incident_facts(
    incident: dict[str, Any], kind: Kind, attempts: int, request_id: str | None, prompt: str = MESSAGES[-1]["content"]
) -> None:
    """Class, HTTP facts, attempts, model and audit metadata as the contract says; never the prompt."""
    assert incident["incident_class"] == kind.incident_class
    assert incident["http_status"] == kind.http_status
    assert incident["request_id"] == (request_id if kind.http_status is not None else None)
    assert incident["attempts"] == attempts
    assert incident["model"] == MODEL
    assert incident["metadata"]["intent"] == METADATA["intent"]
    assert prompt not in json.dumps(incident)


def request_id_of_last(server: FakeOpenAIServer, marker: str | None = None) -> str | None:
    """``x-request-id`` the server gave the last request (containing ``marker``): ``req_<its number>``."""
    numbered = [
        number
        for number, request in enumerate(server.requests, 1)
        if marker is None or user_text(request).startswith(marker)
    ]
    return f"req_{numbered[-1]}" if numbered else None


def assert_run_context(incident: dict[str, Any], flow_run_id: str, task_run: TaskRun, tries: int, kind: Kind) -> None:
    context = incident["context"]
    assert context["flow_run_id"] == flow_run_id
    assert context["task_run_id"] == str(task_run.id)
    assert context["task_run_name"] == task_run.name
    assert context["attempts"] == tries
    assert context["final_state"] == "Failed"
    assert incident["incident_id"] == str(incident_id_for(flow_run_id, task_run.id, kind.incident_class))


def terminal(run: TaskRun) -> bool:
    return run.state is not None and run.state.is_final()


# --- (a) the plain client -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), cells("sdk_retried"))
def test_plain_client(
    name: str,
    variant: str,
    openai_server: HangingUpOpenAIServer,
    receiver: WebhookReceiver,
    make_settings: Any,
) -> None:
    """A plain client call raises the original exception after 1 + max_retries attempts (1 if not retryable)."""
    kind = KINDS[name]
    started = time.monotonic()
    overrides: dict[str, Any] = {"max_retries": SDK_RETRIES}
    if kind.slow:
        overrides["request_timeout"] = TIMEOUT
    if kind.reply is None:
        overrides["openai_base_url"] = f"http://127.0.0.1:{closed_port()}/v1"
    else:
        inject(openai_server, kind, variant)
    settings = make_settings(**overrides)
    tries = expected_tries(kind, variant, "client")

    with ArcanosPythonClient(settings, notifier=MaintenanceNotifier(settings, backoff=0.01)) as client:
        if variant == "recovers":
            result = client.run_reasoning(MESSAGES, metadata=METADATA)
            seen = len(openai_server.completion_requests)
            record(
                name,
                "client",
                variant,
                started,
                error=None,
                incident_class=None,
                attempts=result.attempts,
                server_requests=seen,
                task_runs=None,
                state="returned",
                incidents=len(receiver.deliveries),
            )
            assert result.content
            assert result.model == MODEL
            assert (result.attempts, seen) == (tries, tries)
            assert receiver.deliveries == []
            return
        with pytest.raises(kind.error) as caught:
            client.run_reasoning(MESSAGES, metadata=METADATA)

    error = caught.value
    seen = len(openai_server.completion_requests)
    deliveries = receiver.deliveries
    first = deliveries[0].json if deliveries else {}
    record(
        name,
        "client",
        variant,
        started,
        error=qualified(error),
        incident_class=first.get("incident_class"),
        attempts=first.get("attempts"),
        server_requests=seen,
        task_runs=None,
        state="raised",
        incidents=len(deliveries),
    )
    assert_original(error, kind)
    assert seen == (0 if kind.reply is None else tries)
    incident, _ = one_incident(receiver)
    assert_incident_facts(incident, kind, tries, request_id_of_last(openai_server))
    assert incident["source"] == "arcanos_flows.client"


# --- (b) a reasoning task inside a small flow -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), cells("task_retried"))
def test_task_in_a_flow(
    name: str,
    variant: str,
    openai_server: HangingUpOpenAIServer,
    receiver: WebhookReceiver,
    flow_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failing step fails its task and its flow with the original exception, reported once with its run."""
    kind = KINDS[name]
    started = time.monotonic()
    if kind.slow:
        monkeypatch.setenv("ARCANOS_REQUEST_TIMEOUT", str(TIMEOUT))
    if kind.reply is None:
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{closed_port()}/v1")
    else:
        inject(openai_server, kind, variant)
    tries = expected_tries(kind, variant, "task")
    step = f"probe-{variant}"

    state: State = probe_flow(step, return_state=True)

    flow_run_id = str(state.state_details.flow_run_id)
    requests = openai_server.completion_requests
    (task_run,) = flow_task_runs(flow_run_id, lambda runs: len(runs) == 1 and terminal(runs[0]))
    outcome = state.result(raise_on_failure=False)
    deliveries = receiver.deliveries
    first = deliveries[0].json if deliveries else {}
    record(
        name,
        "task",
        variant,
        started,
        error=qualified(outcome) if isinstance(outcome, BaseException) else None,
        incident_class=first.get("incident_class"),
        attempts=first["attempts"] if first else getattr(outcome, "attempts", None),
        server_requests=len(requests),
        task_runs=task_run.run_count,
        state=f"task {task_run.state_name}, flow {state.name}",
        incidents=len(deliveries),
    )
    assert task_run.name == f"reasoning[{step}]"
    assert task_run.run_count == tries
    assert len(requests) == (0 if kind.reply is None else tries)
    # One HTTP attempt per try: inside tasks the SDK never retries.
    assert [request.headers.get("x-stainless-retry-count") for request in requests] == ["0"] * len(requests)
    for request in requests:
        assert request.json["metadata"]["prefect.task_run_id"] == str(task_run.id)
        assert request.json["metadata"]["prefect.flow_run_id"] == flow_run_id
    if variant == "recovers":
        assert state.is_completed(), state.message
        assert task_run.state is not None
        assert task_run.state.is_completed()
        assert outcome.attempts == tries
        assert deliveries == []
        return
    assert state.is_failed()
    assert task_run.state is not None
    assert task_run.state.is_failed()
    assert_original(outcome, kind)
    incident, _ = one_incident(receiver)
    assert_incident_facts(incident, kind, tries, request_id_of_last(openai_server))
    assert_run_context(incident, flow_run_id, task_run, tries, kind)
    assert incident["metadata"]["prefect.flow"] == PROBE_FLOW


# --- (c) one mapped investigation inside research_flow -----------------------------------------------------------


@pytest.mark.parametrize(("name", "variant"), cells("task_retried"))
def test_research_step(
    name: str,
    variant: str,
    openai_server: HangingUpOpenAIServer,
    receiver: WebhookReceiver,
    flow_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One failing investigation fails only its step, is reported once, and fails the run after the synthesis."""
    kind = KINDS[name]
    started = time.monotonic()
    questions = QUESTIONS
    target_step = TARGET_STEP
    if kind.slow:
        monkeypatch.setenv("ARCANOS_REQUEST_TIMEOUT", str(TIMEOUT))
    if kind.reply is None:
        # A refused connection cannot pick a request: the upstream goes away after the plan, and the run has one
        # investigation, so it is still the only step that fails.
        questions, target_step = [QUESTIONS[TARGET]], "investigate-1"
        hang_up_after_the_plan(openai_server)
    else:
        inject(openai_server, kind, variant, marker=TARGET_MARKER)
    tries = expected_tries(kind, variant, "research")

    state: State = research_flow(TOPIC, questions=questions, audit=METADATA, max_parallel=3, return_state=True)

    flow_run_id = str(state.state_details.flow_run_id)
    expected_runs = len(questions) + (1 if kind.reply is None else 2)  # plan, investigations[, synthesis]
    runs = flow_task_runs(flow_run_id, lambda found: len(found) == expected_runs and all(map(terminal, found)))
    by_name = {run.name: run for run in runs}
    task_run = by_name[f"reasoning[{target_step}]"]
    outcome = state.result(raise_on_failure=False)
    report: ResearchReport = outcome.report if isinstance(outcome, ResearchStepsFailed) else outcome
    cause = outcome.__cause__ if isinstance(outcome, BaseException) else None
    target_requests = [
        request for request in openai_server.completion_requests if user_text(request).startswith(TARGET_MARKER)
    ]
    deliveries = receiver.deliveries
    first = deliveries[0].json if deliveries else {}
    target_record = next((step for step in getattr(report, "steps", ()) if step.step == target_step), None)
    record(
        name,
        "research",
        variant,
        started,
        error=qualified(cause),
        incident_class=first.get("incident_class"),
        attempts=first["attempts"] if first else getattr(target_record, "attempts", None),
        server_requests=len(target_requests),
        task_runs=task_run.run_count,
        state=f"step {task_run.state_name}, flow {state.name}",
        incidents=len(deliveries),
    )
    assert isinstance(report, ResearchReport), outcome
    target = next(step for step in report.steps if step.step == target_step)
    assert target.task_run_id == str(task_run.id)
    assert task_run.run_count == tries
    assert len(target_requests) == (0 if kind.reply is None else tries)
    others = [run for run in runs if run.id != task_run.id]
    assert all(run.state is not None and run.state.is_completed() and run.run_count == 1 for run in others), [
        (run.name, run.state_name, run.run_count) for run in others
    ]
    if variant == "recovers":
        assert state.is_completed(), state.message
        assert (target.status, target.attempts) == ("completed", tries)
        assert task_run.state is not None
        assert task_run.state.is_completed()
        assert deliveries == []
        return
    assert state.is_failed()
    assert isinstance(outcome, ResearchStepsFailed)
    assert outcome.failed == 1
    assert_original(cause, kind)
    assert task_run.state is not None
    assert task_run.state.is_failed()
    assert (target.status, target.error_class, target.attempts) == ("failed", kind.incident_class, tries)
    assert [step.step for step in report.steps if not step.ok] == [target_step]
    assert (report.synthesis is None) == (kind.reply is None)  # no synthesis only when every investigation failed
    incident, _ = one_incident(receiver)
    assert_incident_facts(
        incident, kind, tries, request_id_of_last(openai_server, TARGET_MARKER), prompt=QUESTIONS[TARGET]
    )
    assert_run_context(incident, flow_run_id, task_run, tries, kind)
    assert incident["incident_id"] == target.incident_id
    assert incident["metadata"]["prefect.flow"] == "arcanos-research"


# --- the summary ------------------------------------------------------------------------------------------------


def summary_table(results: dict[str, dict[str, Any]]) -> str:
    """The matrix as Markdown, one row per failure kind; each cell lists client / task / research step."""

    def rows(kind: str, variant: str) -> list[dict[str, Any] | None]:
        return [results.get(f"{place}|{kind}|{variant}") for place in PLACES]

    def joined(values: list[Any]) -> str:
        shown = ["-" if value is None else str(value) for value in values]
        return shown[0] if len(set(shown)) == 1 else " / ".join(shown)

    def attempts(row: dict[str, Any] | None) -> str:
        if row is None:
            return "-"
        unreached = row["server_requests"] == 0 and row["attempts"]
        return f"{row['attempts']}" + (" (refused)" if unreached else "")

    def final(row: dict[str, Any] | None) -> str:
        if row is None:
            return "-"
        return row["state"].replace("task ", "").replace("step ", "").replace(", flow ", " (flow ") + (
            ")" if ", flow " in row["state"] else ""
        )

    header = [
        "failure",
        "exception the caller sees",
        "incident class",
        "HTTP attempts (client / task / step)",
        "final state (task / step)",
        "incidents",
        "fails once, then",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for kind in KINDS:
        failing = rows(kind, "fails")
        known = [row for row in failing if row is not None]
        if not known:
            continue
        error = joined([row["error"] for row in known]).replace("arcanos_flows.errors.", "")
        recovering = [row for row in rows(kind, "recovers") if row is not None]
        if recovering:
            then = (
                f"{joined([row['attempts'] for row in recovering])} attempts, "
                f"{joined([row['state'].split(' ')[-1] for row in recovering[1:]] or ['returned'])}, "
                f"{joined([row['incidents'] for row in recovering])} incidents"
            )
        else:
            retried = KINDS[kind].sdk_retried or KINDS[kind].task_retried
            then = "not retried" if not retried else "not scripted (nothing listens)"
        cells_ = [
            kind,
            f"`{error}`",
            joined([row["incident_class"] for row in known]),
            joined([attempts(row) for row in failing]),
            joined([final(row) for row in failing[1:]]),
            joined([row["incidents"] for row in failing]),
            then,
        ]
        lines.append("| " + " | ".join(cells_) + " |")
    return "\n".join(lines)


def test_matrix_summary(tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]) -> None:
    """The matrix results, as JSON for the record and as the table README quotes."""
    if not RESULTS:
        pytest.skip("no matrix cell ran in this session")
    expected = sum(len(cells(flag)) for flag in ("sdk_retried", "task_retried", "task_retried"))
    payload = {
        "sdk_retries": SDK_RETRIES,
        "task_retries": TASK_RETRIES,
        "cells": len(RESULTS),
        "expected_cells": expected,
        "seconds": round(sum(row["seconds"] for row in RESULTS.values()), 1),
        "results": list(RESULTS.values()),
    }
    path = tmp_path_factory.getbasetemp() / "fault-matrix.json"
    path.write_text(json.dumps(payload, indent=2))
    if MATRIX_JSON:
        Path(MATRIX_JSON).write_text(json.dumps(payload, indent=2))
    table = summary_table(RESULTS)
    with capsys.disabled():
        print(
            f"\n\nFault matrix: {len(RESULTS)}/{expected} cells in {payload['seconds']} s "
            f"(ARCANOS_MAX_RETRIES={SDK_RETRIES}, ARCANOS_TASK_RETRIES={TASK_RETRIES}); JSON: {path}\n"
            "A research step's failure reaches the caller as the __cause__ of ResearchStepsFailed; "
            "a refused connection never reaches the server.\n"
            f"{table}\n"
        )
    # Every cell that ran delivered at most one incident: the table must never show two for one root cause.
    assert all(row["incidents"] <= 1 for row in RESULTS.values())
