"""The Prefect-wide leak scan: no secret leaves the process, whatever the upstream echoes and whatever fails.

Secrets (random per run, recognisable): the API key of the environment (``sk-LEAKSCAN-apikey-<random>``), the
webhook secret of the environment (``whsec_`` + base64 of ``LEAKSCAN-webhook-<random>``), and the secrets of an
``ArcanosCredentials`` block: an API key that matches no key pattern (``arcanos-proxy-LEAKSCAN-block-<random>``,
so only arcanos-flows knowing it can redact it) and the block's own webhook secret. The block is used through
``ARCANOS_CREDENTIALS_BLOCK`` and passed as ``credentials=`` to tasks (and as a flow parameter).

Scenarios: a research flow whose investigations fail with a 401 echoing the key (message, body, request id), a
500 echoing ``Bearer <key>`` and another model answering (its name holding the key), while the plan's 200
carries the key as its request id; the maintenance check failing on the block's key; tasks given the block
(``run_reasoning`` failing, ``notify_maintenance``); ``notify_maintenance`` with the key in reason and context;
user code failing with the key in its message (one flow with the arcanos hooks, one without, reported by the
incident relay in its own process); a webhook outage that spools incidents, then a flush; and the CLI's
``prompt`` and ``check`` as subprocesses.

Channels: stdout and stderr (file-descriptor level), every Python log record (root at DEBUG), the Prefect logs of
every run read back from the API, flow runs, their parameters and states and task runs and states read back
from the API, the in-process flow and task states and results, artifacts, exceptions the flows raised
(str, repr, args, traceback, attributes, the SDK's HTTP exchange, pickle, the whole cause chain), incidents as
delivered to both webhook receivers, spool files (snapshotted while each delivery is in flight, and during the
outage), Prefect events related to the runs (``arcanos.incident.*`` and ``prefect.*``), result storage
(base64 pickles decoded), and the block document as the API returns it without secrets. Each secret is looked
for whole, as a distinctive 12-character piece and as base64 at every byte alignment.

Out of our control, by decision: user code raising an exception whose message holds a secret. Prefect records
that exception as raised: the run's state message (API and ``prefect.flow-run.*`` events), Prefect's own log
lines and console output about the run, the pickled exception in result storage, and the exception the caller
gets back. arcanos-flows does not rewrite user exceptions (doing so would change what user code sees and still
miss Prefect's state message, which is written before any hook runs). It does redact everything *it* produces
from them: the incident (webhook, spool, ``arcanos.incident.*`` event), the relay's incident built from the
state message, artifacts. The scan allows the key in exactly those Prefect-owned channels of exactly those runs,
and nowhere else; failures that arcanos-flows raises itself (SDK errors, model enforcement...) are scrubbed at
the source and must not appear anywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import MODEL
from prefect import flow, tags
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.events.schemas.events import ReceivedEvent
from prefect.logging.handlers import APILogHandler, PrefectConsoleHandler
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    PREFECT_LOCAL_STORAGE_PATH,
    temporary_settings,
)
from prefect.states import State

from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.flows.maintenance import maintenance_check_flow
from arcanos_flows.flows.research import ResearchStepsFailed, research_flow
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.prefect.credentials import CREDENTIALS_BLOCK_VARIABLE, ArcanosCredentials
from arcanos_flows.prefect.decorator import arcanos_flow
from arcanos_flows.prefect.tasks import notify_maintenance, run_reasoning
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from reliability.leakscan import (
    Haystack,
    Secret,
    block_document_texts,
    delivery_texts,
    exception_texts,
    file_texts,
    log_record_texts,
    read_events,
    read_logs,
    read_run_records,
    spool_snapshot,
    wait_for,
    webhook_secret,
    webhook_secret_forms,
)
from reliability.support import secrets_registry

pytestmark = pytest.mark.usefixtures("prefect_harness")

API_KEY = f"sk-LEAKSCAN-apikey-{secrets.token_hex(12)}"
WEBHOOK_SECRET, _WEBHOOK_CORE = webhook_secret("webhook")
BLOCK_KEY = f"arcanos-proxy-LEAKSCAN-block-{secrets.token_hex(12)}"
BLOCK_WEBHOOK_SECRET, _BLOCK_WEBHOOK_CORE = webhook_secret("block-webhook")
SECRETS = [
    Secret("API key", API_KEY, API_KEY.rsplit("-", 1)[1]),
    *webhook_secret_forms("webhook secret", WEBHOOK_SECRET, _WEBHOOK_CORE),
    Secret("block API key", BLOCK_KEY, BLOCK_KEY.rsplit("-", 1)[1]),
    *webhook_secret_forms("block webhook secret", BLOCK_WEBHOOK_SECRET, _BLOCK_WEBHOOK_CORE),
]
BLOCK_SLUG = "arcanos-credentials"

# User code that leaks a secret into its own exception: Prefect shows that exception as raised (see the module
# docstring). These are the Prefect-owned channels of those runs; arcanos-flows' own channels stay strict.
USER_LEAK_SCENARIOS = {
    "user exception": "API key",
    "user exception, fresh process": "block API key",
    "user exception, no hooks": "block API key",
}
PREFECT_OWNED_CHANNELS = frozenset(
    {
        "stderr",
        "python logs",
        "prefect logs (API)",
        "flow runs (API)",
        "flow run states (API)",
        "flow states (in-process)",
        "raised exceptions",
        "result storage",
        "events: prefect.*",
    }
)


def user_leak_allowed(channel: str, scenario: str, secret: str) -> bool:
    """The documented exposure: a user's own exception, in Prefect's own records of that run."""
    return USER_LEAK_SCENARIOS.get(scenario) == secret and channel in PREFECT_OWNED_CHANNELS


def echo_401(key: str) -> Reply:
    """A 401 whose message, body and request id all echo the key."""
    body = {
        "error": {
            "message": f"Incorrect API key provided: {key}. You can find your API key at the dashboard.",
            "type": "invalid_request_error",
            "param": key,
            "code": "invalid_api_key",
        },
        "echo": {"authorization": f"Bearer {key}", "key": key},
    }
    return Reply(status=401, body=json.dumps(body).encode(), headers={"x-request-id": f"req_{key}"})


def bearer_500(key: str) -> Reply:
    """A 500 whose body echoes the Authorization header it saw."""
    return Reply(status=500, body=json.dumps({"error": {"message": f"proxy saw Authorization: Bearer {key}"}}).encode())


# --- the flows of the scenarios -----------------------------------------------------------------------------

MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
STEP_STATES: list[State] = []


@arcanos_flow(name="leakscan-block-tasks")
def block_tasks_flow(credentials: ArcanosCredentials) -> dict[str, Any]:
    """Tasks given the block: a notification (reason and context quoting the block's key), a failing step."""
    noted = notify_maintenance(
        f"results degraded; the proxy rejected {BLOCK_KEY}",
        context={"proxy_key": BLOCK_KEY, "header": f"Authorization: Bearer {BLOCK_KEY}"},
        credentials=credentials,
        return_state=True,
    )
    failing = run_reasoning.with_options(retries=0)(
        MESSAGES, {"ticket": "OPS-LEAK"}, "with-block", credentials=credentials, return_state=True
    )
    answered = run_reasoning.with_options(retries=0)(
        [{"role": "user", "content": "Status?"}], None, "answered", credentials=credentials, return_state=True
    )
    STEP_STATES.extend([noted, failing, answered])
    return {"incident": noted.result(), "answer": answered.result()}


@arcanos_flow(name="leakscan-notify")
def notify_flow() -> Any:
    """notify_maintenance with the environment's key and webhook secret in reason and context."""
    state = notify_maintenance(
        f"2 of 5 investigations failed; the key was {API_KEY}",
        incident_class="degraded",
        context={"api_key": API_KEY, "header": f"Bearer {API_KEY}", "secret": WEBHOOK_SECRET},
        return_state=True,
    )
    STEP_STATES.append(state)
    return state.result()


@arcanos_flow(name="leakscan-user-code")
def user_code_flow() -> None:
    """A user's flow failing for its own reason, its message quoting the key."""
    raise RuntimeError(f"inventory sync failed: api_key={API_KEY}; Authorization: Bearer {API_KEY}")


@flow(name="leakscan-user-code-no-hooks")
def unhooked_user_flow() -> None:
    """A user's flow without the arcanos hooks, failing with the block's key: the incident relay reports it."""
    raise RuntimeError(f"could not reach the proxy with {BLOCK_KEY}")


# Run in fresh processes, as a worker runs them: nothing there has loaded the block's secrets before reporting.
FRESH_USER_FLOW = """
import os
from arcanos_flows.prefect.decorator import arcanos_flow

@arcanos_flow(name="leakscan-user-code-fresh")
def user_code() -> None:
    raise RuntimeError("could not reach the proxy with " + os.environ["LEAKSCAN_USER_SECRET"])

print("flow run", user_code(return_state=True).state_details.flow_run_id)
"""
RELAY = "import sys; from arcanos_flows.flows.relay import incident_relay_flow; incident_relay_flow(sys.argv[1])"


def cli(*args: str) -> list[str]:
    """The installed ``arcanos-flows`` command."""
    return [str(Path(sys.executable).with_name("arcanos-flows")), *args]


# --- the recorder ----------------------------------------------------------------------------------------------


class Scan:
    """Runs scenarios and files everything they let out in a :class:`Haystack`, by channel and scenario."""

    def __init__(self, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, root: Path) -> None:
        self.capfd, self.caplog, self.root = capfd, caplog, root
        self.haystack = Haystack()
        self.runs: dict[uuid.UUID, str] = {}
        self._records_seen = 0

    def storage(self, scenario: str) -> Path:
        """The result storage folder of a scenario (each has its own, so every file is attributed)."""
        return self.root / "storage" / scenario.replace(" ", "-").replace(",", "")

    @contextlib.contextmanager
    def scenario(self, name: str) -> Iterator[str]:
        """Run a scenario with its own result storage; file its output, logs and stored results under its name."""
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: self.storage(name)}):
            yield name
        self.drain(name)
        self.haystack.add("result storage", name, *file_texts(self.storage(name)))

    def drain(self, name: str) -> None:
        """File what was written to stdout/stderr and logged since the last drain."""
        out, err = self.capfd.readouterr()
        self.haystack.add("stdout", name, out)
        self.haystack.add("stderr", name, err)
        records = self.caplog.records[self._records_seen :]
        self._records_seen = len(self.caplog.records)
        self.haystack.add("python logs", name, *log_record_texts(records))

    def flow_state(self, name: str, state: State) -> Any:
        """File a flow's final state and its result, or what it raised; return that."""
        self.runs[state.state_details.flow_run_id] = name
        self.haystack.add("flow states (in-process)", name, repr(state), state.message)
        outcome = state.result(raise_on_failure=False)
        if isinstance(outcome, BaseException):
            self.haystack.add("raised exceptions", name, *exception_texts(outcome))
        else:
            self.haystack.add("flow results", name, repr(outcome), _dumped(outcome))
        return outcome

    def task_states(self, name: str) -> None:
        """File the task states the scenario's flow collected, with their results or exceptions."""
        for state in STEP_STATES:
            outcome = state.result(raise_on_failure=False)
            self.haystack.add("task results", name, repr(state), state.message, repr(outcome), _dumped(outcome))
            if isinstance(outcome, BaseException):
                self.haystack.add("task results", name, *exception_texts(outcome))
        STEP_STATES.clear()

    def subprocess(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """Run a command; file its stdout and stderr."""
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
        self.haystack.add("stdout", name, done.stdout)
        self.haystack.add("stderr", name, done.stderr)
        return done

    def read_back(self, client: SyncPrefectClient, since: datetime, incident_ids: set[str]) -> None:
        """File what the Prefect API holds about every run: records, logs, events (polled until all are in)."""
        for flow_run_id, name in self.runs.items():
            for channel, texts in read_run_records(client, flow_run_id).items():
                self.haystack.add(channel, name, *texts)
        APILogHandler().flush()
        logs = wait_for(
            lambda: read_logs(client, self.runs),
            lambda logs: {log.flow_run_id for log in logs if "Finished in state" in log.message} >= set(self.runs),
            timeout=30,
            what="the last log line of every run",
        )
        for log in logs:
            self.haystack.add("prefect logs (API)", self.runs.get(log.flow_run_id, "?"), log.model_dump_json())
        finals = {f"prefect.flow-run.{run_id}" for run_id in self.runs}
        events = wait_for(
            lambda: read_events(client, self.runs, since),
            lambda events: (
                {str(event.id) for event in events if event.event.startswith("arcanos.incident.")} >= incident_ids
                and {event.resource.id for event in events if event.event.split(".")[-1] in ("Completed", "Failed")}
                >= finals
            ),
            timeout=30,
            what=f"the events of {len(self.runs)} runs and {len(incident_ids)} incidents",
        )
        for event in events:
            channel = "events: arcanos.incident.*" if event.event.startswith("arcanos.") else "events: prefect.*"
            self.haystack.add(channel, self._run_of(event), event.model_dump_json())

    def _run_of(self, event: ReceivedEvent) -> str:
        for resource in [event.resource, *event.related]:
            with contextlib.suppress(ValueError):
                run_id = uuid.UUID(resource.id.removeprefix("prefect.flow-run."))
                if run_id in self.runs:
                    return self.runs[run_id]
        return "?"


def _dumped(value: Any) -> str:
    """A result as JSON: pydantic models as they serialise, anything else by ``str``."""

    def default(item: Any) -> Any:
        return item.model_dump(mode="json") if hasattr(item, "model_dump") else str(item)

    return value.model_dump_json() if hasattr(value, "model_dump_json") else json.dumps(value, default=default)


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    """This module's secrets are registered for redaction only while it runs."""
    with secrets_registry():
        yield


@pytest.fixture
def servers() -> Iterator[tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver]]:
    """The fake upstream, the environment's webhook receiver and the block's one, each with its own secret."""
    with (
        FakeOpenAIServer() as upstream,
        WebhookReceiver(secret=WEBHOOK_SECRET) as receiver,
        WebhookReceiver(secret=BLOCK_WEBHOOK_SECRET) as block_receiver,
    ):
        yield upstream, receiver, block_receiver


