"""Security of the core (no Prefect): webhook URL policy, no redirects, bounded waits, signatures, leak scan.

The leak scan runs the client through every failure kind the fake upstream can produce, with the
upstream echoing the API key everywhere it can (error messages, error bodies, ``Bearer`` headers in
bodies, refusals, model names, request ids), and captures everything that leaves the process or the
call: stdout/stderr (fd level), every log record of arcanos_flows, openai, httpx, httpx2, httpcore and
urllib3 at DEBUG, the exceptions (str, repr, args, message, body, string attributes, traceback), the
spool files and the delivered incidents. Neither the API key nor the webhook secret may appear.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import MODEL, WEBHOOK_SECRET
from standardwebhooks import Webhook, WebhookVerificationError

from arcanos_flows.client import ArcanosPythonClient
from arcanos_flows.core.errors import ConfigurationError, InvalidReasoningInput
from arcanos_flows.core.settings import ArcanosSettings, NotifierSettings
from arcanos_flows.incidents.notifier import MaintenanceNotifier
from arcanos_flows.testing import FakeOpenAIServer, Reply, WebhookReceiver
from reliability.support import secrets_registry, spooled

CANARY = "PROMPT-CANARY-7d1e"
MESSAGES = [
    {"role": "system", "content": f"{CANARY}: you are the Arcanos maintenance AI."},
    {"role": "user", "content": f"{CANARY}: list the confirmation layers."},
]


# --- webhook URL policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "insecure_allowed", "accepted"),
    [
        ("https://hooks.example.com/incidents", False, True),
        ("https://10.0.0.5/incidents", False, True),
        ("http://127.0.0.1:9000/incidents", False, True),
        ("http://127.8.9.10/incidents", False, True),
        ("http://localhost:9000/incidents", False, True),
        ("http://LOCALHOST:9000/incidents", False, True),
        ("http://[::1]:9000/incidents", False, True),
        ("http://hooks.example.com/incidents", False, False),
        ("http://10.0.0.5/incidents", False, False),
        ("http://172.16.3.4/incidents", False, False),
        ("http://192.168.1.20:8080/incidents", False, False),
        ("http://169.254.169.254/latest", False, False),
        ("http://[fd00::1]/incidents", False, False),
        ("http://0.0.0.0:9000/incidents", False, False),
        ("http://127.0.0.1.nip.io/incidents", False, False),
        ("http://localhost.evil.example/incidents", False, False),
        ("http://evil.example#@127.0.0.1/incidents", False, False),
        ("http://127.0.0.1@evil.example/incidents", False, False),
        ("http://evil.example\\@127.0.0.1/incidents", False, False),
        ("http://127.0.0.1\t.evil.example/incidents", False, False),
        ("http://10.0.0.5/incidents", True, True),
        ("http://192.168.1.20/incidents", True, True),
        ("http://hooks.example.com/incidents", True, True),
        ("http://user:pw@hooks.example.com/incidents", True, False),
        ("ftp://hooks.example.com/incidents", True, False),
        ("file:///etc/passwd", True, False),
        ("javascript:alert(1)", True, False),
        ("https:///incidents", False, False),
    ],
)
def test_webhook_url_policy_https_except_loopback_unless_explicitly_allowed(
    url: str, insecure_allowed: bool, accepted: bool
) -> None:
    """Plain http only to loopback (private networks included in the refusal) unless ARCANOS_ALLOW_INSECURE_WEBHOOK."""
    build = lambda: NotifierSettings(  # noqa: E731 - read as a table row
        maintenance_webhook=url, allow_insecure_webhook=insecure_allowed, _env_file=None
    )
    if accepted:
        assert build().maintenance_webhook == url
        return
    with pytest.raises(ConfigurationError) as caught:
        build()
    assert str(caught.value).startswith("ARCANOS_MAINTENANCE_WEBHOOK: ")
    assert "pw@" not in str(caught.value)


@pytest.fixture
def notifier_for(spool: Path) -> Callable[..., MaintenanceNotifier]:
    def make(url: str, *, timeout: float = 5, backoff: float = 0.01) -> MaintenanceNotifier:
        settings = NotifierSettings(
            maintenance_webhook=url,
            webhook_secret=WEBHOOK_SECRET,
            incident_spool=spool,
            webhook_timeout=timeout,
            _env_file=None,
        )
        return MaintenanceNotifier(settings, backoff=backoff)

    return make


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_never_followed(
    receiver: WebhookReceiver, notifier_for: Callable[..., MaintenanceNotifier], spool: Path, status: int
) -> None:
    """A 3xx is one failed attempt: nothing is sent to the Location (a 307/308 would re-POST the incident there)."""
    receiver.script(status)
    incident = notifier_for(receiver.url).notify(RuntimeError("redirected"))

    [delivery] = receiver.deliveries
    assert delivery.status == status
    assert delivery.path == "/incidents"
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]


# --- bounded waits ------------------------------------------------------------------------------------


def test_a_receiver_that_never_answers_costs_at_most_timeout_times_attempts_plus_backoff(
    receiver: WebhookReceiver, notifier_for: Callable[..., MaintenanceNotifier], spool: Path
) -> None:
    """ARCANOS_WEBHOOK_TIMEOUT bounds each attempt: 3 x 0.5 s + 0.05 + 0.1 s backoff, then the incident waits."""
    release = threading.Event()
    receiver.on_delivery = lambda delivery: release.wait(30)
    try:
        started = time.monotonic()
        incident = notifier_for(receiver.url, timeout=0.5, backoff=0.05).notify(RuntimeError("unanswered"))
        elapsed = time.monotonic() - started
    finally:
        release.set()

    assert 1.5 <= elapsed < 1.5 + 0.15 + 2.0, elapsed
    assert len(receiver.deliveries) == 3
    assert [path.name for path in spooled(spool)] == [f"{incident.incident_id}.json"]


@contextlib.contextmanager
def trickling_server() -> Iterator[str]:
    """A raw HTTP server that answers 200 with a 1 MB Content-Length, then sends one byte every 0.1 s forever.

    Every read returns well within any timeout, so only never reading the body keeps a client bounded.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            connection, _ = listener.accept()
            with connection:
                received = b""
                while b"\r\n\r\n" not in received:
                    received += connection.recv(65536)
                head, _, body = received.partition(b"\r\n\r\n")
                headers = dict(line.lower().split(b":", 1) for line in head.split(b"\r\n")[1:])
                length = int(headers[b"content-length"])
                while len(body) < length:
                    body += connection.recv(65536)
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while not stop.wait(0.1):
                    connection.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/incidents"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def test_a_receiver_that_trickles_an_endless_body_cannot_hold_notify(
    notifier_for: Callable[..., MaintenanceNotifier], spool: Path
) -> None:
    """Only the status matters: a 2xx whose body never ends is a delivery, and notify() returns at once."""
    with trickling_server() as url:
        notifier = notifier_for(url, timeout=0.5)
        finished = threading.Event()
        worker = threading.Thread(
            target=lambda: (notifier.notify(RuntimeError("trickled")), finished.set()), daemon=True
        )
        started = time.monotonic()
        worker.start()
        worker.join(timeout=5)
        elapsed = time.monotonic() - started

    assert finished.is_set(), "notify() was held by a body that never ends"
    assert elapsed < 2, elapsed
    assert spooled(spool) == []


