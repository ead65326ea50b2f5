"""Every exception a step raises or lets through survives pickling, and a reported one is still known as reported.

A failed step's exception reaches the flow pickled when the step ran in another process (a Dask worker, a process
pool) and goes into result storage pickled. It must come back as itself: its class (callers' ``except
openai.AuthenticationError`` still works), message, attributes, incident class and the incident attached to it, whose
id tells the flow's hook that the step already reported the failure (one incident per root cause).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import openai
import pytest
from conftest import API_KEY, WEBHOOK_SECRET
from prefect import Task, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from prefect.states import Failed

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.errors import (
    ArcanosError,
    ConfigurationError,
    EmptyCompletionError,
    IncompleteCompletionError,
    InvalidReasoningInput,
    ModelEnforcementError,
    RefusalError,
    UpstreamResponseError,
    classify,
)
from arcanos_flows.incidents import Incident, attach_incident, attached_incident
from arcanos_flows.prefect.hooks import flow_on_failure
from arcanos_flows.prefect.runs import state_exception
from arcanos_flows.prefect.tasks import run_reasoning, with_retries
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]

PICKLERS: dict[str, Callable[[Any], bytes]] = {
    "pickle": pickle.dumps,
    "pickle-protocol-0": lambda error: pickle.dumps(error, protocol=0),
    # What Prefect's result storage and Dask use for what plain pickle cannot do.
    "cloudpickle": cloudpickle.dumps,
}


def round_trip(error: BaseException, dumps: Callable[[Any], bytes] = pickle.dumps) -> BaseException:
    copy = pickle.loads(dumps(error))  # noqa: S301 - what this process pickled a moment ago
    assert isinstance(copy, BaseException)
    return copy


def assert_same_failure(copy: BaseException, original: BaseException) -> None:
    """Class, message, attributes, incident class and the attached incident (its id above all) survived."""
    assert type(copy) is type(original)
    assert str(copy) == str(original)
    assert copy.args == original.args
    assert classify(copy) == classify(original)
    incident = attached_incident(original)
    assert incident is not None
    copied = attached_incident(copy)
    assert copied is not None
    assert copied.incident_id == incident.incident_id
    assert copied == incident


# --- the project's own exceptions ------------------------------------------------------------------------------

OWN: dict[str, Callable[[], ArcanosError]] = {
    "ConfigurationError": lambda: ConfigurationError("Missing required environment variable: ARCANOS_FINE_TUNED_MODEL"),
    "InvalidReasoningInput": lambda: InvalidReasoningInput("messages[0].role: must be one of system, user", attempts=0),
    "ModelEnforcementError": lambda: ModelEnforcementError(
        "ft:a was requested but gpt-4o answered",
        expected_model="ft:a",
        actual_model="gpt-4o",
        request_id="req_7",
        http_status=200,
        attempts=1,
    ),
    "UpstreamResponseError": lambda: UpstreamResponseError("not JSON", request_id="req_8", http_status=200, attempts=1),
    "EmptyCompletionError": lambda: EmptyCompletionError("no choices", request_id="req_9", http_status=200, attempts=1),
    "IncompleteCompletionError": lambda: IncompleteCompletionError(
        "length", request_id="req_10", http_status=200, attempts=2
    ),
    "RefusalError": lambda: RefusalError(
        "the model refused", refusal="I can't help with that.", request_id="req_11", http_status=200, attempts=1
    ),
}


@pytest.mark.parametrize("pickler", PICKLERS)
@pytest.mark.parametrize("name", OWN)
def test_the_projects_exceptions_survive_pickling_with_their_keyword_only_attributes(name: str, pickler: str) -> None:
    """Keyword-only constructor arguments are no obstacle: class, message, every attribute and the incident survive."""
    error = OWN[name]()
    attach_incident(error, Incident.from_exception(error, source="tests"))
    error.add_note("seen in investigate-2")

    copy = round_trip(error, PICKLERS[pickler])

    assert_same_failure(copy, error)
    assert vars(copy) == vars(error)  # expected_model, actual_model, refusal, request_id, http_status, attempts...
    assert copy.__notes__ == ["seen in investigate-2"]
    assert isinstance(copy, ArcanosError)
    assert type(copy).__module__ == "arcanos_flows.errors"


def test_an_invalid_input_error_still_is_a_value_error_after_the_round_trip() -> None:
    copy = round_trip(InvalidReasoningInput("messages: must contain at least one message"))
    with pytest.raises(ValueError, match="at least one message"):
        raise copy


# --- what the client raises, SDK errors included -----------------------------------------------------------------


@pytest.fixture
def client(make_settings: Callable[..., ArcanosSettings]) -> Iterator[ArcanosPythonClient]:
    """A client that makes one attempt per call, times out after half a second and reports nothing itself."""
    with ArcanosPythonClient(make_settings(max_retries=0, request_timeout=0.5)) as plain:
        yield plain


FAILURES: dict[str, tuple[Reply | None, type[BaseException], str]] = {
    "400": (Reply.error(400), openai.BadRequestError, "bad_request"),
    "401": (Reply.error(401), openai.AuthenticationError, "authentication"),
    "403": (Reply.error(403), openai.PermissionDeniedError, "permission"),
    "404": (Reply.error(404, code="model_not_found"), openai.NotFoundError, "not_found"),
    "408": (Reply.error(408), openai.APIStatusError, "timeout"),
    "409": (Reply.error(409), openai.ConflictError, "upstream_error"),
    "422": (Reply.error(422), openai.UnprocessableEntityError, "bad_request"),
    "429": (Reply.error(429, retry_after=1), openai.RateLimitError, "rate_limit"),
    "429 insufficient_quota": (Reply.error(429, code="insufficient_quota"), openai.RateLimitError, "quota_exhausted"),
    "500": (Reply.error(500), openai.InternalServerError, "upstream_error"),
    "503": (Reply.error(503), openai.InternalServerError, "upstream_error"),
    "timeout": (Reply.slow(3.0), openai.APITimeoutError, "timeout"),
    "connection dropped": (Reply.drop(), openai.APIConnectionError, "connection"),
    "connection refused": (None, openai.APIConnectionError, "connection"),
    "another model": (Reply.other_model("gpt-4o"), ModelEnforcementError, "model_enforcement"),
    "malformed": (Reply.malformed(), UpstreamResponseError, "invalid_response"),
    "no choices": (Reply.no_choices(), EmptyCompletionError, "empty_completion"),
    "length": (Reply.length("Layer one"), IncompleteCompletionError, "incomplete_completion"),
    "refusal": (Reply.refused("I can't help with that."), RefusalError, "refusal"),
}


def raised_by(client: ArcanosPythonClient, server: FakeOpenAIServer, failure: str) -> BaseException:
    reply, expected, _ = FAILURES[failure]
    if reply is None:
        server.stop()  # nothing listens any more: the connection is refused
    else:
        server.always(reply)
    with pytest.raises(expected) as raised:
        client.run_reasoning(MESSAGES, notify=False)
    assert type(raised.value) is expected
    return raised.value


@pytest.mark.parametrize("failure", FAILURES)
def test_what_the_client_raises_survives_pickling(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, failure: str
) -> None:
    """The SDK's exceptions too: class, message, status, request id, body, the redacted exchange and the incident."""
    error = raised_by(client, openai_server, failure)
    incident = attached_incident(error)
    assert incident is not None
    assert incident.incident_class.value == FAILURES[failure][2]

    for dumps in PICKLERS.values():
        blob = dumps(error)
        assert API_KEY.encode() not in blob
        copy = round_trip(error, dumps)
        assert_same_failure(copy, error)
        assert classify(copy).incident_class.value == FAILURES[failure][2]
        if isinstance(error, openai.APIError):
            assert isinstance(copy, openai.APIError)
            assert copy.message == error.message
            assert copy.body == error.body
            assert (copy.code, copy.type, copy.param) == (error.code, error.type, error.param)
            assert copy.request.url == error.request.url
            assert copy.request.headers.get("authorization", "[REDACTED]") == "[REDACTED]"
        if isinstance(error, openai.APIStatusError):
            assert isinstance(copy, openai.APIStatusError)
            assert copy.status_code == error.status_code
            assert copy.request_id == error.request_id is not None
            assert copy.response.status_code == error.response.status_code
            assert copy.response.headers["x-request-id"] == error.request_id
            assert copy.response.content == error.response.content


