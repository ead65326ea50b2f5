"""Behind a gateway the model that really answered is enforced: LiteLLM's headers, Azure OpenAI's paths.

Every test talks real HTTP through the real SDK to the shipped fake server in gateway mode
(``FakeOpenAIServer(gateway="litellm")`` or ``gateway="azure"``); incidents go to the signed webhook receiver.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import MODEL

from arcanos_flows import ArcanosPythonClient, AsyncArcanosClient
from arcanos_flows.core.errors import ConfigurationError, ModelEnforcementError
from arcanos_flows.core.results import ReasoningResult
from arcanos_flows.core.settings import ArcanosSettings
from arcanos_flows.incidents.model import Incident, attached_incident
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver

ALIAS = "arcanos-reasoning"
AZURE_MODEL = "gpt-4.1-mini-2025-04-14.ft-0123456789abcdef"
DEPLOYMENT = "arcanos-prod"
API_VERSION = "2024-10-21"
QUESTION = [{"role": "user", "content": "List the current confirmation layers."}]


@pytest.fixture
def litellm() -> Iterator[FakeOpenAIServer]:
    """A LiteLLM-like proxy whose alias routes to the enforced model."""
    with FakeOpenAIServer(gateway="litellm", aliases={ALIAS: MODEL}) as server:
        yield server


@pytest.fixture
def azure() -> Iterator[FakeOpenAIServer]:
    """An Azure-shaped endpoint whose deployment runs a fine-tuned model (named as Azure names it)."""
    with FakeOpenAIServer(gateway="azure", aliases={DEPLOYMENT: AZURE_MODEL}) as server:
        yield server


@pytest.fixture
def behind_litellm(
    make_settings: Callable[..., ArcanosSettings], litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> ArcanosPythonClient:
    """A client whose requests carry the proxy's alias, the fine-tuned model being enforced."""
    settings = make_settings(openai_base_url=litellm.base_url, gateway_model=ALIAS, max_retries=0)
    return ArcanosPythonClient(settings)


def azure_settings(make_settings: Callable[..., ArcanosSettings], azure: FakeOpenAIServer, **values: Any) -> Any:
    options = {"openai_base_url": azure.origin, "gateway": "azure", "gateway_model": DEPLOYMENT}
    return make_settings(fine_tuned_model=AZURE_MODEL, **{**options, **values})


