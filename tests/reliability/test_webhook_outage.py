"""A maintenance webhook outage, phase by phase: nothing is lost, nothing arrives twice, ids never change.

The receiver refuses connections, then answers 503, then 410 Gone, then redirects, then comes back
(first with a ``Retry-After``). Every incident produced meanwhile waits in the spool and is delivered
exactly once, by ``flush()`` or automatically by the next successful delivery, with its original
``webhook-id`` and body. Every HTTP attempt is counted.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import WEBHOOK_SECRET

from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.notifier import FlushReport, MaintenanceNotifier
from arcanos_flows.testing import Delivery, WebhookReceiver
from reliability.support import spooled, webhook_ids

MakeNotifier = Callable[[], MaintenanceNotifier]
REDIRECTS = (301, 302, 303, 307, 308)


@pytest.fixture
def make_notifier(receiver: WebhookReceiver, spool: Path) -> MakeNotifier:
    def make() -> MaintenanceNotifier:
        settings = NotifierSettings(
            maintenance_webhook=receiver.url,
            webhook_secret=WEBHOOK_SECRET,
            incident_spool=spool,
            webhook_timeout=2,
            _env_file=None,
        )
        return MaintenanceNotifier(settings, backoff=0.01)

    return make


def as_posted(incident: Incident) -> Any:
    return json.loads(incident.to_json())


def notifier_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "arcanos_flows.notifier" and record.levelno == logging.ERROR
    ]


def assert_each_delivered_once_unchanged(receiver: WebhookReceiver, created: list[Incident]) -> None:
    """Each incident arrived with 2xx exactly once, with its original id and body, correctly signed."""
    delivered = receiver.delivered
    assert webhook_ids(delivered) == {str(incident.incident_id): 1 for incident in created}
    originals = {str(incident.incident_id): as_posted(incident) for incident in created}
    for delivery in delivered:
        assert delivery.json == originals[delivery.headers["webhook-id"]]
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    # Failed attempts carried the same id as the delivery that finally succeeded.
    assert {delivery.headers["webhook-id"] for delivery in receiver.deliveries} <= set(originals)
    assert {delivery.path for delivery in receiver.deliveries} == {"/incidents"}


def statuses(deliveries: list[Delivery]) -> list[int]:
    return [delivery.status for delivery in deliveries]


def test_every_incident_of_an_outage_arrives_once_with_the_next_successful_delivery(
    receiver: WebhookReceiver, make_notifier: MakeNotifier, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refused, 503, 410, redirects, then back: 13 incidents spooled, each delivered once by the next notify()."""
    caplog.set_level(logging.INFO, logger="arcanos_flows.notifier")
    notifier = make_notifier()
    created: list[Incident] = []

    # 1. Connection refused: 3 attempts each, nothing reaches the receiver.
    receiver.close()
    created += [notifier.notify(RuntimeError(f"refused #{n}"), phase="refused") for n in range(3)]
    assert len(spooled(spool)) == 3

    # 2. 503: each notify() spends its 3 attempts on the new incident, then stops (the backlog waits).
    receiver.reopen()
    receiver.fail_next(6, status=503)
    created += [notifier.notify(RuntimeError(f"503 #{n}"), phase="503") for n in range(2)]
    assert statuses(receiver.deliveries) == [503] * 6
    assert len(spooled(spool)) == 5

    # 3. 410 Gone: one attempt, an error log that says the endpoint is gone, incidents keep spooling.
    receiver.script(410, 410)
    created += [notifier.notify(RuntimeError(f"410 #{n}"), phase="410") for n in range(2)]
    assert statuses(receiver.deliveries) == [503] * 6 + [410] * 2
    gone = [message for message in notifier_errors(caplog) if "410 Gone" in message]
    assert len(gone) == 2
    assert all("stays in the spool" in message for message in gone)

    # 4. Redirects: never followed (a followed 307/308 would POST to /elsewhere; a 301-303 would GET it).
    receiver.script(*REDIRECTS)
    created += [notifier.notify(RuntimeError(f"{status} redirect"), phase=str(status)) for status in REDIRECTS]
    assert statuses(receiver.deliveries) == [503] * 6 + [410] * 2 + list(REDIRECTS)
    assert len([m for m in notifier_errors(caplog) if "a redirect, which is not followed" in m]) == len(REDIRECTS)
    assert len(spooled(spool)) == 12
    assert receiver.delivered == []

    # 5. Back, first with 503 + Retry-After: 1: the wait is honoured, then the new incident and the
    #    whole backlog (oldest first) go out in the same notify() call.
    receiver.fail_next(1, status=503, retry_after=1)
    created.append(notifier.notify(RuntimeError("back"), phase="back"))

    deliveries = receiver.deliveries
    assert statuses(deliveries) == [503] * 6 + [410] * 2 + list(REDIRECTS) + [503] + [200] * 13
    waited = deliveries[14].at - deliveries[13].at
    assert 1.0 <= waited < 2.5, waited
    assert len(created) == 13
    assert_each_delivered_once_unchanged(receiver, created)
    backlog_order = [delivery.headers["webhook-id"] for delivery in receiver.delivered[1:]]
    assert backlog_order == [str(incident.incident_id) for incident in created[:-1]]
    assert spooled(spool) == []
    assert list(spool.iterdir()) == []


def test_flush_during_the_outage_keeps_everything_and_after_it_delivers_everything_once(
    receiver: WebhookReceiver, make_notifier: MakeNotifier, spool: Path
) -> None:
    """flush() never loses or duplicates: during refused/503/410 it reports what remains, after it empties the spool."""
    receiver.close()
    created = [make_notifier().notify(RuntimeError(f"offline #{n}")) for n in range(4)]

    first = make_notifier().flush()
    receiver.reopen()
    receiver.fail_next(3, status=503)
    second = make_notifier().flush()
    receiver.script(410)
    third = make_notifier().flush()
    # 429 with Retry-After is waited for inside the flush, then the whole backlog goes.
    receiver.fail_next(1, status=429, retry_after=1)
    fourth = make_notifier().flush()
    fifth = make_notifier().flush()

    assert first == FlushReport(delivered=0, remaining=4)
    assert second == FlushReport(delivered=0, remaining=4)
    assert third == FlushReport(delivered=0, remaining=4)
    assert fourth == FlushReport(delivered=4, remaining=0)
    assert fifth == FlushReport(delivered=0, remaining=0)
    assert statuses(receiver.deliveries) == [503] * 3 + [410] + [429] + [200] * 4
    assert receiver.deliveries[5].at - receiver.deliveries[4].at >= 1.0
    assert_each_delivered_once_unchanged(receiver, created)
    assert spooled(spool) == []


def test_a_new_notifier_delivers_the_backlog_of_an_earlier_one_with_the_original_ids(
    receiver: WebhookReceiver, make_notifier: MakeNotifier, spool: Path
) -> None:
    """Incidents one notifier spooled during an outage go out with the next notifier's first notify()."""
    receiver.close()
    earlier = [make_notifier().notify(RuntimeError(f"earlier #{n}")) for n in range(3)]
    receiver.reopen()

    later = make_notifier().notify(RuntimeError("later"))

    assert statuses(receiver.deliveries) == [200] * 4
    assert [d.headers["webhook-id"] for d in receiver.delivered] == [
        str(later.incident_id),
        *(str(incident.incident_id) for incident in earlier),
    ]
    assert_each_delivered_once_unchanged(receiver, [*earlier, later])
    assert spooled(spool) == []