# --- signatures ---------------------------------------------------------------------------------------


def test_signatures_verify_with_standardwebhooks_and_fail_after_any_tampering(
    receiver: WebhookReceiver, notifier_for: Callable[..., MaintenanceNotifier]
) -> None:
    """Body, webhook-id and webhook-timestamp are all covered by the signature; stale or foreign ones fail too."""
    notifier_for(receiver.url).notify(RuntimeError("signed"))
    [delivery] = receiver.deliveries
    verifier = Webhook(WEBHOOK_SECRET)
    headers = {name: delivery.headers[name] for name in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert verifier.verify(delivery.body, headers) == json.loads(delivery.body)
    assert delivery.headers["webhook-id"] == delivery.json["incident_id"]

    body = delivery.body.replace(b'"incident_class":"unknown"', b'"incident_class":"timeout"')
    assert body != delivery.body
    stale = str(int((datetime.now(timezone.utc) - timedelta(minutes=10)).timestamp()))
    tampered: list[tuple[bytes, dict[str, str]]] = [
        (body, headers),
        (delivery.body + b" ", headers),
        (
            delivery.body,
            {**headers, "webhook-id": headers["webhook-id"][:-1] + ("1" if headers["webhook-id"][-1] == "0" else "0")},
        ),
        (delivery.body, {**headers, "webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)}),
        (delivery.body, {**headers, "webhook-timestamp": stale}),
    ]
    for tampered_body, tampered_headers in tampered:
        with pytest.raises(WebhookVerificationError):
            verifier.verify(tampered_body, tampered_headers)
    other = Webhook("whsec_" + base64.b64encode(b"another-secret-of-32-bytes-long!").decode())
    with pytest.raises(WebhookVerificationError):
        other.verify(delivery.body, headers)


# --- the leak scan ------------------------------------------------------------------------------------

SECRET_FORMS = {
    # An OpenAI-shaped key (also caught by the sk- pattern) and a proxy key only known by registration.
    "openai-key": "sk-proj-LEAKSCAN0123456789abcdefghij",
    "proxy-key": "arcanos-proxy-LEAKSCAN-7f3a9c1e5b2d",
}
LEAK_SECRET = "whsec_" + base64.b64encode(b"LEAKSCAN-webhook-secret-32bytes!").decode()
SCANNED_LOGGERS = ("arcanos_flows", "openai", "httpx", "httpx2", "httpcore", "httpcore2", "urllib3")


def hostile_replies(key: str) -> dict[str, Reply]:
    """Every failure kind the fake upstream produces, each echoing the key wherever it can."""
    echo = f"Incorrect API key provided: {key}. Authorization: Bearer {key}"
    now = {"retry-after-ms": "1"}  # the SDK's one retry happens at once, keeping the scan fast
    return {
        "401": Reply.error(401, message=echo),
        "403": Reply.error(403, message=echo),
        "404 model_not_found": Reply.error(404, code="model_not_found", message=echo),
        "400": Reply.error(400, message=echo),
        "408": replace(Reply.error(408, message=echo), headers=now),
        "409": replace(Reply.error(409, message=echo), headers=now),
        "422": Reply.error(422, message=echo),
        "429 retry-after": replace(Reply.error(429, message=echo), headers=now),
        "429 insufficient_quota": Reply.error(429, code="insufficient_quota", message=echo),
        "500 bearer in body": Reply(
            status=500, headers=now, body=f'{{"error": {{"message": "saw Bearer {key}"}}}}'.encode()
        ),
        "502 html": Reply(
            status=502, headers=now, body=f"<html>upstream {key}</html>".encode(), content_type="text/html"
        ),
        "503": replace(Reply.error(503, message=echo), headers=now),
        "key in x-request-id": Reply(status=500, headers={**now, "x-request-id": key}),
        "slow": Reply.slow(1),
        "dropped": Reply.drop(),
        "malformed": Reply(body=f'{{"id": "{key}", "choices": ['.encode()),
        "non-json": Reply(body=f"<html>{key}</html>".encode(), content_type="text/html"),
        "wrong shape": Reply(body=json.dumps({"error": echo, "id": 7}).encode()),
        "empty choices": Reply.no_choices(),
        "length": Reply.length(content=key),
        "refusal": Reply.refused(f"I will not repeat {key}"),
        "other model": Reply.other_model(key),
        "huge": Reply(body=b"[" + json.dumps(key).encode() * 10 + b"]", content_length=20 * 1024 * 1024),
    }


def exception_texts(error: BaseException) -> list[str]:
    texts = [str(error), repr(error), "".join(traceback.format_exception(error))]
    texts += [repr(argument) for argument in error.args]
    for name, value in vars(error).items():
        if name in ("response", "request"):
            continue  # the SDK's raw HTTP objects: they carry the Authorization header by design (see report)
        texts.append(f"{name}={value!r}")
    for note in getattr(error, "__notes__", []):
        texts.append(note)
    return texts


@pytest.mark.parametrize("form", list(SECRET_FORMS))
def test_no_secret_leaves_the_process_whatever_the_upstream_echoes(
    openai_server: FakeOpenAIServer,
    spool: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    form: str,
) -> None:
    """Key and webhook secret appear in no output, log, exception, spool file or incident, for every failure kind."""
    key = SECRET_FORMS[form]
    for name in SCANNED_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    with WebhookReceiver(secret=LEAK_SECRET) as receiver:
        # First every delivery fails, so that every incident is also written to (and read from) the spool.
        receiver.fail_next(10_000, status=503)
        configured = ArcanosSettings(
            openai_api_key=key,
            fine_tuned_model=MODEL,
            openai_base_url=openai_server.base_url,
            maintenance_webhook=receiver.url,
            webhook_secret=LEAK_SECRET,
            incident_spool=spool,
            request_timeout=0.25,
            max_retries=1,
            _env_file=None,
        )
        texts: list[str] = []
        kinds = hostile_replies(key)
        with ArcanosPythonClient(configured, notifier=MaintenanceNotifier(configured, backoff=0.001)) as client:
            for kind, reply in kinds.items():
                openai_server.clear()
                openai_server.always(reply)
                try:
                    client.run_reasoning(MESSAGES, metadata={"note": f"caller put {key} here"})
                except Exception as exc:
                    texts += exception_texts(exc)
                else:
                    pytest.fail(f"{kind}: no failure")
            openai_server.always(Reply.ok())
            # Invalid input whose error message quotes a metadata key holding the secret.
            with pytest.raises(InvalidReasoningInput) as caught:
                client.run_reasoning(MESSAGES, metadata={f"k{key}": "v" * 600})
            texts += exception_texts(caught.value)
        # Connection refused: nothing listens on a port that was just closed.
        closed = socket.create_server(("127.0.0.1", 0))
        refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
        closed.close()
        refused = configured.model_copy(update={"openai_base_url": refused_url})
        with ArcanosPythonClient(refused, notifier=MaintenanceNotifier(configured, backoff=0.001)) as client:
            with pytest.raises(openai.APIConnectionError) as caught:
                client.run_reasoning(MESSAGES)
            texts += exception_texts(caught.value)
        # A configuration error whose value echoes the key (pasted into the model variable by mistake).
        for name, value in {
            "OPENAI_API_KEY": key,
            "ARCANOS_FINE_TUNED_MODEL": f"oops {key}",
            "ARCANOS_MAINTENANCE_WEBHOOK": receiver.url,
            "ARCANOS_WEBHOOK_SECRET": LEAK_SECRET,
            "ARCANOS_INCIDENT_SPOOL": str(spool),
        }.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(ConfigurationError) as caught:
            ArcanosPythonClient()
        texts += exception_texts(caught.value)

        spool_files = [path.read_text(encoding="utf-8") for path in sorted(spool.iterdir())]
        expected_incidents = len(kinds) + 3
        assert len(spool_files) == expected_incidents
        receiver.clear()
        report = MaintenanceNotifier(configured, backoff=0.001).flush()
        assert report.delivered == expected_incidents
        deliveries = receiver.deliveries

    captured = capfd.readouterr()
    logged = [logging.Formatter().format(record) for record in caplog.records]
    delivered = [delivery.body.decode("utf-8") + json.dumps(delivery.headers) for delivery in deliveries]
    classes = sorted({json.loads(body)["incident_class"] for body in spool_files})
    assert classes == sorted(
        {
            "authentication", "permission", "not_found", "bad_request", "timeout", "upstream_error", "rate_limit",
            "quota_exhausted", "connection", "invalid_response", "empty_completion", "incomplete_completion",
            "refusal", "model_enforcement", "invalid_input", "configuration",
        }
    )  # fmt: skip
    assert all(delivery.signature_valid for delivery in deliveries)

    haystacks = {
        "stdout": [captured.out],
        "stderr": [captured.err],
        "logs": logged,
        "exceptions": texts,
        "spool files": spool_files,
        "deliveries": delivered,
    }
    needles = {
        "API key": key,
        "webhook secret": LEAK_SECRET,
        "webhook signing key": LEAK_SECRET.removeprefix("whsec_").rstrip("="),
    }
    leaks = [
        f"{needle} in {where}: …{text[max(0, text.find(secret) - 60) : text.find(secret) + 20]!r}"
        for where, texts_ in haystacks.items()
        for text in texts_
        for needle, secret in needles.items()
        if secret in text
    ]
    assert leaks == [], "\n".join(leaks)
    # Prompt text never reaches an incident (the opt-in is off by default).
    assert not [text for text in spool_files + delivered if CANARY in text]


def test_a_configuration_error_never_echoes_a_key_pasted_into_another_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key never seen before, pasted into the model variable too: the error names the variable, not the key."""
    key = f"proxy-{uuid.uuid4().hex}"  # not registered by any earlier test, and no sk- pattern to catch it
    monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv("ARCANOS_FINE_TUNED_MODEL", f"{key} ")
    with secrets_registry(), pytest.raises(ConfigurationError) as caught:
        ArcanosSettings()

    message = str(caught.value)
    assert message.startswith("ARCANOS_FINE_TUNED_MODEL: ")
    assert key not in message
    assert key not in repr(caught.value)


# --- the prompt opt-in --------------------------------------------------------------------------------


def failing_call(settings: ArcanosSettings, server: FakeOpenAIServer, messages: list[dict[str, str]]) -> Any:
    server.always(Reply.error(400))
    notifier = MaintenanceNotifier(settings, backoff=0.001)
    with ArcanosPythonClient(settings, notifier=notifier) as client, pytest.raises(openai.BadRequestError) as caught:
        client.run_reasoning(messages)
    return caught.value


def test_prompt_text_is_never_in_incidents_by_default(
    make_settings: Callable[..., ArcanosSettings], openai_server: FakeOpenAIServer, receiver: WebhookReceiver
) -> None:
    """Without the opt-in, an incident describes the prompt only by count and SHA-256."""
    failing_call(make_settings(), openai_server, MESSAGES)

    [delivery] = receiver.deliveries
    assert CANARY.encode() not in delivery.body
    assert delivery.json["message_count"] == 2
    assert len(delivery.json["messages_sha256"]) == 64
    assert "messages" not in delivery.json["context"]


def test_the_prompt_opt_in_carries_recent_messages_redacted_and_bounded(
    make_settings: Callable[..., ArcanosSettings],
    openai_server: FakeOpenAIServer,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ARCANOS_INCIDENT_INCLUDE_PROMPT=1: context.messages holds the latest messages, secrets redacted, < 16 KiB."""
    monkeypatch.setenv("ARCANOS_INCIDENT_INCLUDE_PROMPT", "1")
    settings = make_settings()  # no incident_include_prompt given: the environment variable opts in
    assert settings.incident_include_prompt is True
    secret_key = settings.openai_api_key.get_secret_value()
    history = [{"role": "user", "content": f"old question {n} " + "x" * 3000} for n in range(40)]
    latest = {"role": "user", "content": f"{CANARY} with key {secret_key} and Bearer abc.def"}
    failing_call(settings, openai_server, [*history, latest])

    [delivery] = receiver.deliveries
    context = delivery.json["context"]
    assert len(delivery.body) < 16 * 1024
    assert context["messages"][-1] == {
        "role": "user",
        "content": f"{CANARY} with key [REDACTED] and Bearer [REDACTED]",
    }
    assert secret_key.encode() not in delivery.body
    assert 1 < len(context["messages"]) < 41
    assert context["messages_omitted"] == 41 - len(context["messages"])
    shown = sum(len(message["content"].encode()) for message in context["messages"])
    assert shown <= 4096
    assert all(len(message["content"].encode()) <= 1024 for message in context["messages"])
