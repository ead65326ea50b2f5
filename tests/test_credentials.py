"""The ArcanosCredentials block: settings stored on the Prefect server, so workers need no .env."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
from pydantic import SecretStr

from arcanos_flows.core.errors import ConfigurationError
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.prefect import hooks
from arcanos_flows.prefect.credentials import (
    CREDENTIALS_BLOCK_VARIABLE,
    ArcanosCredentials,
    load_notifier_settings,
    resolve_settings,
)
from arcanos_flows.prefect.tasks import notify_maintenance, run_reasoning, with_retries
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

pytestmark = pytest.mark.usefixtures("prefect_harness")

FLOW_NAME = "arcanos-test-credentials"
MESSAGES = [{"role": "user", "content": "List the current confirmation layers."}]
BLOCK_MODEL = "ft:gpt-5.1-2025-11-13:arcanos::from-block"


@pytest.fixture(autouse=True)
def quick_runs(prefect_harness: None, tmp_path: Path) -> Iterator[None]:
    """No heartbeat thread (its join costs ~1 s per flow run), results under tmp."""
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path / "r"}):
        yield


@pytest.fixture
def save_block() -> Callable[..., str]:
    """Save an ``ArcanosCredentials`` block under a fresh name and return the name."""

    def save(**fields: Any) -> str:
        name = f"arcanos-{uuid.uuid4().hex[:10]}"
        ArcanosCredentials(**fields).save(name)
        return name

    return save


def in_flow(body: Callable[[], Any]) -> State:
    @flow(name=FLOW_NAME)
    def probe() -> Any:
        return body()

    return probe(return_state=True)


def test_the_block_saves_and_loads_with_its_secrets_hidden(save_block: Callable[..., str]) -> None:
    """Secrets are ``SecretStr``: stored on the server, never shown by repr, dumps or the API's default read."""
    name = save_block(
        openai_api_key=API_KEY,
        fine_tuned_model=MODEL,
        openai_base_url="https://llm.example.test/v1",
        openai_api="responses",
        maintenance_webhook="https://maintenance.example.test/incidents",
        webhook_secret=WEBHOOK_SECRET,
        confirmation_token="ct-block",
    )

    loaded = ArcanosCredentials.load(name)

    assert isinstance(loaded.openai_api_key, SecretStr)
    assert loaded.openai_api_key.get_secret_value() == API_KEY
    assert isinstance(loaded.webhook_secret, SecretStr)
    assert loaded.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert (loaded.fine_tuned_model, loaded.openai_base_url, loaded.openai_api, loaded.confirmation_token) == (
        MODEL,
        "https://llm.example.test/v1",
        "responses",
        "ct-block",
    )
    assert {"openai_api_key", "webhook_secret"} <= set(ArcanosCredentials.model_json_schema()["secret_fields"])
    with get_client(sync_client=True) as client:
        hidden = client.read_block_document_by_name(name, "arcanos-credentials", include_secrets=False)
        stored = client.read_block_document_by_name(name, "arcanos-credentials", include_secrets=True)
    assert stored.data["openai_api_key"] == API_KEY
    for shown in (
        repr(loaded),
        str(loaded),
        loaded.model_dump_json(),
        str(loaded.model_dump()),
        json.dumps(hidden.data),
    ):
        assert API_KEY not in shown
        assert WEBHOOK_SECRET not in shown
    assert hidden.data["fine_tuned_model"] == MODEL


