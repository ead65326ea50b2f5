"""Configuration from the environment and a ``.env`` file shared with the Node.js backend.

The environment wins over ``.env``; ``ARCANOS_ENV_FILE`` names another file. Every problem becomes a
:class:`~arcanos_flows.errors.ConfigurationError` naming the variable, raised before any network call.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import threading
from pathlib import Path
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

import httpx2
import requests
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arcanos_flows.core.errors import ConfigurationError
from arcanos_flows.core.pricing import Pricing
from arcanos_flows.core.redaction import redact, register_secret, register_token
from arcanos_flows.core.variables import CREDENTIALS_BLOCK_VARIABLE, ENV_FILE_VARIABLE

__all__ = [
    "CREDENTIALS_BLOCK_VARIABLE",
    "ENV_FILE_VARIABLE",
    "ArcanosSettings",
    "NotifierSettings",
    "default_incident_spool",
    "settings_from_environment",
]

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/\-]{0,255}")
_WEBHOOK_SECRET = re.compile(r"whsec_([A-Za-z0-9+/]+={0,2})")
_MIN_SECRET_BYTES = 16
# What an HTTP header can carry as a bearer token: visible ASCII, no spaces or line breaks.
_API_KEY = re.compile(r"[\x21-\x7e]+")
# Characters no URL may contain raw; parsers disagree about them (urllib strips tabs, httpx refuses them).
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")
_API_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_incident_spool() -> Path:
    """The per-user folder where undelivered incidents wait: ``$XDG_STATE_HOME/arcanos-flows/incidents``.

    Examples:
        >>> default_incident_spool().name
        'incidents'
    """
    state_home = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_home) / "arcanos-flows" / "incidents"


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        return False
    return True


def _check_url_characters(url: str) -> None:
    if _URL_FORBIDDEN.search(url):
        raise ValueError("must not contain spaces, control characters or backslashes")


def _env_file_from_environment() -> Path:
    named = os.environ.get(ENV_FILE_VARIABLE)
    if not named:
        return Path(".env")
    path = Path(named).expanduser()
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ConfigurationError(
            f"{ENV_FILE_VARIABLE}: {named} is not a readable file (fix the path, or unset {ENV_FILE_VARIABLE} "
            "to read .env from the working directory)"
        )
    return path


def _variable_names(settings_class: type[BaseSettings]) -> dict[str, str]:
    # Errors name the environment variable even when the value came in as a keyword argument.
    return {
        name: field.validation_alias
        for name, field in settings_class.model_fields.items()
        if isinstance(field.validation_alias, str)
    }


def _describe(error: ValidationError, variables: dict[str, str]) -> str:
    missing: list[str] = []
    invalid: list[str] = []
    for detail in error.errors(include_input=False, include_url=False):
        variable = str(detail["loc"][0]) if detail["loc"] else "settings"
        variable = variables.get(variable, variable)
        if detail["type"] == "missing":
            missing.append(variable)
        else:
            message = detail["msg"].removeprefix("Value error, ")
            invalid.append(f"{variable}: {message}")
    parts: list[str] = []
    if missing:
        noun = "variable" if len(missing) == 1 else "variables"
        where = "it" if len(missing) == 1 else "them"
        parts.append(
            f"Missing required environment {noun}: {', '.join(missing)} (set {where} in the environment or in .env)"
        )
    parts.extend(invalid)
    # Messages never quote inputs, but a validator may echo part of a value (the model id): scrub keys.
    return redact("; ".join(parts))


def _register(value: SecretStr) -> None:
    # Called from the secrets' own validators too, so that a later field's error message (which may
    # echo its value, e.g. a key pasted into the model variable) is already redacted.
    secret = value.get_secret_value()
    register_secret(secret)
    if secret.startswith("whsec_"):
        # The signing key is the base64 part; a library error might show it without the prefix.
        register_secret(secret.removeprefix("whsec_").rstrip("="))


class NotifierSettings(BaseSettings):
    """What :class:`~arcanos_flows.incidents.notifier.MaintenanceNotifier` needs: webhook, signing secret, spool.

    No API key or model is required, so a notifier works in any process.

    Examples:
        >>> settings = NotifierSettings(maintenance_webhook=None, _env_file=None)
        >>> settings.maintenance_webhook is None
        True
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    allow_insecure_webhook: bool = Field(
        False,
        validation_alias="ARCANOS_ALLOW_INSECURE_WEBHOOK",
        description="`1` allows a plain `http://` webhook to a non-loopback host",
        json_schema_extra={"shown_default": "`0`"},
    )
    maintenance_webhook: str | None = Field(
        None,
        validation_alias="ARCANOS_MAINTENANCE_WEBHOOK",
        description="where incidents are POSTed; `https://` only, except loopback hosts",
        json_schema_extra={"shown_default": "stdout"},
    )
    webhook_secret: SecretStr | None = Field(
        None,
        validation_alias="ARCANOS_WEBHOOK_SECRET",
        description="Standard Webhooks secret (`whsec_` + base64 of at least 16 bytes); when set every POST is signed",
    )
    webhook_timeout: float = Field(
        10.0,
        gt=0,
        le=120,
        validation_alias="ARCANOS_WEBHOOK_TIMEOUT",
        description="seconds per webhook attempt",
    )
    incident_spool: Path = Field(
        default_factory=default_incident_spool,
        validation_alias="ARCANOS_INCIDENT_SPOOL",
        description="folder where undelivered incidents wait",
        json_schema_extra={"shown_default": "`$XDG_STATE_HOME/arcanos-flows/incidents` (`~/.local/state/...`)"},
    )

    def __init__(self, **values: Any) -> None:
        if "_env_file" not in values:
            values["_env_file"] = _env_file_from_environment()
        problem: str | None = None
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problem = _describe(exc, _variable_names(type(self)))
        except (OSError, UnicodeDecodeError) as exc:
            problem = f"could not read {values['_env_file']}: {type(exc).__name__} (is it a text .env file?)"
        if problem is not None:
            # Raised outside the `except`: pydantic's own message quotes the input, which may be a secret,
            # so the ValidationError must not even ride along as __context__.
            raise ConfigurationError(problem) from None

    def model_post_init(self, context: Any, /) -> None:
        """Register the secrets so that no log line or incident can show them."""
        for field in type(self).model_fields:
            value = getattr(self, field)
            if isinstance(value, SecretStr):
                _register(value)

    @field_validator("maintenance_webhook")
    @classmethod
    def _check_webhook(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            return None
        _check_url_characters(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_port(parts):
            raise ValueError("must be an https:// URL with a host")
        if parts.username or parts.password or "@" in parts.netloc:
            raise ValueError("must not carry credentials in the URL; sign deliveries with ARCANOS_WEBHOOK_SECRET")
        # The policy below must judge the host `requests` will really connect to, not another parser's idea.
        try:
            prepared = requests.PreparedRequest()
            prepared.prepare_url(url, None)
        except (requests.RequestException, ValueError, UnicodeError):
            raise ValueError("is not a URL that can be posted to (check the host name)") from None
        parts = urlsplit(prepared.url or "")
        if not parts.hostname:
            raise ValueError("must be an https:// URL with a host")
        insecure_allowed = info.data.get("allow_insecure_webhook", False)
        if parts.scheme == "http" and not _is_loopback(parts.hostname) and not insecure_allowed:
            raise ValueError(
                "plain http:// is only allowed to loopback hosts; use https:// or set ARCANOS_ALLOW_INSECURE_WEBHOOK=1"
            )
        return url

    @field_validator("incident_spool")
    @classmethod
    def _check_spool(cls, spool: Path) -> Path:
        try:
            spool.expanduser()  # the notifier expands it; check here that it can
        except RuntimeError:
            # "~someone/..." for an unknown user: fail here, naming the variable, not in the notifier.
            raise ValueError("starts with ~ but names no known home directory; give an absolute path") from None
        return spool

    @field_validator("webhook_secret")
    @classmethod
    def _check_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None:
            return None
        match = _WEBHOOK_SECRET.fullmatch(secret.get_secret_value())
        try:
            key = base64.b64decode(match.group(1) + "==") if match else b""
        except binascii.Error:
            key = b""
        if len(key) < _MIN_SECRET_BYTES:
            raise ValueError(
                f"must be a Standard Webhooks secret: 'whsec_' followed by base64 of at least "
                f"{_MIN_SECRET_BYTES} random bytes"
            )
        _register(secret)
        return secret


class ArcanosSettings(NotifierSettings):
    """Everything the reasoning client needs, plus the notifier settings it reports through.

    Each field reads the environment variable of its ``validation_alias``; its ``description`` is that variable's
    documentation (the configuration reference of the docs is generated from these fields).

    Examples:
        >>> settings = ArcanosSettings(
        ...     openai_api_key="sk-example-key",
        ...     fine_tuned_model="ft:gpt-5.1:arcanos::abc123",
        ...     _env_file=None,
        ... )
        >>> settings.openai_api
        'chat'
    """

    openai_api_key: SecretStr = Field(
        validation_alias="OPENAI_API_KEY",
        description="API key (printable ASCII, no spaces or line breaks); held as a secret, never printed or logged",
    )
    fine_tuned_model: str = Field(
        validation_alias="ARCANOS_FINE_TUNED_MODEL",
        description="the one model every request uses (letters, digits and `. _ : - /`)",
    )
    openai_base_url: str | None = Field(
        None,
        validation_alias="OPENAI_BASE_URL",
        description="an OpenAI-compatible endpoint (proxy, local server, tests)",
        json_schema_extra={"shown_default": "OpenAI"},
    )
    gateway: Literal["auto", "none", "litellm", "azure"] = Field(
        "auto",
        validation_alias="ARCANOS_GATEWAY",
        description=(
            "what `OPENAI_BASE_URL` is: `auto` (a LiteLLM proxy is recognised by its `x-litellm-model-name` header),"
            " `none` (OpenAI or a gateway that keeps the answer's `model`: the body is checked), `litellm` (the header"
            " is required: an answer without it fails closed) or `azure` (Azure OpenAI: `OPENAI_BASE_URL` is the"
            " resource endpoint); see [Behind a gateway](../how-to/gateways.md)"
        ),
    )
    gateway_model: str | None = Field(
        None,
        validation_alias="ARCANOS_GATEWAY_MODEL",
        description=(
            "the model name requests carry: the gateway's alias (LiteLLM `model_name`) or the Azure deployment;"
            " `ARCANOS_FINE_TUNED_MODEL` stays the model that must answer"
        ),
        json_schema_extra={"shown_default": "`ARCANOS_FINE_TUNED_MODEL`"},
    )
    azure_api_version: str | None = Field(
        None,
        validation_alias="ARCANOS_AZURE_API_VERSION",
        description=(
            "with `ARCANOS_GATEWAY=azure`, the `api-version` of `/openai/deployments/{deployment}/...` requests"
            " (e.g. `2024-10-21`); unset: Azure's `/openai/v1` API"
        ),
        json_schema_extra={"shown_default": "unset (`/openai/v1`)"},
    )
    openai_api: Literal["chat", "responses"] = Field(
        "chat",
        validation_alias="ARCANOS_OPENAI_API",
        description="`chat` (Chat Completions) or `responses` (Responses API)",
    )
    confirmation_token: str | None = Field(
        None,
        max_length=512,
        validation_alias="ARCANOS_CONFIRMATION_TOKEN",
        description=(
            "added to every request's metadata as `confirmation_token` (a caller's own `confirmation_token` wins); "
            "sent in full upstream, masked in incidents, events, artifacts, logs and `--json` output"
        ),
    )
    store: bool = Field(
        True,
        validation_alias="ARCANOS_STORE",
        description=(
            "`true`: requests carry the metadata with `store=true`; `false`: metadata is kept locally (in results"
            " and incidents) and not sent"
        ),
    )
    request_timeout: float = Field(
        120.0,
        gt=0,
        le=3600,
        validation_alias="ARCANOS_REQUEST_TIMEOUT",
        description="seconds per HTTP attempt to OpenAI",
    )
    max_retries: int = Field(
        2,
        ge=0,
        le=10,
        validation_alias="ARCANOS_MAX_RETRIES",
        description=(
            "SDK retries of the plain client (see [attempt "
            "counts](../concepts/incidents.md#retries-and-attempt-counts))"
        ),
    )
    task_retries: int = Field(
        3,
        ge=0,
        le=10,
        validation_alias="ARCANOS_TASK_RETRIES",
        description="Prefect retries of a reasoning step on transient failures",
    )
    task_retry_delay: float = Field(
        2.0,
        ge=0,
        le=600,
        validation_alias="ARCANOS_TASK_RETRY_DELAY",
        description="first Prefect retry delay in seconds, doubling, with jitter",
    )
    max_retry_after: float = Field(
        60.0,
        ge=0,
        le=86_400,
        validation_alias="ARCANOS_MAX_RETRY_AFTER",
        description=(
            "longest wait in seconds a reasoning step's retry honours when the endpoint asks for one (`Retry-After`"
            " or `retry-after-ms` on a 429 or 503, `x-ratelimit-reset-*` on a 429); a step asked to wait longer fails"
            " at once, without retrying, its incident stating the wait asked"
        ),
    )
    incident_include_prompt: bool = Field(
        False,
        validation_alias="ARCANOS_INCIDENT_INCLUDE_PROMPT",
        description=(
            "`1`: incidents of failed calls carry the messages in `context.messages` (secrets redacted, most "
            "recent first, at most 4 KiB in all); off by default because prompts may hold personal data"
        ),
        json_schema_extra={"shown_default": "`0`"},
    )
    requests_per_minute: int | None = Field(
        None,
        ge=0,
        le=10_000_000,
        validation_alias="ARCANOS_REQUESTS_PER_MINUTE",
        description=(
            "space this process's requests to the endpoint evenly, at most this many per minute, SDK retries "
            "included (`0` or unset: no limit; see [rate limits](../how-to/caching-and-rate-limits.md))"
        ),
        json_schema_extra={"shown_default": "off"},
    )
    step_cache_expiration: float = Field(
        86_400.0,
        gt=0,
        le=366 * 86_400,
        validation_alias="ARCANOS_STEP_CACHE_EXPIRATION",
        description="seconds a cached reasoning step stays valid, when caching is on (`research_flow(cache=True)`)",
    )
    price_input_per_mtok: float | None = Field(
        None,
        ge=0,
        le=100_000,
        validation_alias="ARCANOS_PRICE_INPUT_PER_MTOK",
        description=(
            "USD per million input tokens of `ARCANOS_FINE_TUNED_MODEL`; with the output price set, every result's "
            "`usage.cost_usd` is computed (unset: costs are `None`, never guessed)"
        ),
        json_schema_extra={"shown_default": "unset"},
    )
    price_cached_input_per_mtok: float | None = Field(
        None,
        ge=0,
        le=100_000,
        validation_alias="ARCANOS_PRICE_CACHED_INPUT_PER_MTOK",
        description="USD per million cached input tokens (unset: the input price)",
        json_schema_extra={"shown_default": "unset"},
    )
    price_output_per_mtok: float | None = Field(
        None,
        ge=0,
        le=100_000,
        validation_alias="ARCANOS_PRICE_OUTPUT_PER_MTOK",
        description="USD per million output tokens, reasoning tokens included (set together with the input price)",
        json_schema_extra={"shown_default": "unset"},
    )
    run_max_tokens: int | None = Field(
        None,
        gt=0,
        validation_alias="ARCANOS_RUN_MAX_TOKENS",
        description=(
            "default token budget of a flow run (`research_flow(max_total_tokens=...)`, `run_budget()`): no step "
            "starts once the run has spent it"
        ),
        json_schema_extra={"shown_default": "none"},
    )
    run_max_cost_usd: float | None = Field(
        None,
        gt=0,
        validation_alias="ARCANOS_RUN_MAX_COST_USD",
        description=(
            "default cost budget in USD of a flow run (`research_flow(max_cost_usd=...)`, `run_budget()`); needs "
            "the `ARCANOS_PRICE_*` prices"
        ),
        json_schema_extra={"shown_default": "none"},
    )

    @model_validator(mode="after")
    def _prices_come_in_pairs(self) -> ArcanosSettings:
        if (self.price_input_per_mtok is None) != (self.price_output_per_mtok is None):
            missing = (
                "ARCANOS_PRICE_OUTPUT_PER_MTOK"
                if self.price_output_per_mtok is None
                else ("ARCANOS_PRICE_INPUT_PER_MTOK")
            )
            raise ValueError(f"{missing} is missing: set the input and the output price together, or neither")
        if self.run_max_cost_usd is not None and self.price_input_per_mtok is None:
            raise ValueError(
                "ARCANOS_RUN_MAX_COST_USD needs the prices: set ARCANOS_PRICE_INPUT_PER_MTOK and "
                "ARCANOS_PRICE_OUTPUT_PER_MTOK"
            )
        return self

    @property
    def pricing(self) -> Pricing | None:
        """The prices of the enforced model, when they are set.

        Examples:
            >>> ArcanosSettings(openai_api_key="sk-x", fine_tuned_model="ft:m", _env_file=None).pricing is None
            True
        """
        if self.price_input_per_mtok is None or self.price_output_per_mtok is None:
            return None
        return Pricing(
            input_per_mtok=self.price_input_per_mtok,
            cached_input_per_mtok=self.price_cached_input_per_mtok,
            output_per_mtok=self.price_output_per_mtok,
        )

    @property
    def requested_model(self) -> str:
        """The model name requests carry: ``ARCANOS_GATEWAY_MODEL``, else the enforced model.

        Examples:
            >>> ArcanosSettings(openai_api_key="sk-x", fine_tuned_model="ft:m", gateway_model="arcanos",
            ...                 _env_file=None).requested_model
            'arcanos'
        """
        return self.gateway_model or self.fine_tuned_model

    @field_validator("openai_api_key")
    @classmethod
    def _check_api_key(cls, key: SecretStr) -> SecretStr:
        # Never echo the value: only say what is wrong with it.
        if not _API_KEY.fullmatch(key.get_secret_value()):
            raise ValueError(
                "must be printable ASCII without spaces or line breaks (look for a trailing newline, "
                "surrounding spaces or a non-ASCII character pasted in)"
            )
        _register(key)
        return key

    @field_validator("confirmation_token")
    @classmethod
    def _token_is_a_secret(cls, token: str | None) -> str | None:
        # Sent in full in the request metadata; masked everywhere arcanos-flows shows or reports anything.
        register_token(token)
        return token

    @field_validator("requests_per_minute")
    @classmethod
    def _zero_is_off(cls, per_minute: int | None) -> int | None:
        # 0 turns the limit off, also over a value in .env (an empty variable would fall back to .env).
        return per_minute or None

    @field_validator("fine_tuned_model")
    @classmethod
    def _check_model(cls, model: str) -> str:
        if not _MODEL_ID.fullmatch(model):
            raise ValueError(f"{model[:80]!r} is not a model id (letters, digits and . _ : - / only, no spaces)")
        return model

    @field_validator("gateway")
    @classmethod
    def _check_gateway(cls, gateway: str, info: ValidationInfo) -> str:
        if gateway != "azure":
            return gateway
        if "openai_base_url" not in info.data:
            return gateway  # OPENAI_BASE_URL is invalid itself: that error says what to fix
        base_url = info.data["openai_base_url"]
        if base_url is None:
            raise ValueError("azure needs OPENAI_BASE_URL, the resource endpoint (e.g. https://NAME.openai.azure.com)")
        if {"openai", "deployments"} & set(urlsplit(base_url).path.split("/")):
            raise ValueError(
                "azure needs OPENAI_BASE_URL to be the resource endpoint (e.g. https://NAME.openai.azure.com) "
                "without /openai/...: arcanos-flows adds the path"
            )
        return gateway

    @field_validator("gateway_model")
    @classmethod
    def _check_gateway_model(cls, name: str | None, info: ValidationInfo) -> str | None:
        if name is None:
            return None
        if not _MODEL_ID.fullmatch(name):
            raise ValueError(f"{name[:80]!r} is not a model or deployment name (letters, digits and . _ : - / only)")
        if info.data.get("gateway") == "none":
            raise ValueError(
                "is set but ARCANOS_GATEWAY is none: requests would name a model the body check then refuses; "
                "set ARCANOS_GATEWAY to litellm, azure or auto, or unset ARCANOS_GATEWAY_MODEL"
            )
        return name

    @field_validator("azure_api_version")
    @classmethod
    def _check_azure_api_version(cls, version: str | None, info: ValidationInfo) -> str | None:
        if version is None:
            return None
        if not _API_VERSION.fullmatch(version):
            raise ValueError(f"{version[:40]!r} is not an api-version (e.g. 2024-10-21 or 2025-04-01-preview)")
        if info.data.get("gateway") != "azure":
            raise ValueError("is only used with ARCANOS_GATEWAY=azure; set that too, or unset this variable")
        return version

    @field_validator("openai_base_url")
    @classmethod
    def _check_base_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        _check_url_characters(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _valid_port(parts):
            raise ValueError("must be an http(s):// URL with a host, e.g. https://api.openai.com/v1")
        try:
            httpx2.URL(url)  # the parser the OpenAI SDK uses; fail here, not at the first request
        except (httpx2.InvalidURL, ValueError, UnicodeError):
            raise ValueError("is not a valid URL (check the host name and port)") from None
        return url.rstrip("/")


_from_environment: dict[tuple[Any, ...], ArcanosSettings] = {}
"""Settings read from the environment, by :func:`_environment_key` (a few at most: tests switch environments)."""
_from_environment_lock = threading.Lock()
_ENVIRONMENT_PREFIXES = ("ARCANOS_", "OPENAI_")


def _environment_key() -> tuple[Path, tuple[int, int] | None, tuple[tuple[str, str], ...]]:
    env_file = _env_file_from_environment()
    try:
        status = env_file.stat()
        seen: tuple[int, int] | None = (status.st_mtime_ns, status.st_size)
    except OSError:
        seen = None
    variables = tuple(
        sorted((name, value) for name, value in os.environ.items() if name.upper().startswith(_ENVIRONMENT_PREFIXES))
    )
    return (env_file.absolute(), seen, variables)


def settings_from_environment() -> ArcanosSettings:
    """``ArcanosSettings()``, read again only when the environment or the ``.env`` file changed.

    Reading settings (the environment, the ``.env`` file, every validator) costs about a millisecond; a task that
    resolves them on each call pays that per step. The key is every ``ARCANOS_*`` and ``OPENAI_*`` variable and the
    ``.env`` file's path, modification time and size, so a change is seen at the next call, as before.

    Raises:
        ConfigurationError: The settings are incomplete or invalid (never cached: raised again at each call).

    Examples:
        >>> import os
        >>> os.environ |= {"OPENAI_API_KEY": "sk-example-0000", "ARCANOS_FINE_TUNED_MODEL": "ft:gpt-5.1:a::x"}
        >>> settings_from_environment() is settings_from_environment()
        True
        >>> os.environ["ARCANOS_FINE_TUNED_MODEL"] = "ft:gpt-5.1:a::y"
        >>> settings_from_environment().fine_tuned_model
        'ft:gpt-5.1:a::y'
        >>> for name in ("OPENAI_API_KEY", "ARCANOS_FINE_TUNED_MODEL"):
        ...     del os.environ[name]
    """
    key = _environment_key()
    with _from_environment_lock:
        settings = _from_environment.get(key)
    if settings is None:
        settings = ArcanosSettings(_env_file=key[0])
        with _from_environment_lock:
            if len(_from_environment) >= 16:
                _from_environment.clear()
            _from_environment[key] = settings
    return settings