def test_callers_still_catch_the_sdk_class_after_the_round_trip(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer
) -> None:
    """``except openai.AuthenticationError`` (and the broader SDK classes) catches the unpickled copy."""
    copy = round_trip(raised_by(client, openai_server, "401"))

    with pytest.raises(openai.AuthenticationError) as caught:
        raise copy
    assert isinstance(caught.value, openai.APIStatusError)
    assert caught.value.status_code == 401


def test_a_fresh_interpreter_loads_the_pickles_without_registering_anything(
    client: ArcanosPythonClient, openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """The stream names only the standard library's rebuilder and the classes: the loading side needs no set-up."""
    errors = [raised_by(client, openai_server, failure) for failure in ("401", "429", "refusal")]
    errors.append(raised_by(client, openai_server, "connection refused"))
    blob = tmp_path / "errors.pickle"
    blob.write_bytes(pickle.dumps(errors))
    loader = (
        "import json, pickle, sys\n"
        "errors = pickle.loads(open(sys.argv[1], 'rb').read())\n"
        "print(json.dumps([[type(e).__module__ + '.' + type(e).__qualname__, str(e),"
        " str(e._arcanos_incident.incident_id), getattr(e, 'status_code', None)] for e in errors]))\n"
        "print('arcanos_flows.client' in sys.modules, file=sys.stderr)\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", loader, str(blob)], capture_output=True, text=True, timeout=60, check=True
    )

    expected = []
    for error in errors:
        incident = attached_incident(error)
        assert incident is not None
        expected.append(
            [
                f"{type(error).__module__}.{type(error).__qualname__}",
                str(error),
                str(incident.incident_id),
                getattr(error, "status_code", None),
            ]
        )
    assert json.loads(loaded.stdout) == expected
    assert loaded.stderr.strip() == "False"  # the client (which registers the SDK's classes) was never imported