def test_block_fields_win_over_the_environment_which_wins_over_dotenv(
    isolated_environment: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Field by field: a value on the block, else the process environment, else ``.env``."""
    (isolated_environment / ".env").write_text(
        "OPENAI_API_KEY=sk-dotenv-0000000000000000\n"
        "ARCANOS_FINE_TUNED_MODEL=ft:gpt-5.1:arcanos::dotenv\n"
        "ARCANOS_CONFIRMATION_TOKEN=ct-dotenv\n"
        "OPENAI_BASE_URL=https://dotenv.example.test/v1\n"
        "ARCANOS_OPENAI_API=responses\n"
    )
    monkeypatch.setenv("ARCANOS_CONFIRMATION_TOKEN", "ct-env")
    monkeypatch.setenv("OPENAI_BASE_URL", "https://env.example.test/v1")

    settings = ArcanosCredentials(openai_api_key=API_KEY, confirmation_token="ct-block").get_settings()

    assert settings.openai_api_key.get_secret_value() == API_KEY  # block over .env
    assert settings.confirmation_token == "ct-block"  # block over environment over .env
    assert settings.openai_base_url == "https://env.example.test/v1"  # environment over .env
    assert settings.fine_tuned_model == "ft:gpt-5.1:arcanos::dotenv"  # only in .env
    assert settings.openai_api == "responses"


def test_resolve_settings_takes_the_given_block_then_the_named_block_then_the_environment(
    arcanos_env: dict[str, str], save_block: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``resolve_settings(block)`` > ``ARCANOS_CREDENTIALS_BLOCK`` > environment and ``.env``."""
    named = save_block(fine_tuned_model="ft:gpt-5.1:arcanos::named")
    given = ArcanosCredentials(fine_tuned_model="ft:gpt-5.1:arcanos::given")

    assert resolve_settings().fine_tuned_model == MODEL
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, named)
    assert resolve_settings().fine_tuned_model == "ft:gpt-5.1:arcanos::named"
    assert resolve_settings().openai_api_key.get_secret_value() == API_KEY  # unset on the block: from the env
    assert resolve_settings(given).fine_tuned_model == "ft:gpt-5.1:arcanos::given"


def test_a_missing_named_block_is_a_configuration_error_naming_the_variable(
    arcanos_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker pointed at a block that does not exist fails with a message that says what to fix."""
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, "no-such-block")

    for load in (resolve_settings, load_notifier_settings):
        with pytest.raises(ConfigurationError, match=CREDENTIALS_BLOCK_VARIABLE) as caught:
            load()
        assert "'no-such-block'" in str(caught.value)
        assert "ArcanosCredentials(...).save('no-such-block')" in str(caught.value)


def test_with_a_missing_named_block_a_failed_step_is_still_reported_on_stdout(
    arcanos_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The step fails as a ``configuration`` incident, before any request, and the incident is printed, not lost."""
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, "no-such-block")

    state = in_flow(lambda: run_reasoning(MESSAGES, step="unconfigured"))

    assert state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ConfigurationError)
    assert openai_server.completion_requests == []
    assert receiver.deliveries == []
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [incident["incident_class"] for incident in printed] == ["configuration"]
    assert CREDENTIALS_BLOCK_VARIABLE in printed[0]["reason"]


