"""The maintenance notifier: every failure becomes a signed, retried, spooled webhook delivery.

With ``ARCANOS_MAINTENANCE_WEBHOOK`` set, an incident is written to the spool first (write-ahead),
then POSTed; its file is removed only after a 2xx, so a process killed at any point loses nothing.
Without a webhook the incident is printed to stdout as one JSON line. :meth:`MaintenanceNotifier.notify`
never raises.
"""

from __future__ import annotations

import email.utils
import logging
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from standardwebhooks import Webhook

from arcanos_flows._version import __version__
from arcanos_flows.incidents import Incident
from arcanos_flows.outbox import Outbox
from arcanos_flows.redaction import redact
from arcanos_flows.settings import NotifierSettings

__all__ = ["FlushReport", "MaintenanceNotifier"]

logger = logging.getLogger("arcanos_flows.notifier")

MAX_RETRY_AFTER_SECONDS = 30.0


@dataclass(frozen=True)
class FlushReport:
    """What :meth:`MaintenanceNotifier.flush` did.

    Attributes:
        delivered: Incidents delivered (and removed from the spool) by this flush.
        remaining: Incidents still waiting in the spool afterwards.
    """

    delivered: int
    remaining: int


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        moment = email.utils.parsedate_to_datetime(value) if value else None
        return max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0) if moment else None


def _shown(url: str) -> str:
    # Webhook paths often embed a token (Slack-style); logs show only where, not the whole URL.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") or parts.query else url


