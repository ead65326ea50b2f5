"""MaintenanceNotifier: stdout mode, signed delivery, receiver semantics, the spool, concurrency and kill -9."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import WEBHOOK_SECRET
from standardwebhooks import Webhook, WebhookVerificationError

from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.notifier import FlushReport, MaintenanceNotifier
from arcanos_flows.testing import Delivery, WebhookReceiver

SECRET_KEY_PART = WEBHOOK_SECRET.removeprefix("whsec_")
NOTIFIER_LOGGER = "arcanos_flows.notifier"

MakeNotifier = Callable[..., MaintenanceNotifier]


@pytest.fixture
def make_notifier(receiver: WebhookReceiver, spool: Path) -> MakeNotifier:
    """Build a notifier for the receiver and the test's spool; keyword arguments override settings."""

    def make(*, backoff: float = 0.01, **overrides: Any) -> MaintenanceNotifier:
        values: dict[str, Any] = {
            "maintenance_webhook": receiver.url,
            "webhook_secret": WEBHOOK_SECRET,
            "incident_spool": spool,
            "webhook_timeout": 5.0,
            "_env_file": None,
        }
        values.update(overrides)
        return MaintenanceNotifier(NotifierSettings(**values), backoff=backoff)

    return make


@pytest.fixture
def hook(make_notifier: MakeNotifier) -> MaintenanceNotifier:
    """A signing notifier with millisecond backoff."""
    return make_notifier()


def spooled(spool: Path) -> list[Path]:
    return sorted(spool.glob("*.json")) if spool.is_dir() else []


def webhook_ids(deliveries: list[Delivery]) -> Counter[str]:
    return Counter(delivery.headers["webhook-id"] for delivery in deliveries)


def log_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage() for record in caplog.records if record.name == NOTIFIER_LOGGER and record.levelno == level
    ]


def as_posted(incident: Incident) -> Any:
    return json.loads(incident.to_json())


# --- stdout mode and configuration -------------------------------------------------------------


def test_without_webhook_each_incident_is_one_json_line_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    """With no webhook configured, notify() prints exactly one parseable JSON line per incident."""
    notifier = MaintenanceNotifier()  # nothing in the environment: no webhook, no API key, no model
    assert notifier.webhook_url is None

    first = notifier.notify(RuntimeError("disk full"), step="plan", attempt=2)
    second = notifier.notify(ValueError("bad row"))

    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    printed = json.loads(lines[0])
    assert printed == as_posted(first)
    assert printed["type"] == "arcanos.incident"
    assert printed["schema_version"] == 1
    assert printed["incident_id"] == str(first.incident_id)
    assert uuid.UUID(printed["incident_id"]).version == 4
    assert printed["incident_class"] == "unknown"
    assert printed["reason"] == "disk full"
    assert printed["error_type"] == "builtins.RuntimeError"
    assert printed["context"] == {"step": "plan", "attempt": 2}
    occurred = datetime.fromisoformat(printed["occurred_at"].replace("Z", "+00:00"))
    assert occurred.utcoffset() == timezone.utc.utcoffset(None)
    assert abs((datetime.now(timezone.utc) - occurred).total_seconds()) < 60
    assert json.loads(lines[1])["incident_id"] == str(second.incident_id)
    # Printing needs no spool: nothing was written under the default spool folder.
    assert not notifier.outbox.directory.exists()
    assert notifier.flush() == FlushReport(delivered=0, remaining=0)


def test_notifier_reads_webhook_secret_and_spool_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver, spool: Path
) -> None:
    """MaintenanceNotifier() reads webhook, secret and spool from the environment; no API key needed."""
    monkeypatch.setenv("ARCANOS_MAINTENANCE_WEBHOOK", receiver.url)
    monkeypatch.setenv("ARCANOS_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("ARCANOS_INCIDENT_SPOOL", str(spool))

    notifier = MaintenanceNotifier()
    incident = notifier.notify(RuntimeError("from env"))

    assert notifier.webhook_url == receiver.url
    assert notifier.outbox.directory == spool
    [delivery] = receiver.deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    assert delivery.headers["webhook-id"] == str(incident.incident_id)
    assert spooled(spool) == []


def test_notifier_reads_a_dotenv_file_in_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, isolated_environment: Path, receiver: WebhookReceiver, spool: Path, tmp_path: Path
) -> None:
    """A .env file in the working directory configures the notifier; the environment wins over it."""
    (isolated_environment / ".env").write_text(
        f"ARCANOS_MAINTENANCE_WEBHOOK={receiver.url}\n"
        f"ARCANOS_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
        f"ARCANOS_INCIDENT_SPOOL={tmp_path / 'dotenv-spool'}\n"
    )
    monkeypatch.setenv("ARCANOS_INCIDENT_SPOOL", str(spool))

    notifier = MaintenanceNotifier()
    incident = notifier.notify(RuntimeError("from .env"))

    assert notifier.webhook_url == receiver.url
    assert notifier.outbox.directory == spool
    [delivery] = receiver.delivered
    assert delivery.signature_valid is True
    assert delivery.json == as_posted(incident)


