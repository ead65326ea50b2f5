"""Leak-scan helpers: recognisable secrets, the forms they could leak in, and a collector of what left the process.

A :class:`Haystack` holds every text a scenario let out, tagged with the channel it went through (stdout, Prefect
logs, events...) and the scenario that produced it; :meth:`Haystack.leaks` looks for every :class:`Secret` in
every form it could take (whole, a distinctive 12-character piece, base64 at any byte alignment).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import pickle
import secrets
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import requests
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.events.filters import EventAnyResourceFilter, EventFilter, EventOccurredFilter
from prefect.events.schemas.events import ReceivedEvent

from arcanos_flows.testing import Delivery


@dataclass(frozen=True)
class Secret:
    """A secret the scan looks for, and the part of it that is random (so no ordinary text contains it).

    Attributes:
        name: What it is, for the leak report.
        value: The secret as configured.
        core: A distinctive part of it; any 12-character piece of the core is searched for on its own.
    """

    name: str
    value: str
    core: str

    def needles(self) -> dict[str, str]:
        """Every form of the secret the scan looks for: whole, a 12-character piece, base64 at each alignment."""
        forms = {self.name: self.value, f"{self.name} (12-char piece)": self.core[len(self.core) // 2 - 6 :][:12]}
        forms.update(
            {f"{self.name} (base64, offset {offset})": piece for offset, piece in enumerate(base64_forms(self.value))}
        )
        return forms


def base64_forms(text: str) -> list[str]:
    """The base64 text that encodes ``text`` wherever it sits in a larger blob (one form per byte alignment).

    Example:
        >>> forms = base64_forms("sk-LEAKSCAN-0123456789")
        >>> all(form in base64.b64encode(b"xy" + b"sk-LEAKSCAN-0123456789" + b"z").decode() or
        ...     form in base64.b64encode(b"x" + b"sk-LEAKSCAN-0123456789").decode() or
        ...     form in base64.b64encode(b"sk-LEAKSCAN-0123456789").decode() for form in forms)
        True
    """
    raw = text.encode()
    forms = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        start = -(-offset * 8 // 6)  # the first character that depends on the text only
        end = (offset + len(raw)) * 8 // 6  # the last whole character that does
        forms.append(encoded[start:end])
    return forms


def webhook_secret(label: str) -> tuple[str, str]:
    """A Standard Webhooks secret whose signing key is printable and recognisable, and its random part."""
    core = secrets.token_hex(12)
    return "whsec_" + base64.b64encode(f"LEAKSCAN-{label}-{core}".encode()).decode(), core


def webhook_secret_forms(name: str, value: str, core: str) -> list[Secret]:
    """A webhook secret as configured, its base64 signing key alone, and the decoded key bytes."""
    key = value.removeprefix("whsec_")
    return [
        Secret(name, value, core),
        Secret(f"{name} signing key", key.rstrip("="), key[8:-8]),
        Secret(f"{name} key bytes", base64.b64decode(key).decode(), core),
    ]


@dataclass
class Haystack:
    """Everything that left the process, as ``(channel, scenario, text)``."""

    texts: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, channel: str, scenario: str, *texts: str | bytes | None) -> None:
        """Record texts (bytes are read as Latin-1, which keeps every ASCII secret intact); ``None`` is skipped."""
        for text in texts:
            if text is None:
                continue
            if isinstance(text, bytes):
                text = text.decode("latin-1")
            self.texts.append((channel, scenario, text))

    def counts(self) -> Counter[str]:
        """How many texts each channel holds."""
        return Counter(channel for channel, _, _ in self.texts)

    def leaks(
        self, secrets_: Iterable[Secret], allowed: Callable[[str, str, str], bool] = lambda *_: False
    ) -> list[str]:
        """One line per text that holds a form of a secret, unless ``allowed(channel, scenario, secret name)``."""
        needles = [(secret.name, label, needle) for secret in secrets_ for label, needle in secret.needles().items()]
        found = []
        for channel, scenario, text in self.texts:
            for name, label, needle in needles:
                at = text.find(needle)
                if at >= 0 and not allowed(channel, scenario, name):
                    found.append(f"{label} in {channel} [{scenario}]: …{text[max(0, at - 80) : at + 30]!r}")
        return found

    def exposures(self, secrets_: Iterable[Secret], allowed: Callable[[str, str, str], bool]) -> Counter[str]:
        """How many texts per channel hold a secret that ``allowed`` lets through (the documented exposures)."""
        shown: Counter[str] = Counter()
        for channel, scenario, text in self.texts:
            for secret in secrets_:
                if allowed(channel, scenario, secret.name) and any(n in text for n in secret.needles().values()):
                    shown[channel] += 1
                    break
        return shown


# --- what an exception lets out -----------------------------------------------------------------------------


def exception_texts(error: BaseException) -> list[str]:
    """str, repr, args, traceback, notes, attributes (the HTTP exchange of SDK errors included), pickle.

    Follows the chain as a traceback shows it (``__cause__``, and ``__context__`` unless suppressed by
    ``raise ... from None``): an exception chained to a leaking one counts as leaking. A suppressed context is
    shown by nothing (tracebacks, Prefect, pickles, error trackers all skip it), so it is not a channel.
    """
    texts: list[str] = []
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), "".join(traceback.format_exception(current))]
        texts += [repr(argument) for argument in current.args]
        texts += [str(note) for note in getattr(current, "__notes__", [])]
        for name, value in vars(current).items():
            texts.append(f"{name}={value!r}")
            texts += _http_texts(value)
            if hasattr(value, "model_dump_json"):
                with contextlib.suppress(Exception):
                    texts.append(value.model_dump_json())
        with contextlib.suppress(Exception):
            texts.append(pickle.dumps(current).decode("latin-1"))
        pending.append(current.__cause__)
        if not current.__suppress_context__:
            pending.append(current.__context__)
    return texts


def _http_texts(value: object) -> list[str]:
    if isinstance(value, (httpx.Request, httpx2.Request)):
        return [str(value.url), repr(list(value.headers.items()))]
    if isinstance(value, (httpx.Response, httpx2.Response)):
        texts = [repr(list(value.headers.items()))]
        with contextlib.suppress(Exception):
            texts.append(value.content.decode("latin-1"))
        return texts
    return []


# --- files --------------------------------------------------------------------------------------------------


def file_texts(folder: Path) -> list[str]:
    """Every file under ``folder``, raw, plus each base64 string inside a JSON file decoded (result pickles)."""
    texts: list[str] = []
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if not path.is_file():
            continue
        raw = path.read_bytes()
        texts.append(raw.decode("latin-1"))
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            texts += [blob.decode("latin-1") for blob in _decoded_strings(json.loads(raw))]
    return texts


def _decoded_strings(value: Any) -> Iterator[bytes]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _decoded_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _decoded_strings(item)
    elif isinstance(value, str) and len(value) >= 16:
        with contextlib.suppress(binascii.Error, ValueError):
            yield base64.b64decode(value, validate=True)


def spool_snapshot(spool: Path) -> list[str]:
    """The incident files in the spool right now (temporary ones too)."""
    return [path.read_text("utf-8") for path in sorted(spool.glob("*")) if path.is_file()] if spool.is_dir() else []


def delivery_texts(deliveries: Iterable[Delivery]) -> list[str]:
    """Body and headers of each delivery, as the receiver got them."""
    return [delivery.body.decode("latin-1") + "\n" + json.dumps(delivery.headers) for delivery in deliveries]


def log_record_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Each record as a handler would write it (traceback included), and all its attributes."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    texts = []
    for record in records:
        try:
            texts.append(formatter.format(record))
        except Exception:  # a record whose arguments do not fit its format: scan the pieces
            texts.append(f"{record.msg!r} % {record.args!r}")
        texts.append(repr(vars(record)))
    return texts


# --- the Prefect API ----------------------------------------------------------------------------------------


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """Poll ``read()`` until ``done(result)``; fail after ``timeout`` seconds saying what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = read()
        if done(result):
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.25)