def test_an_alias_passes_and_the_result_names_the_verified_model(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The request carries the alias; the result names the model LiteLLM reports, never the alias."""
    result = behind_litellm.run_reasoning(QUESTION, metadata={"ticket": "OPS-7"})

    (request,) = litellm.completion_requests
    assert request.json["model"] == ALIAS
    assert result.model == MODEL
    assert result.gateway is not None
    assert (result.gateway.gateway, result.gateway.requested_model) == ("litellm", ALIAS)
    assert result.gateway.reported_model == f"openai/{MODEL}"
    assert result.gateway.fallbacks == 0
    assert receiver.deliveries == []


def test_the_request_id_is_the_upstreams_behind_litellm(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer
) -> None:
    """LiteLLM relays the upstream's id as llm_provider-x-request-id: that is the result's request_id."""
    result = behind_litellm.run_simple_prompt("Status?")

    assert result.request_id == "req_1"
    assert result.gateway is not None
    assert result.gateway.call_id


def test_a_body_naming_a_third_model_is_refused_whatever_the_header_says(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Under the default `auto`, a header claiming the enforced model does not outweigh a body naming another one."""
    openai_server.script(replace(Reply.other_model("gpt-4o-mini"), headers={"x-litellm-model-name": f"openai/{MODEL}"}))
    client = ArcanosPythonClient(make_settings(fine_tuned_model=MODEL))

    with pytest.raises(ModelEnforcementError, match="body names gpt-4o-mini while x-litellm-model-name reports"):
        client.run_reasoning(QUESTION)

    (incident,) = [delivery.json for delivery in receiver.wait_for(1)]
    assert incident["incident_class"] == "model_enforcement"


def test_a_swapped_deployment_raises_with_exactly_one_incident(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The alias now routes to gpt-4o-mini: the body still names the alias, the header tells the truth."""
    litellm.script(Reply.other_model("gpt-4o-mini"))

    with pytest.raises(ModelEnforcementError, match="LiteLLM reports openai/gpt-4o-mini answered") as raised:
        behind_litellm.run_reasoning(QUESTION)

    assert raised.value.actual_model == "gpt-4o-mini"
    assert raised.value.request_id == "req_1"
    (incident,) = [delivery.json for delivery in receiver.wait_for(1)]
    assert incident["incident_class"] == "model_enforcement"
    assert incident["severity"] == "error"
    assert "openai/gpt-4o-mini" in incident["reason"]
    assert incident["request_id"] == "req_1"
    gateway = incident["context"]["gateway"]
    assert (gateway["name"], gateway["requested_model"], gateway["fallbacks"]) == ("litellm", ALIAS, 0)
    assert gateway["call_id"]
    time.sleep(0.2)
    assert len(receiver.deliveries) == 1


def test_a_fallback_to_another_model_raises_naming_the_fallback(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """A router fallback to another model is refused, and the incident says a fallback answered, and which."""
    litellm.script(Reply.fallback("gpt-4o", deployment="backup-eu", group="general"))

    with pytest.raises(ModelEnforcementError, match="a fallback answered"):
        behind_litellm.run_reasoning(QUESTION)

    (incident,) = [delivery.json for delivery in receiver.wait_for(1)]
    assert incident["incident_class"] == "model_enforcement"
    assert "a fallback answered" in incident["reason"]
    assert "model group general, deployment backup-eu" in incident["reason"]
    assert incident["context"]["gateway"]["fallbacks"] == 1
    time.sleep(0.2)
    assert len(receiver.deliveries) == 1


def test_a_same_model_fallback_passes_with_one_warning_incident(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The enforced model answered from another deployment: accepted, recorded, reported as a warning."""
    litellm.script(Reply.fallback(deployment="backup-eu"))

    result = behind_litellm.run_reasoning(QUESTION, metadata={"ticket": "OPS-7"})

    assert result.model == MODEL
    assert result.gateway is not None
    assert (result.gateway.fallbacks, result.gateway.deployment) == (1, "backup-eu")
    (delivery,) = receiver.wait_for(1)
    incident = delivery.json
    assert delivery.signature_valid
    assert (incident["incident_class"], incident["severity"]) == ("gateway_fallback", "warning")
    assert "deployment backup-eu" in incident["reason"]
    assert incident["metadata"] == {"ticket": "OPS-7"}
    assert incident["request_id"] == result.request_id
    time.sleep(0.2)
    assert len(receiver.deliveries) == 1


def test_explicit_litellm_without_the_header_fails_closed(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """ARCANOS_GATEWAY=litellm in front of something that is not LiteLLM: nothing can be verified, nothing passes."""
    client = ArcanosPythonClient(make_settings(gateway="litellm", max_retries=0))

    with pytest.raises(ModelEnforcementError, match="carries no x-litellm-model-name header"):
        client.run_reasoning(QUESTION)
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "model_enforcement"


def test_without_a_gateway_nothing_changes(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer
) -> None:
    """The default (auto) in front of OpenAI: the same request, the body's model checked, no gateway recorded."""
    result = ArcanosPythonClient(make_settings()).run_reasoning(QUESTION)

    (request,) = openai_server.completion_requests
    assert request.json["model"] == MODEL
    assert request.path == "/v1/chat/completions"
    assert (result.model, result.request_id, result.gateway) == (MODEL, "req_1", None)
    assert ReasoningResult.model_validate_json(result.model_dump_json()) == result


def test_auto_with_an_alias_but_no_gateway_fails_closed(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer
) -> None:
    """An alias sent to an endpoint that reports nothing: the answer names the alias, which is not the model."""
    client = ArcanosPythonClient(make_settings(gateway_model=ALIAS, max_retries=0))

    with pytest.raises(ModelEnforcementError, match=f"but {ALIAS} answered"):
        client.run_reasoning(QUESTION)


def test_the_fake_gateway_default_mode_sends_no_gateway_headers(openai_server: FakeOpenAIServer) -> None:
    """The fake's default mode answers as before: x-request-id, no LiteLLM header."""
    with call(openai_server.base_url + "/chat/completions", {"model": MODEL, "messages": QUESTION}) as answer:
        headers = {name.lower() for name in answer.headers}
        assert json.load(answer)["model"] == MODEL
    assert "x-request-id" in headers
    assert not any(name.startswith(("x-litellm", "llm_provider")) for name in headers)


def call(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - a loopback http:// URL of the fake server
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **(headers or {})}
    )
    return urllib.request.urlopen(request, timeout=5)  # noqa: S310


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_azure_deployments_with_an_api_version(
    make_settings: Callable[..., ArcanosSettings], azure: FakeOpenAIServer, api: str
) -> None:
    """The deployment goes in the URL, the api-version in the query, the key in api-key: and the model is checked."""
    settings = azure_settings(make_settings, azure, azure_api_version=API_VERSION, openai_api=api)

    result = ArcanosPythonClient(settings).run_reasoning(QUESTION)

    (request,) = azure.completion_requests
    path = f"/openai/deployments/{DEPLOYMENT}/chat/completions" if api == "chat" else "/openai/responses"
    assert request.path == f"{path}?api-version={API_VERSION}"
    assert request.headers["api-key"] == settings.openai_api_key.get_secret_value()
    assert "authorization" not in request.headers
    assert request.json["model"] == DEPLOYMENT
    assert result.model == AZURE_MODEL
    assert result.gateway is not None
    assert (result.gateway.gateway, result.gateway.deployment) == ("azure", DEPLOYMENT)


def test_azure_v1_without_an_api_version(
    make_settings: Callable[..., ArcanosSettings], azure: FakeOpenAIServer
) -> None:
    """No api-version: Azure's /openai/v1 API, the deployment named in the body."""
    settings = azure_settings(make_settings, azure)

    result = ArcanosPythonClient(settings).run_reasoning(QUESTION)

    (request,) = azure.completion_requests
    assert request.path == "/openai/v1/chat/completions"
    assert request.headers["api-key"] == settings.openai_api_key.get_secret_value()
    assert request.json["model"] == DEPLOYMENT
    assert result.model == AZURE_MODEL


def test_azure_answering_with_another_model_raises(
    make_settings: Callable[..., ArcanosSettings], azure: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """The deployment runs the base model, not the fine-tune: Azure's answer names it, and it is refused."""
    azure.alias(DEPLOYMENT, "gpt-4.1-mini-2025-04-14")
    client = ArcanosPythonClient(azure_settings(make_settings, azure, azure_api_version=API_VERSION, max_retries=0))

    with pytest.raises(ModelEnforcementError, match=f"Azure deployment {DEPLOYMENT}"):
        client.run_reasoning(QUESTION)
    (incident,) = receiver.incidents
    assert incident["context"]["gateway"]["deployment"] == DEPLOYMENT


def test_the_azure_fake_refuses_what_azure_refuses(azure: FakeOpenAIServer) -> None:
    """No api-key: 401; no api-version on a deployment path: 404; the OpenAI paths do not exist there."""
    url = f"{azure.origin}/openai/deployments/{DEPLOYMENT}/chat/completions"
    body = {"messages": QUESTION}
    for target, headers, status in (
        (f"{url}?api-version={API_VERSION}", {}, 401),
        (url, {"api-key": "k"}, 404),
        (f"{azure.origin}/v1/chat/completions", {"api-key": "k"}, 404),
    ):
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(target, body, headers)
        assert refused.value.code == status
    with call(f"{url}?api-version={API_VERSION}", body, {"api-key": "k"}) as answer:
        assert json.load(answer)["model"] == AZURE_MODEL


def test_the_async_client_verifies_the_same_way(
    make_settings: Callable[..., ArcanosSettings],
    litellm: FakeOpenAIServer,
    azure: FakeOpenAIServer,
    receiver: WebhookReceiver,
) -> None:
    """Alias, swapped deployment, same-model fallback and Azure, from coroutines."""
    litellm.script(Reply.ok(), Reply.other_model("gpt-4o-mini"), Reply.fallback(deployment="backup-eu"))

    async def scenario() -> list[Any]:
        settings = make_settings(openai_base_url=litellm.base_url, gateway_model=ALIAS, max_retries=0)
        on_azure = azure_settings(make_settings, azure, azure_api_version=API_VERSION)
        async with AsyncArcanosClient(settings) as client, AsyncArcanosClient(on_azure) as azure_client:
            passed = await client.run_reasoning(QUESTION)
            with pytest.raises(ModelEnforcementError):
                await client.run_reasoning(QUESTION)
            fell_back = await client.run_reasoning(QUESTION)
            return [passed, fell_back, await azure_client.run_reasoning(QUESTION)]

    passed, fell_back, on_azure = asyncio.run(scenario())

    assert (passed.model, fell_back.model, on_azure.model) == (MODEL, MODEL, AZURE_MODEL)
    assert fell_back.gateway is not None
    assert fell_back.gateway.fallbacks == 1
    assert azure.completion_requests[0].path.startswith(f"/openai/deployments/{DEPLOYMENT}/")
    receiver.wait_for(2)
    classes = sorted((incident["incident_class"], incident["severity"]) for incident in receiver.incidents)
    assert classes == [("gateway_fallback", "warning"), ("model_enforcement", "error")]


def test_severity_is_backward_compatible_and_in_the_schema(
    behind_litellm: ArcanosPythonClient, litellm: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """An incident without ``severity`` (an older sender, the spool) is an error; a warning validates too."""
    litellm.script(Reply.fallback(deployment="backup-eu"))
    behind_litellm.run_reasoning(QUESTION)
    (delivery,) = receiver.wait_for(1)
    schema = json.loads((Path(__file__).parents[1] / "docs" / "incident.schema.json").read_text(encoding="utf-8"))

    jsonschema.validate(delivery.json, schema)
    older = {key: value for key, value in delivery.json.items() if key != "severity"}
    jsonschema.validate(older, schema)
    assert Incident.model_validate(older).severity == "error"
    assert Incident.model_validate(delivery.json).severity == "warning"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"gateway": "azure"}, "ARCANOS_GATEWAY: azure needs OPENAI_BASE_URL"),
        (
            {"gateway": "azure", "openai_base_url": "https://arcanos.openai.azure.com/openai/v1"},
            "ARCANOS_GATEWAY: azure needs OPENAI_BASE_URL to be the resource endpoint",
        ),
        ({"gateway": "kong"}, "ARCANOS_GATEWAY: Input should be 'auto', 'none', 'litellm' or 'azure'"),
        ({"gateway": "none", "gateway_model": ALIAS}, "ARCANOS_GATEWAY_MODEL: is set but ARCANOS_GATEWAY is none"),
        ({"gateway_model": "my alias"}, "ARCANOS_GATEWAY_MODEL: 'my alias' is not a model or deployment name"),
        ({"azure_api_version": API_VERSION}, "ARCANOS_AZURE_API_VERSION: is only used with ARCANOS_GATEWAY=azure"),
    ],
)
def test_bad_gateway_settings_name_the_variable(values: dict[str, str], message: str) -> None:
    """Each problem is a ConfigurationError naming the variable and what to do, before any request."""
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ArcanosSettings(openai_api_key="sk-test-0000", fine_tuned_model=MODEL, _env_file=None, **values)


