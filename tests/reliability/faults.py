"""Fault-injection helpers shared by the fault matrix and the soak: request matchers and Prefect look-ups."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterFlowRunId
from prefect.client.schemas.objects import TaskRun

from arcanos_flows.testing import FakeOpenAIServer, RecordedRequest

INVESTIGATE = "Investigate: "
"""How the research flow's investigation prompts start (``prompts.investigation_messages``)."""
PLAN = "Plan the research of this topic: "
"""How the research flow's plan prompt starts."""


def user_text(request: RecordedRequest) -> str:
    """The last user message of a Chat Completions request ('' when there is none)."""
    body = request.json if isinstance(request.json, dict) else {}
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user" and isinstance(message.get("content"), str):
            return message["content"]
    return ""


def question_of(request: RecordedRequest) -> str | None:
    """The question an investigation request asks, or ``None`` for plan, synthesis and other requests."""
    text = user_text(request)
    return text[len(INVESTIGATE) :].split("\n", 1)[0] if text.startswith(INVESTIGATE) else None


def prompt_starts_with(prefix: str) -> Callable[[RecordedRequest], bool]:
    """A :meth:`FakeOpenAIServer.reply_when` matcher: the last user message starts with ``prefix``.

    A prefix, not a substring: the synthesis quotes the investigations' answers, and the fake answers echo
    their prompts.
    """
    return lambda request: user_text(request).startswith(prefix)


class HangingUpOpenAIServer(FakeOpenAIServer):
    """A FakeOpenAIServer that can stop accepting connections while it still answers the ones it has."""

    def stop_listening(self) -> None:
        """Refuse new connections from now on; connections already open finish what they are doing.

        :meth:`stop` would also cut the connection a reply is still to be written on.
        """
        server = self._server
        if server is not None:
            server.shutdown()
            server.server_close()


def closed_port() -> int:
    """A loopback port nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def flow_task_runs(
    flow_run_id: uuid.UUID | str, ready: Callable[[list[TaskRun]], bool], timeout: float = 20.0
) -> list[TaskRun]:
    """The task runs of a flow run as the Prefect API records them, once ``ready(runs)`` holds.

    Task-run states reach the server through events, a moment after the run itself has ended.
    """
    deadline = time.monotonic() + timeout
    runs: list[TaskRun] = []
    while True:
        runs = []
        with get_client(sync_client=True) as client:
            while True:
                page = client.read_task_runs(
                    task_run_filter=TaskRunFilter(
                        flow_run_id=TaskRunFilterFlowRunId(any_=[uuid.UUID(str(flow_run_id))])
                    ),
                    limit=200,
                    offset=len(runs),
                )
                runs.extend(page)
                if len(page) < 200:
                    break
        if ready(runs):
            return runs
        if time.monotonic() > deadline:
            described = sorted((run.name, run.state_name, run.run_count) for run in runs)
            raise AssertionError(f"task runs of {flow_run_id} not as expected within {timeout}s: {described}")
        time.sleep(0.05)
