"""The ``ArcanosCredentials`` Prefect block: settings stored on the Prefect server, so workers need no ``.env``.

Which source wins, field by field: a value set on the block, then the process environment, then ``.env``.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from arcanos_flows.core.errors import ConfigurationError
from arcanos_flows.core.redaction import register_secret
from arcanos_flows.core.settings import (
    CREDENTIALS_BLOCK_VARIABLE,
    ArcanosSettings,
    NotifierSettings,
    settings_from_environment,
)

__all__ = [
    "CREDENTIALS_BLOCK_VARIABLE",
    "ArcanosCredentials",
    "load_notifier_settings",
    "register_environment_secrets",
    "resolve_settings",
]


class ArcanosCredentials(Block):
    """Credentials and endpoints of arcanos-flows, stored as a Prefect block (secrets as ``SecretStr``).

    Fields left empty fall back to the environment and ``.env``.

    Attributes:
        openai_api_key: ``OPENAI_API_KEY``.
        fine_tuned_model: ``ARCANOS_FINE_TUNED_MODEL``.
        openai_base_url: ``OPENAI_BASE_URL``.
        openai_api: ``ARCANOS_OPENAI_API``.
        maintenance_webhook: ``ARCANOS_MAINTENANCE_WEBHOOK``.
        webhook_secret: ``ARCANOS_WEBHOOK_SECRET``.
        confirmation_token: ``ARCANOS_CONFIRMATION_TOKEN``.

    Examples:
        Save once, then every flow run (and every worker) can load it::

            from arcanos_flows.prefect.credentials import ArcanosCredentials

            ArcanosCredentials(
                openai_api_key="sk-...",
                fine_tuned_model="ft:gpt-5.1:arcanos::abc123",
                maintenance_webhook="https://maintenance.example.com/incidents",
            ).save("arcanos")
            settings = ArcanosCredentials.load("arcanos").get_settings()
    """

    _block_type_name = "Arcanos Credentials"
    _block_type_slug = "arcanos-credentials"
    _description = "OpenAI key, enforced fine-tuned model and maintenance webhook for arcanos-flows."

    openai_api_key: SecretStr | None = Field(None, description="OpenAI API key (OPENAI_API_KEY).")
    fine_tuned_model: str | None = Field(None, description="The one model every request uses.")
    openai_base_url: str | None = Field(None, description="An OpenAI-compatible endpoint.")
    openai_api: Literal["chat", "responses"] | None = Field(None, description="chat or responses.")
    maintenance_webhook: str | None = Field(None, description="Where incidents are POSTed.")
    webhook_secret: SecretStr | None = Field(None, description="Standard Webhooks signing secret (whsec_...).")
    confirmation_token: str | None = Field(None, description="Added to every request's metadata.")

    @field_validator("openai_api_key", "webhook_secret")
    @classmethod
    def _register_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Loading the block is enough for its secrets to be redacted everywhere, also in a process that only
        # builds a notifier from it (a hook or the incident relay reporting a user's exception that quotes the key).
        secret = value.get_secret_value() if value is not None else ""
        if secret.strip("*"):  # a block read without secrets holds only asterisks
            register_secret(secret)
            if secret.startswith("whsec_"):
                register_secret(secret.removeprefix("whsec_").rstrip("="))
        return value

    def get_settings(self) -> ArcanosSettings:
        """Settings from this block, with unset fields taken from the environment and ``.env``.

        Raises:
            ConfigurationError: A required value is set nowhere, or a value is invalid.
        """
        values: dict[str, Any] = {}
        for name in type(self).model_fields:
            if name in ArcanosSettings.model_fields:
                value = getattr(self, name)
                if value is not None:
                    values[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
        return ArcanosSettings(**values)

    def get_notifier_settings(self) -> NotifierSettings:
        """Webhook settings from this block (unset fields from the environment and ``.env``); no API key needed.

        Raises:
            ConfigurationError: A webhook setting is invalid.

        Examples:
            ::

                notifier = MaintenanceNotifier(ArcanosCredentials.load("arcanos").get_notifier_settings())
        """
        values: dict[str, Any] = {}
        if self.maintenance_webhook:
            values["maintenance_webhook"] = self.maintenance_webhook
        if self.webhook_secret is not None:
            values["webhook_secret"] = self.webhook_secret.get_secret_value()
        return NotifierSettings(**values)


def resolve_settings(credentials: ArcanosCredentials | None = None) -> ArcanosSettings:
    """The settings a task uses: the given block, else the block named by ``ARCANOS_CREDENTIALS_BLOCK``, else the env.

    Unset block fields fall back to the environment, then ``.env``.

    Raises:
        ConfigurationError: Settings are incomplete or invalid, or the named block cannot be loaded.

    Examples:
        With ``ARCANOS_CREDENTIALS_BLOCK=arcanos`` set on the worker::

            settings = resolve_settings()   # ArcanosCredentials.load("arcanos").get_settings()
    """
    if credentials is not None:
        return credentials.get_settings()
    block = _named_block()
    return block.get_settings() if block is not None else settings_from_environment()


def load_notifier_settings() -> NotifierSettings:
    """The notifier settings of this process: webhook and secret from the named block, else the environment.

    Needs no API key or model, so hooks can report even when the reasoning settings are broken.

    Raises:
        ConfigurationError: The named block cannot be loaded, or a webhook setting is invalid.

    Examples:
        With ``ARCANOS_CREDENTIALS_BLOCK=arcanos`` set on the worker::

            load_notifier_settings().maintenance_webhook   # the block's webhook
    """
    block = _named_block()
    return block.get_notifier_settings() if block is not None else NotifierSettings()


def register_environment_secrets() -> None:
    """Make redaction know the API key of the environment and ``.env``, whatever else is configured; never raises.

    Settings register their secrets when they are loaded; a process that only reports (a hook, the incident relay)
    loads the notifier settings alone, so an API key quoted in what it reports would otherwise go out as is.

    Examples:
        With ``OPENAI_API_KEY=proxy-key-0123456789`` and no model configured::

            register_environment_secrets()
            redact("rejected proxy-key-0123456789")   # 'rejected [REDACTED]'
    """
    with contextlib.suppress(Exception):
        ArcanosSettings()  # the key's validator registers it even when another setting is missing or invalid


def _named_block() -> ArcanosCredentials | None:
    block_name = os.environ.get(CREDENTIALS_BLOCK_VARIABLE)
    if not block_name:
        return None
    try:
        # `_sync=True`: hooks of async flows and the runner call this with an event loop running, where `load`
        # would otherwise return a coroutine. Prefect's `@async_dispatch` wrapper takes it; its typing omits it.
        loaded = ArcanosCredentials.load(block_name, _sync=True)  # type: ignore[call-arg]
    except Exception as exc:
        # Not found (ValueError), Prefect API unreachable or refusing: the process cannot get its settings.
        raise ConfigurationError(
            f"{CREDENTIALS_BLOCK_VARIABLE}: cannot load the arcanos-credentials block {block_name!r} "
            f"({type(exc).__name__}); create it with ArcanosCredentials(...).save({block_name!r}) on the Prefect "
            f"server this process uses, or unset {CREDENTIALS_BLOCK_VARIABLE}"
        ) from None
    if not isinstance(loaded, ArcanosCredentials):
        raise ConfigurationError(f"{CREDENTIALS_BLOCK_VARIABLE}: {block_name!r} is not an arcanos-credentials block")
    return loaded