# --- signing --------------------------------------------------------------------------------------


def test_signed_delivery_verifies_with_standardwebhooks(receiver: WebhookReceiver, hook: MaintenanceNotifier) -> None:
    """Every POST carries Standard Webhooks headers, webhook-id = incident_id, and verifies."""
    incident = hook.notify(RuntimeError("disk full"), run="r1")

    [delivery] = receiver.deliveries
    assert delivery.ok
    assert delivery.signature_valid is True
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["webhook-id"] == str(incident.incident_id)
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 10
    assert delivery.headers["webhook-signature"].startswith("v1,")
    verified = Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)
    assert verified == delivery.json == as_posted(incident)
    assert delivery.json["context"] == {"run": "r1"}
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=").verify(delivery.body, delivery.headers)


@pytest.mark.parametrize("tampered", ["body", "id", "timestamp"])
def test_tampering_with_a_signed_delivery_fails_verification(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, tampered: str
) -> None:
    """Changing the body, the webhook-id or the webhook-timestamp breaks the signature."""
    hook.notify(RuntimeError("disk full"))
    [delivery] = receiver.deliveries
    body, headers = delivery.body, dict(delivery.headers)
    Webhook(WEBHOOK_SECRET).verify(body, headers)  # untouched, it verifies

    if tampered == "body":
        body = body.replace(b"disk full", b"disk fine")
    elif tampered == "id":
        headers["webhook-id"] = str(uuid.uuid4())
    else:
        # One second earlier is well inside the 5-minute tolerance: only the signature can fail.
        headers["webhook-timestamp"] = str(int(headers["webhook-timestamp"]) - 1)

    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(body, headers)


def test_without_a_secret_deliveries_are_unsigned_but_carry_webhook_id(
    receiver: WebhookReceiver, make_notifier: MakeNotifier
) -> None:
    """With no ARCANOS_WEBHOOK_SECRET, the POST has webhook-id and webhook-timestamp but no signature."""
    incident = make_notifier(webhook_secret=None).notify(RuntimeError("unsigned"))

    [delivery] = receiver.deliveries
    assert delivery.ok
    assert delivery.headers["webhook-id"] == str(incident.incident_id)
    assert "webhook-timestamp" in delivery.headers
    assert "webhook-signature" not in delivery.headers
    assert delivery.json == as_posted(incident)


# --- retries and receiver semantics ----------------------------------------------------------------


