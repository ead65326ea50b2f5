"""The maintenance notifier: every failure becomes a signed, retried, spooled webhook delivery.

With ``ARCANOS_MAINTENANCE_WEBHOOK`` set, an incident is written to the spool first (write-ahead),
then POSTed; its file is removed only after a 2xx, so a process killed at any point loses nothing.
Without a webhook the incident is printed to stdout as one JSON line. :meth:`MaintenanceNotifier.notify`
never raises.
"""

from __future__ import annotations

import email.utils
import enum
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from standardwebhooks import Webhook

from arcanos_flows._version import __version__
from arcanos_flows.core.redaction import redact
from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.outbox import Outbox

__all__ = ["FlushReport", "MaintenanceNotifier"]

logger = logging.getLogger("arcanos_flows.notifier")

MAX_RETRY_AFTER_SECONDS = 30.0
# Rejections of one incident's payload: the endpoint works, so the rest of the backlog still goes.
_INCIDENT_REJECTIONS = frozenset({400, 413, 422})
# One line per incident even when threads print at once (print() writes text and newline separately).
_stdout_lock = threading.Lock()


class _Outcome(enum.Enum):
    DELIVERED = "delivered"
    REJECTED = "rejected"  # this incident was refused; others may still go through
    FAILED = "failed"  # the endpoint is unreachable, overloaded, moved or gone: stop for now


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
    """Seconds a ``Retry-After`` header asks for, or ``None`` when absent or unparseable.

    Examples:
        >>> _retry_after("2"), _retry_after("-5"), _retry_after("soon"), _retry_after("nan")
        (2.0, 0.0, None, None)
        >>> _retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
        0.0
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" and "inf" parse as floats; a receiver's garbage must never reach time.sleep().
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        # RFC 5322 "-0000" yields a naive datetime; HTTP dates are always GMT.
        moment = moment.replace(tzinfo=timezone.utc)
    return max((moment - datetime.now(timezone.utc)).total_seconds(), 0.0)


def _shown(url: str) -> str:
    # Webhook paths often embed a token (Slack-style); logs show only where, not the whole URL.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…" if parts.path not in ("", "/") or parts.query else url


class MaintenanceNotifier:
    """Sends maintenance incidents to ``ARCANOS_MAINTENANCE_WEBHOOK``, or prints them when none is set.

    Args:
        settings: Webhook, secret and spool; read from the environment and ``.env`` when omitted
            (no API key or model is needed).
        max_attempts: HTTP attempts per delivery (connection errors, 408, 429 and 5xx are retried).
        backoff: First wait between attempts in seconds; doubles each time.
        source: The ``source`` field of incidents built here from exceptions.

    Examples:
        >>> from arcanos_flows.core.settings import NotifierSettings
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
        self.backoff = max(0.0, backoff)
        self.source = source
        self.outbox = Outbox(self.settings.incident_spool)
        secret = self.settings.webhook_secret
        self._signer = Webhook(secret.get_secret_value()) if secret is not None else None

    @classmethod
    def to_stdout(cls) -> MaintenanceNotifier:
        """A notifier that only prints, for when the configured one cannot be built.

        Examples:
            >>> MaintenanceNotifier.to_stdout().webhook_url is None
            True
        """
        return cls(NotifierSettings.model_construct(maintenance_webhook=None))

    @property
    def webhook_url(self) -> str | None:
        """The webhook incidents go to, or ``None`` when they are printed."""
        return self.settings.maintenance_webhook

    def delivery_of(self, incident: Incident) -> Literal["delivered", "spooled", "stdout"]:
        """What became of an incident this notifier reported: ``delivered``, ``spooled`` or ``stdout``.

        ``spooled``: kept in the spool for the next delivery; ``stdout``: no webhook is set, it was printed.

        Examples:
            >>> notifier = MaintenanceNotifier.to_stdout()
            >>> notifier.delivery_of(notifier.notify(RuntimeError("disk full")))  # doctest: +ELLIPSIS
            {"type":"arcanos.incident",...}
            'stdout'
        """
        if self.webhook_url is None:
            return "stdout"
        return "spooled" if self.outbox.path_for(incident.incident_id).exists() else "delivered"

    def notify(self, error: BaseException | Incident, /, **context: Any) -> Incident:
        """Report a failure; never raises.

        With a webhook, the incident is spooled, then delivered together with any backlog; without
        one it is printed to stdout as one JSON line.

        Args:
            error: The exception (classified into an incident) or a ready :class:`Incident`.
            **context: Added to the incident's ``context`` (Prefect run ids, step names, ...).

        Returns:
            The incident that was delivered, spooled or printed.
        """
        incident = self._incident(error, context)
        try:
            self._dispatch(incident)
        except Exception as exc:
            logger.error(
                "Could not dispatch incident %s (%s): %s; printed it to stdout instead.",
                incident.incident_id,
                incident.incident_class,
                redact(str(exc)),
            )
            self._print(incident)
        return incident

    def flush(self) -> FlushReport:
        """Deliver every spooled incident (each with its original ``webhook-id``); never raises.

        Examples:
            >>> MaintenanceNotifier.to_stdout().flush()
            FlushReport(delivered=0, remaining=0)
        """
        delivered = 0
        if self.webhook_url is not None:
            try:
                # First recover whole incidents a killed writer left under a temp name, so that this
                # flush delivers them too instead of leaving them for the next one.
                self.outbox.remove_stale_temporaries()
                delivered = self._drain(self.outbox.paths())
            except Exception as exc:
                logger.error("Flushing the incident spool (%s) failed: %s", self.outbox.directory, redact(str(exc)))
        try:
            remaining = len(self.outbox.paths())
        except OSError as exc:
            logger.error("Cannot read the incident spool (%s): %s", self.outbox.directory, redact(str(exc)))
            remaining = 0
        return FlushReport(delivered=delivered, remaining=remaining)

    def pending(self) -> list[Incident]:
        """Incidents waiting in the spool, oldest first."""
        return self.outbox.pending()

    def _incident(self, error: BaseException | Incident, context: dict[str, Any]) -> Incident:
        # Each fallback keeps as much of the original failure as it can: the caller's context is
        # the least important part, the fact that something failed the most.
        try:
            if isinstance(error, Incident):
                if not context:
                    return error
                return Incident.model_validate({**error.model_dump(), "context": {**error.context, **context}})
            return Incident.from_exception(error, source=self.source, context=context)
        except Exception as exc:
            logger.error("Could not build the incident with its context: %s", redact(str(exc)))
        if isinstance(error, Incident):
            return error
        try:
            return Incident.from_exception(error, source=self.source)
        except Exception as exc:
            return Incident.from_exception(exc, source="arcanos_flows.notifier")

    def _dispatch(self, incident: Incident) -> None:
        if self.webhook_url is None:
            self._print(incident)
            return
        try:
            path = self.outbox.put(incident)
        except Exception as exc:
            # Without the write-ahead copy a crash would lose it: print it (a durable record in
            # any log collector) and still try to deliver it once.
            logger.error(
                "Could not write incident %s to the spool (%s): %s. Printed it to stdout; delivering it "
                "without a spool copy. Fix ARCANOS_INCIDENT_SPOOL so incidents survive a crash.",
                incident.incident_id,
                self.outbox.directory,
                redact(str(exc)),
            )
            self._print(incident)
            try:
                self._deliver(incident)
            except Exception as delivery_error:
                logger.error("Delivering incident %s failed: %s", incident.incident_id, redact(str(delivery_error)))
            return
        self._drain([path, *(other for other in self.outbox.paths() if other != path)])

    def _drain(self, paths: list[Path]) -> int:
        # In order, stopping at the first endpoint failure (no point hammering a dead receiver); a
        # rejection of one incident's payload (400/413/422) does not hold back the ones behind it.
        delivered = 0
        for path in paths:
            with self.outbox.claim(path) as incident:
                if incident is None:
                    continue
                outcome = self._deliver(incident)
                if outcome is _Outcome.DELIVERED:
                    self.outbox.done(incident)
                    delivered += 1
                elif outcome is _Outcome.FAILED:
                    break
        self.outbox.remove_stale_temporaries()
        return delivered

    def _deliver(self, incident: Incident) -> _Outcome:
        assert self.webhook_url is not None
        body = incident.to_json()
        where = _shown(self.webhook_url)
        spooled = f"it stays in the spool ({self.outbox.directory})"
        problem = "no attempt made"
        attempt = 0
        for attempt in range(1, self.max_attempts + 1):
            wait = self.backoff * 2 ** (attempt - 1)
            try:
                with requests.post(
                    self.webhook_url,
                    data=body.encode("utf-8"),
                    headers=self._headers(incident, body),
                    timeout=self.settings.webhook_timeout,
                    allow_redirects=False,
                    # Only the status and Retry-After matter: never download a body, which a broken or
                    # hostile receiver could make endless (each slow chunk resetting the read timeout).
                    stream=True,
                ) as response:
                    status = response.status_code
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except requests.RequestException as exc:
                # Only the exception type: its text repeats the URL, which may embed a token.
                problem = type(exc).__name__
            else:
                if 200 <= status < 300:
                    logger.info(
                        "Delivered incident %s (%s) to %s", incident.incident_id, incident.incident_class, where
                    )
                    return _Outcome.DELIVERED
                if status == 410:
                    logger.error(
                        "Maintenance webhook %s answered 410 Gone: the endpoint no longer exists. Incident %s "
                        "stays in the spool (%s) until ARCANOS_MAINTENANCE_WEBHOOK names a live endpoint.",
                        where,
                        incident.incident_id,
                        self.outbox.directory,
                    )
                    return _Outcome.FAILED
                if status in (408, 429) or status >= 500:
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
                        "Maintenance webhook %s answered HTTP %s to incident %s (%s); %s.",
                        where,
                        status,
                        incident.incident_id,
                        kind,
                        spooled,
                    )
                    return _Outcome.REJECTED if status in _INCIDENT_REJECTIONS else _Outcome.FAILED
            if attempt < self.max_attempts:
                time.sleep(wait)
        logger.warning(
            "Could not deliver incident %s (%s) to %s: %s after %d attempt(s); %s and is delivered by the "
            "next successful notify() or by flush().",
            incident.incident_id,
            incident.incident_class,
            where,
            problem,
            attempt,
            spooled,
        )
        return _Outcome.FAILED

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
        # One write per line, under a lock, so concurrent incidents never interleave; a closed or
        # missing stdout must not turn notify() into a raiser.
        line = incident.to_json() + "\n"
        try:
            with _stdout_lock:
                sys.stdout.write(line)
                sys.stdout.flush()
        except Exception as exc:
            logger.error("Could not print incident %s to stdout: %s", incident.incident_id, redact(str(exc)))
