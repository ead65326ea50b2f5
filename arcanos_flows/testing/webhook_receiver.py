"""A webhook endpoint on 127.0.0.1 that records deliveries, verifies signatures and fails on demand.

It stands in for the maintenance system that receives incidents: tests script its answers (5xx,
``Retry-After``, redirects, gone), take it offline and back on the same port, and check that every
incident eventually arrived, correctly signed under Standard Webhooks.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from standardwebhooks import Webhook

from arcanos_flows.testing._http import BackgroundServer, QuietHandler, format_seconds, parse_json

__all__ = ["Delivery", "WebhookReceiver"]

DEFAULT_PATH = "/incidents"


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got, with the status it answered.

    Attributes:
        headers: Request headers, names lower-cased.
        body: Raw body bytes.
        json: The body parsed as JSON, or ``None`` when it is empty or not JSON.
        status: The HTTP status the receiver answered.
        signature_valid: ``None`` when the receiver has no secret; otherwise whether the Standard
            Webhooks signature verified.
        at: ``time.monotonic()`` when the delivery was received.
        path: The request target the POST was sent to.

    Examples:
        >>> delivery = Delivery({}, b'{"a": 1}', {"a": 1}, 200, None, 0.0, "/incidents")
        >>> delivery.ok
        True
    """

    headers: dict[str, str]
    body: bytes
    json: Any
    status: int
    signature_valid: bool | None
    at: float
    path: str = DEFAULT_PATH

    @property
    def ok(self) -> bool:
        """Whether the receiver answered 2xx, i.e. the delivery counts as delivered."""
        return 200 <= self.status < 300


@dataclass(frozen=True)
class _Answer:
    status: int
    retry_after: float | None = None


class _WebhookHandler(QuietHandler):
    def do_POST(self) -> None:
        """Record the delivery and answer the next scripted status (200 when none is scripted)."""
        receiver = cast("WebhookReceiver", self.server.owner)
        body = self.read_body()
        headers = self.lowercase_headers()
        answer = receiver._take_answer()
        delivery = Delivery(
            headers=headers,
            body=body,
            json=parse_json(body),
            status=answer.status,
            signature_valid=receiver._verify(body, headers),
            at=time.monotonic(),
            path=self.path,
        )
        receiver._record(delivery)
        extra: dict[str, str] = {}
        if answer.retry_after is not None:
            extra["Retry-After"] = format_seconds(answer.retry_after)
        if 300 <= answer.status < 400:
            extra["Location"] = f"{receiver.origin}/elsewhere"
        if 200 <= answer.status < 300:
            payload = b'{"ok": true}'
        else:
            payload = json.dumps({"ok": False, "error": f"scripted HTTP {answer.status}"}).encode()
        self.send_payload(answer.status, payload, headers=extra)

    def do_GET(self) -> None:
        """Answer 405: only POSTs deliver, so a client that followed a redirect as a GET fails."""
        self.read_body()
        self.send_payload(405, b'{"ok": false, "error": "method not allowed"}', headers={"Allow": "POST"})


