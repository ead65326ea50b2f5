"""``arcanos-flows check``: every setting (secrets masked) and whether the model and the webhook answer.

The model is looked up with ``GET /models/{id}`` through the OpenAI SDK, on the configured base URL and key.
The webhook is probed with a ``HEAD`` request, which delivers nothing; ``--send-test`` POSTs one signed
``arcanos.check`` ping instead of an incident (receivers should accept it with a 2xx and ignore it).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from rich.text import Text

from arcanos_flows.cli._tables import key_column
from arcanos_flows.core.errors import ConfigurationError, classify
from arcanos_flows.core.redaction import mask, redact
from arcanos_flows.core.settings import ENV_FILE_VARIABLE, ArcanosSettings, NotifierSettings

__all__ = ["CHECK_EVENT_TYPE", "CheckResult", "check_model", "check_webhook", "run_checks"]

CHECK_EVENT_TYPE = "arcanos.check"
_PROBE_TIMEOUT = 10.0
_MASKED_FIELDS = frozenset({"confirmation_token"})
# A HEAD answered 405 or 501 still proves an HTTP endpoint is listening (deliveries are POSTs).
_HEAD_NOT_SUPPORTED = frozenset({405, 501})


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        name: What was checked (``model``, ``webhook``, ...).
        ok: Whether it passed.
        detail: One line saying what was found, secrets redacted.
    """

    name: str
    ok: bool
    detail: str


def shown_url(url: str) -> str:
    """A webhook URL as it may be printed: paths often embed a token, so only scheme and host are shown.

    Examples:
        >>> shown_url("https://hooks.example.com/T000/B000/XXXX"), shown_url("https://ops.example.com")
        ('https://hooks.example.com/…', 'https://ops.example.com')
    """
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") or parts.query else url


def _env_file_values() -> dict[str, str | None]:
    from dotenv import dotenv_values

    named = os.environ.get(ENV_FILE_VARIABLE)
    path = Path(named).expanduser() if named else Path(".env")
    try:
        return dict(dotenv_values(path)) if path.is_file() else {}
    except (OSError, UnicodeDecodeError):
        return {}


def _field_order() -> list[str]:
    own = [name for name in ArcanosSettings.model_fields if name not in NotifierSettings.model_fields]
    return own + list(NotifierSettings.model_fields)


def _shown_value(name: str, value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, SecretStr):
        return mask(value.get_secret_value())
    if name in _MASKED_FIELDS:
        return mask(str(value))
    if name == "maintenance_webhook":
        return shown_url(str(value))
    return redact(str(value))


def settings_table(settings: ArcanosSettings | None, *, from_block: bool = False) -> Table:
    """Each setting with its variable, value (secrets masked) and source.

    With ``settings=None`` (the configuration did not validate) the raw environment and ``.env`` values
    are shown, masked the same way.
    """
    env_file = _env_file_values()
    table = Table(title="Configuration")
    key_column(table, "variable")  # variable names are never cut, values fold rather than end in "…"
    table.add_column("value", overflow="fold")
    table.add_column("source")
    for name in _field_order():
        field = ArcanosSettings.model_fields[name]
        variable = str(field.validation_alias)
        raw: str | None
        if os.environ.get(variable):
            source, raw = "environment", os.environ[variable]
        elif env_file.get(variable):
            source, raw = ".env", env_file[variable]
        else:
            source, raw = "default", None
        secret = field.annotation is not None and "SecretStr" in str(field.annotation)
        if settings is not None:
            value = getattr(settings, name)
            if from_block and source == "default" and value != field.get_default(call_default_factory=True):
                source = "credentials block"
            shown = _shown_value(name, value)
        elif raw is None:
            shown = "(not set)"
        else:
            shown = _shown_value(name, SecretStr(raw) if secret else raw)
        table.add_row(variable, Text(shown), source)
    return table


def check_model(settings: ArcanosSettings) -> CheckResult:
    """Look the enforced model up with ``GET /models/{id}`` on the configured endpoint (behind LiteLLM: its alias)."""
    from arcanos_flows.client import model_matches

    base_url = settings.openai_base_url or "https://api.openai.com/v1"
    model, alias = settings.fine_tuned_model, settings.requested_model
    if settings.gateway == "azure":
        # Azure serves deployments, not model ids, at the paths requests use; the answer's model is checked per request.
        return CheckResult(
            "model",
            True,
            f"not looked up behind Azure: requests go to deployment {alias} at {base_url}, and every answer must "
            f"name {model}",
        )
    if settings.gateway == "litellm" or alias != model:
        # A LiteLLM proxy lists its aliases (model_name): the name requests carry is what it must know.
        found = _lookup(settings, alias, base_url, "the gateway does not know the alias ARCANOS_GATEWAY_MODEL")
        if isinstance(found, CheckResult):
            return found
        if found != alias:
            return CheckResult("model", False, f"{base_url} answered GET /models/{alias} with {redact(found)}")
        return CheckResult(
            "model", True, f"the gateway at {base_url} serves {alias}; every answer must come from {model} (checked "
            "per request)",
        )  # fmt: skip
    found = _lookup(settings, model, base_url, "the model does not exist at this endpoint, or this key has no access")
    if isinstance(found, CheckResult):
        return found
    if not model_matches(model, found):
        return CheckResult("model", False, f"{base_url} answered with another model: {redact(found)}")
    return CheckResult("model", True, f"{model} is available at {base_url}")


