"""Configuration: the environment and `.env`, every missing or invalid variable named, no secret ever shown."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from conftest import API_KEY, MODEL, WEBHOOK_SECRET

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import ArcanosError, ConfigurationError, IncidentClass
from arcanos_flows.core.settings import ArcanosSettings, NotifierSettings, default_incident_spool
from arcanos_flows.testing import WebhookReceiver

# Not shaped like `sk-...`, so only the registered-secret machinery (not a pattern) could hide it.
PLAIN_API_KEY = "plain-api-key-0123456789-DO-NOT-PRINT"


@pytest.fixture
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both required variables set in the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", PLAIN_API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)


def configuration_error() -> ConfigurationError:
    with pytest.raises(ConfigurationError) as caught:
        ArcanosSettings()
    return caught.value


# --- missing variables -------------------------------------------------------------------------


def test_missing_api_key_alone_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing OPENAI_API_KEY is named, and only it."""
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    message = str(configuration_error())
    assert message.startswith("Missing required environment variable: OPENAI_API_KEY")
    assert "ARCANOS_FINE_TUNED_MODEL" not in message


def test_missing_model_alone_has_the_documented_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing model reads exactly `Missing required environment variable: ARCANOS_FINE_TUNED_MODEL`."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    message = str(configuration_error())
    assert message.startswith("Missing required environment variable: ARCANOS_FINE_TUNED_MODEL")
    assert "OPENAI_API_KEY" not in message
    assert ".env" in message  # says where to set it


def test_both_missing_are_named_in_the_plural() -> None:
    """With both missing, the message uses the plural and names each variable."""
    message = str(configuration_error())
    assert message.startswith("Missing required environment variables: ")
    assert "OPENAI_API_KEY" in message
    assert "ARCANOS_FINE_TUNED_MODEL" in message


def test_configuration_error_is_an_arcanos_error_with_the_configuration_class() -> None:
    """ConfigurationError derives from ArcanosError and is reported as a `configuration` incident."""
    error = configuration_error()
    assert isinstance(error, ArcanosError)
    assert error.incident_class is IncidentClass.CONFIGURATION


@pytest.mark.parametrize("where", ["environment", "dotenv"])
def test_empty_string_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path, where: str
) -> None:
    """`OPENAI_API_KEY=` (empty) is as missing as an unset variable, in the environment or in .env."""
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    if where == "environment":
        monkeypatch.setenv("OPENAI_API_KEY", "")
    else:
        (isolated_environment / ".env").write_text("OPENAI_API_KEY=\n")
    assert str(configuration_error()).startswith("Missing required environment variable: OPENAI_API_KEY")


# --- invalid values ----------------------------------------------------------------------------