# --- the flow's hook knows a reported step from its incident, on either side of a pickle -------------------------


@pytest.fixture
def prefect_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run); results under tmp."""
    overrides = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "results"}
    with temporary_settings(overrides):
        yield


@pytest.fixture
def step(arcanos_env: dict[str, str], prefect_runs: None) -> Task[..., ReasoningResult]:
    """``run_reasoning`` without retries."""
    return with_retries(run_reasoning, ArcanosSettings(task_retries=0))


@flow(name="arcanos-test-pickling")
def other_process() -> None:
    """Stands for the flow whose process receives the pickled failure."""


def fresh_flow_run() -> FlowRun:
    """A flow run of its own: nothing this process's hooks remember is about it."""
    with get_client(sync_client=True) as client:
        return client.create_flow_run(other_process, name=f"receiving-{uuid.uuid4().hex[:6]}")


def test_a_step_reported_before_the_pickle_is_known_as_reported_after_it(
    step: Task[..., ReasoningResult], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The task hook's incident travels attached to the exception: the flow's hook on the other side sends nothing."""
    openai_server.always(Reply.error(401))
    seen: dict[str, BaseException | None] = {}

    @flow(name="arcanos-test-pickling-sender")
    def sender() -> None:
        seen["error"] = state_exception(step(MESSAGES, step="plan", return_state=True))

    assert sender(return_state=True).is_completed()
    (reported,) = receiver.incidents
    error = seen["error"]
    assert error is not None
    copy = round_trip(error, cloudpickle.dumps)
    incident = attached_incident(copy)
    assert incident is not None
    assert str(incident.incident_id) == reported["incident_id"]

    # The flow raised it; or it returned the failed step's state (Prefect fails the flow on it, with no exception).
    flow_on_failure(other_process, fresh_flow_run(), Failed(data=copy))
    flow_on_failure(other_process, fresh_flow_run(), Failed(data=[Failed(data=round_trip(error))]))
    flow_on_failure(other_process, fresh_flow_run(), Failed(data=RuntimeError("aborted")))  # another root cause

    incidents = receiver.incidents
    assert [incident["incident_class"] for incident in incidents] == ["authentication", "flow_failed"]
    assert incidents[1]["reason"] == "aborted"


def test_an_incident_the_client_only_attached_is_not_taken_for_a_reported_one(
    arcanos_env: dict[str, str],
    prefect_runs: None,
    client: ArcanosPythonClient,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
) -> None:
    """``notify=False`` attaches an incident nobody delivered: a flow failing on it still reports, once."""
    copy = round_trip(raised_by(client, openai_server, "403"))
    assert attached_incident(copy) is not None
    assert receiver.deliveries == []

    flow_run = fresh_flow_run()
    flow_on_failure(other_process, flow_run, Failed(data=copy))

    (incident,) = receiver.incidents
    assert incident["incident_class"] == "flow_failed"
    assert incident["context"]["cause_class"] == "permission"
    assert incident["error_type"] == "openai.PermissionDeniedError"
    assert incident["context"]["flow_run_id"] == str(flow_run.id)
    assert WEBHOOK_SECRET not in json.dumps(incident)
