"""Outbox: the write-ahead incident spool (atomic files, exclusive claims, temp-file hygiene)."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from arcanos_flows.incidents import outbox as outbox_module
from arcanos_flows.incidents.model import Incident
from arcanos_flows.incidents.outbox import Outbox


def make_incident(reason: str = "slow upstream") -> Incident:
    return Incident(incident_class="timeout", reason=reason, error_type="openai.APITimeoutError")


@pytest.fixture
def outbox(spool: Path) -> Outbox:
    """An outbox on the test's (not yet created) spool folder."""
    return Outbox(spool)


def test_put_writes_one_whole_file_per_incident_and_no_temp_files(outbox: Outbox, spool: Path) -> None:
    """put() leaves exactly <incident_id>.json holding the incident's JSON, and nothing else."""
    incident = make_incident()

    path = outbox.put(incident)

    assert path == spool / f"{incident.incident_id}.json" == outbox.path_for(incident.incident_id)
    assert [entry.name for entry in spool.iterdir()] == [path.name]
    assert path.read_text() == incident.to_json()
    assert outbox.pending() == [incident]


def test_putting_the_same_incident_twice_keeps_one_file(outbox: Outbox, spool: Path) -> None:
    """Writing the same incident_id again replaces its file instead of duplicating it."""
    incident = make_incident()
    outbox.put(incident)
    outbox.put(incident)

    assert [entry.name for entry in spool.iterdir()] == [f"{incident.incident_id}.json"]
    assert outbox.pending() == [incident]


def test_pending_and_paths_list_oldest_first(outbox: Outbox) -> None:
    """paths() and pending() order incidents by when they were written."""
    incidents = [make_incident(f"number {number}") for number in range(3)]
    now = time.time()
    for age, incident in zip((10, 30, 20), incidents, strict=True):
        os.utime(outbox.put(incident), (now - age, now - age))

    assert outbox.paths() == [outbox.path_for(incidents[number].incident_id) for number in (1, 2, 0)]
    assert [incident.reason for incident in outbox.pending()] == ["number 1", "number 2", "number 0"]


def test_a_missing_spool_folder_is_an_empty_spool(outbox: Outbox, spool: Path) -> None:
    """Before the first write there is no folder, and nothing is pending."""
    assert outbox.paths() == []
    assert outbox.pending() == []
    outbox.remove_stale_temporaries()
    assert not spool.exists()


def test_claim_is_exclusive_between_two_threads(outbox: Outbox) -> None:
    """While one thread holds an incident's claim, another thread's claim yields None."""
    incident = make_incident()
    path = outbox.put(incident)
    held, release = threading.Event(), threading.Event()
    seen: list[Any] = []

    def holder() -> None:
        with outbox.claim(path) as claimed:
            seen.append(claimed)
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    with outbox.claim(path) as second:
        assert second is None
    release.set()
    thread.join(10)

    assert seen == [incident]
    with outbox.claim(path) as again:  # released without delivery: claimable again
        assert again == incident


def test_claim_after_delivery_yields_none(outbox: Outbox) -> None:
    """Once done() removed an incident, claiming its path yields None."""
    incident = make_incident()
    path = outbox.put(incident)
    with outbox.claim(path) as claimed:
        assert claimed == incident
        outbox.done(incident)
    assert not path.exists()
    with outbox.claim(path) as claimed:
        assert claimed is None