ALL_VARIABLES = {
    "OPENAI_API_KEY",
    "ARCANOS_FINE_TUNED_MODEL",
    "OPENAI_BASE_URL",
    "ARCANOS_OPENAI_API",
    "ARCANOS_MAINTENANCE_WEBHOOK",
    "ARCANOS_ALLOW_INSECURE_WEBHOOK",
    "ARCANOS_WEBHOOK_SECRET",
    "ARCANOS_CONFIRMATION_TOKEN",
    "ARCANOS_INCIDENT_SPOOL",
    "ARCANOS_STORE",
    "ARCANOS_REQUEST_TIMEOUT",
    "ARCANOS_MAX_RETRIES",
}
SHORT_SECRET = "whsec_" + base64.b64encode(b"only-12-byte").decode()
UNPREFIXED_SECRET = base64.b64encode(b"thirty-two-bytes-of-real-secret!").decode()
INVALID_VALUES = [
    ("ARCANOS_FINE_TUNED_MODEL", "ft:gpt 5.1 arcanos"),
    ("ARCANOS_FINE_TUNED_MODEL", " "),
    ("ARCANOS_MAINTENANCE_WEBHOOK", "http://hooks.example.com/incidents"),
    ("ARCANOS_MAINTENANCE_WEBHOOK", "ftp://hooks.example.com/incidents"),
    ("ARCANOS_MAINTENANCE_WEBHOOK", "https://user:pass@hooks.example.com/incidents"),
    ("ARCANOS_MAINTENANCE_WEBHOOK", "hooks.example.com/incidents"),
    ("ARCANOS_MAINTENANCE_WEBHOOK", "https://hooks.example.com:99999/incidents"),
    ("ARCANOS_WEBHOOK_SECRET", UNPREFIXED_SECRET),
    ("ARCANOS_WEBHOOK_SECRET", "whsec_not*base64*at*all*but*long*enough"),
    ("ARCANOS_WEBHOOK_SECRET", "whsec_" + "A" * 21),  # 21 base64 characters cannot be decoded
    ("ARCANOS_WEBHOOK_SECRET", SHORT_SECRET),
    ("ARCANOS_OPENAI_API", "other"),
    ("ARCANOS_MAX_RETRIES", "-1"),
    ("ARCANOS_MAX_RETRIES", "abc"),
    ("ARCANOS_REQUEST_TIMEOUT", "0"),
    ("ARCANOS_REQUEST_TIMEOUT", "-5"),
    ("ARCANOS_STORE", "maybe"),
    ("OPENAI_BASE_URL", "not a url"),
    ("OPENAI_BASE_URL", "api.openai.com/v1"),
]


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(("variable", "value"), INVALID_VALUES)
def test_invalid_value_is_named(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """Each invalid value raises ConfigurationError naming its variable, and nothing else."""
    monkeypatch.setenv(variable, value)
    message = str(configuration_error())
    assert message.startswith(f"{variable}: ")
    blamed = {name for name in ALL_VARIABLES if f"{name}: " in message}
    assert blamed == {variable}  # only that one variable is blamed
    assert PLAIN_API_KEY not in message
    if variable == "ARCANOS_WEBHOOK_SECRET":
        assert value not in message
        assert value.removeprefix("whsec_") not in message


@pytest.mark.usefixtures("required")
def test_invalid_keyword_argument_names_the_environment_variable() -> None:
    """Settings built in code still name the environment variable a user would fix."""
    with pytest.raises(ConfigurationError, match=r"^ARCANOS_FINE_TUNED_MODEL: ") as caught:
        ArcanosSettings(openai_api_key=API_KEY, fine_tuned_model="two words", _env_file=None)
    assert "fine_tuned_model" not in str(caught.value)


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/incidents",
        "http://127.5.6.7/incidents",
        "http://localhost:9000/incidents",
        "http://[::1]:9000/incidents",
        "https://hooks.example.com/incidents",
    ],
)
def test_webhook_over_http_is_allowed_to_loopback_hosts(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Plain http:// is fine to loopback hosts; https:// anywhere."""
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", url)
    assert ArcanosSettings().maintenance_webhook == url


@pytest.mark.usefixtures("required")
def test_public_http_webhook_is_allowed_when_insecure_is_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """ARCANOS_ALLOW_INSECURE_WEBHOOK=1 lets a public http:// webhook through."""
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", "http://hooks.example.com/incidents")
    monkeypatch.setenv("ARCANOS_ALLOW_INSECURE_WEBHOOK", "1")
    settings = ArcanosSettings()
    assert settings.allow_insecure_webhook is True
    assert settings.maintenance_webhook == "http://hooks.example.com/incidents"


@pytest.mark.usefixtures("required")
def test_insecure_opt_in_does_not_allow_other_schemes_or_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The insecure opt-in only concerns http://: ftp:// and user:pass URLs are still refused."""
    monkeypatch.setenv("ARCANOS_ALLOW_INSECURE_WEBHOOK", "1")
    for url in ("ftp://hooks.example.com/x", "http://user:pass@hooks.example.com/x"):
        monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", url)
        message = str(configuration_error())
        assert message.startswith("ARCANOS_MAINTENANCE_WEBHOOK: ")
        assert "pass" not in message.replace("password", "")


@pytest.mark.usefixtures("required")
def test_valid_optional_values_are_parsed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every optional variable, set to a valid value, lands typed in the settings."""
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:4000/v1/")
    monkeypatch.setenv("ARCANOS_OPENAI_API", "responses")
    monkeypatch.setenv("ARCANOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ARCANOS_CONFIRMATION_TOKEN", "ct-42")
    monkeypatch.setenv("ARCANOS_INCIDENT_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("ARCANOS_STORE", "false")
    monkeypatch.setenv("ARCANOS_REQUEST_TIMEOUT", "2.5")
    monkeypatch.setenv("ARCANOS_MAX_RETRIES", "0")
    settings = ArcanosSettings()
    assert settings.openai_base_url == "http://127.0.0.1:4000/v1"
    assert settings.openai_api == "responses"
    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == WEBHOOK_SECRET
    assert settings.confirmation_token == "ct-42"
    assert settings.incident_spool == tmp_path / "spool"
    assert settings.store is False
    assert settings.request_timeout == 2.5
    assert settings.max_retries == 0


@pytest.mark.usefixtures("required")
def test_several_invalid_values_are_all_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """One error names every invalid variable, so a user fixes them in one go."""
    bad = {
        "ARCANOS_FINE_TUNED_MODEL": "has space",
        "ARCANOS_MAINTENANCE_WEBHOOK": "http://hooks.example.com/x",
        "ARCANOS_WEBHOOK_SECRET": "whsec_tooshort",
        "ARCANOS_OPENAI_API": "other",
        "ARCANOS_MAX_RETRIES": "abc",
        "ARCANOS_REQUEST_TIMEOUT": "0",
        "ARCANOS_STORE": "maybe",
        "OPENAI_BASE_URL": "nope",
    }
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OPENAI_API_KEY")
    message = str(configuration_error())
    assert message.startswith("Missing required environment variable: OPENAI_API_KEY")
    for name in bad:
        assert f"{name}: " in message
    assert "whsec_tooshort" not in message


# --- .env and precedence -----------------------------------------------------------------------


def test_dotenv_in_the_working_directory_is_read(isolated_environment: Path) -> None:
    """A `.env` in the working directory configures the client."""
    (isolated_environment / ".env").write_text(f"OPENAI_API_KEY={API_KEY}\nARCANOS_FINE_TUNED_MODEL={MODEL}\n")
    settings = ArcanosSettings()
    assert settings.openai_api_key.get_secret_value() == API_KEY
    assert settings.fine_tuned_model == MODEL


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, isolated_environment: Path) -> None:
    """A variable set in the environment overrides the same one in `.env`."""
    (isolated_environment / ".env").write_text(
        f"OPENAI_API_KEY={API_KEY}\nARCANOS_FINE_TUNED_MODEL=ft:from-dotenv\nARCANOS_MAX_RETRIES=7\n"
    )
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", "ft:from-environment")
    settings = ArcanosSettings()
    assert settings.fine_tuned_model == "ft:from-environment"
    assert settings.max_retries == 7  # the rest still comes from .env


def test_arcanos_env_file_names_another_file(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path, tmp_path: Path
) -> None:
    """ARCANOS_ENV_FILE replaces the working directory's `.env`."""
    (isolated_environment / ".env").write_text(f"OPENAI_API_KEY={API_KEY}\nARCANOS_FINE_TUNED_MODEL=ft:cwd\n")
    other = tmp_path / "elsewhere" / "arcanos.env"
    other.parent.mkdir()
    other.write_text(f"OPENAI_API_KEY={API_KEY}\nARCANOS_FINE_TUNED_MODEL=ft:named-file\n")
    monkeypatch.setenv("ARCANOS_ENV_FILE", str(other))
    assert ArcanosSettings().fine_tuned_model == "ft:named-file"
    assert NotifierSettings().incident_spool == default_incident_spool()


@pytest.mark.parametrize("settings_class", [ArcanosSettings, NotifierSettings])
def test_arcanos_env_file_pointing_nowhere_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings_class: type[NotifierSettings]
) -> None:
    """A missing ARCANOS_ENV_FILE is not silently ignored: the error names the variable."""
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    monkeypatch.setenv("ARCANOS_ENV_FILE", str(tmp_path / "missing.env"))
    with pytest.raises(ConfigurationError, match=r"^ARCANOS_ENV_FILE: .*missing\.env"):
        settings_class()