@pytest.fixture
def environment(
    servers: tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver], monkeypatch: pytest.MonkeyPatch, spool: Path
) -> dict[str, str]:
    """The environment's key and webhook secret, pointing at the loopback servers (one task retry, no delay)."""
    upstream, receiver, _ = servers
    values = {
        "OPENAI_API_KEY": API_KEY,
        "ARCANOS_FINE_TUNED_MODEL": MODEL,
        "OPENAI_BASE_URL": upstream.base_url,
        "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(spool),
        "ARCANOS_REQUEST_TIMEOUT": "5",
        "ARCANOS_TASK_RETRIES": "1",
        "ARCANOS_TASK_RETRY_DELAY": "0",
    }
    for variable, value in values.items():
        monkeypatch.setenv(variable, value)
    return values


@pytest.fixture
def block(servers: tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver]) -> str:
    """An ArcanosCredentials block with its own key and webhook secret, saved on the Prefect server; its name."""
    upstream, _, block_receiver = servers
    name = f"leakscan-{secrets.token_hex(4)}"
    ArcanosCredentials(
        openai_api_key=BLOCK_KEY,
        fine_tuned_model=MODEL,
        openai_base_url=upstream.base_url,
        maintenance_webhook=block_receiver.url,
        webhook_secret=BLOCK_WEBHOOK_SECRET,
    ).save(name)
    return name