def _lookup(settings: ArcanosSettings, name: str, base_url: str, not_found: str) -> str | CheckResult:
    """``GET /models/{name}``: the id the endpoint answered, or the failed check saying why."""
    import openai

    client = openai.OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        timeout=min(settings.request_timeout, _PROBE_TIMEOUT),
        max_retries=0,
    )
    try:
        with client:
            return client.models.retrieve(name).id
    except openai.APIStatusError as exc:
        hint = {404: not_found, 401: "the API key was rejected", 403: "the API key may not use this model"}.get(
            exc.status_code, classify(exc).incident_class.value
        )
        request_id = redact(str(exc.request_id))  # a proxy may echo anything there, the key included
        return CheckResult(
            "model",
            False,
            f"GET /models/{name} at {base_url} answered HTTP {exc.status_code} ({hint}); request {request_id}",
        )
    except openai.APIError as exc:
        problem = classify(exc).incident_class.value
        return CheckResult("model", False, f"cannot reach {base_url}: {problem} ({type(exc).__name__})")


def _signed_ping(settings: NotifierSettings) -> tuple[bytes, dict[str, str]]:
    from standardwebhooks import Webhook

    from arcanos_flows._version import __version__

    now = datetime.now(timezone.utc)
    check_id = str(uuid.uuid4())
    body = json.dumps(
        {
            "type": CHECK_EVENT_TYPE,
            "check_id": check_id,
            "sent_at": now.isoformat(),
            "source": "arcanos-flows check",
            "version": __version__,
        }
    )
    headers = {
        "content-type": "application/json",
        "user-agent": f"arcanos-flows/{__version__}",
        "webhook-id": check_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if settings.webhook_secret is not None:
        headers["webhook-signature"] = Webhook(settings.webhook_secret.get_secret_value()).sign(check_id, now, body)
    return body.encode(), headers


def check_webhook(settings: NotifierSettings, *, send_test: bool = False) -> CheckResult:
    """Probe the maintenance webhook: ``HEAD`` by default, one signed ``arcanos.check`` POST with ``send_test``."""
    import requests

    url = settings.maintenance_webhook
    if url is None:
        return CheckResult("webhook", True, "not configured: incidents are printed to stdout as JSON lines")
    where = shown_url(url)
    timeout = min(settings.webhook_timeout, _PROBE_TIMEOUT)
    try:
        if send_test:
            body, headers = _signed_ping(settings)
            response = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
        else:
            response = requests.head(url, timeout=timeout, allow_redirects=False)
        status = response.status_code
        response.close()
    except requests.RequestException as exc:
        # Only the exception type: its text repeats the URL, which may embed a token.
        return CheckResult("webhook", False, f"cannot reach {where}: {type(exc).__name__}")
    signed = "signed" if settings.webhook_secret is not None else "unsigned (ARCANOS_WEBHOOK_SECRET is not set)"
    if send_test:
        if 200 <= status < 300:
            return CheckResult("webhook", True, f"{where} accepted a {signed} {CHECK_EVENT_TYPE} ping (HTTP {status})")
        return CheckResult("webhook", False, f"{where} answered HTTP {status} to a {signed} {CHECK_EVENT_TYPE} ping")
    if status in (404, 410) or (status >= 500 and status not in _HEAD_NOT_SUPPORTED):
        return CheckResult("webhook", False, f"{where} answered HTTP {status} to HEAD")
    return CheckResult(
        "webhook",
        True,
        f"{where} is reachable (HEAD answered HTTP {status}); deliveries are {signed}; --send-test POSTs a test ping",
    )


def _spool_line(settings: NotifierSettings) -> str:
    from arcanos_flows.incidents.outbox import Outbox

    waiting = len(Outbox(settings.incident_spool).paths())
    line = f"{waiting} incident(s) waiting in {settings.incident_spool}"
    if waiting and settings.maintenance_webhook:
        line += " (run `arcanos-flows incidents flush`)"
    return line


def _load(use_block: bool) -> ArcanosSettings:
    if use_block:
        from arcanos_flows.prefect.credentials import resolve_settings

        return resolve_settings()
    return ArcanosSettings()


def run_checks(console: Console, *, send_test: bool = False, use_block: bool = False) -> int:
    """Print the configuration and the checks; return the exit code (0 ok, 1 a check failed, 2 invalid config)."""
    try:
        settings = _load(use_block)
    except ConfigurationError as exc:
        console.print(settings_table(None))
        console.print(Text(f"✗ configuration  {redact(str(exc))}", style="red"), soft_wrap=True)
        return 2
    console.print(settings_table(settings, from_block=use_block))
    results = [
        CheckResult("configuration", True, "valid" + (" (credentials block)" if use_block else "")),
        check_model(settings),
        check_webhook(settings, send_test=send_test),
    ]
    for result in results:
        mark, style = ("✓", "green") if result.ok else ("✗", "red")
        console.print(Text(f"{mark} {result.name:<13} {redact(result.detail)}", style=style), soft_wrap=True)
    console.print(Text(f"  spool         {_spool_line(settings)}", style="dim"), soft_wrap=True)
    return 0 if all(result.ok for result in results) else 1