def test_dotenv_shared_with_the_node_backend_is_fine(isolated_environment: Path) -> None:
    """Unrelated variables, comments, quotes and `export X=...` lines in a shared `.env` are fine."""
    (isolated_environment / ".env").write_text(
        "# shared with the Node.js backend\n"
        "NODE_ENV=production\n"
        "export PORT=3000\n"
        "DATABASE_URL=postgres://user:pw@db:5432/arcanos\n"
        "SESSION_SECRET='not ours'\n"
        f"export OPENAI_API_KEY={API_KEY}\n"
        f'ARCANOS_FINE_TUNED_MODEL="{MODEL}"\n'
        "export ARCANOS_CONFIRMATION_TOKEN='ct 7'\n"
        "\n"
    )
    settings = ArcanosSettings()
    assert settings.openai_api_key.get_secret_value() == API_KEY
    assert settings.fine_tuned_model == MODEL
    assert settings.confirmation_token == "ct 7"
    assert not hasattr(settings, "NODE_ENV")
    assert not hasattr(settings, "node_env")


def test_notifier_settings_need_no_api_key_or_model(isolated_environment: Path, tmp_path: Path) -> None:
    """NotifierSettings read webhook, secret and spool from `.env` without any API key or model."""
    (isolated_environment / ".env").write_text(
        "ARCANOS_MAINTENANCE_WEBHOOK=https://hooks.example.com/incidents\n"
        f"ARCANOS_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
        f"ARCANOS_INCIDENT_SPOOL={tmp_path / 'spool'}\n"
    )
    settings = NotifierSettings()
    assert settings.maintenance_webhook == "https://hooks.example.com/incidents"
    assert settings.webhook_secret is not None
    assert settings.incident_spool == tmp_path / "spool"