def read_events(client: SyncPrefectClient, flow_run_ids: Iterable[uuid.UUID], since: Any) -> list[ReceivedEvent]:
    """Every event whose resource or related resources name one of the flow runs (all pages)."""
    page = client.read_events(
        filter=EventFilter(
            occurred=EventOccurredFilter(since=since),
            any_resource=EventAnyResourceFilter(id=[f"prefect.flow-run.{run_id}" for run_id in flow_run_ids]),
        ),
        limit=50,  # the API's maximum page
    )
    events = list(page.events)
    while page.next_page:
        page = client.read_events_page(str(page.next_page))
        events += page.events
    return events


def read_logs(client: SyncPrefectClient, flow_run_ids: Iterable[uuid.UUID]) -> list[Any]:
    """Every log line of the flow runs and their task runs, as the API returns them."""
    ids = list(flow_run_ids)
    logs: list[Any] = []
    while True:
        page = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)), limit=200, offset=len(logs)
        )
        logs += page
        if len(page) < 200:
            return logs


def read_run_records(client: SyncPrefectClient, flow_run_id: uuid.UUID) -> dict[str, list[str]]:
    """What the API holds about a flow run, by channel: the run and its states, task runs, artifacts."""
    run = client.read_flow_run(flow_run_id)
    this_run = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    task_runs = client.read_task_runs(flow_run_filter=this_run)
    artifacts = client.read_artifacts(
        artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    )
    return {
        "flow runs (API)": [run.model_dump_json(), json.dumps(run.parameters, default=str)],
        "flow run states (API)": [state.model_dump_json() for state in client.read_flow_run_states(flow_run_id)],
        "task runs (API)": [task_run.model_dump_json() for task_run in task_runs],
        "task run states (API)": [
            state.model_dump_json() for task_run in task_runs for state in client.read_task_run_states(task_run.id)
        ],
        "artifacts (API)": [artifact.model_dump_json() for artifact in artifacts],
    }


def block_document_texts(api_url: str, client: SyncPrefectClient, name: str, slug: str) -> list[str]:
    """The block document as the API shows it without asking for secrets: by name, raw by HTTP, and in listings."""
    document = client.read_block_document_by_name(name, slug, include_secrets=False)
    raw = requests.get(f"{api_url}/block_types/slug/{slug}/block_documents/name/{name}", timeout=10)
    listing = requests.post(f"{api_url}/block_documents/filter", json={}, timeout=10)
    raw.raise_for_status()
    listing.raise_for_status()
    return [document.model_dump_json(), json.dumps(document.data, default=str), raw.text, listing.text]