@pytest.fixture
def webhook_only_block(
    save_block: Callable[..., str], receiver: WebhookReceiver, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """A worker whose only configuration is ``ARCANOS_CREDENTIALS_BLOCK`` (and a spool): no API key anywhere."""
    name = save_block(maintenance_webhook=receiver.url, webhook_secret=WEBHOOK_SECRET)
    monkeypatch.setenv(CREDENTIALS_BLOCK_VARIABLE, name)
    monkeypatch.setenv("ARCANOS_INCIDENT_SPOOL", str(spool))
    return name


def test_notifier_settings_load_from_the_named_block_without_an_api_key(
    webhook_only_block: str, receiver: WebhookReceiver
) -> None:
    """Hooks report through the block's webhook even where no API key or model is configured."""
    settings = load_notifier_settings()

    assert settings.maintenance_webhook == receiver.url
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert hooks.environment_notifier().webhook_url == receiver.url
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        resolve_settings()


def test_hooks_of_an_async_flow_deliver_to_the_named_blocks_webhook(
    webhook_only_block: str, receiver: WebhookReceiver
) -> None:
    """In an async flow, where Prefect's block loading would turn async, the hook still loads the block."""

    @flow(name=FLOW_NAME, on_failure=[hooks.flow_on_failure])
    async def nightly() -> None:
        raise RuntimeError("no sources found")

    state = asyncio.run(nightly(return_state=True))

    assert state.is_failed()
    (delivery,) = receiver.delivered
    assert delivery.signature_valid is True
    assert delivery.json["incident_class"] == "flow_failed"


def test_notify_maintenance_with_a_webhook_only_block_needs_no_api_key(
    save_block: Callable[..., str], receiver: WebhookReceiver, spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending an explicit incident needs the webhook settings only."""
    monkeypatch.setenv("ARCANOS_INCIDENT_SPOOL", str(spool))
    block = ArcanosCredentials.load(save_block(maintenance_webhook=receiver.url, webhook_secret=WEBHOOK_SECRET))

    state = in_flow(lambda: notify_maintenance("nightly research is partial", credentials=block))

    incident = state.result()
    assert isinstance(incident, Incident)
    (delivery,) = receiver.delivered
    assert delivery.signature_valid is True
    assert delivery.json["incident_id"] == str(incident.incident_id)


@pytest.fixture
def other_endpoints() -> Iterator[tuple[FakeOpenAIServer, WebhookReceiver]]:
    """A second model endpoint and webhook, named only by a credentials block."""
    with FakeOpenAIServer() as server, WebhookReceiver(secret=WEBHOOK_SECRET) as hook:
        yield server, hook


def test_a_step_given_credentials_uses_them_and_reports_to_their_webhook(
    arcanos_env: dict[str, str],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    other_endpoints: tuple[FakeOpenAIServer, WebhookReceiver],
) -> None:
    """``credentials=`` decides the model, the endpoint and where the step's incident goes."""
    other_server, other_hook = other_endpoints
    block = ArcanosCredentials(
        openai_api_key=API_KEY,
        fine_tuned_model=BLOCK_MODEL,
        openai_base_url=other_server.base_url,
        maintenance_webhook=other_hook.url,
        webhook_secret=WEBHOOK_SECRET,
    )
    step = with_retries(run_reasoning, ArcanosSettings(task_retries=0))
    other_server.script(Reply.ok("From the block's endpoint."), Reply.error(401))

    state = in_flow(lambda: step(MESSAGES, step="ok", credentials=block).content)
    failed = in_flow(lambda: step(MESSAGES, step="denied", credentials=block))

    assert state.result() == "From the block's endpoint."
    assert failed.is_failed()
    assert [request.json["model"] for request in other_server.completion_requests] == [BLOCK_MODEL] * 2
    assert openai_server.completion_requests == []
    (incident,) = other_hook.incidents
    assert incident["incident_class"] == "authentication"
    assert incident["model"] == BLOCK_MODEL
    assert incident["context"]["task_run_name"] == "reasoning[denied]"
    assert receiver.deliveries == []


def test_invalid_credentials_given_to_a_step_are_reported_to_their_own_webhook(
    arcanos_env: dict[str, str],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    other_endpoints: tuple[FakeOpenAIServer, WebhookReceiver],
) -> None:
    """A block with a broken model id fails the step as ``configuration``; the block's webhook hears of it."""
    _, other_hook = other_endpoints
    block = ArcanosCredentials(
        fine_tuned_model="not a model id", maintenance_webhook=other_hook.url, webhook_secret=WEBHOOK_SECRET
    )

    state = in_flow(lambda: run_reasoning(MESSAGES, step="broken", credentials=block))

    assert state.is_failed()
    assert openai_server.completion_requests == []
    (incident,) = other_hook.incidents
    assert incident["incident_class"] == "configuration"
    assert "ARCANOS_FINE_TUNED_MODEL" in incident["reason"]
    assert receiver.deliveries == []
