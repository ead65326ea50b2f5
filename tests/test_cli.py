"""The installed ``arcanos-flows`` console script, run as a user would, against loopback servers in this process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

import pytest

from arcanos_flows._version import __version__
from arcanos_flows.core.errors import IncidentClass
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.outbox import Outbox
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from tests.conftest import API_KEY, MODEL, WEBHOOK_SECRET

SCRIPT = Path(sys.executable).with_name("arcanos-flows")
SECRETS = (API_KEY, WEBHOOK_SECRET, WEBHOOK_SECRET.removeprefix("whsec_"))
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home (database) for the CLI runs of the session: only the first pays for creating it."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def base_env(tmp_path: Path, prefect_home: Path) -> dict[str, str]:
    """What any user's shell has, without ARCANOS_* or OPENAI_* and without their home or Prefect profile."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "PYTHONIOENCODING": "utf-8",
        "COLUMNS": "200",
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


@pytest.fixture
def env(
    base_env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver, spool: Path
) -> dict[str, str]:
    """A complete configuration pointing at the fake OpenAI server and the webhook receiver."""
    return {
        **base_env,
        "OPENAI_API_KEY": API_KEY,
        "ARCANOS_FINE_TUNED_MODEL": MODEL,
        "OPENAI_BASE_URL": openai_server.base_url,
        "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(spool),
        "ARCANOS_REQUEST_TIMEOUT": "5",
        "ARCANOS_MAX_RETRIES": "0",
        "ARCANOS_TASK_RETRY_DELAY": "0",
    }


@pytest.fixture
def cli() -> Run:
    """Run the console script; every run is checked for leaked secrets and tracebacks."""

    def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(SCRIPT), *args],
            env=env,
            cwd=os.getcwd(),
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )
        output = done.stdout + done.stderr
        for secret in SECRETS:
            assert secret not in output, f"a secret leaked into the output of {args}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def _spooled(spool: Path, count: int) -> list[Incident]:
    outbox = Outbox(spool)
    incidents = [
        Incident(
            incident_class=IncidentClass.RATE_LIMIT,
            reason=f"Rate limit reached ({number}) " + "x" * 300,
            error_type="e.E",
        )
        for number in range(count)
    ]
    for incident in incidents:
        outbox.put(incident)
    return incidents


def test_help_lists_the_commands_without_importing_prefect(cli: Run, base_env: dict[str, str]) -> None:
    """`arcanos-flows --help` shows every command, and importing the CLI does not import Prefect."""
    done = cli("--help", env=base_env)
    assert done.returncode == 0
    for command in ("run", "prompt", "check", "incidents", "demo", "serve", "automations", "server", "version"):
        assert command in done.stdout
    imports = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import arcanos_flows.cli"],
        env=base_env,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = [line.rsplit("|", 1)[-1].strip() for line in imports.stderr.splitlines() if "|" in line]
    assert "arcanos_flows.cli" in modules
    assert not [module for module in modules if module.split(".")[0] == "prefect"]


def test_version_prints_the_installed_version(cli: Run, base_env: dict[str, str]) -> None:
    """`arcanos-flows version` prints the package version."""
    done = cli("version", env=base_env)
    assert (done.returncode, done.stdout.strip()) == (0, __version__)


@pytest.mark.parametrize(
    "args",
    [("prompt", "Status?"), ("check",), ("run", "research", "--topic", "Confirmation layers")],
    ids=["prompt", "check", "run-research"],
)
def test_missing_configuration_exits_2_naming_the_variable(
    cli: Run, base_env: dict[str, str], args: tuple[str, ...]
) -> None:
    """Without ARCANOS_FINE_TUNED_MODEL, commands that call the model exit 2 naming it, with no traceback."""
    done = cli(*args, env={**base_env, "OPENAI_API_KEY": API_KEY})
    assert done.returncode == 2
    assert "ARCANOS_FINE_TUNED_MODEL" in done.stdout + done.stderr