def test_notifier_settings_refuse_an_invalid_webhook(monkeypatch: pytest.MonkeyPatch) -> None:
    """NotifierSettings apply the same webhook rules as the client's settings."""
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", "http://hooks.example.com/incidents")
    with pytest.raises(ConfigurationError, match=r"^ARCANOS_MAINTENANCE_WEBHOOK: "):
        NotifierSettings()


@pytest.mark.usefixtures("required")
def test_defaults(tmp_path: Path) -> None:
    """Defaults: Chat Completions, store=true, spool under XDG_STATE_HOME/arcanos-flows/incidents."""
    settings = ArcanosSettings()
    assert settings.openai_api == "chat"
    assert settings.store is True
    assert settings.openai_base_url is None
    assert settings.maintenance_webhook is None
    assert settings.webhook_secret is None
    assert settings.confirmation_token is None
    assert settings.allow_insecure_webhook is False
    assert settings.request_timeout > 0
    assert settings.max_retries >= 0
    # conftest points XDG_STATE_HOME at tmp_path / "state"
    assert settings.incident_spool == tmp_path / "state" / "arcanos-flows" / "incidents"


def test_default_spool_falls_back_to_the_home_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without XDG_STATE_HOME the spool is ~/.local/state/arcanos-flows/incidents."""
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_incident_spool() == tmp_path / "home" / ".local" / "state" / "arcanos-flows" / "incidents"


# --- secrets -------------------------------------------------------------------------------------


def test_secrets_never_appear_in_str_or_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    """str() and repr() of the settings hide the API key and the webhook secret."""
    monkeypatch.setenv("OPENAI_API_KEY", PLAIN_API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    monkeypatch.setenv("ARCANOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    settings = ArcanosSettings()
    for shown in (str(settings), repr(settings), settings.model_dump_json()):
        assert PLAIN_API_KEY not in shown
        assert WEBHOOK_SECRET not in shown
        assert WEBHOOK_SECRET.removeprefix("whsec_") not in shown
    assert MODEL in repr(settings)  # the rest is shown


@pytest.mark.usefixtures("required")
def test_configuration_errors_chain_no_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The error is raised `from None`: no pydantic ValidationError quoting the secret rides along."""
    rejected = "whsec_" + base64.b64encode(b"tiny-secret").decode()
    monkeypatch.setenv("ARCANOS_WEBHOOK_SECRET", rejected)
    error = configuration_error()
    assert error.__cause__ is None
    assert error.__context__ is None
    assert error.__suppress_context__ is True
    assert rejected not in str(error)
    assert rejected not in repr(error)
    assert rejected.removeprefix("whsec_") not in str(error)


def test_missing_variable_error_chains_nothing() -> None:
    """Missing-variable errors carry no chained exception either."""
    error = configuration_error()
    assert error.__cause__ is None
    assert error.__context__ is None