def test_503_twice_then_200_delivers_once_after_three_attempts(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """Transient 5xx answers are retried; the third attempt delivers and the spool file is removed."""
    receiver.fail_next(2, status=503)

    incident = hook.notify(RuntimeError("flaky receiver"))

    assert [delivery.status for delivery in receiver.deliveries] == [503, 503, 200]
    assert webhook_ids(receiver.deliveries) == {str(incident.incident_id): 3}
    assert {delivery.body for delivery in receiver.deliveries} == {incident.to_json().encode()}
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    assert len(receiver.delivered) == 1
    assert spooled(spool) == []


def test_503_always_gives_up_after_three_attempts_and_keeps_the_incident_spooled(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """After three failed attempts the incident stays in the spool and a warning names it and the spool."""
    receiver.fail_next(10, status=503)

    incident = hook.notify(RuntimeError("receiver down"))

    assert [delivery.status for delivery in receiver.deliveries] == [503, 503, 503]
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]
    [warning] = log_messages(caplog, logging.WARNING)
    assert str(incident.incident_id) in warning
    assert str(spool) in warning
    assert "HTTP 503" in warning

    receiver.clear()
    assert hook.flush() == FlushReport(delivered=1, remaining=0)
    assert webhook_ids(receiver.delivered) == {str(incident.incident_id): 1}


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_of_one_second_is_honoured(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, status: int
) -> None:
    """A Retry-After: 1 answer makes the next attempt wait a second instead of the 10 ms backoff."""
    receiver.fail_next(1, status=status, retry_after=1)

    started = time.monotonic()
    hook.notify(RuntimeError("slow down"))
    elapsed = time.monotonic() - started

    first, second = receiver.deliveries
    assert (first.status, second.status) == (status, 200)
    assert second.at - first.at >= 1.0
    assert elapsed >= 1.0
    assert spooled(spool) == []


def test_retry_after_beyond_30_seconds_gives_up_at_once(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Retry-After: 120 is more than notify() may block: one attempt, then the incident waits in the spool."""
    receiver.fail_next(1, status=503, retry_after=120)

    started = time.monotonic()
    incident = hook.notify(RuntimeError("come back later"))

    assert time.monotonic() - started < 5
    assert len(receiver.deliveries) == 1
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]
    [warning] = log_messages(caplog, logging.WARNING)
    assert "Retry-After 120s" in warning


def test_410_gone_keeps_spooling_and_logs_that_the_endpoint_is_gone(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """410 Gone is not retried; the incident stays spooled and the error says the endpoint no longer exists."""
    receiver.script(410)

    incident = hook.notify(RuntimeError("nobody listens"))

    assert len(receiver.deliveries) == 1
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]
    [error] = log_messages(caplog, logging.ERROR)
    assert "410 Gone" in error
    assert "no longer exists" in error
    assert str(incident.incident_id) in error


@pytest.mark.parametrize("status", [302, 307, 308])
def test_redirects_are_not_followed_and_count_as_failure(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    """A 3xx is never followed (nothing reaches the Location path); the incident stays spooled."""
    receiver.script(status)

    incident = hook.notify(RuntimeError("moved"))

    assert [(delivery.path, delivery.status) for delivery in receiver.deliveries] == [(receiver.path, status)]
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]
    [error] = log_messages(caplog, logging.ERROR)
    assert f"HTTP {status}" in error
    assert "redirect, which is not followed" in error


def test_400_rejection_is_not_retried_and_keeps_the_incident_spooled(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4xx rejection is final for this attempt: one POST, the incident stays in the spool."""
    receiver.script(400)

    incident = hook.notify(RuntimeError("rejected"))

    assert len(receiver.deliveries) == 1
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]
    [error] = log_messages(caplog, logging.ERROR)
    assert "HTTP 400" in error
    assert "rejection" in error


def test_an_incident_the_receiver_rejects_does_not_block_the_backlog(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """A 400 for one spooled incident does not stop flush() from delivering the ones behind it."""
    receiver.script(400)
    rejected = hook.notify(RuntimeError("poison"))
    receiver.fail_next(3, status=503)
    waiting = hook.notify(RuntimeError("waits behind it"))
    assert len(spooled(spool)) == 2
    os.utime(hook.outbox.path_for(rejected.incident_id), (time.time() - 20, time.time() - 20))

    receiver.script(400)
    assert hook.flush() == FlushReport(delivered=1, remaining=1)
    assert webhook_ids(receiver.delivered) == {str(waiting.incident_id): 1}
    assert [path.name for path in spooled(spool)] == [f"{rejected.incident_id}.json"]


# --- spool and replay -------------------------------------------------------------------------------


def test_connection_refused_spools_and_flush_delivers_everything_once_with_the_original_id(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """While the receiver is down incidents wait in the spool; flush() replays each once with its webhook-id."""
    receiver.close()
    incidents = [hook.notify(RuntimeError(f"outage {number}"), number=number) for number in range(3)]

    assert len(spooled(spool)) == 3
    assert hook.flush() == FlushReport(delivered=0, remaining=3)

    receiver.reopen()
    assert hook.flush() == FlushReport(delivered=3, remaining=0)
    assert hook.flush() == FlushReport(delivered=0, remaining=0)

    delivered = receiver.delivered
    assert len(receiver.deliveries) == len(delivered) == 3
    assert webhook_ids(delivered) == {str(incident.incident_id): 1 for incident in incidents}
    assert all(delivery.signature_valid for delivery in delivered)
    by_id = {delivery.headers["webhook-id"]: delivery.json for delivery in delivered}
    assert all(by_id[str(incident.incident_id)] == as_posted(incident) for incident in incidents)
    assert spooled(spool) == []


def test_flush_replays_the_backlog_oldest_first(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """flush() delivers spooled incidents in the order they were written."""
    receiver.close()
    incidents = [hook.notify(RuntimeError(f"number {number}")) for number in range(3)]
    now = time.time()
    # Written in the order 2, 0, 1 as far as the file times say.
    for age, incident in zip((20, 10, 30), incidents, strict=True):
        os.utime(hook.outbox.path_for(incident.incident_id), (now - age, now - age))
    receiver.reopen()

    hook.flush()

    expected = [str(incidents[number].incident_id) for number in (2, 0, 1)]
    assert [delivery.headers["webhook-id"] for delivery in receiver.delivered] == expected


def test_a_new_notifiers_first_delivery_also_delivers_the_backlog(
    receiver: WebhookReceiver, make_notifier: MakeNotifier, spool: Path
) -> None:
    """Incidents spooled by an earlier notifier (or process) go out with the next notifier's first success."""
    receiver.close()
    earlier = make_notifier()
    backlog = [earlier.notify(RuntimeError(f"old {number}")) for number in range(2)]
    assert len(spooled(spool)) == 2
    receiver.reopen()

    fresh = make_notifier().notify(RuntimeError("new"))

    ids = [delivery.headers["webhook-id"] for delivery in receiver.delivered]
    assert ids[0] == str(fresh.incident_id)  # the new incident first, then the backlog
    assert Counter(ids) == {str(incident.incident_id): 1 for incident in [fresh, *backlog]}
    assert spooled(spool) == []


def test_spool_files_are_private_valid_incidents_one_per_incident(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """Each undelivered incident is one <incident_id>.json file holding its JSON; no temp files remain."""
    receiver.close()
    incidents = [hook.notify(RuntimeError(f"spooled {number}"), number=number) for number in range(3)]

    assert sorted(entry.name for entry in spool.iterdir()) == sorted(f"{i.incident_id}.json" for i in incidents)
    for incident in incidents:
        path = spool / f"{incident.incident_id}.json"
        assert Incident.model_validate_json(path.read_bytes()) == incident
        assert json.loads(path.read_text()) == as_posted(incident)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(spool.stat().st_mode) & 0o077 == 0
    assert {incident.incident_id for incident in hook.pending()} == {incident.incident_id for incident in incidents}


def test_a_leftover_temp_file_is_ignored_and_cleaned_once_stale(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """A .x.tmp left by a writer killed mid-write is never delivered; once stale it is removed."""
    spool.mkdir()
    leftover = spool / ".x.tmp"
    leftover.write_bytes(b'{"type": "arcanos.incident", "incid')

    assert hook.pending() == []
    assert hook.flush() == FlushReport(delivered=0, remaining=0)
    assert leftover.exists()  # fresh: it may belong to a live writer
    hook.notify(RuntimeError("unrelated"))
    assert leftover.exists()

    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    hook.flush()

    assert not leftover.exists()
    assert len(receiver.delivered) == 1
    assert sorted(spool.iterdir()) == []


def test_a_stale_temp_file_holding_a_whole_incident_is_recovered_and_delivered(
    receiver: WebhookReceiver, hook: MaintenanceNotifier, spool: Path
) -> None:
    """A writer killed between fsync and rename left a complete incident: it is recovered, not dropped."""
    spool.mkdir()
    incident = Incident(incident_class="timeout", reason="killed before rename", error_type="builtins.TimeoutError")
    temp = spool / f".{incident.incident_id}.abc123.tmp"
    temp.write_text(incident.to_json())
    two_hours_ago = time.time() - 7200
    os.utime(temp, (two_hours_ago, two_hours_ago))

    hook.flush()  # cleans up (recovers) the temp file
    hook.flush()  # delivers what was recovered

    assert not temp.exists()
    assert webhook_ids(receiver.delivered) == {str(incident.incident_id): 1}
    assert spooled(spool) == []


# --- notify never raises ------------------------------------------------------------------------------


@pytest.mark.parametrize("broken", ["spool is a file", "spool parent is a file", "spool not writable"])
def test_notify_never_raises_when_the_spool_is_unusable(
    receiver: WebhookReceiver,
    make_notifier: MakeNotifier,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    broken: str,
) -> None:
    """If the spool cannot be written, the incident is printed to stdout, an error is logged, and it is still sent."""
    if broken == "spool is a file":
        spool = tmp_path / "spool-file"
        spool.write_text("not a folder")
    elif broken == "spool parent is a file":
        (tmp_path / "parent-file").write_text("not a folder")
        spool = tmp_path / "parent-file" / "spool"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write to a read-only folder")
        spool = tmp_path / "read-only"
        spool.mkdir(mode=0o500)
    notifier = make_notifier(incident_spool=spool)

    incident = notifier.notify(RuntimeError("spool trouble"), step="write")

    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line) == as_posted(incident)
    assert incident.context == {"step": "write"}
    [error] = log_messages(caplog, logging.ERROR)
    assert str(incident.incident_id) in error
    assert "spool" in error
    assert webhook_ids(receiver.delivered) == {str(incident.incident_id): 1}
    assert notifier.flush() == FlushReport(delivered=0, remaining=0)
    assert notifier.pending() == []


def test_notify_with_an_incident_merges_the_context(receiver: WebhookReceiver, hook: MaintenanceNotifier) -> None:
    """notify(incident, **context) keeps the incident (and its id) and adds the context to it."""
    original = Incident(
        incident_class="timeout", reason="slow upstream", error_type="openai.APITimeoutError", context={"api": "chat"}
    )

    returned = hook.notify(original, flow_run_id="run-1")

    assert returned.incident_id == original.incident_id
    assert returned.context == {"api": "chat", "flow_run_id": "run-1"}
    assert returned.incident_class == original.incident_class
    assert returned.reason == original.reason
    [delivery] = receiver.delivered
    assert delivery.headers["webhook-id"] == str(original.incident_id)
    assert delivery.json["context"] == {"api": "chat", "flow_run_id": "run-1"}
    assert hook.notify(original) is original


def test_notify_never_raises_on_an_exception_that_cannot_be_described(
    receiver: WebhookReceiver, hook: MaintenanceNotifier
) -> None:
    """Even an exception whose str() raises still produces a delivered incident."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no description")

    incident = hook.notify(Unprintable(), step="odd")

    assert isinstance(incident, Incident)
    assert webhook_ids(receiver.delivered) == {str(incident.incident_id): 1}


def test_notify_never_raises_when_stdout_is_closed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """In stdout mode a closed stdout is logged as an error, not raised."""
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)

    incident = MaintenanceNotifier().notify(RuntimeError("nowhere to print"))

    assert any(str(incident.incident_id) in message for message in log_messages(caplog, logging.ERROR))


def test_the_webhook_secret_never_appears_in_logs_stdout_spool_or_incidents(
    receiver: WebhookReceiver,
    make_notifier: MakeNotifier,
    spool: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Through every failure path, the webhook secret is never written anywhere."""
    caplog.set_level(logging.DEBUG)
    hook = make_notifier()
    receiver.fail_next(3, status=503)
    hook.notify(RuntimeError(f"the secret is {WEBHOOK_SECRET}"), secret=WEBHOOK_SECRET)
    for status in (410, 302, 400):
        receiver.script(status)
        hook.notify(RuntimeError(f"status {status}"))
    receiver.close()
    hook.notify(RuntimeError("down"))
    (tmp_path / "spool-file").write_text("")
    make_notifier(incident_spool=tmp_path / "spool-file").notify(RuntimeError(f"leak {WEBHOOK_SECRET}?"))
    spooled_text = "".join(path.read_text() for path in spooled(spool))
    receiver.reopen()
    hook.flush()

    written = caplog.text + capsys.readouterr().out + spooled_text
    written += "".join(delivery.body.decode() for delivery in receiver.deliveries)
    assert "[REDACTED]" in written
    assert SECRET_KEY_PART not in written
    assert WEBHOOK_SECRET not in written


# --- concurrency and crashes ---------------------------------------------------------------------------


def test_threads_notifying_and_flushing_at_once_deliver_every_incident_exactly_once(
    receiver: WebhookReceiver, make_notifier: MakeNotifier, spool: Path
) -> None:
    """8 threads x 10 notifies plus concurrent flush() calls, with early failures: each incident arrives once."""
    receiver.fail_next(5, status=503)
    flusher = make_notifier()
    shared = make_notifier()
    start = threading.Barrier(8 + 2)
    done = threading.Event()
    ids: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()

    def notifying(worker: int) -> None:
        notifier = shared if worker % 2 else make_notifier()
        try:
            start.wait()
            for number in range(10):
                incident = notifier.notify(RuntimeError(f"worker {worker} #{number}"), worker=worker)
                with lock:
                    ids.append(str(incident.incident_id))
        except BaseException as exc:
            problems.append(exc)

    def flushing() -> None:
        try:
            start.wait()
            while not done.is_set():
                flusher.flush()
        except BaseException as exc:
            problems.append(exc)

    workers = [threading.Thread(target=notifying, args=(worker,)) for worker in range(8)]
    flushers = [threading.Thread(target=flushing) for _ in range(2)]
    for thread in workers + flushers:
        thread.start()
    for thread in workers:
        thread.join(timeout=60)
    done.set()
    for thread in flushers:
        thread.join(timeout=60)
    final = flusher.flush()

    assert problems == []
    assert len(ids) == len(set(ids)) == 80
    assert final.remaining == 0
    assert webhook_ids(receiver.delivered) == {incident_id: 1 for incident_id in ids}
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    assert spooled(spool) == []
    assert [entry.name for entry in spool.iterdir()] == []


CHILD_NOTIFIER = r"""
import json, sys, time
from pathlib import Path
from arcanos_flows.incidents.notifier import MaintenanceNotifier

tag, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
notifier = MaintenanceNotifier(backoff=0.01)
ready.touch()
deadline = time.monotonic() + 20
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
ids = []
for number in range(10):
    ids.append(str(notifier.notify(RuntimeError(f"process {tag} #{number}"), process=tag).incident_id))
    if number % 3 == 2:
        notifier.flush()
notifier.flush()
print(json.dumps(ids))
"""


@pytest.fixture
def child_environment(receiver: WebhookReceiver, spool: Path) -> dict[str, str]:
    """Environment for a child process using the same receiver and spool."""
    return {
        **os.environ,
        "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(spool),
    }


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes started by a test; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_two_processes_notifying_and_flushing_at_once_deliver_each_incident_exactly_once(
    receiver: WebhookReceiver,
    make_notifier: MakeNotifier,
    spool: Path,
    tmp_path: Path,
    child_environment: dict[str, str],
    children: list[subprocess.Popen[str]],
) -> None:
    """Two processes sharing one spool and receiver, both flushing, never double-deliver or lose an incident."""
    receiver.fail_next(4, status=503)
    go = tmp_path / "go"
    for tag in ("a", "b"):
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD_NOTIFIER, tag, str(tmp_path / f"ready-{tag}"), str(go)],
                env=child_environment,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    wait_until(lambda: all((tmp_path / f"ready-{tag}").exists() for tag in ("a", "b")))
    go.touch()
    outputs = [process.communicate(timeout=60) for process in children]

    assert [process.returncode for process in children] == [0, 0], outputs
    ids = [incident_id for stdout, _ in outputs for incident_id in json.loads(stdout.splitlines()[-1])]
    make_notifier().flush()
    assert len(ids) == len(set(ids)) == 20
    assert webhook_ids(receiver.delivered) == {incident_id: 1 for incident_id in ids}
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    assert spooled(spool) == []


CHILD_KILLED = r"""
from arcanos_flows.incidents.notifier import MaintenanceNotifier

# A long backoff keeps the process between delivery attempts until it is killed.
MaintenanceNotifier(backoff=60).notify(RuntimeError("killed while delivering"), step="doomed")
print("notify returned", flush=True)
"""


def test_an_incident_survives_kill_9_and_the_next_notifier_delivers_it(
    receiver: WebhookReceiver,
    make_notifier: MakeNotifier,
    spool: Path,
    child_environment: dict[str, str],
    children: list[subprocess.Popen[str]],
) -> None:
    """A process SIGKILLed while the webhook is unreachable leaves a valid spool file that is delivered later."""
    receiver.close()
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD_KILLED],
        env=child_environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(process)
    wait_until(lambda: len(spooled(spool)) == 1 or process.poll() is not None)
    assert process.poll() is None, process.communicate()
    os.kill(process.pid, signal.SIGKILL)
    stdout, _ = process.communicate(timeout=10)

    assert process.returncode == -signal.SIGKILL
    assert "notify returned" not in stdout
    [path] = spooled(spool)
    survivor = Incident.model_validate_json(path.read_bytes())
    assert path.name == f"{survivor.incident_id}.json"
    assert survivor.reason == "killed while delivering"
    assert survivor.context == {"step": "doomed"}
    assert not [entry.name for entry in spool.iterdir() if entry.name.endswith(".tmp")]

    receiver.reopen()
    fresh = make_notifier().notify(RuntimeError("after the crash"))

    assert webhook_ids(receiver.delivered) == {str(fresh.incident_id): 1, str(survivor.incident_id): 1}
    replayed = next(d for d in receiver.delivered if d.headers["webhook-id"] == str(survivor.incident_id))
    assert replayed.signature_valid is True
    assert replayed.json == as_posted(survivor)
    assert spooled(spool) == []
