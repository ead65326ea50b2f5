"""Names of the environment variables that choose where settings come from, importable without the settings.

The CLI reads them at start-up; importing :mod:`arcanos_flows.core.settings` for them would load pydantic-settings,
the HTTP clients and requests before any command needs them.

Examples:
    >>> CREDENTIALS_BLOCK_VARIABLE, ENV_FILE_VARIABLE
    ('ARCANOS_CREDENTIALS_BLOCK', 'ARCANOS_ENV_FILE')
"""

from __future__ import annotations

__all__ = ["CREDENTIALS_BLOCK_VARIABLE", "ENV_FILE_VARIABLE"]

ENV_FILE_VARIABLE = "ARCANOS_ENV_FILE"
"""Names another ``.env`` file to read settings from."""
CREDENTIALS_BLOCK_VARIABLE = "ARCANOS_CREDENTIALS_BLOCK"
"""Names a Prefect ``ArcanosCredentials`` block to load the settings from (:mod:`arcanos_flows.prefect.credentials`)."""