@pytest.fixture
def scan(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Scan]:
    """Captures stdout/stderr and every log record (root and Prefect at DEBUG, non-propagating loggers too)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="prefect")
    hidden = [logging.getLogger(name) for name in ("prefect._internal", "prefect.extra")]
    for logger in hidden:
        logger.addHandler(caplog.handler)
        monkeypatch.setattr(logger, "level", logging.DEBUG)
    # Prefect's console handlers hold the stderr of when logging was configured; make them write where capfd reads.
    for logger in [logging.getLogger(), *hidden]:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                monkeypatch.setattr(handler.console, "file", sys.stderr)
            if isinstance(handler, logging.StreamHandler) and type(handler).__module__.startswith("prefect."):
                monkeypatch.setattr(handler, "stream", sys.stderr)
    try:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield Scan(capfd, caplog, tmp_path)
    finally:
        for logger in hidden:
            logger.removeHandler(caplog.handler)


def snapshot_spool_on_delivery(spool: Path, *receivers: WebhookReceiver) -> list[str]:
    """Spool files, read while each delivery is in flight (a delivered incident's file is removed right after)."""
    spooled: list[str] = []
    for receiver in receivers:
        receiver.on_delivery = lambda delivery: spooled.extend(spool_snapshot(spool))
    return spooled


def test_no_secret_leaves_the_process_in_any_prefect_scenario(
    servers: tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver],
    environment: dict[str, str],
    block: str,
    scan: Scan,
    spool: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """API key, webhook secret and block secrets reach no output, log, state, artifact, incident, event or file."""
    upstream, receiver, block_receiver = servers
    spooled = snapshot_spool_on_delivery(spool, receiver, block_receiver)
    started = datetime.now(timezone.utc) - timedelta(minutes=1)
    api_url = str(PREFECT_API_URL.value())
    # Loaded the way a worker loads it; nothing in this process has used the block's secrets yet.
    credentials = ArcanosCredentials.load(block)

    with scan.scenario("block tasks") as name:
        upstream.clear()
        upstream.reply_when("List the current confirmation layers.", bearer_500(BLOCK_KEY))
        upstream.reply_when("Status?", Reply.ok(headers={"x-request-id": BLOCK_KEY}))
        scan.flow_state(name, block_tasks_flow(credentials, return_state=True))
        scan.task_states(name)

    with scan.scenario("research") as name:
        upstream.clear()
        upstream.reply_when("Investigate: Who holds the key?", echo_401(API_KEY))
        upstream.reply_when("Investigate: What does the proxy see?", bearer_500(API_KEY))
        upstream.reply_when("Investigate: Which model answers?", Reply.other_model(f"gpt-4o-{API_KEY}"))
        # Investigations quote the plan, so the plan's rule answers once only.
        upstream.reply_when("Plan the research", Reply.ok(headers={"x-request-id": API_KEY}), times=1)
        questions = ["Who holds the key?", "What does the proxy see?", "Which model answers?", "Which layers exist?"]
        state = research_flow("Confirmation layers", questions=questions, audit={"ticket": "OPS-7"}, return_state=True)
        assert isinstance(scan.flow_state(name, state), ResearchStepsFailed)

    with scan.scenario("maintenance check, block by name") as name:
        upstream.clear()
        upstream.always(echo_401(BLOCK_KEY))
        monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, block)
        scan.flow_state(name, maintenance_check_flow(return_state=True))
        monkeypatch.delenv(CREDENTIALS_BLOCK_VARIABLE)
        upstream.always(Reply.ok())
        assert {request.headers["authorization"] for request in upstream.requests} == {f"Bearer {BLOCK_KEY}"}

    # The webhook is down: the incidents of the next two scenarios wait in the spool, until the flush.
    receiver.close()
    with scan.scenario("notify") as name:
        scan.flow_state(name, notify_flow(return_state=True))
        scan.task_states(name)
    with scan.scenario("user exception") as name:
        assert isinstance(scan.flow_state(name, user_code_flow(return_state=True)), RuntimeError)
    outage = spool_snapshot(spool)
    assert len(outage) == 2, outage
    spooled.extend(outage)
    receiver.reopen()
    with scan.scenario("flush"):
        assert MaintenanceNotifier(NotifierSettings(), backoff=0.01).flush().delivered == 2

    # User code quoting the block's key, reported from fresh processes that know only the block's name.
    fresh = {key: value for key, value in os.environ.items() if key != "OPENAI_API_KEY"}
    fresh.update({CREDENTIALS_BLOCK_VARIABLE: block, "PREFECT_API_URL": api_url, "LEAKSCAN_USER_SECRET": BLOCK_KEY})
    with scan.scenario("user exception, fresh process") as name:
        storage = {"PREFECT_LOCAL_STORAGE_PATH": str(scan.storage(name))}
        ran = scan.subprocess(name, [sys.executable, "-c", FRESH_USER_FLOW], {**fresh, **storage})
        assert ran.returncode == 0, ran.stderr[-3000:]
        scan.runs[uuid.UUID(ran.stdout.split("flow run ")[1].split()[0])] = name
    with scan.scenario("user exception, no hooks") as name:
        with tags("arcanos"):
            state = unhooked_user_flow(return_state=True)
        scan.flow_state(name, state)
        run_id = str(state.state_details.flow_run_id)
        relayed = scan.subprocess(name, [sys.executable, "-c", RELAY, run_id], fresh)
        assert relayed.returncode == 0, relayed.stderr[-3000:]

    incident_ids = {delivery.json["incident_id"] for delivery in receiver.delivered + block_receiver.delivered}
    with scan.scenario("reading back"), get_client(sync_client=True) as client:
        scan.read_back(client, started, incident_ids)
        scan.haystack.add("block document (API)", "block", *block_document_texts(api_url, client, block, BLOCK_SLUG))

    haystack = scan.haystack
    deliveries = receiver.deliveries + block_receiver.deliveries
    haystack.add("incidents delivered", "all", *delivery_texts(deliveries))
    haystack.add("spool files", "all", *spooled)
    counts = haystack.counts()
    _report("prefect scenarios", counts, haystack)
    # Every channel saw something: an empty channel would prove nothing.
    assert {channel for channel, count in counts.items() if count} >= {
        "stdout", "stderr", "python logs", "prefect logs (API)", "flow runs (API)", "flow run states (API)",
        "task runs (API)", "task run states (API)", "flow states (in-process)", "flow results", "task results",
        "raised exceptions", "artifacts (API)", "incidents delivered", "spool files", "events: arcanos.incident.*",
        "events: prefect.*", "result storage", "block document (API)",
    }  # fmt: skip
    assert all(delivery.signature_valid for delivery in deliveries)
    # 3 research steps, 2 block tasks, the check, the notification, the user's flows (2 hooked, 1 relayed).
    assert len(incident_ids) == 10, sorted(incident_ids)
    leaks = haystack.leaks(SECRETS, user_leak_allowed)
    assert leaks == [], f"{len(leaks)} leaks:\n" + "\n".join(leaks)