class MaintenanceNotifier:
    """Sends maintenance incidents to ``ARCANOS_MAINTENANCE_WEBHOOK``, or prints them when none is set.

    Args:
        settings: Webhook, secret and spool; read from the environment and ``.env`` when omitted
            (no API key or model is needed).
        max_attempts: HTTP attempts per delivery (connection errors, 429 and 5xx are retried).
        backoff: First wait between attempts in seconds; doubles each time.
        source: The ``source`` field of incidents built here from exceptions.

    Example:
        >>> from arcanos_flows.settings import NotifierSettings
        >>> notifier = MaintenanceNotifier(NotifierSettings(_env_file=None, maintenance_webhook=None))
        >>> incident = notifier.notify(RuntimeError("disk full"), step="plan")  # doctest: +ELLIPSIS
        {"type":"arcanos.incident",...}
        >>> incident.context
        {'step': 'plan'}
    """

    def __init__(
        self,
        settings: NotifierSettings | None = None,
        *,
        max_attempts: int = 3,
        backoff: float = 0.5,
        source: str = "arcanos_flows",
    ) -> None:
        self.settings = settings if settings is not None else NotifierSettings()
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.source = source
        self.outbox = Outbox(self.settings.incident_spool)
        secret = self.settings.webhook_secret
        self._signer = Webhook(secret.get_secret_value()) if secret is not None else None

    @classmethod
    def to_stdout(cls) -> MaintenanceNotifier:
        """A notifier that only prints, for when the configured one cannot be built.

        Example:
            >>> MaintenanceNotifier.to_stdout().webhook_url is None
            True
        """
        return cls(NotifierSettings.model_construct(maintenance_webhook=None))

    @property
    def webhook_url(self) -> str | None:
        """The webhook incidents go to, or ``None`` when they are printed."""
        return self.settings.maintenance_webhook

    def notify(self, error: BaseException | Incident, /, **context: Any) -> Incident:
        """Report a failure; never raises.

        Args:
            error: The exception (classified into an incident) or a ready :class:`Incident`.
            **context: Added to the incident's ``context`` (Prefect run ids, step names, ...).

        Returns:
            The incident that was delivered, spooled or printed.
        """
        try:
            incident = self._incident(error, context)
        except Exception as exc:
            incident = Incident.from_exception(exc, source="arcanos_flows.notifier")
        try:
            self._dispatch(incident)
        except Exception as exc:
            logger.error("Could not dispatch incident %s: %s", incident.incident_id, redact(str(exc)))
            self._print(incident)
        return incident

    def flush(self) -> FlushReport:
        """Deliver every spooled incident (each with its original ``webhook-id``); never raises.

        Example:
            >>> MaintenanceNotifier.to_stdout().flush()
            FlushReport(delivered=0, remaining=0)
        """
        if self.webhook_url is None:
            return FlushReport(delivered=0, remaining=len(self.outbox.paths()))
        try:
            delivered = self._drain(self.outbox.paths())
        except Exception as exc:
            logger.error("Flushing the incident spool failed: %s", redact(str(exc)))
            delivered = 0
        return FlushReport(delivered=delivered, remaining=len(self.outbox.paths()))

    def pending(self) -> list[Incident]:
        """Incidents waiting in the spool, oldest first."""
        return self.outbox.pending()

    def _incident(self, error: BaseException | Incident, context: dict[str, Any]) -> Incident:
        if isinstance(error, Incident):
            if not context:
                return error
            return Incident.model_validate({**error.model_dump(), "context": {**error.context, **context}})
        return Incident.from_exception(error, source=self.source, context=context)

    def _dispatch(self, incident: Incident) -> None:
        if self.webhook_url is None:
            self._print(incident)
            return
        path = self.outbox.put(incident)
        self._drain([path, *(other for other in self.outbox.paths() if other != path)])

    def _drain(self, paths: list[Path]) -> int:
        delivered = 0
        for path in paths:
            with self.outbox.claim(path) as incident:
                if incident is None:
                    continue
                if not self._deliver(incident):
                    break
                self.outbox.done(incident)
                delivered += 1
        self.outbox.remove_stale_temporaries()
        return delivered

    def _deliver(self, incident: Incident) -> bool:
        assert self.webhook_url is not None
        body = incident.to_json()
        where = _shown(self.webhook_url)
        problem = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                with requests.post(
                    self.webhook_url,
                    data=body.encode("utf-8"),
                    headers=self._headers(incident, body),
                    timeout=self.settings.webhook_timeout,
                    allow_redirects=False,
                ) as response:
                    status = response.status_code
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}"
            else:
                if 200 <= status < 300:
                    logger.info(
                        "Delivered incident %s (%s) to %s", incident.incident_id, incident.incident_class, where
                    )
                    return True
                if status == 410:
                    logger.error(
                        "Maintenance webhook %s answered 410 Gone: the endpoint no longer exists. Incident %s "
                        "stays in the spool (%s) until ARCANOS_MAINTENANCE_WEBHOOK names a live endpoint.",
                        where,
                        incident.incident_id,
                        self.outbox.directory,
                    )
                    return False
                if status in (429, 408) or status >= 500:
                    problem = f"HTTP {status}"
                    if retry_after is not None:
                        if retry_after > MAX_RETRY_AFTER_SECONDS:
                            problem += (
                                f" with Retry-After {retry_after:.0f}s (more than {MAX_RETRY_AFTER_SECONDS:.0f}s)"
                            )
                            break
                        wait = retry_after
                else:
                    kind = "a redirect, which is not followed" if 300 <= status < 400 else "a rejection"
                    logger.error(
                        "Maintenance webhook %s answered HTTP %s to incident %s (%s); it stays in the spool (%s).",
                        where,
                        status,
                        incident.incident_id,
                        kind,
                        self.outbox.directory,
                    )
                    return False
            if attempt < self.max_attempts:
                time.sleep(wait)
        logger.warning(
            "Could not deliver incident %s (%s) to %s: %s after %d attempt(s); it stays in the spool (%s) "
            "and is delivered by the next successful notify or by `arcanos-flows incidents flush`.",
            incident.incident_id,
            incident.incident_class,
            where,
            problem,
            attempt,
            self.outbox.directory,
        )
        return False

    def _headers(self, incident: Incident, body: str) -> dict[str, str]:
        # A fresh timestamp per attempt: a replay from the spool days later must still verify.
        now = datetime.now(timezone.utc)
        headers = {
            "content-type": "application/json",
            "user-agent": f"arcanos-flows/{__version__}",
            "webhook-id": str(incident.incident_id),
            "webhook-timestamp": str(int(now.timestamp())),
        }
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(headers["webhook-id"], now, body)
        return headers

    @staticmethod
    def _print(incident: Incident) -> None:
        print(incident.to_json(), file=sys.stdout, flush=True)