class WebhookReceiver(BackgroundServer):
    """An HTTP endpoint that records webhook deliveries, for offline tests of incident delivery.

    Every POST, to any path, is recorded as a :class:`Delivery` and answered with the next scripted
    status, or 200 ``{"ok": true}`` when nothing is scripted.

    Args:
        secret: Standard Webhooks secret (``whsec_...``); when given, every delivery's signature is
            verified and reported in :attr:`Delivery.signature_valid`.
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        path: Path of :attr:`url` (any path is accepted).
        on_delivery: Called with each delivery, in the serving thread, after it is recorded.

    Raises:
        ValueError: ``secret`` is not a valid Standard Webhooks secret.

    Examples:
        >>> import urllib.request
        >>> with WebhookReceiver() as receiver:
        ...     request = urllib.request.Request(receiver.url, data=b'{"id": 1}', method="POST")
        ...     urllib.request.urlopen(request).status
        ...     receiver.incidents
        200
        [{'id': 1}]
    """

    handler_class = _WebhookHandler

    def __init__(
        self,
        secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        on_delivery: Callable[[Delivery], None] | None = None,
    ) -> None:
        super().__init__(host=host, port=port)
        try:
            self._webhook = Webhook(secret) if secret is not None else None
        except Exception as exc:
            raise ValueError(f"invalid webhook secret: {exc}") from exc
        self.secret = secret
        self.path = path if path.startswith("/") else f"/{path}"
        self.on_delivery = on_delivery
        self._answers: deque[_Answer] = deque()
        self._deliveries: list[Delivery] = []
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        """The URL to deliver to, e.g. ``http://127.0.0.1:PORT/incidents``."""
        return f"{self.origin}{self.path}"

    def fail_next(self, count: int, *, status: int = 503, retry_after: float | None = None) -> None:
        """Answer the next ``count`` POSTs (after any already scripted) with ``status``.

        Args:
            count: How many deliveries fail.
            status: The status they get.
            retry_after: Seconds for a ``Retry-After`` header on those answers.
        """
        with self._changed:
            self._answers.extend(_Answer(status, retry_after) for _ in range(count))

    def script(self, *statuses: int) -> None:
        """Answer the next POSTs (after any already scripted) with these statuses, in order.

        A 3xx answer carries ``Location: http://HOST:PORT/elsewhere``.

        Args:
            *statuses: One HTTP status per delivery.
        """
        with self._changed:
            self._answers.extend(_Answer(status) for status in statuses)

    @property
    def deliveries(self) -> list[Delivery]:
        """Every POST received, whatever it was answered (a snapshot copy)."""
        with self._changed:
            return list(self._deliveries)

    @property
    def delivered(self) -> list[Delivery]:
        """The deliveries answered 2xx (a snapshot copy)."""
        with self._changed:
            return [delivery for delivery in self._deliveries if delivery.ok]

    @property
    def incidents(self) -> list[Any]:
        """The parsed JSON bodies of the deliveries answered 2xx."""
        return [delivery.json for delivery in self.delivered]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Delivery]:
        """Block until at least ``count`` deliveries were answered 2xx.

        Args:
            count: How many successful deliveries to wait for.
            timeout: Seconds to wait at most.

        Returns:
            All successful deliveries so far (at least ``count``).

        Raises:
            AssertionError: Fewer arrived in time; the message lists every delivery received.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                delivered = [delivery for delivery in self._deliveries if delivery.ok]
                if len(delivered) >= count:
                    return delivered
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(delivery.status, delivery.body[:200]) for delivery in self._deliveries]
                    raise AssertionError(
                        f"expected {count} successful deliveries within {timeout}s, got {len(delivered)}; "
                        f"all {len(seen)} received (status, body): {seen}"
                    )
                self._changed.wait(remaining)

    def close(self) -> None:
        """Stop listening: connections are refused until :meth:`reopen` (the port is kept)."""
        self.stop()

    def reopen(self) -> None:
        """Listen again on the same port after :meth:`close`."""
        self.start()

    def clear(self) -> None:
        """Forget deliveries and any scripted answers."""
        with self._changed:
            self._deliveries.clear()
            self._answers.clear()

    def _take_answer(self) -> _Answer:
        with self._changed:
            return self._answers.popleft() if self._answers else _Answer(200)

    def _verify(self, body: bytes, headers: dict[str, str]) -> bool | None:
        if self._webhook is None:
            return None
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except Exception:
            # Any failure (bad signature, missing headers, undecodable body) is simply "not valid".
            return False
        return True

    def _record(self, delivery: Delivery) -> None:
        with self._changed:
            self._deliveries.append(delivery)
            self._changed.notify_all()
        if self.on_delivery is not None:
            self.on_delivery(delivery)