def test_invalid_webhook_is_a_configuration_error_for_incident_commands(cli: Run, base_env: dict[str, str]) -> None:
    """A plain-http webhook to a remote host is refused before anything is sent: exit 2 naming the variable."""
    done = cli("incidents", "flush", env={**base_env, "ARCANOS_MAINTENANCE_WEBHOOK": "http://ops.example.com/in"})
    assert done.returncode == 2
    assert "ARCANOS_MAINTENANCE_WEBHOOK" in done.stderr


@pytest.mark.parametrize(
    "args",
    [("prompt", "Status?", "--meta", "ticket"), ("run", "research", "--topic", "Layers", "--meta", "=x")],
    ids=["prompt", "run-research"],
)
def test_bad_meta_syntax_exits_2_naming_the_argument(cli: Run, env: dict[str, str], args: tuple[str, ...]) -> None:
    """`--meta` must be key=value; anything else is a usage error that names --meta."""
    done = cli(*args, env=env)
    assert done.returncode == 2
    assert "--meta" in done.stderr
    assert "key=value" in done.stderr


def test_prompt_prints_the_answer_and_sends_the_metadata(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """`arcanos-flows prompt` asks the enforced model once and prints the answer."""
    openai_server.script(Reply.ok("Three confirmation layers."))
    done = cli("prompt", "List the layers.", "--system", "You are the Arcanos maintenance AI.", "-m", "ticket=OPS-7",
               env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Three confirmation layers."
    assert MODEL in done.stderr
    (request,) = openai_server.completion_requests
    assert request.json["model"] == MODEL
    assert request.json["metadata"] == {"ticket": "OPS-7"}
    assert [message["role"] for message in request.json["messages"]] == ["system", "user"]


def test_prompt_failure_exits_1_and_reports_one_incident(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A failed prompt exits 1 with a one-line reason, and the maintenance webhook gets the incident."""
    openai_server.script(Reply.error(401))
    done = cli("prompt", "Status?", env=env)
    assert done.returncode == 1
    assert "authentication" in done.stderr
    assert "HTTP 401" in done.stderr
    (delivery,) = receiver.wait_for(1)
    assert delivery.signature_valid is True
    assert delivery.json["incident_class"] == "authentication"
    assert delivery.headers["webhook-id"] in done.stderr


def test_prompt_does_not_import_prefect(base_env: dict[str, str], env: dict[str, str]) -> None:
    """A one-off prompt never pays for importing Prefect."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "arcanos_flows.cli", "prompt", "Status?"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line]
    assert "arcanos_flows.client" in modules
    assert not [module for module in modules if module.split(".")[0] == "prefect"]


def test_check_prints_settings_masked_and_reaches_model_and_webhook(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """`arcanos-flows check` shows every setting (secrets masked), looks the model up and probes the webhook."""
    done = cli("check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sk-…({len(API_KEY)} chars)" in done.stdout
    assert f"whs…({len(WEBHOOK_SECRET)} chars)" in done.stdout
    assert "ARCANOS_TASK_RETRY_DELAY" in done.stdout
    assert "✓ model" in done.stdout
    assert "✓ webhook" in done.stdout
    (lookup,) = openai_server.requests
    assert (lookup.method, unquote(lookup.path)) == ("GET", f"/v1/models/{MODEL}")
    assert lookup.headers["authorization"] == f"Bearer {API_KEY}"
    assert receiver.deliveries == []  # the probe delivers nothing


def test_check_send_test_posts_one_signed_ping(cli: Run, env: dict[str, str], receiver: WebhookReceiver) -> None:
    """`check --send-test` POSTs one signed arcanos.check ping, which is not an incident."""
    done = cli("check", "--send-test", env=env)
    assert done.returncode == 0, done.stdout
    (delivery,) = receiver.deliveries
    assert delivery.signature_valid is True
    assert delivery.json["type"] == "arcanos.check"
    assert delivery.headers["webhook-id"] == delivery.json["check_id"]


def test_check_fails_when_the_model_does_not_exist(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """A model id the endpoint does not know (404) fails the check with exit 1."""
    openai_server.script(Reply.error(404, code="model_not_found"))
    done = cli("check", env=env)
    assert done.returncode == 1
    assert "✗ model" in done.stdout
    assert "HTTP 404" in done.stdout


def test_check_fails_when_the_webhook_is_down(cli: Run, env: dict[str, str], receiver: WebhookReceiver) -> None:
    """A webhook nobody listens on fails the check with exit 1."""
    receiver.close()
    done = cli("check", env=env)
    assert done.returncode == 1
    assert "✗ webhook" in done.stdout
    assert "ConnectionError" in done.stdout


def test_incidents_list_shows_the_spool(cli: Run, env: dict[str, str], spool: Path) -> None:
    """`incidents list` shows what waits in the spool as a table, or as JSON with --json."""
    incidents = _spooled(spool, 2)
    table = cli("incidents", "list", env=env)
    assert table.returncode == 0
    for incident in incidents:
        assert str(incident.incident_id) in table.stdout
    assert "rate_limit" in table.stdout
    assert "1. Rate limit reached (0)" in table.stdout  # reasons are listed below the table...
    assert "x" * 300 not in table.stdout.replace("\n", "").replace(" ", "")  # ...shortened
    listed = cli("incidents", "list", "--json", env=env)
    assert [item["incident_id"] for item in json.loads(listed.stdout)] == [str(i.incident_id) for i in incidents]


def test_incidents_list_is_readable_at_80_columns(cli: Run, env: dict[str, str], spool: Path) -> None:
    """At 80 columns every id and class is shown whole, on no line wider than the terminal; reasons go below."""
    outbox = Outbox(spool)
    incidents = [
        Incident(incident_class=IncidentClass(incident_class), error_type="openai.AuthenticationError",
                 reason="Error code: 401 - Incorrect API key provided. " * 3, http_status=401,
                 context={"flow_run_id": str(uuid.uuid4()), "task_run_name": "reasoning[investigate-2]"})
        for incident_class in ("authentication", "incomplete_completion", "rate_limit")
    ]  # fmt: skip
    for incident in incidents:
        outbox.put(incident)
    done = cli("incidents", "list", env={**env, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    assert max(len(line.rstrip()) for line in done.stdout.splitlines()) <= 80
    assert "…" not in done.stdout.split("\n1. ")[0]  # nothing in the table is cut
    for incident in incidents:
        assert str(incident.incident_id) in done.stdout
        assert f" {incident.incident_class.value} " in done.stdout
    for number in (1, 2, 3):
        assert f"{number}. Error code: 401 - Incorrect API key provided." in done.stdout


def test_incidents_flush_delivers_the_spool(
    cli: Run, env: dict[str, str], spool: Path, receiver: WebhookReceiver
) -> None:
    """`incidents flush` delivers every spooled incident under its own webhook-id and empties the spool."""
    incidents = _spooled(spool, 2)
    done = cli("incidents", "flush", env=env)
    assert done.returncode == 0, done.stderr
    assert "Delivered 2, remaining 0." in done.stdout
    assert sorted(d.headers["webhook-id"] for d in receiver.delivered) == sorted(str(i.incident_id) for i in incidents)
    assert Outbox(spool).pending() == []


def test_incidents_flush_exits_1_when_incidents_remain(
    cli: Run, env: dict[str, str], spool: Path, receiver: WebhookReceiver
) -> None:
    """When the webhook is down, flush keeps the incidents, says so, and exits 1."""
    _spooled(spool, 1)
    receiver.close()
    done = cli("incidents", "flush", env=env)
    assert done.returncode == 1
    assert "Delivered 0, remaining 1." in done.stdout
    assert len(Outbox(spool).pending()) == 1


@pytest.mark.slow
def test_run_research_shows_the_steps_and_prints_the_report(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, prefect_home: Path
) -> None:
    """`run research` runs the flow on Prefect's local server, shows each step, prints the report and the run id."""
    done = cli("run", "research", "--topic", "Confirmation layers", "-q", "Which layers exist?", "-q", "Who confirms?",
               "--meta", "ticket=OPS-7", "--confirmation-token", "ct-cli-1",
               env={**env, "PREFECT_UI_URL": "http://prefect.example:4200"}, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "on Prefect's temporary local server" in done.stderr
    assert "`arcanos-flows server start` keeps a local server running" in done.stderr  # the hint to go faster
    assert "Research: Confirmation layers" in done.stdout
    (run_id,) = set(re.findall(rf"Flow run: ({UUID.pattern})", done.stdout))
    assert f"UI: http://prefect.example:4200/runs/flow-run/{run_id}" in done.stdout
    steps = [f"reasoning[{step}]" for step in ("plan", "investigate-1", "investigate-2", "synthesis")]
    # Not a terminal: one line per step as it finishes, with its tokens and seconds, before the report.
    for step in steps:
        assert re.search(
            rf"^  {re.escape(step)}: Completed, [1-9]\d* tokens \(\d+ in / \d+ out\), \d+\.\d\d s, request req_\d+$",
            done.stderr,
            re.MULTILINE,
        ), done.stderr
    # The temporary server stopped with the command, and only after recording each step's final state: a write
    # still running at exit is cancelled, leaving the step Running in the database that PREFECT_HOME keeps.
    with contextlib.closing(sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True)) as db:
        recorded = db.execute("select name, state_type from task_run where flow_run_id = ?", (run_id,)).fetchall()
    assert sorted(recorded) == sorted((step, "COMPLETED") for step in steps)
    requests = openai_server.completion_requests
    assert len(requests) == 4
    for request in requests:
        metadata = request.json["metadata"]
        assert (metadata["ticket"], metadata["confirmation_token"]) == ("OPS-7", "ct-cli-1")
        assert metadata["prefect.flow_run_id"] == run_id


@pytest.mark.slow
def test_run_research_failure_exits_1_with_one_incident(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A run whose plan step is refused (401) exits 1, reports it as JSON, and the webhook gets one incident."""
    openai_server.script(Reply.error(401))
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "--json", env=env, timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    *steps, outcome = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(step["event"], step["step"], step["status"], step["error_class"]) for step in steps] == [
        ("step", "plan", "failed", "authentication")
    ]
    assert outcome["event"] == "summary"
    assert outcome["state"] == "Failed"
    assert outcome["error"].startswith("authentication:")
    assert UUID.fullmatch(outcome["flow_run_id"])
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "authentication"
    assert incident["context"]["flow_run_id"] == outcome["flow_run_id"]
    assert len(openai_server.completion_requests) == 1


@pytest.mark.slow
def test_demo_runs_on_a_fresh_machine_with_labelled_stand_ins(cli: Run, base_env: dict[str, str]) -> None:
    """`arcanos-flows demo` needs no key: it labels its stand-ins, runs the flows and shows the delivered incident."""
    fresh = {name: value for name, value in base_env.items() if name != "PREFECT_SERVER_ANALYTICS_ENABLED"}
    done = cli("demo", env=fresh, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Its temporary Prefect server sends no telemetry (offline, as here, Prefect would log an ERROR for each try).
    assert "telemetry" not in done.stderr
    assert "ERROR" not in done.stderr
    assert "LOCAL STAND-IN: fake OpenAI-compatible server at http://127.0.0.1:" in done.stdout
    assert "no real model is called" in done.stdout
    assert "LOCAL STAND-IN: webhook receiver at http://127.0.0.1:" in done.stdout
    assert "Research: Confirmation layers" in done.stdout
    assert "Usage" in done.stdout
    assert "Incidents the receiver got" in done.stdout
    incident_ids = re.findall(rf"Incident ({UUID.pattern}) \(authentication\) was delivered once", done.stdout)
    assert len(incident_ids) == 1
    output = done.stdout + done.stderr
    assert "sk-demo-" not in output  # the demo's own key and secret are shown masked only
    assert "whsec_" not in output
    assert str(uuid.UUID(incident_ids[0])) in output


@pytest.mark.slow
def test_run_research_json_streams_one_object_per_step_then_the_summary(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """`run research --json` prints each step as one JSON line when it finishes, then the summary on the last line."""
    openai_server.script(Reply.ok("The plan."), Reply.error(401))  # the first investigation is refused
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "-q", "Who confirms?",
               "--max-parallel", "1", "--json", env=env, timeout=240)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]  # every line is a JSON object of its own
    *steps, summary = events
    assert [event["event"] for event in steps] == ["step"] * 4
    assert summary["event"] == "summary"
    assert {"flow_run_id", "flow_run_name", "state", "ui_url", "error", "report"} <= set(summary)
    assert summary["state"] == "Failed"
    by_step = {step["step"]: step for step in steps}
    assert list(by_step) == ["plan", "investigate-1", "investigate-2", "synthesis"]  # the order they finished in
    assert {name: step["status"] for name, step in by_step.items()} == {
        "plan": "completed", "investigate-1": "failed", "investigate-2": "completed", "synthesis": "completed"
    }  # fmt: skip
    assert by_step["investigate-1"]["error_class"] == "authentication"
    assert by_step["investigate-1"]["tokens"] == 0
    for step in steps:
        assert isinstance(step["seconds"], float)
        assert 0 <= step["seconds"] < 60
    report_steps = {step["step"]: step for step in summary["report"]["steps"]}
    for name in ("plan", "investigate-2", "synthesis"):
        usage = report_steps[name]["usage"]
        assert by_step[name]["tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
        assert by_step[name]["request_id"] == report_steps[name]["request_id"]
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "authentication"


@pytest.mark.slow
def test_run_research_lines_include_the_steps_a_spent_budget_skipped(cli: Run, env: dict[str, str]) -> None:
    """Without a terminal, steps a spent budget never started still get their line, after those that ran."""
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "-q", "Who confirms?",
               env={**env, "ARCANOS_RUN_MAX_TOKENS": "1"}, timeout=240)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = [line.strip() for line in done.stderr.splitlines() if line.startswith("  reasoning[")]
    assert lines, done.stdout + done.stderr
    assert re.fullmatch(r"reasoning\[plan\]: Completed, [1-9]\d* tokens .*, \d+\.\d\d s, request req_1", lines[0])
    assert lines[1:] == [
        f"reasoning[{step}]: Skipped (budget spent), 0 tokens"
        for step in ("investigate-1", "investigate-2", "synthesis")
    ]
    assert "skipped (budget)" in done.stdout  # the usage table below the report


@pytest.mark.slow
def test_run_research_batch_sends_the_investigations_as_one_batch(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """`run research --batch`: the plan and the synthesis direct, the investigations as one batch the report names."""
    openai_server.batches.delay = 0.5
    done = cli("run", "research", "--topic", "Layers", "-q", "Which layers exist?", "-q", "Who confirms?",
               "--batch", "--batch-poll-interval", "0.2", "--json", env=env, timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    *steps, summary = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(step["step"] for step in steps) == ["investigate-1", "investigate-2", "plan", "synthesis"]
    assert all(step["status"] == "completed" for step in steps)
    report = summary["report"]
    assert report["mode"] == "batch"
    assert report["batch"]["batch_id"] == "batch_1"
    assert report["batch"]["status"] == "completed"
    assert [entry["status"] for entry in report["batch"]["status_history"]][-1] == "completed"
    by_step = {step["step"]: step for step in report["steps"]}
    assert by_step["investigate-2"]["request_id"] == "req_batch_1_2"
    assert openai_server.batches.created == 1
    assert len(openai_server.completion_requests) == 2
    assert receiver.incidents == []


def test_check_behind_litellm_looks_the_alias_up_not_the_fine_tuned_id(
    cli: Run, env: dict[str, str], openai_server: FakeOpenAIServer
) -> None:
    """Behind a gateway, `check` asks for the name requests carry (the proxy lists aliases, not upstream ids)."""
    done = cli("check", env={**env, "ARCANOS_GATEWAY": "litellm", "ARCANOS_GATEWAY_MODEL": "arcanos-reasoning"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ model" in done.stdout
    assert "serves arcanos-reasoning" in done.stdout
    (lookup,) = openai_server.requests
    assert unquote(lookup.path) == "/v1/models/arcanos-reasoning"
    openai_server.script(Reply.error(404, code="model_not_found"))
    done = cli("check", env={**env, "ARCANOS_GATEWAY": "litellm", "ARCANOS_GATEWAY_MODEL": "arcanos-reasoning"})
    assert done.returncode == 1
    assert "does not know the alias" in done.stdout
