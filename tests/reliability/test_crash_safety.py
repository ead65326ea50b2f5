"""kill -9 at any moment, and many writers at once: the spool is never corrupt and nothing is lost or doubled.

- A process SIGKILLed in the middle of a POST (the receiver holds the request) leaves its incident in
  the spool; the next process delivers it with the same ``webhook-id``.
- Processes SIGKILLed at seeded random moments of a tight notify() loop (most of whose time is spent
  writing 60 KB incident files) never leave a ``*.json`` that does not parse; every incident they
  reported as notified is in the spool, and the next process delivers each spooled one exactly once.
- Threads and two processes notifying and flushing at once, against a receiver that fails now and
  then, deliver every incident exactly once.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WEBHOOK_SECRET

from arcanos_flows.core.settings import NotifierSettings
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import WebhookReceiver
from reliability.support import spooled, wait_until, webhook_ids

SEED = 20261125
KILL_WAVES = 2
KILLS_PER_WAVE = 6


@pytest.fixture
def child_environment(receiver: WebhookReceiver, spool: Path) -> dict[str, str]:
    """Environment of child processes: same receiver, secret and spool as the test."""
    return {
        **os.environ,
        "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
        "ARCANOS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ARCANOS_INCIDENT_SPOOL": str(spool),
        "ARCANOS_WEBHOOK_TIMEOUT": "30",
    }


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Child processes of a test; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def spawn(children: list[subprocess.Popen[str]], script: str, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    children.append(process)
    return process


def next_process_flush(env: dict[str, str]) -> dict[str, int]:
    """What a fresh process's flush() reports (it runs to completion)."""
    done = subprocess.run(
        [sys.executable, "-c", NEXT_PROCESS],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def parse_spool(spool: Path) -> dict[str, Incident]:
    """Every *.json in the spool parses as an Incident named after its id (the no-corruption promise)."""
    incidents = {}
    for path in spooled(spool):
        incident = Incident.model_validate_json(path.read_bytes())
        assert path.name == f"{incident.incident_id}.json"
        incidents[str(incident.incident_id)] = incident
    assert not list(spool.glob("*.unreadable")), "a spool file was quarantined as unreadable"
    return incidents


NEXT_PROCESS = r"""
import json
from arcanos_flows.incidents.notifier import MaintenanceNotifier
report = MaintenanceNotifier(backoff=0.01).flush()
print(json.dumps({"delivered": report.delivered, "remaining": report.remaining}))
"""


# --- killed in the middle of a POST -------------------------------------------------------------------

CHILD_ONE_INCIDENT = r"""
from arcanos_flows.incidents.notifier import MaintenanceNotifier

incident = MaintenanceNotifier(backoff=0.01).notify(RuntimeError("killed mid-request"), step="doomed")
print("notify returned", incident.incident_id, flush=True)
"""


@pytest.mark.parametrize(
    "held_answer",
    [503, 200],
    ids=["receiver-had-not-accepted", "receiver-had-accepted-but-sender-never-knew"],
)
def test_a_process_killed_mid_request_leaves_its_incident_for_the_next_process(
    receiver: WebhookReceiver,
    spool: Path,
    child_environment: dict[str, str],
    children: list[subprocess.Popen[str]],
    held_answer: int,
) -> None:
    """Killed while its POST is in flight: the incident stays spooled and the next process delivers it, same id."""
    release = threading.Event()
    seen = itertools.count()
    receiver.on_delivery = lambda delivery: release.wait(30) if next(seen) == 0 else None
    receiver.script(held_answer)
    try:
        process = spawn(children, CHILD_ONE_INCIDENT, child_environment)
        wait_until(lambda: len(receiver.deliveries) == 1, what="the held delivery")
        process.kill()
        stdout, _ = process.communicate(timeout=10)
    finally:
        release.set()

    assert process.returncode == -signal.SIGKILL
    assert "notify returned" not in stdout
    [held] = receiver.deliveries
    survivors = parse_spool(spool)
    assert list(survivors) == [held.headers["webhook-id"]]
    assert held.json == json.loads(survivors[held.headers["webhook-id"]].to_json())

    assert next_process_flush(child_environment) == {"delivered": 1, "remaining": 0}

    replay = receiver.deliveries[-1]
    assert replay.ok
    assert replay.signature_valid is True
    assert replay.headers["webhook-id"] == held.headers["webhook-id"]
    assert replay.body == held.body
    # At most one 2xx when the receiver never accepted; when it had accepted, the second copy carries the
    # same webhook-id, which is exactly what Standard Webhooks receivers deduplicate on.
    assert webhook_ids(receiver.delivered) == {held.headers["webhook-id"]: 1 if held_answer == 503 else 2}
    assert spooled(spool) == []


# --- killed at random moments, mostly while writing the spool file ---------------------------------------

CHILD_LOOP = r"""
import sys
from arcanos_flows.incidents.notifier import MaintenanceNotifier

from pathlib import Path

tag, ready = sys.argv[1], Path(sys.argv[2])
notifier = MaintenanceNotifier(backoff=0)
ready.touch()
for number in range(100_000):
    # ~60 KB per incident: writing and fsyncing the file is most of what this loop does.
    incident = notifier.notify(RuntimeError(f"{tag} #{number}"), tag=tag, number=number, padding=["p" * 1000] * 60)
    print(incident.incident_id, flush=True)
"""


def completed_lines(stdout: str) -> list[str]:
    """Lines the child finished printing before it died (a cut-off last line does not count)."""
    lines = stdout.split("\n")
    return lines[:-1]


def test_processes_killed_at_random_moments_never_corrupt_the_spool_and_lose_nothing(
    receiver: WebhookReceiver,
    spool: Path,
    tmp_path: Path,
    child_environment: dict[str, str],
    children: list[subprocess.Popen[str]],
) -> None:
    """12 seeded SIGKILLs during notify() loops: every *.json parses, nothing reported is lost, each goes once."""
    rng = random.Random(SEED)
    receiver.close()  # nothing is delivered while the children run: every incident must end up in the spool
    reported: list[str] = []
    for wave in range(KILL_WAVES):
        # Readiness is signalled by a file: reading a "ready" line would let the pipe's reader buffer swallow
        # the first ids, which communicate() never sees.
        ready = [tmp_path / f"ready-{wave}-{index}" for index in range(KILLS_PER_WAVE)]
        wave_children = [
            spawn(children, CHILD_LOOP, child_environment, f"w{wave}c{index}", str(ready[index]))
            for index in range(KILLS_PER_WAVE)
        ]
        wait_until(lambda paths=ready: all(path.exists() for path in paths), timeout=60, what="children ready")
        started = time.monotonic()
        delays = [rng.uniform(0.05, 0.6) for _ in wave_children]
        for process, delay in sorted(zip(wave_children, delays, strict=True), key=lambda pair: pair[1]):
            time.sleep(max(0.0, started + delay - time.monotonic()))
            os.kill(process.pid, signal.SIGKILL)
        for process in wave_children:
            stdout, stderr = process.communicate(timeout=30)
            assert process.returncode == -signal.SIGKILL, stderr
            reported += completed_lines(stdout)

    spooled_now = parse_spool(spool)
    temporaries = list(spool.glob(".*.tmp"))
    assert set(reported) <= set(spooled_now), "an incident notify() returned was not in the spool"
    assert len(reported) == len(set(reported))
    # Only a child's last notify() can have spooled an incident without returning: at most one per kill.
    assert 0 <= len(spooled_now) - len(reported) <= KILL_WAVES * KILLS_PER_WAVE
    print(
        f"\n{KILL_WAVES * KILLS_PER_WAVE} kills: {len(reported)} incidents reported, {len(spooled_now)} spooled, "
        f"{len(temporaries)} interrupted writes"
    )

    # An hour later (as far as the temp files can tell), the service is back and the next process flushes.
    an_hour_ago = time.time() - 2 * 3600
    for temporary in temporaries:
        os.utime(temporary, (an_hour_ago, an_hour_ago))
    recoverable = set()
    for temporary in temporaries:
        # A partial write is deleted, never delivered (its notify() had not returned); a whole one is recovered.
        with contextlib.suppress(ValueError):
            recoverable.add(str(Incident.model_validate_json(temporary.read_bytes()).incident_id))
    receiver.reopen()
    expected = set(spooled_now) | recoverable
    report = next_process_flush(child_environment)

    assert report == {"delivered": len(expected), "remaining": 0}
    assert webhook_ids(receiver.delivered) == {incident_id: 1 for incident_id in expected}
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    assert list(spool.iterdir()) == []


# --- many writers at once ------------------------------------------------------------------------------

CHILD_CONCURRENT = r"""
import json, sys, threading, time
from pathlib import Path
from arcanos_flows.incidents.notifier import MaintenanceNotifier

tag, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
ids, lock, done = [], threading.Lock(), threading.Event()

def notifying(worker):
    notifier = MaintenanceNotifier(backoff=0.01)
    for number in range(15):
        incident = notifier.notify(RuntimeError(f"{tag}/{worker} #{number}"))
        with lock:
            ids.append(str(incident.incident_id))

def flushing():
    notifier = MaintenanceNotifier(backoff=0.01)
    while not done.is_set():
        notifier.flush()

ready.touch()
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
workers = [threading.Thread(target=notifying, args=(worker,)) for worker in range(4)]
flusher = threading.Thread(target=flushing)
for thread in [*workers, flusher]:
    thread.start()
for thread in workers:
    thread.join()
done.set()
flusher.join()
print(json.dumps(ids), flush=True)
"""


def test_threads_and_two_processes_notifying_and_flushing_at_once_deliver_each_incident_exactly_once(
    receiver: WebhookReceiver,
    spool: Path,
    tmp_path: Path,
    child_environment: dict[str, str],
    children: list[subprocess.Popen[str]],
) -> None:
    """2 processes x (4 notifying threads + a flusher) and 8 threads + 2 flushers here: 240 incidents, each once."""
    # The receiver fails now and then (503, 429), so backlogs form and flushers race for them.
    pattern = [200, 200, 503, 200, 200, 200, 429, 200]
    receiver.script(*(pattern * 60))
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{tag}" for tag in ("p1", "p2")]
    processes = [
        spawn(children, CHILD_CONCURRENT, child_environment, tag, str(path), str(go))
        for tag, path in zip(("p1", "p2"), ready, strict=True)
    ]
    wait_until(lambda: all(path.exists() for path in ready), timeout=60, what="children ready")

    settings = NotifierSettings(
        maintenance_webhook=receiver.url,
        webhook_secret=WEBHOOK_SECRET,
        incident_spool=spool,
        webhook_timeout=30,
        _env_file=None,
    )
    local_ids: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()
    done = threading.Event()

    def notifying(worker: int) -> None:
        notifier = MaintenanceNotifier(settings, backoff=0.01)
        try:
            for number in range(15):
                incident = notifier.notify(RuntimeError(f"local/{worker} #{number}"))
                with lock:
                    local_ids.append(str(incident.incident_id))
        except BaseException as exc:
            problems.append(exc)

    def flushing() -> None:
        notifier = MaintenanceNotifier(settings, backoff=0.01)
        try:
            while not done.is_set():
                notifier.flush()
        except BaseException as exc:
            problems.append(exc)

    workers = [threading.Thread(target=notifying, args=(worker,)) for worker in range(8)]
    flushers = [threading.Thread(target=flushing) for _ in range(2)]
    go.touch()
    for thread in [*workers, *flushers]:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    done.set()
    for thread in flushers:
        thread.join(timeout=120)
    outputs = [process.communicate(timeout=120) for process in processes]
    final = MaintenanceNotifier(settings, backoff=0.01).flush()

    assert problems == []
    assert [process.returncode for process in processes] == [0, 0], outputs
    child_ids = [incident_id for stdout, _ in outputs for incident_id in json.loads(stdout.splitlines()[-1])]
    every_id = local_ids + child_ids
    assert len(every_id) == len(set(every_id)) == 240
    assert final.remaining == 0
    assert webhook_ids(receiver.delivered) == {incident_id: 1 for incident_id in every_id}
    assert all(delivery.signature_valid for delivery in receiver.deliveries)
    failures = [delivery for delivery in receiver.deliveries if not delivery.ok]
    assert failures, "the receiver's failures should have formed backlogs"
    assert list(spool.iterdir()) == []