def test_no_secret_leaves_the_cli(
    servers: tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver],
    environment: dict[str, str],
    block: str,
    scan: Scan,
    spool: Path,
) -> None:
    """``arcanos-flows prompt`` and ``check`` (environment or block) print and report no secret, whatever echoes."""
    upstream, receiver, block_receiver = servers
    spooled = snapshot_spool_on_delivery(spool, receiver, block_receiver)
    env = dict(os.environ)
    with_block = {**env, CREDENTIALS_BLOCK_VARIABLE: block, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    upstream.always(echo_401(API_KEY))
    failed = scan.subprocess("prompt, 401", cli("prompt", "List the current confirmation layers."), env)
    assert failed.returncode == 1, failed.stderr
    checked = scan.subprocess("check, 401", cli("check", "--send-test"), env)
    assert checked.returncode == 1, checked.stdout
    upstream.always(echo_401(BLOCK_KEY))
    checked = scan.subprocess("check, block, 401", cli("check"), with_block)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"Bearer {BLOCK_KEY}" in {request.headers["authorization"] for request in upstream.requests}
    upstream.always(Reply.ok())
    checked = scan.subprocess("check, block", cli("check"), with_block)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    scan.drain("cli")

    deliveries = receiver.deliveries + block_receiver.deliveries
    scan.haystack.add("incidents delivered", "cli", *delivery_texts(deliveries))
    scan.haystack.add("spool files", "cli", *spooled)
    counts = scan.haystack.counts()
    _report("cli", counts, scan.haystack)
    assert [delivery.json.get("type") for delivery in receiver.delivered] == ["arcanos.incident", "arcanos.check"]
    assert counts["spool files"] >= 1
    leaks = scan.haystack.leaks(SECRETS)
    assert leaks == [], f"{len(leaks)} leaks:\n" + "\n".join(leaks)


def test_the_cli_prompt_prints_no_request_id_that_echoes_the_key(
    servers: tuple[FakeOpenAIServer, WebhookReceiver, WebhookReceiver], environment: dict[str, str], scan: Scan
) -> None:
    """A 200 whose ``x-request-id`` is the key: the answer is printed, the key is not (text and --json)."""
    upstream, _, _ = servers
    upstream.always(Reply.ok(headers={"x-request-id": API_KEY}))
    for args in (["prompt", "Status?"], ["prompt", "Status?", "--json"]):
        answered = scan.subprocess(" ".join(args), cli(*args), dict(os.environ))
        assert answered.returncode == 0, answered.stderr
    assert scan.haystack.counts()["stdout"] == 2
    leaks = scan.haystack.leaks(SECRETS)
    assert leaks == [], f"{len(leaks)} leaks:\n" + "\n".join(leaks)


def _report(what: str, counts: Any, haystack: Haystack) -> None:
    # LEAKSCAN_REPORT=<file>: append what was scanned, per channel, for the README's figures.
    if os.environ.get("LEAKSCAN_REPORT"):
        exposures = haystack.exposures(SECRETS, user_leak_allowed)
        lines = [f"## {what}"] + [f"{channel}: {count}" for channel, count in sorted(counts.items())]
        lines += [f"documented exposure (user's own exception) in {c}: {n}" for c, n in sorted(exposures.items())]
        with Path(os.environ["LEAKSCAN_REPORT"]).open("a") as report:
            report.write("\n".join(lines) + "\n")