def test_api_key_never_appears_in_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid configuration never echoes the API key, even when another value is rejected."""
    monkeypatch.setenv("OPENAI_API_KEY", PLAIN_API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", "bad model")
    monkeypatch.setenv("ARCANOS_STORE", "maybe")
    error = configuration_error()
    assert PLAIN_API_KEY not in str(error)
    assert PLAIN_API_KEY not in repr(error)


# --- the client constructor reports configuration problems -------------------------------------


def test_client_with_missing_config_sends_one_configuration_incident_to_the_webhook(
    monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """ArcanosPythonClient() fails fast: one signed `configuration` incident to the webhook, then the error."""
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", receiver.url)
    monkeypatch.setenv("ARCANOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    with pytest.raises(ConfigurationError, match=r"^Missing required environment variable: OPENAI_API_KEY"):
        ArcanosPythonClient()
    deliveries = receiver.wait_for(1)
    assert len(receiver.deliveries) == 1
    (delivery,) = deliveries
    assert delivery.signature_valid is True
    incident = delivery.json
    assert incident["incident_class"] == "configuration"
    assert incident["error_type"] == "arcanos_flows.errors.ConfigurationError"
    assert incident["source"] == "arcanos_flows.client"
    assert "OPENAI_API_KEY" in incident["reason"]
    assert delivery.headers["webhook-id"] == incident["incident_id"]
    assert capsys.readouterr().out == ""


def test_client_with_missing_config_prints_one_incident_without_a_webhook(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a webhook, the `configuration` incident is one JSON line on stdout."""
    monkeypatch.setenv("OPENAI_API_KEY", PLAIN_API_KEY)
    with pytest.raises(ConfigurationError, match=r"^Missing required environment variable: ARCANOS_FINE_TUNED_MODEL"):
        ArcanosPythonClient()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    incident = json.loads(lines[0])
    assert incident["type"] == "arcanos.incident"
    assert incident["incident_class"] == "configuration"
    assert "ARCANOS_FINE_TUNED_MODEL" in incident["reason"]
    assert PLAIN_API_KEY not in lines[0]


def test_client_with_invalid_webhook_prints_the_incident_and_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid webhook cannot receive its own incident: it is printed, and the error names the variable."""
    monkeypatch.setenv("OPENAI_API_KEY", PLAIN_API_KEY)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", MODEL)
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", "http://hooks.example.com/incidents")
    with pytest.raises(ConfigurationError, match=r"^ARCANOS_MAINTENANCE_WEBHOOK: "):
        ArcanosPythonClient()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    incident = json.loads(lines[0])
    assert incident["incident_class"] == "configuration"
    assert "ARCANOS_MAINTENANCE_WEBHOOK" in incident["reason"]
    assert PLAIN_API_KEY not in lines[0]


def test_client_with_missing_env_file_prints_the_incident(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken ARCANOS_ENV_FILE is reported (printed) and raised naming the variable."""
    monkeypatch.setenv("ARCANOS_ENV_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(ConfigurationError, match=r"^ARCANOS_ENV_FILE: "):
        ArcanosPythonClient()
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["incident_class"] == "configuration"


# --- settings read once per change (what the tasks use) ------------------------------------------------------------


def test_settings_from_the_environment_are_read_again_when_the_env_file_or_a_variable_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Tasks resolve settings at each call; the cache returns the same object until something they read changes."""
    from arcanos_flows.core.settings import settings_from_environment

    env_file = tmp_path / "arcanos.env"
    env_file.write_text(f"OPENAI_API_KEY={PLAIN_API_KEY}\nARCANOS_FINE_TUNED_MODEL={MODEL}\n")
    monkeypatch.setenv("ARCANOS_ENV_FILE", str(env_file))
    first = settings_from_environment()
    assert first is settings_from_environment()
    assert first.fine_tuned_model == MODEL

    env_file.write_text(f"OPENAI_API_KEY={PLAIN_API_KEY}\nARCANOS_FINE_TUNED_MODEL={MODEL}-v2\n")  # size changes
    assert settings_from_environment().fine_tuned_model == f"{MODEL}-v2"

    monkeypatch.setenv("ARCANOS_REQUEST_TIMEOUT", "7")
    assert settings_from_environment().request_timeout == 7

    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", "not a model")  # an error is raised at every call, never cached
    for _ in range(2):
        with pytest.raises(ConfigurationError, match="ARCANOS_FINE_TUNED_MODEL"):
            settings_from_environment()