def test_a_claimer_that_locks_after_the_holder_unlinked_gets_none(
    outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlink-while-locked race: opened before delivery, locked after it, the second claimer skips it."""
    incident = make_incident()
    path = outbox.put(incident)
    opened, proceed = threading.Event(), threading.Event()
    racer_name = "late-claimer"

    class PausingFcntl:
        # The real fcntl, except that the racing thread stops between open() and flock().
        LOCK_EX, LOCK_NB, LOCK_SH, LOCK_UN = fcntl.LOCK_EX, fcntl.LOCK_NB, fcntl.LOCK_SH, fcntl.LOCK_UN

        @staticmethod
        def flock(descriptor: int, operation: int) -> None:
            if threading.current_thread().name == racer_name:
                opened.set()
                proceed.wait(10)
            fcntl.flock(descriptor, operation)

    monkeypatch.setattr(outbox_module, "fcntl", PausingFcntl)
    late: list[Any] = []

    def late_claimer() -> None:
        with outbox.claim(path) as claimed:
            late.append(claimed)

    with outbox.claim(path) as first:
        assert first == incident
        thread = threading.Thread(target=late_claimer, name=racer_name)
        thread.start()
        assert opened.wait(10)  # the late claimer has the file open, not yet locked
        outbox.done(first)  # delivered: unlinked while still locked
    proceed.set()
    thread.join(10)

    assert late == [None]
    assert not path.exists()


def test_an_unreadable_spool_file_is_quarantined_not_deleted(
    outbox: Outbox, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt .json is moved aside to .unreadable (kept for a human) and stops blocking the queue."""
    good = make_incident()
    outbox.put(good)
    corrupt = spool / "0b5e5a3c-0000-4000-8000-000000000000.json"
    corrupt.write_bytes(b"{not json")

    assert outbox.pending() == [good]
    assert not corrupt.exists()
    assert corrupt.with_suffix(".unreadable").read_bytes() == b"{not json"
    assert any("unreadable" in record.getMessage() for record in caplog.records if record.levelno == logging.ERROR)
    assert outbox.paths() == [outbox.path_for(good.incident_id)]


def test_claiming_an_entry_that_cannot_be_opened_yields_none(
    outbox: Outbox, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A .json entry that is not a readable file is skipped with an error, never raised."""
    spool.mkdir()
    odd = spool / "0b5e5a3c-0000-4000-8000-000000000001.json"
    odd.mkdir()

    with outbox.claim(odd) as claimed:
        assert claimed is None
    assert any(record.levelno == logging.ERROR for record in caplog.records)


def test_temp_files_are_ignored_while_fresh_and_cleaned_when_stale(outbox: Outbox, spool: Path) -> None:
    """A leftover .x.tmp is never an incident; once older than an hour it is removed."""
    spool.mkdir()
    leftover = spool / ".x.tmp"
    leftover.write_bytes(b'{"type": "arcanos.incid')

    assert outbox.paths() == []
    assert outbox.pending() == []
    outbox.remove_stale_temporaries()
    assert leftover.exists()

    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    outbox.remove_stale_temporaries()
    assert not leftover.exists()
    assert list(spool.iterdir()) == []


def test_a_stale_temp_file_with_a_whole_incident_is_recovered(outbox: Outbox, spool: Path) -> None:
    """A writer killed between fsync and rename left a complete incident: cleanup moves it into the spool."""
    spool.mkdir()
    incident = make_incident("written, never renamed")
    temp = spool / f".{incident.incident_id}.k1ll3d.tmp"
    temp.write_text(incident.to_json())
    two_hours_ago = time.time() - 7200
    os.utime(temp, (two_hours_ago, two_hours_ago))

    outbox.remove_stale_temporaries()

    assert not temp.exists()
    assert outbox.pending() == [incident]
    assert [entry.name for entry in spool.iterdir()] == [f"{incident.incident_id}.json"]


def test_recovery_never_replaces_an_incident_already_spooled(outbox: Outbox, spool: Path) -> None:
    """If the incident's file already exists, the stale temp copy is simply dropped."""
    incident = make_incident("the real one")
    outbox.put(incident)
    temp = spool / f".{incident.incident_id}.old.tmp"
    temp.write_text(incident.model_copy(update={"reason": "stale copy"}).to_json())
    two_hours_ago = time.time() - 7200
    os.utime(temp, (two_hours_ago, two_hours_ago))

    outbox.remove_stale_temporaries()

    assert not temp.exists()
    assert [pending.reason for pending in outbox.pending()] == ["the real one"]


def test_outbox_expands_a_home_relative_spool(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ARCANOS_INCIDENT_SPOOL=~/... means the home folder, not a folder literally named '~'."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    assert Outbox(Path("~/spool")).directory == tmp_path / "home" / "spool"