def test_gateway_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The three variables, as a deployment sets them."""
    for name, value in {
        "OPENAI_API_KEY": "sk-test-0000",
        "ARCANOS_FINE_TUNED_MODEL": AZURE_MODEL,
        "OPENAI_BASE_URL": "https://arcanos.openai.azure.com/",
        "ARCANOS_GATEWAY": "azure",
        "ARCANOS_GATEWAY_MODEL": DEPLOYMENT,
        "ARCANOS_AZURE_API_VERSION": API_VERSION,
    }.items():
        monkeypatch.setenv(name, value)
    settings = ArcanosSettings()
    assert (settings.gateway, settings.requested_model, settings.azure_api_version) == (
        "azure",
        DEPLOYMENT,
        API_VERSION,
    )


def test_the_fake_gateway_runs_from_its_cli() -> None:
    """``python -m arcanos_flows.testing openai --gateway litellm --alias NAME=MODEL``: headers a test can read."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "arcanos_flows.testing",
            "openai",
            "--gateway",
            "litellm",
            "--alias",
            f"{ALIAS}={MODEL}",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = process.stdout.readline().split()
        assert ready[0] == "READY"
        with call(ready[1] + "/chat/completions", {"model": ALIAS, "messages": QUESTION}) as answer:
            assert json.load(answer)["model"] == ALIAS
            assert answer.headers["x-litellm-model-name"] == f"openai/{MODEL}"
            assert answer.headers["llm_provider-x-request-id"] == "req_1"
            assert answer.headers["x-litellm-attempted-fallbacks"] == "0"
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- in Prefect ---------------------------------------------------------------------------------------------------


