"""The ``ArcanosCredentials`` Prefect block: settings stored on the Prefect server, so workers need no ``.env``.

Which source wins, field by field: a value set on the block, then the process environment, then ``.env``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from arcanos_flows.errors import ConfigurationError
from arcanos_flows.settings import ArcanosSettings, NotifierSettings

__all__ = ["CREDENTIALS_BLOCK_VARIABLE", "ArcanosCredentials", "load_notifier_settings", "resolve_settings"]

CREDENTIALS_BLOCK_VARIABLE = "ARCANOS_CREDENTIALS_BLOCK"


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

    Example:
        Save once, then every flow run (and every worker) can load it::

            from arcanos_flows.credentials import ArcanosCredentials

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

        Example:
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

    Example:
        With ``ARCANOS_CREDENTIALS_BLOCK=arcanos`` set on the worker::

            settings = resolve_settings()   # ArcanosCredentials.load("arcanos").get_settings()
    """
    if credentials is not None:
        return credentials.get_settings()
    block = _named_block()
    return block.get_settings() if block is not None else ArcanosSettings()


def load_notifier_settings() -> NotifierSettings:
    """The notifier settings of this process: webhook and secret from the named block, else the environment.

    Needs no API key or model, so hooks can report even when the reasoning settings are broken.

    Raises:
        ConfigurationError: The named block cannot be loaded, or a webhook setting is invalid.

    Example:
        With ``ARCANOS_CREDENTIALS_BLOCK=arcanos`` set on the worker::

            load_notifier_settings().maintenance_webhook   # the block's webhook
    """
    block = _named_block()
    return block.get_notifier_settings() if block is not None else NotifierSettings()


def _named_block() -> ArcanosCredentials | None:
    block_name = os.environ.get(CREDENTIALS_BLOCK_VARIABLE)
    if not block_name:
        return None
    try:
        # `_sync=True`: hooks of async flows and the runner call this with an event loop running, where `load`
        # would otherwise return a coroutine.
        loaded = ArcanosCredentials.load(block_name, _sync=True)
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