@pytest.fixture
def prefect_behind_litellm(
    prefect_harness: None, arcanos_env: dict[str, str], litellm: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> FakeOpenAIServer:
    """The tasks' environment pointed at the LiteLLM-like proxy, with the alias."""
    monkeypatch.setenv("OPENAI_BASE_URL", litellm.base_url)
    monkeypatch.setenv("ARCANOS_GATEWAY_MODEL", ALIAS)
    return litellm


def run_step_in_flow(tmp_path: Path) -> Any:
    from prefect import flow
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from arcanos_flows.prefect import run_reasoning

    @flow(name="arcanos-test-gateways")
    def audit() -> ReasoningResult:
        return run_reasoning(QUESTION, step="layers")

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOCAL_STORAGE_PATH: tmp_path}):
        return audit(return_state=True)


def test_in_a_task_run_a_swapped_deployment_is_one_incident(
    prefect_behind_litellm: FakeOpenAIServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The step fails at once (never retried) and its root cause is reported once, with the gateway's facts."""
    prefect_behind_litellm.always(Reply.other_model("gpt-4o-mini"))

    state = run_step_in_flow(tmp_path)

    assert state.is_failed()
    assert len(prefect_behind_litellm.completion_requests) == 1
    (incident,) = receiver.incidents
    assert incident["incident_class"] == "model_enforcement"
    assert incident["context"]["task_run_name"] == "reasoning[layers]"
    assert incident["context"]["gateway"]["call_id"]
    with pytest.raises(ModelEnforcementError) as raised:
        state.result()
    assert attached_incident(raised.value) is not None


def test_in_a_task_run_a_same_model_fallback_is_one_warning(
    prefect_behind_litellm: FakeOpenAIServer, receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """The step succeeds with the verified model; the degraded primary is one warning incident."""
    prefect_behind_litellm.script(Reply.fallback(deployment="backup-eu"))

    state = run_step_in_flow(tmp_path)

    assert state.is_completed()
    result = state.result()
    assert result.model == MODEL
    assert result.gateway.fallbacks == 1
    receiver.wait_for(1)
    (incident,) = receiver.incidents
    assert (incident["incident_class"], incident["severity"]) == ("gateway_fallback", "warning")
    assert incident["metadata"]["prefect.task_run_id"] == result.metadata["prefect.task_run_id"]


# --- a real LiteLLM proxy (optional) ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_real_litellm_proxy_in_front_of_the_fake(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer, tmp_path: Path
) -> None:
    """With ``litellm[proxy]`` installed (never a dependency): its real headers verify an alias, and refuse another.

    LiteLLM reports the deployment it routed to (``litellm_params.model``), so the swap is a second alias whose
    deployment runs another model.
    """
    pytest.importorskip("litellm")
    executable = shutil.which("litellm")
    if executable is None:
        pytest.skip("the litellm proxy CLI is not installed (pip install 'litellm[proxy]')")
    config, base = tmp_path / "litellm.yaml", openai_server.base_url
    config.write_text(
        "model_list:\n"
        f"  - model_name: {ALIAS}\n"
        f"    litellm_params: {{model: 'openai/{MODEL}', api_base: '{base}', api_key: 'sk-fake'}}\n"
        "  - model_name: swapped\n"
        f"    litellm_params: {{model: 'openai/gpt-4o-mini', api_base: '{base}', api_key: 'sk-fake'}}\n",
        encoding="utf-8",
    )
    port = free_port()
    proxy = subprocess.Popen(
        [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "LITELLM_LOG": "ERROR"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proxy.poll() is not None:
                    pytest.fail("the LiteLLM proxy did not start")
                time.sleep(0.5)
        settings = make_settings(openai_base_url=f"http://127.0.0.1:{port}", gateway="litellm", gateway_model=ALIAS)
        assert ArcanosPythonClient(settings).run_reasoning(QUESTION).model == MODEL
        swapped = ArcanosPythonClient(settings.model_copy(update={"gateway_model": "swapped"}))
        with pytest.raises(ModelEnforcementError, match="LiteLLM reports openai/gpt-4o-mini answered"):
            swapped.run_reasoning(QUESTION)
    finally:
        proxy.terminate()
        proxy.wait(timeout=20)
